// Package pricing is the checkout quote of spec/pricing.md: which of a user's
// coupons apply to a cart, and the exact best valid combination. It is pure:
// no I/O, no globals, the quote time is an argument; all money is int64 minor
// units and no floats are used.
//
// # Algorithm
//
// Preparation. Every coupon is checked alone at the quote time. One that
// gives no discount alone can never give one in a combination (amounts only go
// down when other coupons apply, and every discount is non-decreasing in its
// base amount), so it goes to not_applicable and out of the search. Exclusive
// coupons are candidates on their own. The rest fall into groups: each
// merchant's goods coupons, the platform goods coupons, the shipping coupons.
// A merchant coupon works on line totals (nothing applies before step 1), so
// its discount d and its per-line shares are fixed; only two scalars couple it
// to the rest: r, how much it lowers the chosen platform coupon's eligible
// amount (its shares on that coupon's lines, so r <= d), and d itself, which
// lowers G.
//
// Branches. For each platform choice p (none, or one platform coupon) a
// depth-first branch and bound picks one option (a coupon or none) per
// merchant. A node carries D (merchant discounts so far) and R (the reduction
// of p's eligible amount S0). At a leaf the goods discount is Φ = D +
// f_p(S0-R), the shipping coupon is the best one with threshold <=
// goods_total-Φ, and the total is Φ plus its discount. In p's branch only
// leaves where p gives a discount are kept (R <= S0-smin_p): a choice where p
// gives 0 is the same combination as that choice without p, which the "none"
// branch meets. Branches run best root bound first.
//
// Bounds. (1) f_p is 1-Lipschitz above smin_p (min(amount, S) clearly;
// floor(S*pct/100) capped, because pct < 100) and r <= d, so adding a merchant
// option never lowers Φ in p's branch: Φlo = D + f_p(S0-R) bounds every leaf
// below from under. (2) Φ <= Φlo + B(k, S0-smin_p-R), B bounding the
// multiple-choice knapsack "largest Σd of the remaining merchants with
// Σr <= capacity" (f_p can only drop): first its linear relaxation (the upper
// concave hull of each merchant's (r, d) points, slopes compared exactly in
// 128 bits); once a branch has searched KnapAfter nodes, a table by dynamic
// programming over the capacity, exact when it fits MaxKnapCells (a bitset of
// reachable sums when every option has d == r, the usual case of a platform
// coupon over every line), else over capacities and weights divided by q,
// rounded down, which still bounds from above. The table also orders the
// children, best bound first. (3) The shipping discount depends on Φ only
// through "threshold <= goods_total-Φ", so a leaf's total is at most
// max(Φhi, max over shipping coupons h with goods_total-threshold_h >= Φlo of
// v_h + min(Φhi, goods_total-threshold_h)).
//
// Reductions, each proved by single replacement: swapping one coupon of a
// combination for another of the same group that leaves every amount the same
// (or better) gives a valid combination at least as good, and at an equal
// total its sorted valid_until list, and at equal lists its sorted id list,
// is element-wise no later / no larger, hence not worse. So merchant coupons
// with identical share vectors, platform coupons with identical eligible lines
// and discount function, and merchant options with equal (d, r) in a branch
// keep only the earliest (valid_until, coupon_id); shipping coupons dominated
// by one with a discount at least as high, a threshold at least as low and a
// better key are dropped, and a leaf takes the best feasible one. When no
// shipping threshold can bind in a branch, an option with d' >= d, r' <= r and
// (d' > d or a better key) beats another in every completion (and one with
// r = 0 beats "none"), so a merchant left with one choice is fixed.
//
// Phase 1 finds the best total T*. A node is cut when its bound is below the
// incumbent's total. Nodes whose bound equals it can only hold ties; they are
// followed, comparing keys at equal totals, until MaxTieWork of them, and if
// that suffices the incumbent is the answer. Otherwise phase 2 (tie.go) builds
// the tie-break winner greedily from the best key's first element on, asking
// an oracle (the same search with constraints: counts of coupons per
// valid_until value, coupons forced in or out) whether some combination still
// reaches T*.
//
// # Exactness
//
// Every valid combination has the outcome of a leaf of exactly one branch
// (its platform coupon, or none) with its shipping coupon replaced by the
// best feasible one, which is at least as good; the reductions only drop
// options that a kept option beats, or ties with a better key, in every
// completion, so the best combination is a leaf of the reduced search. All
// bounds are upper bounds of every leaf below (the tables are exact or a
// relaxation; the linear relaxation is one), so phase 1 never cuts a leaf with
// a total above the incumbent's, and while it follows ties never one with an
// equal total: its final incumbent is T*, and the best combination when it
// followed every tie. Phase 2 settles the key over the same leaves. Lists
// compare like strings where "end" is the smallest symbol; with the counts of
// earlier valid_until values fixed, ending is best if some combination
// reaching T* allows it, else one more coupon of the current value beats any
// later value; with all counts fixed the lists are equal and the sorted ids,
// all of one length, are minimised coupon by coupon. Each step asks the oracle,
// which cuts only by the same upper bounds and by counts that can no longer be
// met, so its answers are exact, and the greedy lands on the unique best
// combination. The problem is NP-hard, so the work is capped (MaxWork): past
// it Best returns an error matching ErrTooComplex, never a combination it has
// not proved best.
package pricing

