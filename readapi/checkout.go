package readapi

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/pricing"
	"github.com/couponsd/couponsd/projections"
)

// UserCoupons reads every coupon of a user's usable view.
type UserCoupons interface {
	All(ctx context.Context, userID string) ([]projections.ViewCoupon, error)
}

// Catalog caches the batch catalog of the view for the busiest reads
// (product pages, claimable lists): it is read from Redis at most once per
// TTL, so a batch change shows within the TTL.
type Catalog struct {
	view  UsableView
	ttl   time.Duration
	clock domain.Clock
	mu    sync.Mutex
	at    time.Time
	bs    []projections.BatchEntry
}

// NewCatalog fails fast on nil dependencies; ttl defaults to 500ms.
func NewCatalog(view UsableView, clock domain.Clock, ttl time.Duration) (*Catalog, error) {
	if view == nil || clock == nil {
		return nil, errors.New("readapi: NewCatalog needs a view and a clock")
	}
	if ttl <= 0 {
		ttl = 500 * time.Millisecond
	}
	return &Catalog{view: view, ttl: ttl, clock: clock}, nil
}

// Batches returns the catalog, at most TTL old.
func (c *Catalog) Batches(ctx context.Context) ([]projections.BatchEntry, error) {
	return c.batches(ctx, false)
}

// Fresh reads the catalog from the view now (for read-your-writes).
func (c *Catalog) Fresh(ctx context.Context) ([]projections.BatchEntry, error) {
	return c.batches(ctx, true)
}

func (c *Catalog) batches(ctx context.Context, fresh bool) ([]projections.BatchEntry, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.clock.Now()
	if !fresh && c.bs != nil && now.Sub(c.at) < c.ttl {
		return c.bs, nil
	}
	bs, err := c.view.Batches(ctx)
	if err != nil {
		return nil, err
	}
	c.bs, c.at = bs, now
	return bs, nil
}

// Checkout answers the shopper queries that price things: the checkout
// quote, the what-if pricing and the product page.
type Checkout struct {
	coupons UserCoupons
	catalog *Catalog
	counts  ClaimCounts
	clock   domain.Clock
}

// NewCheckout fails fast on nil dependencies.
func NewCheckout(coupons UserCoupons, catalog *Catalog, counts ClaimCounts, clock domain.Clock) (*Checkout, error) {
	if coupons == nil || catalog == nil || counts == nil || clock == nil {
		return nil, errors.New("readapi: NewCheckout needs the user view, the catalog, claim counts and a clock")
	}
	return &Checkout{coupons: coupons, catalog: catalog, counts: counts, clock: clock}, nil
}

// PricingCoupon converts a view coupon for the pricing engine.
func PricingCoupon(c projections.ViewCoupon) pricing.Coupon {
	t := c.Terms
	return pricing.Coupon{CouponID: c.CouponID, Kind: t.Kind, Issuer: t.Issuer, Threshold: t.Threshold,
		AmountOff: t.AmountOff, PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount, Scope: t.Scope,
		Exclusive: t.Exclusive, ValidFrom: ms(t.ValidFrom), ValidUntil: ms(t.ValidUntil)}
}

// Quote prices the cart with the best combination of the user's usable
// coupons (locked ones are held by an order and left out).
//
// A checkout must never be blocked: when the engine cannot prove the best
// combination within its work budget (a wallet of hundreds of coupons from
// dozens of merchants, see pricing.ErrTooComplex), the quote is computed
// exactly over the coupons that give the most alone, halving their number
// until it can, and says so (Exact false, OmittedCoupons).
func (q *Checkout) Quote(ctx context.Context, userID string, cart pricing.Cart) (CheckoutQuote, error) {
	if err := domain.ValidateID("user_id", userID); err != nil {
		return CheckoutQuote{}, err
	}
	all, err := q.coupons.All(ctx, userID)
	if err != nil {
		return CheckoutQuote{}, err
	}
	cs := make([]pricing.Coupon, 0, len(all))
	for _, c := range all {
		if !c.Locked {
			cs = append(cs, PricingCoupon(c))
		}
	}
	now := q.clock.Now()
	var (
		qt      pricing.Quote
		omitted []string
	)
	if len(cs) <= pricing.MaxCoupons {
		qt, err = pricing.Best(cart, cs, now)
	} else {
		qt, omitted, err = quoteMany(cart, cs, now)
	}
	if errors.Is(err, pricing.ErrTooComplex) {
		return quoteReduced(cart, cs, now)
	}
	return CheckoutQuote{Quote: qt, Exact: len(omitted) == 0, OmittedCoupons: omitted}, err
}

