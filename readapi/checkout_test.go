package readapi

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/pricing"
	"github.com/couponsd/couponsd/projections"
)

type fixedWallet []projections.ViewCoupon

func (w fixedWallet) All(context.Context, string) ([]projections.ViewCoupon, error) { return w, nil }

type noCounts struct{}

func (noCounts) UserCounts(context.Context, []string, string) (map[string]int64, error) {
	return map[string]int64{}, nil
}

type noBatches struct{}

func (noBatches) List(context.Context, string, string, string, int) (ViewPage, error) {
	return ViewPage{}, nil
}
func (noBatches) Batches(context.Context) ([]projections.BatchEntry, error) { return nil, nil }

// A wallet the engine cannot solve exactly within its budget still gets a
// quote at checkout: exact over the coupons giving the most alone, and
// flagged as such.
func TestQuoteNeverBlocksCheckout(t *testing.T) {
	now := time.Date(2026, 11, 11, 12, 0, 0, 0, time.UTC)
	clock := domain.ClockFunc(func() time.Time { return now })
	// A subset-sum hidden in a platform threshold (40 merchants, one line
	// and one direct coupon each, 7-digit amounts): past the engine's budget.
	r := rand.New(rand.NewPCG(1, 3))
	var cart pricing.Cart
	var wallet fixedWallet
	var sum int64
	for m := range 40 {
		mid := fmt.Sprintf("m%03d", m)
		cart.Items = append(cart.Items, pricing.Item{LineID: "l" + mid, ProductID: "p", MerchantID: mid, CategoryID: "c", UnitPrice: 100_000_000, Quantity: 1})
		d := int64(1_000_000 + r.IntN(9_000_000))
		sum += d
		wallet = append(wallet, projections.ViewCoupon{CouponID: "k" + mid, Terms: projections.ViewTerms{
			Kind: domain.KindDirect, Issuer: mid, AmountOff: d, Scope: domain.Scope{Kind: domain.ScopeAll},
			ValidFrom: now.Add(-time.Hour).UnixMilli(), ValidUntil: now.Add(time.Duration(1+r.IntN(1000)) * time.Hour).UnixMilli()}})
	}
	wallet = append(wallet, projections.ViewCoupon{CouponID: "plat", Terms: projections.ViewTerms{
		Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: 40*100_000_000 - (sum/2 + int64(r.IntN(1000))), AmountOff: sum,
		Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: now.Add(-time.Hour).UnixMilli(), ValidUntil: now.Add(time.Hour).UnixMilli()}})
	cat, _ := NewCatalog(noBatches{}, clock, 0)
	ck, _ := NewCheckout(wallet, cat, noCounts{}, clock)
	cs := make([]pricing.Coupon, len(wallet))
	for i, c := range wallet {
		cs[i] = PricingCoupon(c)
	}
	_, direct := pricing.Best(cart, cs, now)
	q, err := ck.Quote(context.Background(), "u", cart)
	if err != nil {
		t.Fatalf("checkout quote refused: %v", err)
	}
	if direct == nil {
		if !q.Exact || len(q.OmittedCoupons) != 0 {
			t.Fatalf("the engine solved it directly, yet the quote is flagged: %+v", q)
		}
		t.Skip("the engine solved this wallet within its budget; nothing to fall back from")
	}
	if q.Exact || len(q.OmittedCoupons) == 0 || q.TotalDiscount <= 0 {
		t.Fatalf("fallback quote %+v: want a positive, flagged, reduced answer", q)
	}
}
