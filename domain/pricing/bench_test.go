package pricing

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// genRealistic builds a cart of nLines lines from nMerchants merchants and
// nCoupons usable coupons shaped like a real wallet: about two thirds
// merchant coupons (满减, 直减, 折扣 on the shop, a category or a product), a fifth
// platform coupons with thresholds around the cart total, the rest shipping
// coupons; expiries spread over a few weeks.
func genRealistic(seed uint64, nLines, nMerchants, nCoupons int) (Cart, []Coupon, time.Time) {
	r := rand.New(rand.NewPCG(seed, 99))
	at := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	var cart Cart
	sub := make([]int64, nMerchants)
	for i := 0; i < nLines; i++ {
		m := i % nMerchants
		it := Item{
			LineID: fmt.Sprintf("l%02d", i), ProductID: fmt.Sprintf("p%02d", i),
			MerchantID: fmt.Sprintf("m%02d", m), CategoryID: fmt.Sprintf("c%d", r.IntN(8)),
			UnitPrice: int64(500 + 100*r.IntN(300)), Quantity: int64(1 + r.IntN(3)),
		}
		sub[m] += it.UnitPrice * it.Quantity
		cart.Items = append(cart.Items, it)
	}
	var gt int64
	for _, s := range sub {
		gt += s
	}
	cart.ShippingFee = 1000
	round := func(v int64) int64 { return max(100, v/100*100) }
	var cs []Coupon
	for i := 0; i < nCoupons; i++ {
		c := Coupon{
			CouponID: fmt.Sprintf("cp-%03d", r.IntN(1000)*1000+i), Scope: domain.Scope{Kind: domain.ScopeAll},
			ValidFrom: at.Add(-24 * time.Hour), ValidUntil: at.Add(time.Duration(1+r.IntN(20)) * 24 * time.Hour),
		}
		switch x := r.IntN(15); {
		case x < 10: // merchant
			m := r.IntN(nMerchants)
			c.Issuer = fmt.Sprintf("m%02d", m)
			base := sub[m]
			switch r.IntN(4) {
			case 0:
				c.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{fmt.Sprintf("c%d", r.IntN(8))}}
				base /= 2
			case 1:
				c.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{cart.Items[m+nMerchants*r.IntN(nLines/nMerchants)].ProductID}}
				base /= 3
			}
			switch r.IntN(5) {
			case 0:
				c.Kind, c.AmountOff = domain.KindDirect, round(int64(100+r.IntN(1000)))
			case 1:
				c.Kind, c.PercentOff, c.MaxDiscount = domain.KindPercent, int64(5+r.IntN(11)), round(base/8)
			default:
				c.Kind, c.Threshold = domain.KindThreshold, round(base*int64(30+r.IntN(90))/100)
				c.AmountOff = round(c.Threshold * int64(5+r.IntN(15)) / 100)
			}
		case x < 13: // platform
			c.Issuer = domain.IssuerPlatform
			if r.IntN(3) == 0 {
				x := r.IntN(8)
				c.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{fmt.Sprintf("c%d", x), fmt.Sprintf("c%d", (x+1+r.IntN(7))%8)}}
			}
			if r.IntN(4) == 0 {
				c.Kind, c.PercentOff, c.MaxDiscount = domain.KindPercent, int64(5+r.IntN(10)), round(gt/10)
			} else {
				c.Kind, c.Threshold = domain.KindThreshold, round(gt*int64(40+r.IntN(70))/100)
				c.AmountOff = round(c.Threshold * int64(5+r.IntN(10)) / 100)
			}
		default:
			c.Issuer, c.Kind = domain.IssuerPlatform, domain.KindShipping
			c.AmountOff, c.Threshold = round(int64(500+r.IntN(600))), round(gt*int64(r.IntN(130))/100)
		}
		cs = append(cs, c)
	}
	return cart, cs, at
}

func benchBest(b *testing.B, cart Cart, cs []Coupon, at time.Time) {
	b.Helper()
	q, err := Best(cart, cs, at)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		_, _ = Best(cart, cs, at)
	}
	_ = q
}

func BenchmarkBest60Coupons30Lines10Merchants(b *testing.B) {
	cart, cs, at := genRealistic(1, 30, 10, 60)
	benchBest(b, cart, cs, at)
}

func BenchmarkBest200Coupons30Lines10Merchants(b *testing.B) {
	cart, cs, at := genRealistic(2, 30, 10, 200)
	benchBest(b, cart, cs, at)
}

