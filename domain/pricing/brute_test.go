package pricing

import (
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"sort"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// This file holds a brute-force reference written straight from the spec
// (every subset of the coupons, every rule checked literally, math/big for the
// spread), a generator of small random inputs, the randomized property test
// and the fuzz target that compare Best with it.

type refResult struct {
	total    int64
	ids      []string // chosen coupons, sorted
	lineDisc []int64
	shipDisc int64
	never    []string // coupons in no valid combination, sorted
}

func refBest(cart Cart, cs []Coupon, at time.Time) refResult {
	n := len(cart.Items)
	totals := make([]int64, n)
	for i, it := range cart.Items {
		totals[i] = it.UnitPrice * it.Quantity
	}
	eligible := func(c Coupon, it Item) bool {
		if c.Issuer != domain.IssuerPlatform && it.MerchantID != c.Issuer {
			return false
		}
		switch c.Scope.Kind {
		case domain.ScopeAll:
			return true
		case domain.ScopeMerchant:
			return slices.Contains(c.Scope.IDs, it.MerchantID)
		case domain.ScopeCategory:
			return slices.Contains(c.Scope.IDs, it.CategoryID)
		case domain.ScopeProduct:
			return slices.Contains(c.Scope.IDs, it.ProductID)
		}
		panic("scope")
	}
	// apply one goods coupon to a; false when it gives 0.
	applyGoods := func(c Coupon, a []int64) bool {
		var idx []int
		s := new(big.Int)
		for i, it := range cart.Items {
			if eligible(c, it) {
				idx = append(idx, i)
				s.Add(s, big.NewInt(a[i]))
			}
		}
		if s.Sign() <= 0 || s.Cmp(big.NewInt(c.Threshold)) < 0 {
			return false
		}
		var d *big.Int
		if c.Kind == domain.KindPercent {
			d = new(big.Int).Mul(s, big.NewInt(c.PercentOff))
			d.Quo(d, big.NewInt(100))
			if c.MaxDiscount > 0 && d.Cmp(big.NewInt(c.MaxDiscount)) > 0 {
				d = big.NewInt(c.MaxDiscount)
			}
		} else {
			d = big.NewInt(c.AmountOff)
			if d.Cmp(s) > 0 {
				d = new(big.Int).Set(s)
			}
		}
		if d.Sign() == 0 {
			return false
		}
		type rr struct {
			pos int
			rem *big.Int
		}
		var rs []rr
		given := new(big.Int)
		for _, i := range idx {
			q, m := new(big.Int).QuoRem(new(big.Int).Mul(d, big.NewInt(a[i])), s, new(big.Int))
			a[i] -= q.Int64()
			given.Add(given, q)
			rs = append(rs, rr{i, m})
		}
		sort.SliceStable(rs, func(x, y int) bool { return rs[x].rem.Cmp(rs[y].rem) > 0 })
		left := new(big.Int).Sub(d, given).Int64()
		for j := int64(0); j < left; j++ {
			a[rs[j].pos]--
		}
		for _, v := range a {
			if v < 0 {
				panic("negative line")
			}
		}
		return true
	}
	var best refResult
	best.total = -1
	var bestVU []time.Time
	used := map[string]bool{}
	m := len(cs)
	// Coupons in the same group (a merchant's goods coupons, the platform's
	// goods coupons, the shipping coupons) conflict; skipping masks with a
	// conflicting pair early only saves time: refValid checks every rule.
	conflict := make([]int, m)
	for i := range cs {
		for j := range cs {
			if i != j && refGroup(cs[i]) == refGroup(cs[j]) {
				conflict[i] |= 1 << j
			}
		}
	}
	var set []Coupon
masks:
	for mask := 0; mask < 1<<m; mask++ {
		set = set[:0]
		for i := 0; i < m; i++ {
			if mask&(1<<i) != 0 {
				if mask&conflict[i] != 0 {
					continue masks
				}
				set = append(set, cs[i])
			}
		}
		if !refValid(set, at) {
			continue
		}
		a := slices.Clone(totals)
		ok := true
		var total int64
		before := func() int64 {
			var g int64
			for _, v := range a {
				g += v
			}
			return g
		}
		// step 1: merchant goods coupons, step 2: the platform goods coupon.
		for _, step := range []bool{false, true} {
			for _, c := range set {
				if c.Kind == domain.KindShipping || (c.Issuer == domain.IssuerPlatform) != step {
					continue
				}
				g0 := before()
				if !applyGoods(c, a) {
					ok = false
				}
				total += g0 - before()
			}
		}
		var shipDisc int64
		for _, c := range set {
			if c.Kind == domain.KindShipping {
				if before() < c.Threshold || cart.ShippingFee == 0 {
					ok = false
				}
				shipDisc = min(c.AmountOff, cart.ShippingFee)
				total += shipDisc
			}
		}
		if !ok {
			continue
		}
		var ids []string
		var vus []time.Time
		for _, c := range set {
			ids = append(ids, c.CouponID)
			vus = append(vus, c.ValidUntil)
			used[c.CouponID] = true
		}
		slices.Sort(ids)
		slices.SortFunc(vus, func(x, y time.Time) int { return x.Compare(y) })
		win := total > best.total
		if total == best.total {
			c := slices.CompareFunc(vus, bestVU, func(x, y time.Time) int { return x.Compare(y) })
			win = c < 0 || c == 0 && slices.Compare(ids, best.ids) < 0
		}
		if win {
			best.total, best.ids, bestVU, best.shipDisc = total, ids, vus, shipDisc
			best.lineDisc = make([]int64, n)
			for i := range a {
				best.lineDisc[i] = totals[i] - a[i]
			}
		}
	}
	for _, c := range cs {
		if !used[c.CouponID] {
			best.never = append(best.never, c.CouponID)
		}
	}
	slices.Sort(best.never)
	return best
}

func refGroup(c Coupon) string {
	switch {
	case c.Kind == domain.KindShipping:
		return "shipping"
	case c.Issuer == domain.IssuerPlatform:
		return "platform"
	}
	return "merchant " + c.Issuer
}

// refValid checks the stacking rules and validity; the "> 0" rule is checked
// while applying.
func refValid(set []Coupon, at time.Time) bool {
	merchants := map[string]int{}
	plat, ship := 0, 0
	for _, c := range set {
		if c.Exclusive && len(set) > 1 {
			return false
		}
		if at.Before(c.ValidFrom) || !at.Before(c.ValidUntil) {
			return false
		}
		switch {
		case c.Kind == domain.KindShipping:
			ship++
		case c.Issuer == domain.IssuerPlatform:
			plat++
		default:
			merchants[c.Issuer]++
			if merchants[c.Issuer] > 1 {
				return false
			}
		}
	}
	return plat <= 1 && ship <= 1
}

// src yields choices; the property test draws them from a PRNG, the fuzz
// target from its byte input.
type src interface{ intn(n int) int }

type prng struct{ r *rand.Rand }

func (p prng) intn(n int) int { return p.r.IntN(n) }

type bytesSrc struct {
	b []byte
	i int
}

func (s *bytesSrc) intn(n int) int {
	if s.i >= len(s.b) {
		return 0
	}
	v := int(s.b[s.i])
	s.i++
	return v % n
}

var t0 = time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)

