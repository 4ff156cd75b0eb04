package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/pricing"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

// Component tests of the checkout routes (spec/pricing.md, spec/api.md):
// POST /v1/checkout/quote, POST /v1/pricing/best and
// GET /v1/products/{product_id}/coupons, through the real server, write side
// and read side (usable view on the embedded Redis, batch catalog, stock guard).

// scopeOf is a batch or coupon scope.
func scopeOf(kind string, ids ...string) map[string]any {
	if len(ids) == 0 {
		return map[string]any{"kind": kind}
	}
	return map[string]any{"kind": kind, "ids": ids}
}

// fixedWindow overrides batchBody's valid_days with a fixed validity window.
func fixedWindow(over map[string]any, from, until time.Time) map[string]any {
	over["valid_days"] = nil
	over["valid_from"] = from.Format(time.RFC3339)
	over["valid_until"] = until.Format(time.RFC3339)
	return over
}

// largestRemainder spreads d over amounts as spec/pricing.md says: line i
// gets floor(d*a_i/S); the units left go one each to the largest
// (d*a_i) mod S, ties to the earlier line. (The test amounts keep d*a_i far
// below the int64 range.)
func largestRemainder(d int64, a []int64) []int64 {
	var s int64
	for _, v := range a {
		s += v
	}
	share := make([]int64, len(a))
	order := make([]int, len(a))
	left := d
	for i, v := range a {
		share[i] = d * v / s
		left -= share[i]
		order[i] = i
	}
	slices.SortStableFunc(order, func(x, y int) int {
		rx, ry := d*a[x]%s, d*a[y]%s
		switch {
		case rx > ry:
			return -1
		case rx < ry:
			return 1
		}
		return 0
	})
	for k := int64(0); k < left; k++ {
		share[order[k]]++
	}
	return share
}

// applyShares lowers the amounts at idx by their shares.
func applyShares(a []int64, idx []int, share []int64) {
	for j, i := range idx {
		a[i] -= share[j]
	}
}

// amountsAt picks the amounts at idx.
func amountsAt(a []int64, idx ...int) []int64 {
	out := make([]int64, len(idx))
	for j, i := range idx {
		out[j] = a[i]
	}
	return out
}

func sumAmounts(a []int64) int64 {
	var s int64
	for _, v := range a {
		s += v
	}
	return s
}

// quoteSorted sorts not_applicable by coupon id: its order follows the order
// the coupons were considered in (the view's), not part of this contract.
func quoteSorted(q pricing.Quote) pricing.Quote {
	q.NotApplicable = slices.Clone(q.NotApplicable)
	slices.SortFunc(q.NotApplicable, func(a, b pricing.NotApplicable) int { return strings.Compare(a.CouponID, b.CouponID) })
	return q
}

func expectQuote(t *testing.T, r resp, want pricing.Quote) {
	t.Helper()
	expectStatus(t, r, http.StatusOK)
	got := decode[pricing.Quote](t, r)
	if g, w := quoteSorted(got), quoteSorted(want); !reflect.DeepEqual(g, w) {
		t.Fatalf("quote\n got  %+v\n want %+v\nbody: %s", g, w, r.Body)
	}
	// The money adds up (spec/pricing.md, "Output").
	var lines, cs int64
	for _, l := range got.Lines {
		lines += l.Discount
	}
	for _, c := range got.Coupons {
		cs += c.Discount
	}
	if cs != got.TotalDiscount || lines+got.ShippingDiscount != got.TotalDiscount ||
		got.Payable != got.GoodsTotal-lines+got.ShippingFee-got.ShippingDiscount {
		t.Fatalf("quote amounts do not add up: %s", r.Body)
	}
}

// checkoutCart is the cart of TestCheckoutQuoteBestCombination.
var checkoutCart = map[string]any{
	"items": []map[string]any{
		{"line_id": "l1", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 12900, "quantity": 2}, // 25800
		{"line_id": "l2", "product_id": "p2", "merchant_id": "m1", "category_id": "c2", "unit_price": 4550, "quantity": 1},  // 4550
		{"line_id": "l3", "product_id": "p3", "merchant_id": "m2", "category_id": "c1", "unit_price": 9999, "quantity": 3},  // 29997
		{"line_id": "l4", "product_id": "p4", "merchant_id": "m3", "category_id": "c3", "unit_price": 0, "quantity": 1},     // a free gift
	},
	"shipping_fee": 1000,
}