// benchMix cycles through 100 wallets of one shape; too_complex/op is the
// share of them Best refuses with ErrTooComplex.
func benchMix(b *testing.B, nLines, nMerchants, nCoupons int) {
	type in struct {
		cart Cart
		cs   []Coupon
		at   time.Time
	}
	var ins []in
	for seed := uint64(1); seed <= 100; seed++ {
		cart, cs, at := genRealistic(seed, nLines, nMerchants, nCoupons)
		ins = append(ins, in{cart, cs, at})
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n, refused int
	for b.Loop() {
		x := ins[n%len(ins)]
		n++
		if _, err := Best(x.cart, x.cs, x.at); err != nil {
			refused++
		}
	}
	b.ReportMetric(float64(refused)/float64(n), "too_complex/op")
}

func BenchmarkMix60Coupons30Lines10Merchants(b *testing.B)  { benchMix(b, 30, 10, 60) }
func BenchmarkMix200Coupons30Lines10Merchants(b *testing.B) { benchMix(b, 30, 10, 200) }
func BenchmarkMix100Coupons60Lines30Merchants(b *testing.B) { benchMix(b, 60, 30, 100) }
func BenchmarkMix200Coupons60Lines30Merchants(b *testing.B) { benchMix(b, 60, 30, 200) }

// Adversarial: a subset-sum instance hidden in the platform threshold (20
// merchants, amounts of 7 digits), solved exactly.
func BenchmarkAdversarialSubsetSum20(b *testing.B) {
	cart, cs, at := genSubsetSum(1, 20, false)
	benchBest(b, cart, cs, at)
}

// Adversarial: a storm of ties. 24 merchants with a 100 and a 300 coupon
// each under a platform threshold that leaves room for exactly 2000: a
// huge number of combinations reach the best total, and the tie-break has
// to pick one by the expiries (all different) without enumerating them.
func BenchmarkAdversarialTieStorm(b *testing.B) {
	cart, cs, at := genTieStorm(3, 24)
	benchBest(b, cart, cs, at)
}

// Adversarial, past the budget: 40 merchants of 7-digit amounts; Best gives
// up with ErrTooComplex after MaxWork. This measures what giving up costs.
func BenchmarkAdversarialTooComplex(b *testing.B) {
	cart, cs, at := genSubsetSum(1, 40, false)
	if _, err := Best(cart, cs, at); !errors.Is(err, ErrTooComplex) {
		b.Fatalf("expected ErrTooComplex, got %v", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		_, _ = Best(cart, cs, at)
	}
}

func genTieStorm(seed uint64, n int) (Cart, []Coupon, time.Time) {
	r := rand.New(rand.NewPCG(seed, 5))
	at := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	var cart Cart
	var cs []Coupon
	for i := 0; i < n; i++ {
		m := fmt.Sprintf("m%02d", i)
		cart.Items = append(cart.Items, Item{LineID: fmt.Sprintf("l%02d", i), ProductID: "p", MerchantID: m, CategoryID: "c", UnitPrice: 100_000, Quantity: 1})
		for j, amt := range []int64{100, 300} {
			cs = append(cs, Coupon{CouponID: fmt.Sprintf("k%02d-%d", i, j), Kind: domain.KindDirect, Issuer: m, AmountOff: amt,
				Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at.Add(-time.Hour), ValidUntil: at.Add(time.Duration(1+r.IntN(5000)) * time.Minute)})
		}
	}
	gt := int64(n) * 100_000
	cs = append(cs, Coupon{CouponID: "plat", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: gt - 2000, AmountOff: 20_000,
		Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at.Add(-time.Hour), ValidUntil: at.Add(time.Hour)})
	return cart, cs, at
}

// genSubsetSum builds a subset-sum instance hidden in the platform threshold:
// n merchants, one line and one direct coupon each (random amounts), and one
// platform coupon over everything whose threshold leaves room for about half
// of the merchant discounts. viaShipping hides it in a shipping threshold instead.
func genSubsetSum(seed uint64, n int, viaShipping bool) (Cart, []Coupon, time.Time) {
	r := rand.New(rand.NewPCG(seed, 3))
	at := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	var cart Cart
	var cs []Coupon
	var sum int64
	for i := 0; i < n; i++ {
		m := fmt.Sprintf("m%03d", i)
		cart.Items = append(cart.Items, Item{LineID: fmt.Sprintf("l%03d", i), ProductID: "p", MerchantID: m, CategoryID: "c", UnitPrice: 100_000_000, Quantity: 1})
		d := int64(1_000_000 + r.IntN(9_000_000))
		sum += d
		cs = append(cs, Coupon{CouponID: fmt.Sprintf("k%03d", i), Kind: domain.KindDirect, Issuer: m, AmountOff: d,
			Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at.Add(-time.Hour), ValidUntil: at.Add(time.Duration(1+r.IntN(1000)) * time.Hour)})
	}
	gt := int64(n) * 100_000_000
	room := sum/2 + int64(r.IntN(1000))
	if viaShipping {
		cart.ShippingFee = domain.MaxMoney / 2
		cs = append(cs, Coupon{CouponID: "ship", Kind: domain.KindShipping, Issuer: domain.IssuerPlatform, Threshold: gt - room, AmountOff: domain.MaxMoney / 2,
			Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at.Add(-time.Hour), ValidUntil: at.Add(time.Hour)})
	} else {
		cs = append(cs, Coupon{CouponID: "plat", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: gt - room, AmountOff: sum,
			Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at.Add(-time.Hour), ValidUntil: at.Add(time.Hour)})
	}
	return cart, cs, at
}