// genSmall builds a small cart and up to maxCoupons coupons with small money,
// few distinct expiries and few scopes, so ties and edge cases are common.
func genSmall(r src, maxCoupons int) (Cart, []Coupon, time.Time) {
	var cart Cart
	// coarse: money from a few round values, so different combinations often
	// tie on the total and the tie-breaks decide.
	coarse := r.intn(2) == 0
	money := func(n int) int64 {
		if coarse {
			return int64(5 * (1 + r.intn(2+n/40)))
		}
		return int64(1 + r.intn(n))
	}
	nl := 1 + r.intn(5)
	for i := 0; i < nl; i++ {
		price := int64(r.intn(60))
		if coarse {
			price = int64(10 * r.intn(6))
		}
		if r.intn(6) == 0 {
			price = 0
		}
		cart.Items = append(cart.Items, Item{
			LineID: fmt.Sprintf("l%d", i), ProductID: fmt.Sprintf("p%d", r.intn(4)),
			MerchantID: fmt.Sprintf("m%d", r.intn(3)), CategoryID: fmt.Sprintf("c%d", r.intn(3)),
			UnitPrice: price, Quantity: int64(1 + r.intn(3)),
		})
	}
	cart.ShippingFee = int64(r.intn(4) * 5)
	// Thresholds near the goods total (or a part of it) make the platform and
	// shipping thresholds bind, so merchant coupons push them out.
	var gt int64
	for _, it := range cart.Items {
		gt += it.UnitPrice * it.Quantity
	}
	thr := func(n int) int64 {
		switch r.intn(4) {
		case 0:
			return money(n)
		case 1:
			return int64(r.intn(2)) * money(n)
		}
		base := gt
		if r.intn(2) == 0 {
			it := cart.Items[r.intn(len(cart.Items))]
			base = it.UnitPrice * it.Quantity
		}
		return max(0, base-int64(r.intn(4))*money(20)+int64(r.intn(3))-1)
	}
	nc := r.intn(maxCoupons + 1)
	var cs []Coupon
	for i := 0; i < nc; i++ {
		c := Coupon{CouponID: fmt.Sprintf("%c%d", 'a'+r.intn(5), i), Scope: domain.Scope{Kind: domain.ScopeAll}}
		switch r.intn(10) {
		case 0, 1, 2:
			c.Kind, c.Threshold, c.AmountOff = domain.KindThreshold, max(1, thr(150)), money(40)
		case 3, 4:
			c.Kind, c.Threshold, c.AmountOff = domain.KindDirect, int64(r.intn(2))*thr(50), money(30)
		case 5, 6, 7:
			c.Kind, c.Threshold, c.PercentOff = domain.KindPercent, int64(r.intn(2))*thr(100), int64(1+r.intn(99))
			if coarse {
				c.PercentOff = int64(10 * (1 + r.intn(9)))
			}
			if r.intn(2) == 0 {
				c.MaxDiscount = money(30)
			}
		default:
			c.Kind, c.Threshold, c.AmountOff = domain.KindShipping, thr(150), money(15)
		}
		if r.intn(2) == 0 {
			c.Issuer = domain.IssuerPlatform
		} else {
			c.Issuer = fmt.Sprintf("m%d", r.intn(4))
		}
		if c.Kind != domain.KindShipping {
			switch r.intn(5) {
			case 1:
				c.Scope = domain.Scope{Kind: domain.ScopeMerchant, IDs: []string{fmt.Sprintf("m%d", r.intn(3))}}
			case 2:
				c.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{fmt.Sprintf("c%d", r.intn(3))}}
				if r.intn(2) == 0 {
					c.Scope.IDs = append(c.Scope.IDs, "c9")
				}
			case 3:
				c.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{fmt.Sprintf("p%d", r.intn(4))}}
			}
		}
		c.Exclusive = r.intn(12) == 0
		c.ValidFrom = t0.Add(-time.Duration(r.intn(3)) * time.Hour)
		c.ValidUntil = t0.Add(time.Duration(r.intn(4)) * time.Hour)
		if !c.ValidUntil.After(c.ValidFrom) {
			c.ValidUntil = c.ValidFrom.Add(time.Hour)
		}
		cs = append(cs, c)
	}
	// Sometimes copy a coupon under another id (same batch, several claims).
	if len(cs) > 0 && len(cs) < maxCoupons && r.intn(3) == 0 {
		c := cs[r.intn(len(cs))]
		c.CouponID += "b"
		if r.intn(2) == 0 {
			c.ValidUntil = c.ValidUntil.Add(time.Hour)
		}
		cs = append(cs, c)
	}
	return cart, cs, t0
}