// TestCheckoutQuoteBestCombination: a shopper holds coupons of many batches,
// one of them locked by an order; the quote is the exact best combination
// of spec/pricing.md, computed here by hand from the spec's rules.
func TestCheckoutQuoteBestCombination(t *testing.T) {
	e := newReadEnv(t)
	issue := func(over map[string]any) string { return e.issue(over).ID }

	// The coupon an order holds: the best merchant-m2 coupon, were it free.
	bLocked := issue(map[string]any{"name": "m2 25 off", "issuer": "m2", "amount_off": 2500})
	// Platform 满减: 60.00 off from 560.00, on every line.
	bA := issue(map[string]any{"name": "platform 60 off 560", "kind": "threshold", "threshold": 56000, "amount_off": 6000})
	// Merchant m1 满减: 30.00 off from 300.00, on m1's lines.
	bB := issue(map[string]any{"name": "m1 30 off 300", "kind": "threshold", "issuer": "m1", "threshold": 30000, "amount_off": 3000})
	// Merchant m2 直减 15.00.
	bC := issue(map[string]any{"name": "m2 15 off", "issuer": "m2", "amount_off": 1500})
	// Platform 10% off category c1, capped at 50.00.
	bD := issue(map[string]any{"name": "platform 10% c1", "kind": "percent", "amount_off": nil, "percent_off": 10,
		"max_discount": 5000, "scope": scopeOf("category", "c1")})
	// Shipping: 8.00 off the shipping fee from 500.00 of goods (after discounts).
	bE := issue(map[string]any{"name": "ship 8 off 500", "kind": "shipping", "threshold": 50000, "amount_off": 800})
	// Exclusive: 100.00 off, alone.
	bF := issue(map[string]any{"name": "exclusive 100 off", "amount_off": 10000, "exclusive": true})
	// Never applicable to the cart:
	bNoLines := issue(map[string]any{"name": "m4 5 off", "issuer": "m4"})
	bBelow := issue(map[string]any{"name": "platform 100 off 1000", "kind": "threshold", "threshold": 100000, "amount_off": 10000})
	bLater := issue(fixedWindow(map[string]any{"name": "tomorrow 7 off", "amount_off": 700}, t0.Add(24*time.Hour), t0.Add(48*time.Hour)))
	bZero := issue(map[string]any{"name": "gift 3 off", "amount_off": 300, "scope": scopeOf("product", "p4")})
	bSoon := issue(fixedWindow(map[string]any{"name": "ten minutes 4 off", "amount_off": 400}, t0.Add(-time.Hour), t0.Add(10*time.Minute)))
	bShipBelow := issue(map[string]any{"name": "ship 12 off 700", "kind": "shipping", "threshold": 70000, "amount_off": 1200})

	locked := e.claim(bLocked, e.alice)
	e.lockFor(locked.ID, "alice", "order-1")
	ids := map[string]string{}
	var last CouponView
	for name, b := range map[string]string{"A": bA, "B": bB, "C": bC, "D": bD, "E": bE, "F": bF,
		"noLines": bNoLines, "below": bBelow, "later": bLater, "zero": bZero, "soon": bSoon, "shipBelow": bShipBelow} {
		c := e.claim(b, e.alice)
		ids[name] = c.ID
		if c.Position > last.Position {
			last = c
		}
	}
	// Bob's coupon is not Alice's.
	bobs := e.claim(bA, e.bob)
	// bSoon's coupon is now expired (the expiry has not run: it is still in
	// the usable view); the lock (15 minutes) still holds.
	e.clock.Advance(11 * time.Minute)

	// By hand, per spec/pricing.md. Line totals, goods_total:
	a := []int64{25800, 4550, 29997, 0}
	goodsTotal := sumAmounts(a) // 60347
	// The candidates: merchant m1 {B}, merchant m2 {C} (the locked coupon is
	// out), platform {A, D}, shipping {E}, exclusive {F} alone.
	//   B+C then A: A's S = 60347-3000-1500 = 55847 < 56000: A gives 0, invalid.
	//   B then A: 57347 >= 56000: 3000+6000 = 9000; C then A: 1500+6000 = 7500.
	//   B+C then D: S = c1 lines l1, l3 after B, C = 51747; 10% = 5174, capped
	//   at 5000: 9500, the best goods discount, though A is the biggest coupon.
	//   Shipping: G = 60347-9500 = 50847 >= 50000: +800 = 10300 (B+A+E: 9800).
	//   F alone: 10000 < 10300.
	// Step 1, merchant coupons on line totals. B over m1's lines l1, l2:
	shB := largestRemainder(3000, amountsAt(a, 0, 1))
	// 3000*25800/30350 = 2550 r 7500, 3000*4550/30350 = 449 r 22850: the unit left goes to l2.
	if !slices.Equal(shB, []int64{2550, 450}) {
		t.Fatalf("B spread %v", shB)
	}
	applyShares(a, []int{0, 1}, shB)
	// C over m2's line l3.
	applyShares(a, []int{2}, []int64{1500})
	// Step 2, the platform coupon D on c1's lines l1, l3, after step 1.
	s := sumAmounts(amountsAt(a, 0, 2))
	dD := min(s*10/100, 5000)
	if s != 51747 || dD != 5000 {
		t.Fatalf("D: S = %d, d = %d", s, dD)
	}
	shD := largestRemainder(dD, amountsAt(a, 0, 2))
	// 5000*23250/51747 = 2246 r 26238, 5000*28497/51747 = 2753 r 25509: the unit goes to l1.
	if !slices.Equal(shD, []int64{2247, 2753}) {
		t.Fatalf("D spread %v", shD)
	}
	applyShares(a, []int{0, 2}, shD)
	// Step 3, shipping: G >= 50000.
	g := sumAmounts(a)
	if g != 50847 {
		t.Fatalf("G = %d", g)
	}
	totals := []int64{25800, 4550, 29997, 0}
	lines := make([]pricing.LineQuote, 4)
	for i, id := range []string{"l1", "l2", "l3", "l4"} {
		lines[i] = pricing.LineQuote{LineID: id, Discount: totals[i] - a[i], Payable: a[i]}
	}
	want := pricing.Quote{
		TotalDiscount: 3000 + 1500 + 5000 + 800, GoodsTotal: goodsTotal, ShippingFee: 1000,
		Payable: g + 1000 - 800, // 51047
		// Order of application: merchants by their first line (m1, m2), platform, shipping.
		Coupons: []pricing.AppliedCoupon{{CouponID: ids["B"], Discount: 3000}, {CouponID: ids["C"], Discount: 1500},
			{CouponID: ids["D"], Discount: 5000}, {CouponID: ids["E"], Discount: 800}},
		Lines:            lines, // l1 4797/21003, l2 450/4100, l3 4253/25744, l4 0/0
		ShippingDiscount: 800,
		NotApplicable: []pricing.NotApplicable{
			{CouponID: ids["noLines"], Reason: pricing.ReasonNoEligibleLines},
			{CouponID: ids["below"], Reason: pricing.ReasonBelowThreshold},
			{CouponID: ids["later"], Reason: pricing.ReasonNotYetValid},
			{CouponID: ids["zero"], Reason: pricing.ReasonZeroEligibleAmount},
			{CouponID: ids["soon"], Reason: pricing.ReasonExpired},
			{CouponID: ids["shipBelow"], Reason: pricing.ReasonBelowThreshold},
		},
	}
	if want.Payable != 51047 || lines[0].Payable != 21003 || lines[2].Discount != 4253 {
		t.Fatalf("hand computation drifted: %+v", want)
	}
	quotePath := fmt.Sprintf("/v1/checkout/quote?min_position=%d", last.Position)
	expectQuote(t, e.post(quotePath, e.alice, checkoutCart), want)

	// Bob prices with his own coupon only: A alone, 6000 over every line.
	shA := largestRemainder(6000, totals)
	bobLines := make([]pricing.LineQuote, 4)
	var bobG int64
	for i, id := range []string{"l1", "l2", "l3", "l4"} {
		bobLines[i] = pricing.LineQuote{LineID: id, Discount: shA[i], Payable: totals[i] - shA[i]}
		bobG += totals[i] - shA[i]
	}
	expectQuote(t, e.post(fmt.Sprintf("/v1/checkout/quote?min_position=%d", bobs.Position), e.bob, checkoutCart), pricing.Quote{
		TotalDiscount: 6000, GoodsTotal: goodsTotal, ShippingFee: 1000, Payable: bobG + 1000,
		Coupons: []pricing.AppliedCoupon{{CouponID: bobs.ID, Discount: 6000}}, Lines: bobLines, NotApplicable: []pricing.NotApplicable{},
	})

	// Once the order lets go of the locked coupon, it is the better m2
	// coupon: B + locked + D = 3000+2500+5000 = 10500 beats 10300 although
	// G = 60347-10500 = 49847 now misses the shipping threshold.
	r := e.post("/v1/coupons/"+locked.ID+"/unlock", e.service, map[string]any{"order_id": "order-1"})
	expectStatus(t, r, http.StatusOK)
	unlocked := decode[CouponView](t, r)
	a = slices.Clone(totals)
	applyShares(a, []int{0, 1}, shB)
	applyShares(a, []int{2}, []int64{2500})
	shD = largestRemainder(5000, amountsAt(a, 0, 2)) // S = 23250+27497 = 50747: 10% = 5074, capped
	applyShares(a, []int{0, 2}, shD)
	g = sumAmounts(a)
	for i := range lines {
		lines[i] = pricing.LineQuote{LineID: lines[i].LineID, Discount: totals[i] - a[i], Payable: a[i]}
	}
	want.TotalDiscount, want.Payable, want.ShippingDiscount, want.Lines = 10500, g+1000, 0, lines
	want.Coupons = []pricing.AppliedCoupon{{CouponID: ids["B"], Discount: 3000}, {CouponID: locked.ID, Discount: 2500},
		{CouponID: ids["D"], Discount: 5000}}
	if g != 49847 || !slices.Equal(shD, []int64{2291, 2709}) {
		t.Fatalf("hand computation drifted: G = %d, D spread %v", g, shD)
	}
	expectQuote(t, e.post(fmt.Sprintf("/v1/checkout/quote?min_position=%d", unlocked.Position), e.alice, checkoutCart), want)

	// A quote is a read: nothing was appended.
	if head := e.head(); head != unlocked.Position {
		t.Fatalf("quotes appended events: head %d, last write %d", head, unlocked.Position)
	}
}

