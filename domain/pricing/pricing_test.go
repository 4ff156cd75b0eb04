package pricing

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

var at0 = time.Date(2026, 11, 15, 12, 0, 0, 0, time.UTC)

func item(line, merchant, cat, prod string, price, qty int64) Item {
	return Item{LineID: line, ProductID: prod, MerchantID: merchant, CategoryID: cat, UnitPrice: price, Quantity: qty}
}

// Coupon builders: valid from a day before at0 to a day after unless changed.
func mk(id string, kind domain.Kind, issuer string, thr, amt int64) Coupon {
	return Coupon{CouponID: id, Kind: kind, Issuer: issuer, Threshold: thr, AmountOff: amt,
		Scope: domain.Scope{Kind: domain.ScopeAll}, ValidFrom: at0.Add(-24 * time.Hour), ValidUntil: at0.Add(24 * time.Hour)}
}
func direct(id, issuer string, amt int64) Coupon { return mk(id, domain.KindDirect, issuer, 0, amt) }
func thresh(id, issuer string, thr, amt int64) Coupon {
	return mk(id, domain.KindThreshold, issuer, thr, amt)
}
func shipc(id string, thr, amt int64) Coupon {
	return mk(id, domain.KindShipping, domain.IssuerPlatform, thr, amt)
}
func pct(id, issuer string, p, maxD int64) Coupon {
	c := mk(id, domain.KindPercent, issuer, 0, 0)
	c.PercentOff, c.MaxDiscount = p, maxD
	return c
}
func (c Coupon) in(kind string, ids ...string) Coupon {
	c.Scope = domain.Scope{Kind: kind, IDs: ids}
	return c
}
func (c Coupon) until(d time.Duration) Coupon { c.ValidUntil = at0.Add(d); return c }
func (c Coupon) from(d time.Duration) Coupon  { c.ValidFrom = at0.Add(d); return c }
func (c Coupon) excl() Coupon                 { c.Exclusive = true; return c }
func (c Coupon) min(thr int64) Coupon         { c.Threshold = thr; return c }

const P = domain.IssuerPlatform