// genTies builds carts where many combinations tie: several merchants with
// coupons of equal value, platform and shipping thresholds that bind, few
// distinct expiries. It exercises the tie-break cuts of the search.
func genTies(r src, maxCoupons int) (Cart, []Coupon, time.Time) {
	var cart Cart
	nm := 2 + r.intn(4)
	for m := 0; m < nm; m++ {
		for j := 0; j <= r.intn(2); j++ {
			cart.Items = append(cart.Items, Item{
				LineID: fmt.Sprintf("l%d%d", m, j), ProductID: fmt.Sprintf("p%d", r.intn(3)),
				MerchantID: fmt.Sprintf("m%d", m), CategoryID: fmt.Sprintf("c%d", r.intn(2)),
				UnitPrice: int64(10 * (1 + r.intn(3))), Quantity: 1,
			})
		}
	}
	var gt int64
	for _, it := range cart.Items {
		gt += it.UnitPrice
	}
	cart.ShippingFee = 10
	nc := 2 + r.intn(maxCoupons-1)
	var cs []Coupon
	for i := 0; i < nc; i++ {
		c := Coupon{
			CouponID: fmt.Sprintf("%c%d", 'a'+r.intn(4), i), Scope: domain.Scope{Kind: domain.ScopeAll},
			ValidFrom: t0.Add(-time.Hour), ValidUntil: t0.Add(time.Duration(1+r.intn(3)) * time.Hour),
		}
		switch r.intn(6) {
		case 0:
			c.Kind, c.Issuer, c.AmountOff = domain.KindDirect, domain.IssuerPlatform, int64(5*(1+r.intn(3)))
			c.Threshold = max(0, gt-int64(5*r.intn(5)))
			if r.intn(2) == 0 {
				c.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{fmt.Sprintf("c%d", r.intn(2))}}
				c.Threshold /= 2
			}
		case 1:
			c.Kind, c.Issuer, c.AmountOff = domain.KindShipping, fmt.Sprintf("m%d", r.intn(nm)), int64(5*(1+r.intn(2)))
			c.Threshold = max(0, gt-int64(5*r.intn(5)))
		default:
			c.Kind, c.Issuer, c.AmountOff = domain.KindDirect, fmt.Sprintf("m%d", r.intn(nm)), int64(5*(1+r.intn(2)))
		}
		cs = append(cs, c)
	}
	return cart, cs, t0
}