// TestCheckoutQuoteExclusiveAndEmpty: an exclusive coupon wins alone when it
// beats every combination; a shopper without coupons gets the plain totals.
func TestCheckoutQuoteExclusiveAndEmpty(t *testing.T) {
	e := newReadEnv(t)
	cart := map[string]any{"items": []map[string]any{
		{"line_id": "a", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 3000, "quantity": 1},
		{"line_id": "b", "product_id": "p2", "merchant_id": "m2", "category_id": "c1", "unit_price": 1000, "quantity": 2},
	}}
	// No shipping_fee: 0. No coupons at all.
	expectQuote(t, e.post("/v1/checkout/quote", e.alice, cart), pricing.Quote{
		GoodsTotal: 5000, Payable: 5000, Coupons: []pricing.AppliedCoupon{}, NotApplicable: []pricing.NotApplicable{},
		Lines: []pricing.LineQuote{{LineID: "a", Payable: 3000}, {LineID: "b", Payable: 2000}},
	})
	m1 := e.claim(e.issue(map[string]any{"issuer": "m1", "amount_off": 1000}).ID, e.alice)
	pl := e.claim(e.issue(map[string]any{"kind": "percent", "amount_off": nil, "percent_off": 20}).ID, e.alice)
	ship := e.claim(e.issue(map[string]any{"kind": "shipping", "amount_off": 500}).ID, e.alice)
	ex := e.claim(e.issue(map[string]any{"amount_off": 1900, "exclusive": true}).ID, e.alice)
	// m1 1000 then 20% of 4000 = 800: 1800 < 1900 alone. The shipping
	// coupon has no fee to take off.
	pos := max(m1.Position, pl.Position, ship.Position, ex.Position)
	sh := largestRemainder(1900, []int64{3000, 2000}) // 1140, 760
	expectQuote(t, e.post(fmt.Sprintf("/v1/checkout/quote?min_position=%d", pos), e.alice, cart), pricing.Quote{
		TotalDiscount: 1900, GoodsTotal: 5000, Payable: 3100,
		Coupons:       []pricing.AppliedCoupon{{CouponID: ex.ID, Discount: 1900}},
		Lines:         []pricing.LineQuote{{LineID: "a", Discount: sh[0], Payable: 3000 - sh[0]}, {LineID: "b", Discount: sh[1], Payable: 2000 - sh[1]}},
		NotApplicable: []pricing.NotApplicable{{CouponID: ship.ID, Reason: pricing.ReasonNoShippingFee}},
	})
}

// TestCheckoutQuoteWaitsForMinPosition: min_position waits for the usable
// view; past the wait bound it is a 503, without it the answer is at once.
func TestCheckoutQuoteWaitsForMinPosition(t *testing.T) {
	e := newReadEnv(t, withMaxWait(150*time.Millisecond))
	cart := map[string]any{"items": []map[string]any{
		{"line_id": "a", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 3000, "quantity": 1}}}
	c1 := e.claim(e.issue(map[string]any{"amount_off": 100}).ID, e.alice)
	b2 := e.issue(map[string]any{"amount_off": 200})
	e.sync()
	e.paused["view"].pause()
	c2 := e.claim(b2.ID, e.alice)
	msg := expectError(t, e.post(fmt.Sprintf("/v1/checkout/quote?min_position=%d", c2.Position), e.alice, cart), http.StatusServiceUnavailable, CodeUnavailable)
	if !strings.Contains(msg, fmt.Sprint(c2.Position)) {
		t.Fatalf("message %q does not name the position", msg)
	}
	// Without min_position: the view as it is (c2 not there yet).
	r := e.post("/v1/checkout/quote", e.alice, cart)
	expectStatus(t, r, http.StatusOK)
	if q := decode[pricing.Quote](t, r); len(q.Coupons) != 1 || q.Coupons[0].CouponID != c1.ID {
		t.Fatalf("stale quote: %s", r.Body)
	}
	e.paused["view"].resume()
	r = e.post(fmt.Sprintf("/v1/checkout/quote?min_position=%d", c2.Position), e.alice, cart)
	expectStatus(t, r, http.StatusOK)
	if q := decode[pricing.Quote](t, r); len(q.Coupons) != 1 || q.Coupons[0].CouponID != c2.ID || q.TotalDiscount != 200 {
		t.Fatalf("quote after the view caught up: %s", r.Body)
	}
	expectError(t, e.post("/v1/checkout/quote?min_position=-1", e.alice, cart), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, e.post("/v1/checkout/quote?min_position=x", e.alice, cart), http.StatusBadRequest, CodeInvalidArgument)
}