// CheckoutQuote is a checkout answer: Exact is false when the combination
// is the best over a subset of the wallet (OmittedCoupons were left out).
type CheckoutQuote struct {
	pricing.Quote
	Exact          bool     `json:"exact"`
	OmittedCoupons []string `json:"omitted_coupons,omitempty"`
}

// quoteReduced keeps the coupons giving the most alone, halving until the
// engine can prove the best combination among them.
func quoteReduced(cart pricing.Cart, cs []pricing.Coupon, at time.Time) (CheckoutQuote, error) {
	type scored struct {
		c pricing.Coupon
		d int64
	}
	var ss []scored
	for _, c := range cs {
		qt, err := pricing.Best(cart, []pricing.Coupon{c}, at)
		if err != nil {
			return CheckoutQuote{}, err
		}
		if qt.TotalDiscount > 0 {
			ss = append(ss, scored{c, qt.TotalDiscount})
		}
	}
	sortBy(ss, func(a, b scored) bool {
		if a.d != b.d {
			return a.d > b.d
		}
		return a.c.CouponID < b.c.CouponID
	})
	for n := len(ss) / 2; n >= 1; n /= 2 {
		keep := make([]pricing.Coupon, n)
		for i := range keep {
			keep[i] = ss[i].c
		}
		qt, err := pricing.Best(cart, keep, at)
		if errors.Is(err, pricing.ErrTooComplex) {
			continue
		}
		if err != nil {
			return CheckoutQuote{}, err
		}
		out := CheckoutQuote{Quote: qt}
		for _, s := range ss[n:] {
			out.OmittedCoupons = append(out.OmittedCoupons, s.c.CouponID)
		}
		return out, nil
	}
	return CheckoutQuote{}, domain.Errorf(domain.ErrInvalidArgument, "coupons: too many interacting coupons to price this cart")
}

// quoteMany prices a cart with more coupons than Best takes in one call.
// A coupon that gives nothing alone never gives anything in a combination
// (spec/pricing.md, "not_applicable"), so those are set aside first, each
// judged alone by the engine (expired coupons the expiry has not caught up
// with yet, other merchants' coupons, ...): the answer stays exact as long as
// at most MaxCoupons coupons apply to this cart. Past that, the ones expiring
// soonest are kept (they are the ones a shopper should use first).
func quoteMany(cart pricing.Cart, cs []pricing.Coupon, at time.Time) (qt pricing.Quote, omitted []string, err error) {
	var (
		apply []pricing.Coupon
		na    []pricing.NotApplicable
		one   [1]pricing.Coupon
	)
	for _, c := range cs {
		one[0] = c
		qt, err := pricing.Best(cart, one[:], at)
		if err != nil {
			return qt, nil, err
		}
		if len(qt.NotApplicable) > 0 {
			na = append(na, qt.NotApplicable...)
		} else {
			apply = append(apply, c)
		}
	}
	if len(apply) > pricing.MaxCoupons {
		sortBy(apply, func(a, b pricing.Coupon) bool {
			if !a.ValidUntil.Equal(b.ValidUntil) {
				return a.ValidUntil.Before(b.ValidUntil)
			}
			return a.CouponID < b.CouponID
		})
		for _, c := range apply[pricing.MaxCoupons:] {
			omitted = append(omitted, c.CouponID)
		}
		apply = apply[:pricing.MaxCoupons]
	}
	if qt, err = quote(cart, apply, at); err != nil {
		return qt, nil, err
	}
	// The engine only saw coupons that apply alone: its own list is empty.
	qt.NotApplicable = append(na, qt.NotApplicable...)
	return qt, omitted, nil
}