// checkAgainstRef compares Best with the reference and checks the invariants.
//
// Best settles ties in phase 1 when they are few and in phase 2 otherwise,
// and bounds a hard branch with a knapsack table: every path is checked by
// forcing it with the tuning.
func checkAgainstRef(t *testing.T, cart Cart, cs []Coupon, at time.Time, tus []tuning) {
	t.Helper()
	ref := refBest(cart, cs, at)
	q, err := Best(cart, cs, at)
	if err != nil {
		t.Fatalf("Best: %v\ncart=%+v\ncoupons=%+v", err, cart, cs)
	}
	checkQuote(t, cart, cs, q, ref, tuning{MaxTieWork, KnapAfter, MaxKnapCells, MaxWork})
	for _, tu := range tus {
		q, err := best(cart, cs, at, tu)
		if err != nil {
			t.Fatalf("best: %v\ncart=%+v\ncoupons=%+v", err, cart, cs)
		}
		checkQuote(t, cart, cs, q, ref, tu)
	}
}

// tunings force every path: ties all to phase 2 or all in phase 1, knapsack
// tables at once (tiny and scaled, or full size) or never.
var tunings = [...]tuning{{0, 0, 64, MaxWork}, {0, math.MaxInt64, 0, MaxWork}, {math.MaxInt64, 0, MaxKnapCells, MaxWork}, {math.MaxInt64, math.MaxInt64, 0, MaxWork}}