// TestCheckoutQuoteBadCart: every malformed cart is a 400 naming the field.
func TestCheckoutQuoteBadCart(t *testing.T) {
	e := newReadEnv(t)
	// Alice holds a coupon: validation does not depend on holding none.
	e.claim(e.issue(nil).ID, e.alice)
	line := func(id string, over map[string]any) map[string]any {
		l := map[string]any{"line_id": id, "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 100, "quantity": 1}
		for k, v := range over {
			if v == nil {
				delete(l, k)
			} else {
				l[k] = v
			}
		}
		return l
	}
	cart := func(lines ...map[string]any) map[string]any { return map[string]any{"items": lines, "shipping_fee": 0} }
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"negative unit_price", cart(line("a", map[string]any{"unit_price": -1})), "items[0].unit_price"},
		{"quantity 0", cart(line("a", nil), line("b", map[string]any{"quantity": 0})), "items[1].quantity"},
		{"negative quantity", cart(line("a", map[string]any{"quantity": -3})), "items[0].quantity"},
		{"duplicate line ids", cart(line("a", nil), line("a", map[string]any{"product_id": "p2"})), "items[1].line_id"},
		{"missing line id", cart(line("a", map[string]any{"line_id": nil})), "items[0].line_id"},
		{"missing product id", cart(line("a", map[string]any{"product_id": nil})), "items[0].product_id"},
		{"missing merchant id", cart(line("a", map[string]any{"merchant_id": nil})), "items[0].merchant_id"},
		{"too long category id", cart(line("a", map[string]any{"category_id": strings.Repeat("c", 129)})), "items[0].category_id"},
		{"line total too big", cart(line("a", map[string]any{"unit_price": domain.MaxMoney, "quantity": 2})), "items[0].quantity"},
		{"negative shipping fee", map[string]any{"items": []any{line("a", nil)}, "shipping_fee": -5}, "shipping_fee"},
		{"unknown line field", cart(line("a", map[string]any{"colour": "red"})), `"colour"`},
		{"unknown cart field", map[string]any{"items": []any{line("a", nil)}, "coupon_ids": []string{"x"}}, `"coupon_ids"`},
		{"missing items", map[string]any{"shipping_fee": 100}, "items"},
		{"empty items", map[string]any{"items": []any{}}, "items"},
		{"null items", `{"items": null}`, "items"},
		{"string price", cart(line("a", map[string]any{"unit_price": "100"})), "unit_price"},
		{"fractional quantity", cart(line("a", map[string]any{"quantity": 1.5})), "quantity"},
		{"no body", nil, "body"},
		{"not an object", `[1, 2]`, "body"},
		{"trailing data", `{"items": []} {}`, "body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := expectError(t, e.post("/v1/checkout/quote", e.alice, tc.body), http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message %q does not name %s", msg, tc.field)
			}
		})
	}
}

// TestCheckoutRoutesAuth: 401 without a valid token, 403 for the wrong role.
func TestCheckoutRoutesAuth(t *testing.T) {
	e := newReadEnv(t)
	cart := map[string]any{"items": []map[string]any{
		{"line_id": "a", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 100, "quantity": 1}}}
	whatIf := map[string]any{"cart": cart}
	const product = "/v1/products/p1/coupons?merchant_id=m1&category_id=c1"
	for _, tok := range []string{"", "garbage"} {
		expectError(t, e.post("/v1/checkout/quote", tok, cart), http.StatusUnauthorized, CodeUnauthenticated)
		expectError(t, e.post("/v1/pricing/best", tok, whatIf), http.StatusUnauthorized, CodeUnauthenticated)
		expectError(t, e.get(product, tok), http.StatusUnauthorized, CodeUnauthenticated)
	}
	// The quote and the product page are a shopper's; the what-if is the
	// back office's and the order system's.
	for _, tok := range []string{e.admin, e.service} {
		expectError(t, e.post("/v1/checkout/quote", tok, cart), http.StatusForbidden, CodeForbidden)
		expectError(t, e.get(product, tok), http.StatusForbidden, CodeForbidden)
	}
	expectError(t, e.post("/v1/pricing/best", e.alice, whatIf), http.StatusForbidden, CodeForbidden)
	for _, tok := range []string{e.admin, e.service} {
		expectStatus(t, e.post("/v1/pricing/best", tok, whatIf), http.StatusOK)
	}
	expectStatus(t, e.post("/v1/checkout/quote", e.alice, cart), http.StatusOK)
	expectStatus(t, e.get(product, e.alice), http.StatusOK)
	if pos := e.head(); pos != 0 {
		t.Fatalf("checkout reads appended events (position %d)", pos)
	}
}

// TestCheckoutNotConfigured: without the read side the three routes are 503.
func TestCheckoutNotConfigured(t *testing.T) {
	e := newEnv(t)
	cart := map[string]any{"items": []map[string]any{
		{"line_id": "a", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 100, "quantity": 1}}}
	expectError(t, e.post("/v1/checkout/quote", e.alice, cart), http.StatusServiceUnavailable, CodeUnavailable)
	expectError(t, e.post("/v1/pricing/best", e.admin, map[string]any{"cart": cart}), http.StatusServiceUnavailable, CodeUnavailable)
	expectError(t, e.get("/v1/products/p1/coupons", e.alice), http.StatusServiceUnavailable, CodeUnavailable)
}