// WhatIf prices a cart with inline coupon definitions at a given time.
func (q *Checkout) WhatIf(cart pricing.Cart, coupons []pricing.Coupon, at time.Time) (pricing.Quote, error) {
	if at.IsZero() {
		at = q.clock.Now()
	}
	return quote(cart, coupons, at)
}

// quote prices with the engine; its refusals (bad input, or a search past
// its budget: pricing.ErrTooComplex) match domain.ErrInvalidArgument.
func quote(cart pricing.Cart, cs []pricing.Coupon, at time.Time) (pricing.Quote, error) {
	return pricing.Best(cart, cs, at)
}

// ProductBatch is a batch shown on a product page.
type ProductBatch struct {
	ClaimableBatch
	Claimable bool `json:"claimable"`
}

// ProductCoupons lists the batches that apply to a product: claimable now,
// or already held by the user.
func (q *Checkout) ProductCoupons(ctx context.Context, userID, productID, merchantID, categoryID string) ([]ProductBatch, error) {
	if err := domain.ValidateID("product_id", productID); err != nil {
		return nil, err
	}
	for _, f := range [][2]string{{"merchant_id", merchantID}, {"category_id", categoryID}} {
		if f[1] != "" {
			if err := domain.ValidateID(f[0], f[1]); err != nil {
				return nil, err
			}
		}
	}
	bs, err := q.catalog.Batches(ctx)
	if err != nil {
		return nil, err
	}
	now := q.clock.Now()
	var matched []ProductBatch
	var ids []string
	for _, b := range bs {
		if !appliesTo(b.Rules, productID, merchantID, categoryID) {
			continue
		}
		matched = append(matched, ProductBatch{ClaimableBatch: ClaimableBatch{ID: b.BatchID, Rules: b.Rules, TotalStock: b.TotalStock}, Claimable: claimableAt(b, now)})
		ids = append(ids, b.BatchID)
	}
	out := []ProductBatch{}
	if len(ids) == 0 {
		return out, nil
	}
	counts, err := q.counts.UserCounts(ctx, ids, userID)
	if err != nil {
		return nil, err
	}
	for _, m := range matched {
		m.ClaimedCount = counts[m.ID]
		m.ClaimedByMe = m.ClaimedCount > 0
		if m.Claimable || m.ClaimedByMe {
			out = append(out, m)
		}
	}
	sortBy(out, func(a, b ProductBatch) bool {
		if a.Claimable != b.Claimable {
			return a.Claimable
		}
		return a.ID < b.ID
	})
	return out, nil
}

// claimableAt tells whether a shopper may claim a coupon of the batch at now,
// as domain.Batch.CheckClaimable decides (stock and per-user limits aside):
// public, running (not paused or stopped, within the claim window), and not
// handing out coupons born expired (a fixed validity window already over).
func claimableAt(b projections.BatchEntry, now time.Time) bool {
	r := &b.Rules
	return !b.Stopped && !b.Paused && r.Audience == domain.AudiencePublic &&
		!now.Before(r.ClaimStartsAt) && now.Before(r.ClaimEndsAt) &&
		(r.ValidUntil.IsZero() || now.Before(r.ValidUntil))
}

// appliesTo tells whether a batch's coupons can apply to the product (by
// spec/pricing.md: scope, and a merchant-issued coupon only on its
// merchant's lines). A platform shipping coupon (scope all) applies to any
// product's order. A merchant's shipping coupon is shown on that merchant's
// products only, like the rest of its batches: it is the merchant's
// promotion (the engine itself, per spec/pricing.md, takes it off the
// shipping fee of any cart).
func appliesTo(r domain.Rules, productID, merchantID, categoryID string) bool {
	if r.Issuer != domain.IssuerPlatform && r.Issuer != merchantID {
		return false
	}
	var want string
	switch r.Scope.Kind {
	case domain.ScopeAll:
		return true
	case domain.ScopeMerchant:
		want = merchantID
	case domain.ScopeCategory:
		want = categoryID
	case domain.ScopeProduct:
		want = productID
	}
	if want == "" {
		return false
	}
	for _, id := range r.Scope.IDs {
		if id == want {
			return true
		}
	}
	return false
}