func checkQuote(t *testing.T, cart Cart, cs []Coupon, q Quote, ref refResult, tu tuning) {
	t.Helper()
	var ids []string
	for _, c := range q.Coupons {
		ids = append(ids, c.CouponID)
	}
	slices.Sort(ids)
	dump := func() string {
		return fmt.Sprintf("\ntuning %+v\ncart=%+v\ncoupons=%+v\nquote=%+v\nref=%+v", tu, cart, cs, q, ref)
	}
	if q.TotalDiscount != ref.total {
		t.Fatalf("total %d, reference %d%s", q.TotalDiscount, ref.total, dump())
	}
	if !slices.Equal(ids, ref.ids) {
		t.Fatalf("chose %v, reference %v%s", ids, ref.ids, dump())
	}
	if q.ShippingDiscount != ref.shipDisc {
		t.Fatalf("shipping discount %d, reference %d%s", q.ShippingDiscount, ref.shipDisc, dump())
	}
	var sum, gt int64
	for i, l := range q.Lines {
		if l.Discount != ref.lineDisc[i] {
			t.Fatalf("line %d discount %d, reference %d%s", i, l.Discount, ref.lineDisc[i], dump())
		}
		if l.Payable < 0 || l.Discount < 0 || l.LineID != cart.Items[i].LineID {
			t.Fatalf("bad line %+v%s", l, dump())
		}
		tot := cart.Items[i].UnitPrice * cart.Items[i].Quantity
		if l.Payable+l.Discount != tot {
			t.Fatalf("line %d: payable+discount != total%s", i, dump())
		}
		sum += l.Discount
		gt += tot
	}
	var cd int64
	for _, c := range q.Coupons {
		if c.Discount <= 0 {
			t.Fatalf("coupon %s gives %d%s", c.CouponID, c.Discount, dump())
		}
		cd += c.Discount
	}
	if sum+q.ShippingDiscount != q.TotalDiscount || cd != q.TotalDiscount {
		t.Fatalf("line discounts %d + shipping %d, coupons %d, total %d%s", sum, q.ShippingDiscount, cd, q.TotalDiscount, dump())
	}
	if q.GoodsTotal != gt || q.Payable != gt+cart.ShippingFee-q.TotalDiscount || q.ShippingFee != cart.ShippingFee {
		t.Fatalf("goods_total/payable wrong%s", dump())
	}
	var na []string
	for _, x := range q.NotApplicable {
		na = append(na, x.CouponID)
	}
	slices.Sort(na)
	if !slices.Equal(na, ref.never) {
		t.Fatalf("not_applicable %v, reference (in no valid combination) %v%s", na, ref.never, dump())
	}
}

func TestBestMatchesBruteForce(t *testing.T) {
	r := prng{rand.New(rand.NewPCG(20261111, 42))}
	for i := 0; i < 2000; i++ {
		cart, cs, at := genSmall(r, 9)
		checkAgainstRef(t, cart, cs, at, tunings[:])
		cart, cs, at = genTies(r, 11)
		checkAgainstRef(t, cart, cs, at, tunings[:])
	}
}

func FuzzBest(f *testing.F) {
	r := rand.New(rand.NewPCG(7, 7))
	for i := 0; i < 40; i++ {
		b := make([]byte, 40+r.IntN(200))
		for j := range b {
			b[j] = byte(r.IntN(256))
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		r := &bytesSrc{b: b}
		gen := genSmall
		if r.intn(2) == 1 {
			gen = genTies
		}
		cart, cs, at := gen(r, 9)
		checkAgainstRef(t, cart, cs, at, tunings[:])
	})
}