// TestPricingBestWhatIf: inline coupons, priced at `at` (validity windows
// decide which apply), or now without it; nothing needs to exist.
func TestPricingBestWhatIf(t *testing.T) {
	e := newReadEnv(t)
	day := func(m time.Month, d int) time.Time { return time.Date(2030, m, d, 0, 0, 0, 0, time.UTC) }
	coupon := func(id, kind string, from, until time.Time, over map[string]any) map[string]any {
		c := map[string]any{"coupon_id": id, "kind": kind, "issuer": "platform", "scope": scopeOf("all"),
			"valid_from": from.Format(time.RFC3339), "valid_until": until.Format(time.RFC3339)}
		for k, v := range over {
			c[k] = v
		}
		return c
	}
	cart := map[string]any{"items": []map[string]any{
		{"line_id": "l1", "product_id": "p1", "merchant_id": "m1", "category_id": "c1", "unit_price": 10000, "quantity": 1},
		{"line_id": "l2", "product_id": "p2", "merchant_id": "m1", "category_id": "c1", "unit_price": 99, "quantity": 1},
	}, "shipping_fee": 500}
	always := [2]time.Time{day(1, 1), day(12, 31)}
	coupons := []map[string]any{
		coupon("w1", "threshold", day(7, 1), day(8, 1), map[string]any{"threshold": 8000, "amount_off": 1000}),
		coupon("w2", "direct", day(6, 1), day(7, 15), map[string]any{"amount_off": 300}),
		coupon("w3", "shipping", day(6, 1), day(9, 1), map[string]any{"amount_off": 500}),
		// 1% of 0.99: 0.
		coupon("w4", "percent", always[0], always[1], map[string]any{"percent_off": 1, "scope": scopeOf("product", "p2")}),
		// Another merchant's.
		coupon("w5", "direct", always[0], always[1], map[string]any{"issuer": "m2", "amount_off": 100}),
		// Shipping from 200.00 of goods.
		coupon("w6", "shipping", always[0], always[1], map[string]any{"threshold": 20000, "amount_off": 900}),
	}
	best := func(token string, at any) resp {
		body := map[string]any{"cart": cart, "coupons": coupons}
		if at != nil {
			body["at"] = at
		}
		return e.post("/v1/pricing/best", token, body)
	}
	never := []pricing.NotApplicable{{CouponID: "w4", Reason: pricing.ReasonZeroDiscount},
		{CouponID: "w5", Reason: pricing.ReasonNoEligibleLines}, {CouponID: "w6", Reason: pricing.ReasonBelowThreshold}}
	withNever := func(na ...pricing.NotApplicable) []pricing.NotApplicable { return append(na, never...) }

	// June 15th: w1 is not valid yet; w2 (3.00 over 100.00 and 0.99) and w3.
	// 300*10000/10099 = 297 r 597, 300*99/10099 = 2 r 9502: the unit goes to l2.
	sh := largestRemainder(300, []int64{10000, 99})
	junQuote := pricing.Quote{
		TotalDiscount: 800, GoodsTotal: 10099, ShippingFee: 500, Payable: 10099 - 300,
		Coupons: []pricing.AppliedCoupon{{CouponID: "w2", Discount: 300}, {CouponID: "w3", Discount: 500}},
		Lines: []pricing.LineQuote{{LineID: "l1", Discount: sh[0], Payable: 10000 - sh[0]},
			{LineID: "l2", Discount: sh[1], Payable: 99 - sh[1]}},
		ShippingDiscount: 500,
		NotApplicable:    withNever(pricing.NotApplicable{CouponID: "w1", Reason: pricing.ReasonNotYetValid}),
	}
	if !slices.Equal(sh, []int64{297, 3}) {
		t.Fatalf("spread %v", sh)
	}
	expectQuote(t, best(e.admin, "2030-06-15T00:00:00Z"), junQuote)
	// Without `at`: now (t0, June 1st 12:00), the same coupons apply.
	expectQuote(t, best(e.service, nil), junQuote)
	expectQuote(t, best(e.service, ""), junQuote)
	// A time with an offset is the same instant.
	expectQuote(t, best(e.admin, "2030-06-15T08:00:00+08:00"), junQuote)

	// July 20th: w2 is over, w1 applies: 10.00 from 80.00.
	// 1000*10000/10099 = 990 r 1990, 1000*99/10099 = 9 r 8109: the unit goes to l2.
	sh = largestRemainder(1000, []int64{10000, 99})
	if !slices.Equal(sh, []int64{990, 10}) {
		t.Fatalf("spread %v", sh)
	}
	expectQuote(t, best(e.admin, "2030-07-20T00:00:00Z"), pricing.Quote{
		TotalDiscount: 1500, GoodsTotal: 10099, ShippingFee: 500, Payable: 10099 - 1000,
		Coupons: []pricing.AppliedCoupon{{CouponID: "w1", Discount: 1000}, {CouponID: "w3", Discount: 500}},
		Lines: []pricing.LineQuote{{LineID: "l1", Discount: 990, Payable: 9010},
			{LineID: "l2", Discount: 10, Payable: 89}},
		ShippingDiscount: 500,
		NotApplicable:    withNever(pricing.NotApplicable{CouponID: "w2", Reason: pricing.ReasonExpired}),
	})
	// valid_until is exclusive: on September 1st w3 is over too; in May
	// nothing has started.
	none := func(reason string, ids ...string) pricing.Quote {
		q := pricing.Quote{GoodsTotal: 10099, ShippingFee: 500, Payable: 10599, Coupons: []pricing.AppliedCoupon{},
			Lines: []pricing.LineQuote{{LineID: "l1", Payable: 10000}, {LineID: "l2", Payable: 99}}}
		for _, id := range ids {
			q.NotApplicable = append(q.NotApplicable, pricing.NotApplicable{CouponID: id, Reason: reason})
		}
		q.NotApplicable = withNever(q.NotApplicable...)
		return q
	}
	expectQuote(t, best(e.admin, "2030-09-01T00:00:00Z"), none(pricing.ReasonExpired, "w1", "w2", "w3"))
	expectQuote(t, best(e.admin, "2030-05-01T00:00:00Z"), none(pricing.ReasonNotYetValid, "w1", "w2", "w3"))

	// No coupons: the plain totals.
	r := e.post("/v1/pricing/best", e.admin, map[string]any{"cart": cart})
	expectStatus(t, r, http.StatusOK)
	if q := decode[pricing.Quote](t, r); q.TotalDiscount != 0 || q.Payable != 10599 || len(q.Coupons) != 0 || len(q.NotApplicable) != 0 {
		t.Fatalf("no coupons: %s", r.Body)
	}

	// Invalid requests name the field.
	okCoupon := coupon("ok", "direct", always[0], always[1], map[string]any{"amount_off": 100})
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"missing cart", map[string]any{"coupons": []any{okCoupon}}, "cart"},
		{"null cart", `{"cart": null}`, "cart"},
		{"bad line", map[string]any{"cart": map[string]any{"items": []map[string]any{
			{"line_id": "a", "product_id": "p", "merchant_id": "m", "category_id": "c", "unit_price": 1, "quantity": 0}}}}, "items[0].quantity"},
		{"bad at", map[string]any{"cart": cart, "at": "tomorrow"}, "at"},
		{"percent over 99", map[string]any{"cart": cart, "coupons": []any{okCoupon,
			coupon("p", "percent", always[0], always[1], map[string]any{"percent_off": 100})}}, "coupons[1].percent_off"},
		{"unknown kind", map[string]any{"cart": cart, "coupons": []any{coupon("k", "bogus", always[0], always[1], nil)}}, "coupons[0].kind"},
		{"duplicate coupon ids", map[string]any{"cart": cart, "coupons": []any{okCoupon, okCoupon}}, "coupons[1].coupon_id"},
		{"threshold without threshold", map[string]any{"cart": cart, "coupons": []any{
			coupon("t", "threshold", always[0], always[1], map[string]any{"amount_off": 100})}}, "coupons[0].threshold"},
		{"scoped shipping", map[string]any{"cart": cart, "coupons": []any{
			coupon("s", "shipping", always[0], always[1], map[string]any{"amount_off": 100, "scope": scopeOf("merchant", "m1")})}}, "coupons[0].scope.kind"},
		{"window backwards", map[string]any{"cart": cart, "coupons": []any{
			coupon("w", "direct", always[1], always[0], map[string]any{"amount_off": 100})}}, "coupons[0].valid_until"},
		{"missing window", map[string]any{"cart": cart, "coupons": []any{
			map[string]any{"coupon_id": "n", "kind": "direct", "issuer": "platform", "amount_off": 100, "scope": scopeOf("all")}}}, "coupons[0].valid_from"},
		{"unknown coupon field", map[string]any{"cart": cart, "coupons": []any{
			coupon("u", "direct", always[0], always[1], map[string]any{"amount_off": 100, "stackable": true})}}, `"stackable"`},
		{"unknown field", map[string]any{"cart": cart, "user_id": "alice"}, `"user_id"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := expectError(t, e.post("/v1/pricing/best", e.admin, tc.body), http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message %q does not name %s", msg, tc.field)
			}
		})
	}
}

// productPageBody is the body of GET /v1/products/{id}/coupons.
type productPageBody struct {
	ProductID string                 `json:"product_id"`
	Batches   []readapi.ProductBatch `json:"batches"`
}

// pageEntry is what a test checks of a listed batch.
type pageEntry struct {
	id                     string
	claimable, claimedByMe bool
	count                  int64
}

func (e *env) productPage(path, token string) []pageEntry {
	e.t.Helper()
	r := e.get(path, token)
	expectStatus(e.t, r, http.StatusOK)
	p := decode[productPageBody](e.t, r)
	out := []pageEntry{}
	for _, b := range p.Batches {
		if b.ClaimedByMe != (b.ClaimedCount > 0) || b.Rules.Name == "" || b.TotalStock <= 0 {
			e.t.Fatalf("product page entry %+v", b)
		}
		out = append(out, pageEntry{b.ID, b.Claimable, b.ClaimedByMe, b.ClaimedCount})
	}
	return out
}

// wantPage orders entries as the page does: claimable first, then by id.
func wantPage(es ...pageEntry) []pageEntry {
	out := slices.Clone(es)
	slices.SortFunc(out, func(a, b pageEntry) int {
		if a.claimable != b.claimable {
			if a.claimable {
				return -1
			}
			return 1
		}
		return strings.Compare(a.id, b.id)
	})
	if out == nil {
		out = []pageEntry{}
	}
	return out
}

// TestProductCoupons: the batches that apply to a product by scope and
// issuer, claimable now or already claimed by the caller.
func TestProductCoupons(t *testing.T) {
	e := newReadEnv(t)
	issue := func(name string, over map[string]any) string {
		if over == nil {
			over = map[string]any{}
		}
		over["name"] = name
		return e.issue(over).ID
	}
	// Product pX of merchant mA in category cA; product pY of mB in cB.
	all := issue("platform all", nil)
	merchA := issue("platform on mA", map[string]any{"scope": scopeOf("merchant", "mZ", "mA")})
	merchB := issue("platform on mB", map[string]any{"scope": scopeOf("merchant", "mB")})
	catA := issue("platform on cA", map[string]any{"kind": "threshold", "threshold": 10000, "scope": scopeOf("category", "cA")})
	catB := issue("platform on cB", map[string]any{"scope": scopeOf("category", "cB")})
	prodX := issue("platform on pX", map[string]any{"kind": "percent", "amount_off": nil, "percent_off": 15, "scope": scopeOf("product", "pX")})
	prodY := issue("platform on pY", map[string]any{"scope": scopeOf("product", "pY", "pW")})
	byA := issue("mA's", map[string]any{"issuer": "mA"})
	byB := issue("mB's", map[string]any{"issuer": "mB"})
	issue("mA's on mB", map[string]any{"issuer": "mA", "scope": scopeOf("merchant", "mB")}) // never applies anywhere
	byAOnX := issue("mA's on pX", map[string]any{"issuer": "mA", "scope": scopeOf("product", "pX", "pY")})
	ship := issue("platform shipping", map[string]any{"kind": "shipping"})
	shipB := issue("mB's shipping", map[string]any{"kind": "shipping", "issuer": "mB"})
	twice := issue("platform all, two each", map[string]any{"per_user_limit": 2})
	paused := issue("platform all, paused after a claim", nil)
	stopped := issue("platform all, stopped after a claim", map[string]any{"scope": scopeOf("product", "pX")})
	pausedNotMine := issue("paused", nil)
	stoppedNotMine := issue("stopped", nil)
	scheduled := issue("scheduled", map[string]any{"claim_starts_at": t0.Add(time.Hour).Format(time.RFC3339)})
	issue("targeted", map[string]any{"audience": "targeted"})
	// Valid until t0+30m, claimable until t0+24h: from t0+30m a claim would
	// be born expired (422), so it is no longer claimable.
	bornExpired := issue("window over", fixedWindow(map[string]any{}, t0.Add(-2*time.Hour), t0.Add(30*time.Minute)))
	bornExpiredMine := issue("window over, mine", fixedWindow(map[string]any{"scope": scopeOf("category", "cA")}, t0.Add(-2*time.Hour), t0.Add(30*time.Minute)))

	e.claim(twice, e.alice)
	e.claim(paused, e.alice)
	e.claim(stopped, e.alice)
	e.claim(byA, e.alice)
	e.claim(bornExpiredMine, e.alice)
	for _, b := range []string{paused, pausedNotMine} {
		expectStatus(t, e.post("/v1/batches/"+b+"/pause", e.admin, nil), http.StatusOK)
	}
	for _, b := range []string{stopped, stoppedNotMine} {
		expectStatus(t, e.post("/v1/batches/"+b+"/stop", e.admin, nil), http.StatusOK)
	}
	e.sync()

	const pX = "/v1/products/pX/coupons?merchant_id=mA&category_id=cA"
	const pY = "/v1/products/pY/coupons?merchant_id=mB&category_id=cB"
	mine := func(id string, claimable bool, n int64) pageEntry { return pageEntry{id, claimable, true, n} }
	open := func(id string) pageEntry { return pageEntry{id: id, claimable: true} }
	xAlice := wantPage(open(all), open(merchA), open(catA), open(prodX), mine(byA, true, 1), open(byAOnX), open(ship),
		mine(twice, true, 1), mine(paused, false, 1), mine(stopped, false, 1), open(bornExpired), mine(bornExpiredMine, true, 1))
	if got := e.productPage(pX, e.alice); !slices.Equal(got, xAlice) {
		t.Fatalf("pX for alice\n got  %v\n want %v", got, xAlice)
	}
	xBob := wantPage(open(all), open(merchA), open(catA), open(prodX), open(byA), open(byAOnX), open(ship), open(twice),
		open(bornExpired), open(bornExpiredMine))
	if got := e.productPage(pX, e.bob); !slices.Equal(got, xBob) {
		t.Fatalf("pX for bob\n got  %v\n want %v", got, xBob)
	}
	// pY: mB's batches, no mA batch (even scoped to pY), mB's shipping coupon.
	yAlice := wantPage(open(all), open(merchB), open(catB), open(prodY), open(byB), open(ship), open(shipB),
		mine(twice, true, 1), mine(paused, false, 1), open(bornExpired))
	if got := e.productPage(pY, e.alice); !slices.Equal(got, yAlice) {
		t.Fatalf("pY for alice\n got  %v\n want %v", got, yAlice)
	}
	// Without merchant and category nothing scoped to them, nor any
	// merchant's batch, can be matched.
	xBare := wantPage(open(all), open(prodX), open(ship), mine(twice, true, 1), mine(paused, false, 1), mine(stopped, false, 1), open(bornExpired))
	if got := e.productPage("/v1/products/pX/coupons", e.alice); !slices.Equal(got, xBare) {
		t.Fatalf("bare pX for alice\n got  %v\n want %v", got, xBare)
	}
	// A product no batch is scoped to, of a merchant without batches.
	if got, want := e.productPage("/v1/products/pQ/coupons?merchant_id=mQ&category_id=cQ", e.bob),
		wantPage(open(all), open(ship), open(twice), open(bornExpired)); !slices.Equal(got, want) {
		t.Fatalf("pQ for bob\n got  %v\n want %v", got, want)
	}

	// A second claim of `twice` counts; past the coupons' validity window the
	// window-over batches are no longer claimable (a claim would be refused);
	// the scheduled batch has started.
	e.claim(twice, e.alice)
	expectError(t, e.post("/v1/batches/"+twice+"/claim", e.alice, nil), http.StatusConflict, CodeAlreadyClaimed)
	e.clock.Advance(time.Hour) // also past the catalog cache's TTL
	expectError(t, e.post("/v1/batches/"+bornExpired+"/claim", e.bob, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	xAlice = wantPage(open(all), open(merchA), open(catA), open(prodX), mine(byA, true, 1), open(byAOnX), open(ship),
		mine(twice, true, 2), mine(paused, false, 1), mine(stopped, false, 1), mine(bornExpiredMine, false, 1), open(scheduled))
	if got := e.productPage(pX, e.alice); !slices.Equal(got, xAlice) {
		t.Fatalf("pX for alice after an hour\n got  %v\n want %v", got, xAlice)
	}

	// Resuming shows the batch to everyone again.
	expectStatus(t, e.post("/v1/batches/"+pausedNotMine+"/resume", e.admin, nil), http.StatusOK)
	e.sync()
	e.clock.Advance(time.Second)
	if got := e.productPage("/v1/products/pQ/coupons?merchant_id=mQ&category_id=cQ", e.bob); !slices.Contains(got, open(pausedNotMine)) {
		t.Fatalf("resumed batch not listed: %v", got)
	}
}

func TestProductCouponsBadIDs(t *testing.T) {
	e := newReadEnv(t)
	long := strings.Repeat("x", 129)
	for _, tc := range []struct{ path, field string }{
		{"/v1/products/" + long + "/coupons", "product_id"},
		{"/v1/products/p1/coupons?merchant_id=" + long, "merchant_id"},
		{"/v1/products/p1/coupons?category_id=" + long, "category_id"},
		{"/v1/products/p1/coupons?merchant_id=m%01", "merchant_id"},
		{"/v1/products/p1/coupons?merchant_id=m1&category_id=%7F", "category_id"},
	} {
		msg := expectError(t, e.get(tc.path, e.alice), http.StatusBadRequest, CodeInvalidArgument)
		if !strings.Contains(msg, tc.field) {
			t.Fatalf("%s: message %q does not name %s", tc.path, msg, tc.field)
		}
	}
}

// checkoutUserCoupons is a usable view holding one user's coupons.
type checkoutUserCoupons []projections.ViewCoupon

func (f checkoutUserCoupons) All(context.Context, string) ([]projections.ViewCoupon, error) {
	return f, nil
}

// checkoutEmptyCatalog is an empty batch catalog.
type checkoutEmptyCatalog struct{}

func (checkoutEmptyCatalog) List(context.Context, string, string, string, int) (readapi.ViewPage, error) {
	return readapi.ViewPage{}, nil
}
func (checkoutEmptyCatalog) Batches(context.Context) ([]projections.BatchEntry, error) {
	return nil, nil
}

type checkoutNoCounts struct{}

func (checkoutNoCounts) UserCounts(context.Context, []string, string) (map[string]int64, error) {
	return map[string]int64{}, nil
}

func checkoutViewCoupon(id, issuer string, amount int64, from, until time.Time) projections.ViewCoupon {
	return projections.ViewCoupon{CouponID: id, UserID: "alice", Terms: projections.ViewTerms{
		BatchID: "b-" + id, Kind: domain.KindDirect, Issuer: issuer, AmountOff: amount, Scope: domain.Scope{Kind: domain.ScopeAll},
		ValidFrom: from.UnixMilli(), ValidUntil: until.UnixMilli(), ObtainedAt: from.UnixMilli()}}
}

func newTestCheckout(t *testing.T, cs []projections.ViewCoupon) *readapi.Checkout {
	t.Helper()
	clock := &testClock{now: t0}
	cat, err := readapi.NewCatalog(checkoutEmptyCatalog{}, clock, 0)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := readapi.NewCheckout(checkoutUserCoupons(cs), cat, checkoutNoCounts{}, clock)
	if err != nil {
		t.Fatal(err)
	}
	return ck
}

// TestCheckoutQuoteBeyondMaxCoupons: a shopper may hold more usable coupons
// than the engine takes in one call. Those that can never apply to the cart
// (here: expired ones the expiry has not removed yet, and locked ones) do
// not crowd out the ones that do.
func TestCheckoutQuoteBeyondMaxCoupons(t *testing.T) {
	cart := pricing.Cart{Items: []pricing.Item{{LineID: "l1", ProductID: "p1", MerchantID: "m1", CategoryID: "c1", UnitPrice: 10000, Quantity: 1}}}
	var cs []projections.ViewCoupon
	var wantNA []pricing.NotApplicable
	for i := range pricing.MaxCoupons + 5 {
		id := fmt.Sprintf("x%03d", i)
		cs = append(cs, checkoutViewCoupon(id, domain.IssuerPlatform, 100, t0.Add(-48*time.Hour), t0.Add(-24*time.Hour)))
		wantNA = append(wantNA, pricing.NotApplicable{CouponID: id, Reason: pricing.ReasonExpired})
	}
	cs = append(cs, checkoutViewCoupon("best", domain.IssuerPlatform, 5000, t0.Add(-time.Hour), t0.Add(30*24*time.Hour)),
		checkoutViewCoupon("m1", "m1", 1000, t0.Add(-time.Hour), t0.Add(10*24*time.Hour)))
	locked := checkoutViewCoupon("held", domain.IssuerPlatform, 9000, t0.Add(-time.Hour), t0.Add(time.Hour))
	locked.Locked, locked.OrderID = true, "o-1"
	cs = append(cs, locked)
	q, err := newTestCheckout(t, cs).Quote(t.Context(), "alice", cart)
	if err != nil {
		t.Fatal(err)
	}
	want := pricing.Quote{TotalDiscount: 6000, GoodsTotal: 10000, Payable: 4000,
		Coupons:       []pricing.AppliedCoupon{{CouponID: "m1", Discount: 1000}, {CouponID: "best", Discount: 5000}},
		Lines:         []pricing.LineQuote{{LineID: "l1", Discount: 6000, Payable: 4000}},
		NotApplicable: wantNA}
	if !reflect.DeepEqual(q.Quote, want) || !q.Exact || len(q.OmittedCoupons) != 0 {
		t.Fatalf("quote with %d coupons\n got  %+v\n want %+v, exact", len(cs), q, want)
	}

	// More than MaxCoupons apply: the ones expiring soonest are priced
	// (coupon i takes 100+i off and expires i+1 hours from now: the last,
	// biggest one is left out).
	cs = nil
	for i := range pricing.MaxCoupons + 1 {
		cs = append(cs, checkoutViewCoupon(fmt.Sprintf("y%03d", i), domain.IssuerPlatform, int64(100+i), t0.Add(-time.Hour), t0.Add(time.Duration(i+1)*time.Hour)))
	}
	q, err = newTestCheckout(t, cs).Quote(t.Context(), "alice", cart)
	if err != nil {
		t.Fatal(err)
	}
	if q.TotalDiscount != 100+pricing.MaxCoupons-1 || len(q.Coupons) != 1 || q.Coupons[0].CouponID != fmt.Sprintf("y%03d", pricing.MaxCoupons-1) ||
		q.Exact || len(q.OmittedCoupons) != 1 || q.OmittedCoupons[0] != fmt.Sprintf("y%03d", pricing.MaxCoupons) {
		t.Fatalf("quote over MaxCoupons applicable: %+v", q)
	}

	// An invalid cart is still a 400 naming the field, whatever the user holds.
	_, err = newTestCheckout(t, cs).Quote(t.Context(), "alice", pricing.Cart{Items: []pricing.Item{{LineID: "l1", ProductID: "p1", MerchantID: "m1", CategoryID: "c1", Quantity: 0}}})
	if !errors.Is(err, domain.ErrInvalidArgument) || !strings.Contains(err.Error(), "items[0].quantity") {
		t.Fatalf("invalid cart: %v", err)
	}
}