import (
	"slices"
	"strings"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// Best returns the quote with the best valid combination of coupons for cart
// at time at, per spec/pricing.md. Invalid input is a domain.ErrInvalidArgument
// naming the field (items[3].quantity, coupons[2].percent_off, ...); a search
// over MaxWork returns an error matching ErrTooComplex (and ErrInvalidArgument).
func Best(cart Cart, coupons []Coupon, at time.Time) (Quote, error) {
	if err := validateCart(cart); err != nil {
		return Quote{}, err
	}
	if err := validateCoupons(coupons); err != nil {
		return Quote{}, err
	}
	return best(cart, coupons, at, tuning{tieLimit: MaxTieWork, knapAfter: KnapAfter, knapCells1: MaxKnapCells, maxWork: MaxWork})
}

// tuning holds the search's switch points; the tests force every path with
// them. None of them changes an answer.
type tuning struct {
	tieLimit   int64 // phase-1 nodes followed only for ties, before phase 2 takes over
	knapAfter  int64 // nodes of a branch before it builds its knapsack table
	knapCells1 int64 // cells of one table at most
	maxWork    int64 // the search's budget
}

// best is Best on valid inputs with the given tuning.
func best(cart Cart, coupons []Coupon, at time.Time, tu tuning) (Quote, error) {
	e := newEngine(cart, coupons, at)
	e.tuning = tu
	e.search()
	if e.aborted {
		return Quote{}, errTooComplex()
	}
	return e.quote(), nil
}

// ckey is a coupon's tie-break key: valid_until, then coupon_id.
type ckey struct {
	sec  int64
	nsec int32
	id   string
}

func cmpTime(a, b *ckey) int {
	switch {
	case a.sec < b.sec:
		return -1
	case a.sec > b.sec:
		return 1
	case a.nsec < b.nsec:
		return -1
	case a.nsec > b.nsec:
		return 1
	}
	return 0
}

// cmpKey orders single coupons: earlier valid_until, then smaller id.
func cmpKey(a, b *ckey) int {
	if c := cmpTime(a, b); c != 0 {
		return c
	}
	return strings.Compare(a.id, b.id)
}

// mopt is a merchant goods coupon: its discount and shares on line totals.
type mopt struct {
	ci     int32
	d      int64
	idx    []int32 // eligible lines, cart order
	shares []int64 // share of each idx line
}

// plat is a platform goods coupon.
type plat struct {
	ci   int32
	s0   int64 // eligible line totals
	elig []bool
	fn   goodsFn
}

// ship is a kept shipping coupon.
type ship struct {
	ci     int32
	v, thr int64
}

type engine struct {
	items   []Item
	cs      []Coupon
	n       int
	totals  []int64
	gt, fee int64

	keys    []ckey
	vuRank  []int32 // rank of valid_until among the coupons (equal instants, equal ranks)
	idRank  []int32 // rank of coupon_id
	reason  []string
	elig    [][]int32 // goods coupons: eligible lines
	fns     []goodsFn
	firstAt map[string]int // merchant id -> position of its first line

	excl   []int32
	exclD  []int64
	groups [][]mopt // per merchant with options, cart order of first line
	plats  []plat
	ships  []ship // sorted by (v desc, key asc); thr strictly decreasing

	branches []*branch
	work     int64
	aborted  bool
	tstar    int64   // the best total (phase 1)
	best     []int32 // an optimal combination; the best one unless phase 2 must decide
	bestKey  setKey
	cand     []int32 // scratch: a leaf's combination
	candKey  setKey
	ties     bool  // phase 1 still follows ties (then its best is the answer)
	tieWork  int64 // nodes visited only for a tie
	tuning

	// phase 2
	classOf     []int32 // coupon -> valid_until class (ascending), -1 if not a candidate
	nClass      int
	con         cons
	wit         []int32 // the oracle's witness
	wb          branch  // working branch of the oracle
	pool        []bopt  // its options
	oracleNodes int64   // nodes of the current oracle search
	oracleLimit int64   // ... after which it restarts with a table of its own
	restart     bool
	wknap       knap  // that table
	knapCells   int64 // cells of the knapsack tables kept by branches

	// scratch
	rem   []uint64
	order []int32
}

func newEngine(cart Cart, cs []Coupon, at time.Time) *engine {
	n := len(cart.Items)
	e := &engine{
		items: cart.Items, cs: cs, n: n, fee: cart.ShippingFee,
		totals: make([]int64, n), keys: make([]ckey, len(cs)), reason: make([]string, len(cs)),
		elig: make([][]int32, len(cs)), fns: make([]goodsFn, len(cs)), firstAt: make(map[string]int),
		rem: make([]uint64, n), order: make([]int32, 0, n), tstar: -1,
	}
	for i, it := range cart.Items {
		e.totals[i] = it.UnitPrice * it.Quantity
		e.gt += e.totals[i]
		if _, ok := e.firstAt[it.MerchantID]; !ok {
			e.firstAt[it.MerchantID] = i
		}
	}
	byMerchant := map[string][]mopt{}
	for i := range cs {
		c := &cs[i]
		e.keys[i] = ckey{sec: c.ValidUntil.Unix(), nsec: int32(c.ValidUntil.Nanosecond()), id: c.CouponID}
		if at.Before(c.ValidFrom) {
			e.reason[i] = ReasonNotYetValid
			continue
		}
		if !at.Before(c.ValidUntil) {
			e.reason[i] = ReasonExpired
			continue
		}
		if c.Kind == domain.KindShipping {
			switch {
			case e.fee == 0:
				e.reason[i] = ReasonNoShippingFee
			case e.gt < c.Threshold:
				e.reason[i] = ReasonBelowThreshold
			case c.Exclusive:
				e.excl, e.exclD = append(e.excl, int32(i)), append(e.exclD, min(c.AmountOff, e.fee))
			default:
				e.ships = append(e.ships, ship{ci: int32(i), v: min(c.AmountOff, e.fee), thr: c.Threshold})
			}
			continue
		}
		idx := e.eligible(c)
		e.elig[i], e.fns[i] = idx, newGoodsFn(c)
		var s int64
		for _, l := range idx {
			s += e.totals[l]
		}
		d := e.fns[i].at(s)
		switch {
		case len(idx) == 0:
			e.reason[i] = ReasonNoEligibleLines
		case s == 0:
			e.reason[i] = ReasonZeroEligibleAmount
		case s < c.Threshold:
			e.reason[i] = ReasonBelowThreshold
		case d == 0:
			e.reason[i] = ReasonZeroDiscount
		case c.Exclusive:
			e.excl, e.exclD = append(e.excl, int32(i)), append(e.exclD, d)
		case c.Issuer == domain.IssuerPlatform:
			el := make([]bool, n)
			for _, l := range idx {
				el[l] = true
			}
			e.plats = append(e.plats, plat{ci: int32(i), s0: s, elig: el, fn: e.fns[i]})
		default:
			sh := make([]int64, len(idx))
			spread(d, idx, e.totals, s, sh, e.rem, e.order)
			byMerchant[c.Issuer] = append(byMerchant[c.Issuer], mopt{ci: int32(i), d: d, idx: idx, shares: sh})
		}
	}
	e.prepareGroups(byMerchant)
	e.rank()
	return e
}

// rank fills vuRank and idRank.
func (e *engine) rank() {
	ord := make([]int32, len(e.cs))
	for i := range ord {
		ord[i] = int32(i)
	}
	e.vuRank, e.idRank = make([]int32, len(e.cs)), make([]int32, len(e.cs))
	slices.SortFunc(ord, func(a, b int32) int { return cmpTime(&e.keys[a], &e.keys[b]) })
	for i, ci := range ord {
		if i > 0 && cmpTime(&e.keys[ord[i-1]], &e.keys[ci]) == 0 {
			e.vuRank[ci] = e.vuRank[ord[i-1]]
		} else {
			e.vuRank[ci] = int32(i)
		}
	}
	slices.SortFunc(ord, func(a, b int32) int { return strings.Compare(e.keys[a].id, e.keys[b].id) })
	for i, ci := range ord {
		e.idRank[ci] = int32(i)
	}
}

// eligible returns the lines a goods coupon may apply to, in cart order.
func (e *engine) eligible(c *Coupon) []int32 {
	var set map[string]struct{}
	if len(c.Scope.IDs) > 8 {
		set = make(map[string]struct{}, len(c.Scope.IDs))
		for _, id := range c.Scope.IDs {
			set[id] = struct{}{}
		}
	}
	in := func(v string) bool {
		if set != nil {
			_, ok := set[v]
			return ok
		}
		return slices.Contains(c.Scope.IDs, v)
	}
	var idx []int32
	for i := range e.items {
		it := &e.items[i]
		if c.Issuer != domain.IssuerPlatform && it.MerchantID != c.Issuer {
			continue
		}
		ok := false
		switch c.Scope.Kind {
		case domain.ScopeAll:
			ok = true
		case domain.ScopeMerchant:
			ok = in(it.MerchantID)
		case domain.ScopeCategory:
			ok = in(it.CategoryID)
		case domain.ScopeProduct:
			ok = in(it.ProductID)
		}
		if ok {
			idx = append(idx, int32(i))
		}
	}
	return idx
}

// prepareGroups orders and deduplicates the groups.
func (e *engine) prepareGroups(byMerchant map[string][]mopt) {
	// Merchant options: identical share vectors have identical effects; keep
	// the best key (single replacement).
	ms := make([]string, 0, len(byMerchant))
	for m := range byMerchant {
		ms = append(ms, m)
	}
	slices.SortFunc(ms, func(a, b string) int { return e.firstAt[a] - e.firstAt[b] })
	for _, m := range ms {
		os := byMerchant[m]
		slices.SortFunc(os, func(a, b mopt) int { return cmpKey(&e.keys[a.ci], &e.keys[b.ci]) })
		kept := os[:0]
	next:
		for _, o := range os {
			for _, k := range kept {
				if k.d == o.d && slices.Equal(k.idx, o.idx) && slices.Equal(k.shares, o.shares) {
					continue next
				}
			}
			kept = append(kept, o)
		}
		e.groups = append(e.groups, kept)
	}
	// Platform coupons: identical lines and function, keep the best key.
	slices.SortFunc(e.plats, func(a, b plat) int { return cmpKey(&e.keys[a.ci], &e.keys[b.ci]) })
	kp := e.plats[:0]
nextP:
	for _, p := range e.plats {
		for _, k := range kp {
			if k.fn == p.fn && slices.Equal(e.elig[k.ci], e.elig[p.ci]) {
				continue nextP
			}
		}
		kp = append(kp, p)
	}
	e.plats = kp
	// Shipping: sort by (v desc, key asc) and keep those with a strictly lower
	// threshold than every better one; the first feasible is then the best.
	slices.SortFunc(e.ships, func(a, b ship) int {
		if a.v != b.v {
			if a.v > b.v {
				return -1
			}
			return 1
		}
		return cmpKey(&e.keys[a.ci], &e.keys[b.ci])
	})
	ks := e.ships[:0]
	for _, s := range e.ships {
		if len(ks) == 0 || s.thr < ks[len(ks)-1].thr {
			ks = append(ks, s)
		}
	}
	e.ships = ks
}

// quote applies the best combination and builds the output.
func (e *engine) quote() Quote {
	q := Quote{
		GoodsTotal: e.gt, ShippingFee: e.fee,
		Coupons: []AppliedCoupon{}, Lines: make([]LineQuote, e.n), NotApplicable: []NotApplicable{},
	}
	for i, r := range e.reason {
		if r != "" {
			q.NotApplicable = append(q.NotApplicable, NotApplicable{CouponID: e.cs[i].CouponID, Reason: r})
		}
	}
	a := slices.Clone(e.totals)
	var merchant []int32
	plat, shipc := int32(-1), int32(-1)
	for _, ci := range e.best {
		c := &e.cs[ci]
		switch {
		case c.Kind == domain.KindShipping:
			shipc = ci
		case c.Issuer == domain.IssuerPlatform:
			plat = ci
		default:
			merchant = append(merchant, ci)
		}
	}
	slices.SortFunc(merchant, func(x, y int32) int {
		return e.firstAt[e.cs[x].Issuer] - e.firstAt[e.cs[y].Issuer]
	})
	share := make([]int64, e.n)
	applyGoods := func(ci int32) {
		idx := e.elig[ci]
		var s int64
		for _, l := range idx {
			s += a[l]
		}
		d := e.fns[ci].at(s)
		if d > 0 {
			spread(d, idx, a, s, share, e.rem, e.order)
			for j, l := range idx {
				a[l] -= share[j]
			}
		}
		q.Coupons = append(q.Coupons, AppliedCoupon{CouponID: e.cs[ci].CouponID, Discount: d})
		q.TotalDiscount += d
	}
	for _, ci := range merchant {
		applyGoods(ci)
	}
	if plat >= 0 {
		applyGoods(plat)
	}
	var g int64
	for _, v := range a {
		g += v
	}
	if shipc >= 0 {
		c := &e.cs[shipc]
		var d int64
		if g >= c.Threshold && e.fee > 0 {
			d = min(c.AmountOff, e.fee)
		}
		q.ShippingDiscount = d
		q.TotalDiscount += d
		q.Coupons = append(q.Coupons, AppliedCoupon{CouponID: c.CouponID, Discount: d})
	}
	for i, it := range e.items {
		q.Lines[i] = LineQuote{LineID: it.LineID, Discount: e.totals[i] - a[i], Payable: a[i]}
	}
	q.Payable = g + e.fee - q.ShippingDiscount
	return q
}