func TestSpecWorkedExample(t *testing.T) {
	cart := Cart{Items: []Item{item("l1", "m1", "c1", "p1", 12900, 2)}, ShippingFee: 1000}
	nov := func(d int) time.Time { return time.Date(2026, 11, d, 0, 0, 0, 0, time.UTC) }
	c1 := thresh("c-1", P, 20000, 5000).in(domain.ScopeCategory, "c1")
	c1.ValidFrom, c1.ValidUntil = nov(1), nov(30)
	c9 := thresh("c-9", P, 30000, 3000)
	c9.ValidFrom, c9.ValidUntil = nov(1), nov(30)
	q, err := Best(cart, []Coupon{c1, c9}, nov(11))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(q)
	want := `{"total_discount":5000,"goods_total":25800,"shipping_fee":1000,"payable":21800,` +
		`"coupons":[{"coupon_id":"c-1","discount":5000}],` +
		`"lines":[{"line_id":"l1","discount":5000,"payable":20800}],` +
		`"shipping_discount":0,"not_applicable":[{"coupon_id":"c-9","reason":"below_threshold"}]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

func TestNoCouponsQuote(t *testing.T) {
	q, err := Best(Cart{Items: []Item{item("l1", "m1", "c1", "p1", 100, 1)}, ShippingFee: 5}, nil, at0)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := json.Marshal(q)
	want := `{"total_discount":0,"goods_total":100,"shipping_fee":5,"payable":105,"coupons":[],` +
		`"lines":[{"line_id":"l1","discount":0,"payable":100}],"shipping_discount":0,"not_applicable":[]}`
	if string(got) != want {
		t.Fatalf("got  %s\nwant %s", got, want)
	}
}

type bestCase struct {
	name     string
	cart     Cart
	coupons  []Coupon
	at       time.Time // zero: at0
	total    int64
	chosen   []string // in output order
	lines    []int64  // per line discount, nil: not checked
	ship     int64
	notAppl  map[string]string
	couponDs []int64 // per chosen coupon discount, nil: not checked
}

func runBestCases(t *testing.T, cases []bestCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = at0
			}
			q, err := Best(tc.cart, tc.coupons, at)
			if err != nil {
				t.Fatal(err)
			}
			var ids []string
			var ds []int64
			for _, c := range q.Coupons {
				ids = append(ids, c.CouponID)
				ds = append(ds, c.Discount)
			}
			if q.TotalDiscount != tc.total || !slices.Equal(ids, tc.chosen) {
				t.Fatalf("total %d coupons %v; want %d %v\n%+v", q.TotalDiscount, ids, tc.total, tc.chosen, q)
			}
			if tc.couponDs != nil && !slices.Equal(ds, tc.couponDs) {
				t.Fatalf("coupon discounts %v, want %v", ds, tc.couponDs)
			}
			if tc.lines != nil {
				var got []int64
				for _, l := range q.Lines {
					got = append(got, l.Discount)
				}
				if !slices.Equal(got, tc.lines) {
					t.Fatalf("line discounts %v, want %v", got, tc.lines)
				}
			}
			if q.ShippingDiscount != tc.ship {
				t.Fatalf("shipping discount %d, want %d", q.ShippingDiscount, tc.ship)
			}
			if tc.notAppl != nil {
				got := map[string]string{}
				for _, n := range q.NotApplicable {
					got[n.CouponID] = n.Reason
				}
				if len(got) != len(tc.notAppl) {
					t.Fatalf("not_applicable %v, want %v", got, tc.notAppl)
				}
				for k, v := range tc.notAppl {
					if got[k] != v {
						t.Fatalf("not_applicable %v, want %v", got, tc.notAppl)
					}
				}
			}
			// invariants
			var sum, gt int64
			for i, l := range q.Lines {
				if l.Payable < 0 {
					t.Fatalf("negative payable %+v", l)
				}
				sum += l.Discount
				gt += tc.cart.Items[i].UnitPrice * tc.cart.Items[i].Quantity
			}
			if sum+q.ShippingDiscount != q.TotalDiscount || q.Payable != gt+tc.cart.ShippingFee-q.TotalDiscount {
				t.Fatalf("invariants broken: %+v", q)
			}
		})
	}
}

// Three lines: A m1/c1/p1 1000, B m1/c2/p2 2000, C m2/c1/p3 3000.
var abc = Cart{Items: []Item{
	item("A", "m1", "c1", "p1", 1000, 1), item("B", "m1", "c2", "p2", 1000, 2), item("C", "m2", "c1", "p3", 3000, 1),
}}

func TestEligibility(t *testing.T) {
	runBestCases(t, []bestCase{
		{name: "platform scope all spreads over every line", cart: abc, coupons: []Coupon{direct("x", P, 100)},
			total: 100, chosen: []string{"x"}, lines: []int64{17, 33, 50}},
		{name: "scope merchant", cart: abc, coupons: []Coupon{direct("x", P, 100).in(domain.ScopeMerchant, "m2")},
			total: 100, chosen: []string{"x"}, lines: []int64{0, 0, 100}},
		{name: "scope category", cart: abc, coupons: []Coupon{direct("x", P, 100).in(domain.ScopeCategory, "c1")},
			total: 100, chosen: []string{"x"}, lines: []int64{25, 0, 75}},
		{name: "scope product", cart: abc, coupons: []Coupon{direct("x", P, 100).in(domain.ScopeProduct, "p2", "p9")},
			total: 100, chosen: []string{"x"}, lines: []int64{0, 100, 0}},
		{name: "merchant coupon only on its merchant's lines", cart: abc, coupons: []Coupon{direct("x", "m1", 300)},
			total: 300, chosen: []string{"x"}, lines: []int64{100, 200, 0}},
		{name: "merchant coupon scoped to another merchant", cart: abc,
			coupons: []Coupon{direct("x", "m1", 300).in(domain.ScopeMerchant, "m2")},
			total:   0, notAppl: map[string]string{"x": ReasonNoEligibleLines}},
		{name: "merchant coupon scoped to a category: its own lines only", cart: abc,
			coupons: []Coupon{direct("x", "m1", 3000).in(domain.ScopeCategory, "c1")},
			total:   1000, chosen: []string{"x"}, lines: []int64{1000, 0, 0}},
		{name: "merchant with no line in the cart", cart: abc, coupons: []Coupon{direct("x", "m7", 300)},
			total: 0, notAppl: map[string]string{"x": ReasonNoEligibleLines}},
		{name: "direct capped by the eligible amount", cart: abc, coupons: []Coupon{direct("x", "m2", 5000)},
			total: 3000, chosen: []string{"x"}, lines: []int64{0, 0, 3000}},
	})
}

func TestStackingAndExclusivity(t *testing.T) {
	two := Cart{Items: []Item{item("a", "m1", "c1", "p1", 10000, 1), item("b", "m2", "c1", "p2", 10000, 1)}, ShippingFee: 1000}
	runBestCases(t, []bestCase{
		{name: "one coupon per merchant", cart: two, coupons: []Coupon{direct("x", "m1", 300), direct("y", "m1", 500)},
			total: 500, chosen: []string{"y"}},
		{name: "merchants stack", cart: two, coupons: []Coupon{direct("x", "m1", 500), direct("y", "m2", 400)},
			total: 900, chosen: []string{"x", "y"}},
		{name: "one platform goods coupon", cart: two, coupons: []Coupon{direct("x", P, 100), direct("y", P, 200)},
			total: 200, chosen: []string{"y"}},
		{name: "one shipping coupon", cart: two, coupons: []Coupon{shipc("x", 0, 500), shipc("y", 0, 800)},
			total: 800, chosen: []string{"y"}, ship: 800},
		{name: "shipping discount capped by the fee", cart: two, coupons: []Coupon{shipc("x", 0, 5000)},
			total: 1000, chosen: []string{"x"}, ship: 1000},
		{name: "merchant, platform and shipping together, in order", cart: two,
			coupons: []Coupon{shipc("s", 0, 600), direct("p", P, 1000), direct("y", "m2", 400), direct("x", "m1", 500)},
			total:   2500, chosen: []string{"x", "y", "p", "s"}, couponDs: []int64{500, 400, 1000, 600}, ship: 600,
			lines: []int64{500 + 497, 400 + 503}},
		{name: "exclusive loses to a bigger combination", cart: two,
			coupons: []Coupon{direct("e", P, 700).excl(), direct("x", "m1", 500), direct("y", "m2", 400)},
			total:   900, chosen: []string{"x", "y"}},
		{name: "exclusive alone when bigger", cart: two,
			coupons: []Coupon{direct("e", P, 1000).excl(), direct("x", "m1", 500), direct("y", "m2", 400)},
			total:   1000, chosen: []string{"e"}},
		{name: "exclusive merchant coupon alone", cart: two,
			coupons: []Coupon{direct("e", "m1", 2000).excl(), direct("x", "m2", 500), shipc("s", 0, 600)},
			total:   2000, chosen: []string{"e"}},
		{name: "exclusive shipping coupon alone", cart: two,
			coupons: []Coupon{shipc("e", 0, 1000).excl(), direct("x", "m2", 500)},
			total:   1000, chosen: []string{"e"}, ship: 1000},
		{name: "merchant-issued shipping coupon applies to the whole fee", cart: two,
			coupons: []Coupon{mk("s", domain.KindShipping, "m9", 0, 300)},
			total:   300, chosen: []string{"s"}, ship: 300},
	})
}

func TestValidityEdges(t *testing.T) {
	one := Cart{Items: []Item{item("a", "m1", "c1", "p1", 1000, 1)}}
	runBestCases(t, []bestCase{
		{name: "valid_from == at is valid", cart: one, coupons: []Coupon{direct("x", P, 10).from(0)},
			total: 10, chosen: []string{"x"}},
		{name: "valid_from just after at", cart: one, coupons: []Coupon{direct("x", P, 10).from(time.Nanosecond)},
			total: 0, notAppl: map[string]string{"x": ReasonNotYetValid}},
		{name: "valid_until == at is expired", cart: one, coupons: []Coupon{direct("x", P, 10).until(0)},
			total: 0, notAppl: map[string]string{"x": ReasonExpired}},
		{name: "valid_until just after at", cart: one, coupons: []Coupon{direct("x", P, 10).until(time.Nanosecond)},
			total: 10, chosen: []string{"x"}},
		{name: "times in another zone compare as instants", cart: one,
			coupons: []Coupon{direct("x", P, 10).until(0)}, at: at0.In(time.FixedZone("CST", 8*3600)),
			total: 0, notAppl: map[string]string{"x": ReasonExpired}},
	})
}

func TestThresholdsAndPercent(t *testing.T) {
	line := func(v int64) Cart { return Cart{Items: []Item{item("a", "m1", "c1", "p1", v, 1)}} }
	runBestCases(t, []bestCase{
		{name: "S == threshold applies", cart: line(1000), coupons: []Coupon{thresh("x", P, 1000, 100)},
			total: 100, chosen: []string{"x"}},
		{name: "S == threshold-1 does not", cart: line(999), coupons: []Coupon{thresh("x", P, 1000, 100)},
			total: 0, notAppl: map[string]string{"x": ReasonBelowThreshold}},
		{name: "threshold on a direct coupon", cart: line(999), coupons: []Coupon{direct("x", P, 100).min(1000)},
			total: 0, notAppl: map[string]string{"x": ReasonBelowThreshold}},
		{name: "threshold on a percent coupon", cart: line(999), coupons: []Coupon{pct("x", P, 10, 0).min(1000)},
			total: 0, notAppl: map[string]string{"x": ReasonBelowThreshold}},
		{name: "percent floors", cart: line(999), coupons: []Coupon{pct("x", P, 15, 0)},
			total: 149, chosen: []string{"x"}},
		{name: "percent capped by max_discount", cart: line(999), coupons: []Coupon{pct("x", P, 15, 100)},
			total: 100, chosen: []string{"x"}},
		{name: "cap above the floor changes nothing", cart: line(999), coupons: []Coupon{pct("x", P, 15, 150)},
			total: 149, chosen: []string{"x"}},
		{name: "percent flooring to 0 is not applicable", cart: line(99), coupons: []Coupon{pct("x", P, 1, 0)},
			total: 0, notAppl: map[string]string{"x": ReasonZeroDiscount}},
		{name: "percent of exactly 1 unit", cart: line(100), coupons: []Coupon{pct("x", P, 1, 0)},
			total: 1, chosen: []string{"x"}},
		{name: "free lines give zero_eligible_amount", cart: line(0), coupons: []Coupon{direct("x", P, 10)},
			total: 0, notAppl: map[string]string{"x": ReasonZeroEligibleAmount}},
	})
}

func TestLargestRemainder(t *testing.T) {
	runBestCases(t, []bestCase{
		{name: "leftover units to the largest remainders", cart: Cart{Items: []Item{
			item("a", "m1", "c", "p", 1, 1), item("b", "m1", "c", "p", 2, 1)}},
			coupons: []Coupon{direct("x", P, 2)}, total: 2, chosen: []string{"x"}, lines: []int64{1, 1}},
		{name: "equal remainders: earlier lines first", cart: Cart{Items: []Item{
			item("a", "m1", "c", "p", 1, 1), item("b", "m1", "c", "p", 1, 1), item("c", "m1", "c", "p", 1, 1)}},
			coupons: []Coupon{direct("x", P, 2)}, total: 2, chosen: []string{"x"}, lines: []int64{1, 1, 0}},
		{name: "tie to the earlier line even when it is smaller in the id order", cart: Cart{Items: []Item{
			item("z", "m1", "c", "p", 5, 1), item("a", "m1", "c", "p", 5, 1)}},
			coupons: []Coupon{direct("x", P, 1)}, total: 1, chosen: []string{"x"}, lines: []int64{1, 0}},
		{name: "spread after a merchant coupon uses current amounts", cart: Cart{Items: []Item{
			item("a", "m1", "c", "p", 100, 1), item("b", "m2", "c", "p", 100, 1)}},
			coupons: []Coupon{direct("m", "m1", 50), direct("x", P, 15)}, total: 65, chosen: []string{"m", "x"},
			lines: []int64{50 + 5, 10}},
		{name: "whole amount: lines go to exactly 0", cart: Cart{Items: []Item{
			item("a", "m1", "c", "p", 3, 1), item("b", "m1", "c", "p", 7, 1)}},
			coupons: []Coupon{direct("x", P, 1000)}, total: 10, chosen: []string{"x"}, lines: []int64{3, 7}},
	})
	// Huge amounts: d*a_i needs 128 bits.
	big := domain.MaxMoney / 2
	cart := Cart{Items: []Item{item("a", "m1", "c", "p", big, 1), item("b", "m1", "c", "p", big-1, 1)}}
	q, err := Best(cart, []Coupon{direct("x", P, domain.MaxMoney-7)}, at0)
	if err != nil {
		t.Fatal(err)
	}
	if q.Lines[0].Discount+q.Lines[1].Discount != domain.MaxMoney-7 || q.Lines[0].Payable < 0 || q.Lines[1].Payable < 0 {
		t.Fatalf("%+v", q)
	}
}

func TestShippingAfterGoods(t *testing.T) {
	cart := Cart{Items: []Item{item("a", "m1", "c1", "p1", 10500, 1)}, ShippingFee: 1000}
	runBestCases(t, []bestCase{
		{name: "a smaller goods coupon keeps free shipping", cart: cart,
			coupons: []Coupon{direct("A", "m1", 1000), direct("B", "m1", 400), shipc("S", 10000, 800)},
			total:   1200, chosen: []string{"B", "S"}, ship: 800},
		{name: "G counts the platform coupon too", cart: cart,
			coupons: []Coupon{direct("B", "m1", 400), direct("Q", P, 200), shipc("S", 10000, 800)},
			// {B,Q,S}: G = 9900 < 10000; {B,S} = 1200 beats {Q,S} = 1000 and {B,Q} = 600.
			total: 1200, chosen: []string{"B", "S"}, ship: 800},
		{name: "no fee: shipping coupons never apply", cart: Cart{Items: cart.Items},
			coupons: []Coupon{shipc("S", 0, 800)}, total: 0, notAppl: map[string]string{"S": ReasonNoShippingFee}},
		{name: "shipping threshold on the undiscounted total", cart: cart,
			coupons: []Coupon{shipc("S", 10501, 800)}, total: 0, notAppl: map[string]string{"S": ReasonBelowThreshold}},
		{name: "shipping threshold 0 applies on G == 0", cart: Cart{Items: []Item{item("a", "m1", "c1", "p1", 500, 1)}, ShippingFee: 300},
			coupons: []Coupon{direct("x", P, 500), shipc("S", 0, 300)}, total: 800, chosen: []string{"x", "S"}, ship: 300},
	})
}

func TestNotGreedy(t *testing.T) {
	// m1 10000, m2 2000; the platform coupon needs 10000 after merchant
	// coupons. The biggest single coupon (A) kills it; B keeps it alive.
	cart := Cart{Items: []Item{item("a", "m1", "c1", "p1", 10000, 1), item("b", "m2", "c1", "p2", 2000, 1)}}
	runBestCases(t, []bestCase{
		{name: "merchant coupon pulls the platform coupon under its threshold", cart: cart,
			coupons: []Coupon{direct("A", "m1", 2500), direct("B", "m1", 1800), thresh("P", P, 10000, 2000)},
			total:   3800, chosen: []string{"B", "P"}, couponDs: []int64{1800, 2000}},
		{name: "a coupon giving 0 in the combination is left out", cart: cart,
			coupons: []Coupon{direct("A", "m1", 2500), thresh("P", P, 10000, 2000)},
			total:   2500, chosen: []string{"A"}},
	})
}

func TestTieBreaks(t *testing.T) {
	two := Cart{Items: []Item{item("a", "m1", "c1", "p1", 10000, 1), item("b", "m2", "c1", "p2", 10000, 1)}}
	h := time.Hour
	runBestCases(t, []bestCase{
		{name: "largest total first", cart: two,
			coupons: []Coupon{direct("a", P, 500).until(h), direct("b", P, 501).until(3 * h)},
			total:   501, chosen: []string{"b"}},
		{name: "equal totals: the earlier valid_until", cart: two,
			coupons: []Coupon{direct("a", P, 500).until(2 * h), direct("z", P, 500).until(h)},
			total:   500, chosen: []string{"z"}},
		{name: "a shorter list wins a tie of its prefix", cart: two,
			coupons: []Coupon{thresh("P", P, 20000, 1000).until(h), direct("M1", "m1", 500).until(h), direct("M2", "m2", 500).until(2 * h)},
			total:   1000, chosen: []string{"P"}},
		{name: "element by element, earliest first", cart: two,
			coupons: []Coupon{thresh("P", P, 20000, 1000).until(2 * h), direct("M1", "m1", 500).until(h), direct("M2", "m2", 500).until(3 * h)},
			total:   1000, chosen: []string{"M1", "M2"}},
		{name: "second element decides", cart: two,
			coupons: []Coupon{
				direct("A1", "m1", 500).until(h), direct("A2", "m2", 500).until(3 * h),
				direct("B1", "m1", 500).until(h), direct("B2", "m2", 500).until(2 * h),
			},
			total: 1000, chosen: []string{"A1", "B2"}},
		{name: "equal valid_until lists: the smaller sorted ids", cart: two,
			coupons: []Coupon{direct("b", P, 500), direct("a", P, 500)},
			total:   500, chosen: []string{"a"}},
		{name: "sorted id lists compare element by element", cart: two,
			coupons: []Coupon{direct("x", "m1", 500), direct("w", "m2", 500), direct("b", "m1", 500), direct("z", "m2", 500)},
			total:   1000, chosen: []string{"b", "w"}},
		{name: "ids decide among identical claims of one batch", cart: two,
			coupons: []Coupon{direct("c-3", "m1", 500), direct("c-1", "m1", 500), direct("c-2", "m1", 500)},
			total:   500, chosen: []string{"c-1"}},
		{name: "exclusive coupon in a tie", cart: two,
			coupons: []Coupon{direct("E", P, 1000).excl().until(h), direct("M1", "m1", 500).until(h), direct("M2", "m2", 500).until(2 * h)},
			total:   1000, chosen: []string{"E"}},
		{name: "shipping coupons tie on value: the earlier one", cart: Cart{Items: two.Items, ShippingFee: 500},
			coupons: []Coupon{shipc("s2", 0, 500).until(2 * h), shipc("s1", 15000, 500).until(h)},
			total:   500, chosen: []string{"s1"}, ship: 500},
	})
}

// Option reductions the search makes must keep the answer: options with the
// same discount but different effects on the platform coupon.
func TestReductionsKeepTheBest(t *testing.T) {
	// a m1/c1 1000, b m1/c2 1000, c m2/c1 1000; P works on c1 only.
	cart := Cart{Items: []Item{item("a", "m1", "c1", "p1", 1000, 1), item("b", "m1", "c2", "p2", 1000, 1), item("c", "m2", "c1", "p3", 1000, 1)}}
	h := time.Hour
	runBestCases(t, []bestCase{
		{name: "same discount, one off the platform's lines: the total decides", cart: cart,
			coupons: []Coupon{
				direct("A", "m1", 200).in(domain.ScopeCategory, "c2").until(3 * h), // reduces P's amount by 0
				direct("B", "m1", 200).until(h),                                    // by 100
				pct("P", P, 10, 0).in(domain.ScopeCategory, "c1").until(2 * h),
			},
			total: 400, chosen: []string{"A", "P"}},
		{name: "same discount, the platform coupon saturated: the key decides", cart: cart,
			coupons: []Coupon{
				direct("A", "m1", 200).in(domain.ScopeCategory, "c2").until(3 * h),
				direct("B", "m1", 200).in(domain.ScopeCategory, "c1").until(h),
				direct("P", P, 100).in(domain.ScopeCategory, "c1").until(2 * h),
			},
			total: 300, chosen: []string{"B", "P"}},
	})
}

func TestNotApplicableReasons(t *testing.T) {
	cart := Cart{Items: []Item{item("a", "m1", "c1", "p1", 1000, 1), item("f", "m1", "c9", "p9", 0, 1)}}
	cs := []Coupon{
		direct("early", P, 10).from(time.Hour),
		direct("late", P, 10).until(-time.Hour),
		shipc("noship", 0, 10),
		direct("nolines", P, 10).in(domain.ScopeCategory, "c7"),
		direct("free", P, 10).in(domain.ScopeCategory, "c9"),
		thresh("below", P, 1001, 10),
		pct("tiny", "m1", 1, 0).in(domain.ScopeProduct, "p9"),
		direct("ok", P, 10),
	}
	runBestCases(t, []bestCase{{name: "every reason", cart: cart, coupons: cs, total: 10, chosen: []string{"ok"},
		notAppl: map[string]string{
			"early": ReasonNotYetValid, "late": ReasonExpired, "noship": ReasonNoShippingFee,
			"nolines": ReasonNoEligibleLines, "free": ReasonZeroEligibleAmount, "below": ReasonBelowThreshold, "tiny": ReasonZeroEligibleAmount,
		}}})
	// A coupon that applies alone but loses is not listed; the list keeps input order.
	q, err := Best(cart, []Coupon{direct("z", P, 10).until(-time.Hour), direct("lose", P, 5), direct("win", P, 10), direct("a", P, 10).until(-time.Hour)}, at0)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.NotApplicable) != 2 || q.NotApplicable[0].CouponID != "z" || q.NotApplicable[1].CouponID != "a" {
		t.Fatalf("%+v", q.NotApplicable)
	}
}

func TestValidation(t *testing.T) {
	good := Cart{Items: []Item{item("l1", "m1", "c1", "p1", 100, 1)}}
	lines := func(n int) Cart {
		var c Cart
		for i := 0; i < n; i++ {
			c.Items = append(c.Items, item(strings.Repeat("x", 1+i%100)+string(rune('a'+i/100)), "m", "c", "p", 1, 1))
		}
		return c
	}
	many := func(n int) []Coupon {
		var cs []Coupon
		for i := 0; i < n; i++ {
			cs = append(cs, direct(strings.Repeat("k", 1+i%100)+string(rune('a'+i/100)), P, 1))
		}
		return cs
	}
	type tc struct {
		name  string
		cart  Cart
		cs    []Coupon
		field string
	}
	cart := func(f func(*Cart)) Cart {
		c := Cart{Items: slices.Clone(good.Items)}
		f(&c)
		return c
	}
	cp := func(f func(*Coupon)) []Coupon {
		c := direct("k1", P, 10)
		f(&c)
		return []Coupon{direct("k0", P, 1), c}
	}
	cases := []tc{
		{"no items", Cart{}, nil, "items:"},
		{"too many items", lines(MaxLines + 1), nil, "items:"},
		{"line id missing", cart(func(c *Cart) { c.Items[0].LineID = "" }), nil, "items[0].line_id:"},
		{"duplicate line id", cart(func(c *Cart) { c.Items = append(c.Items, c.Items[0]) }), nil, "items[1].line_id:"},
		{"product id missing", cart(func(c *Cart) { c.Items[0].ProductID = "" }), nil, "items[0].product_id:"},
		{"merchant id missing", cart(func(c *Cart) { c.Items[0].MerchantID = "" }), nil, "items[0].merchant_id:"},
		{"category id with a control character", cart(func(c *Cart) { c.Items[0].CategoryID = "c\n" }), nil, "items[0].category_id:"},
		{"negative unit price", cart(func(c *Cart) { c.Items[0].UnitPrice = -1 }), nil, "items[0].unit_price:"},
		{"unit price over MaxMoney", cart(func(c *Cart) { c.Items[0].UnitPrice = domain.MaxMoney + 1 }), nil, "items[0].unit_price:"},
		{"quantity 0", cart(func(c *Cart) { c.Items[0].Quantity = 0 }), nil, "items[0].quantity:"},
		{"line total overflows", cart(func(c *Cart) { c.Items[0].UnitPrice, c.Items[0].Quantity = 1<<30, 1<<30 }), nil, "items[0].quantity:"},
		{"line total over MaxMoney", cart(func(c *Cart) { c.Items[0].UnitPrice, c.Items[0].Quantity = domain.MaxMoney/2+1, 2 }), nil, "items[0].quantity:"},
		{"goods total over MaxMoney", cart(func(c *Cart) {
			c.Items[0].UnitPrice = domain.MaxMoney
			c.Items = append(c.Items, item("l2", "m", "c", "p", 1, 1))
		}), nil, "items:"},
		{"negative shipping fee", cart(func(c *Cart) { c.ShippingFee = -1 }), nil, "shipping_fee:"},
		{"too many coupons", good, many(MaxCoupons + 1), "coupons:"},
		{"coupon id missing", good, cp(func(c *Coupon) { c.CouponID = "" }), "coupons[1].coupon_id:"},
		{"duplicate coupon id", good, cp(func(c *Coupon) { c.CouponID = "k0" }), "coupons[1].coupon_id:"},
		{"unknown kind", good, cp(func(c *Coupon) { c.Kind = "bogo" }), "coupons[1].kind:"},
		{"issuer missing", good, cp(func(c *Coupon) { c.Issuer = "" }), "coupons[1].issuer:"},
		{"negative threshold", good, cp(func(c *Coupon) { c.Threshold = -1 }), "coupons[1].threshold:"},
		{"amount over MaxMoney", good, cp(func(c *Coupon) { c.AmountOff = domain.MaxMoney + 1 }), "coupons[1].amount_off:"},
		{"amount 0", good, cp(func(c *Coupon) { c.AmountOff = 0 }), "coupons[1].amount_off:"},
		{"threshold coupon without threshold", good, cp(func(c *Coupon) { c.Kind = domain.KindThreshold }), "coupons[1].threshold:"},
		{"percent 0", good, cp(func(c *Coupon) { c.Kind, c.AmountOff = domain.KindPercent, 0 }), "coupons[1].percent_off:"},
		{"percent 100", good, cp(func(c *Coupon) { c.Kind, c.AmountOff, c.PercentOff = domain.KindPercent, 0, 100 }), "coupons[1].percent_off:"},
		{"percent with amount_off", good, cp(func(c *Coupon) { c.Kind, c.PercentOff = domain.KindPercent, 10 }), "coupons[1].amount_off:"},
		{"percent_off on a direct coupon", good, cp(func(c *Coupon) { c.PercentOff = 10 }), "coupons[1].percent_off:"},
		{"max_discount on a direct coupon", good, cp(func(c *Coupon) { c.MaxDiscount = 10 }), "coupons[1].max_discount:"},
		{"unknown scope", good, cp(func(c *Coupon) { c.Scope.Kind = "brand" }), "coupons[1].scope.kind:"},
		{"scope all with ids", good, cp(func(c *Coupon) { c.Scope.IDs = []string{"x"} }), "coupons[1].scope.ids:"},
		{"scope without ids", good, cp(func(c *Coupon) { c.Scope.Kind = domain.ScopeProduct }), "coupons[1].scope.ids:"},
		{"duplicate scope id", good, cp(func(c *Coupon) { c.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{"a", "a"}} }), "coupons[1].scope.ids[1]:"},
		{"empty scope id", good, cp(func(c *Coupon) { c.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{"a", ""}} }), "coupons[1].scope.ids[1]:"},
		{"shipping with a scope", good, cp(func(c *Coupon) {
			c.Kind, c.Scope = domain.KindShipping, domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c"}}
		}), "coupons[1].scope.kind:"},
		{"no valid_from", good, cp(func(c *Coupon) { c.ValidFrom = time.Time{} }), "coupons[1].valid_from:"},
		{"valid_until not after valid_from", good, cp(func(c *Coupon) { c.ValidUntil = c.ValidFrom }), "coupons[1].valid_until:"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Best(tc.cart, tc.cs, at0)
			if !errors.Is(err, domain.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), tc.field) {
				t.Fatalf("err = %v, want ErrInvalidArgument naming %s", err, tc.field)
			}
			var de *domain.Error
			if !errors.As(err, &de) {
				t.Fatalf("not a *domain.Error: %T", err)
			}
		})
	}
	// At the limits everything is accepted.
	if _, err := Best(lines(MaxLines), many(MaxCoupons), at0); err != nil {
		t.Fatal(err)
	}
}

func TestTooComplex(t *testing.T) {
	cart, cs, at := genSubsetSum(1, 22, false)
	_, err := best(cart, cs, at, tuning{MaxTieWork, KnapAfter, MaxKnapCells, 1000})
	if !errors.Is(err, ErrTooComplex) || !errors.Is(err, domain.ErrInvalidArgument) || !strings.HasPrefix(err.Error(), "coupons:") {
		t.Fatalf("err = %v", err)
	}
	var de *domain.Error
	if !errors.As(err, &de) {
		t.Fatalf("not a *domain.Error: %T", err)
	}
	// The same input within the default budget.
	if _, err := Best(cart, cs, at); err != nil {
		t.Fatal(err)
	}
}

func TestFromTerms(t *testing.T) {
	terms := domain.CouponTerms{BatchID: "b1", RuleVersion: 2, Kind: domain.KindPercent, Issuer: "m1",
		Threshold: 100, PercentOff: 10, MaxDiscount: 50, Scope: domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c1"}},
		Exclusive: true, ValidFrom: at0, ValidUntil: at0.Add(time.Hour)}
	c := FromTerms("cp-1", terms)
	want := Coupon{CouponID: "cp-1", Kind: domain.KindPercent, Issuer: "m1", Threshold: 100, PercentOff: 10, MaxDiscount: 50,
		Scope: terms.Scope, Exclusive: true, ValidFrom: at0, ValidUntil: at0.Add(time.Hour)}
	a, _ := json.Marshal(c)
	b, _ := json.Marshal(want)
	if string(a) != string(b) {
		t.Fatalf("%s\n%s", a, b)
	}
}

func TestDeterministicAndPure(t *testing.T) {
	cart, cs, at := genRealistic(7, 30, 10, 60)
	orig := slices.Clone(cs)
	q1, err := Best(cart, cs, at)
	if err != nil {
		t.Fatal(err)
	}
	q2, _ := Best(cart, cs, at)
	a, _ := json.Marshal(q1)
	b, _ := json.Marshal(q2)
	if string(a) != string(b) {
		t.Fatal("not deterministic")
	}
	for i := range cs {
		x, _ := json.Marshal(cs[i])
		y, _ := json.Marshal(orig[i])
		if string(x) != string(y) {
			t.Fatal("input modified")
		}
	}
}
