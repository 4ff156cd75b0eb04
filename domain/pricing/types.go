package pricing

import (
	"time"

	"github.com/couponsd/couponsd/domain"
)

// Limits on one call. Money limits reuse domain.MaxMoney, so every sum the
// engine forms (goods total + shipping fee, a discount, S*percent_off) stays far
// below the int64 range; the only wider products are d*a_i in the spread and
// the slopes of the search bound, which use 128-bit arithmetic (math/bits).
const (
	MaxLines   = 500 // lines per cart
	MaxCoupons = 500 // coupons per call
	// MaxWork bounds the search effort (nodes, bound steps, table cells, in
	// units of roughly 10-25 ns). Choosing the best combination is NP-hard in
	// general (a subset-sum instance fits in one platform threshold or one
	// shipping threshold), so an adversarial input can need exponential time.
	// Rather than answer inexactly, Best stops after MaxWork units (about 50 ms)
	// with an error matching ErrTooComplex. Ordinary wallets use a few hundred
	// to a few hundred thousand units.
	MaxWork = 2_000_000
	// MaxTieWork bounds the nodes phase 1 visits only because they may hold a
	// combination tying with the best total; past it, phase 2 settles the
	// tie-break (see tie.go).
	MaxTieWork = 20_000
	// KnapAfter is the number of nodes after which a branch (or one question of
	// phase 2) builds a knapsack table to bound the merchants' discounts under
	// the platform coupon's threshold. A table has at most MaxKnapCells cells
	// (4 or 8 bytes each, or bits); the branches keep at most 4*MaxKnapCells.
	KnapAfter    = 20_000
	MaxKnapCells = 1 << 20
)

// Reasons in Quote.NotApplicable. Each names why a coupon can never apply to
// this cart at the quote time (not even alone); the first that holds, in this order:
const (
	ReasonNotYetValid        = "not_yet_valid"        // at < valid_from
	ReasonExpired            = "expired"              // at >= valid_until
	ReasonNoShippingFee      = "no_shipping_fee"      // shipping coupon, shipping_fee == 0
	ReasonNoEligibleLines    = "no_eligible_lines"    // goods coupon: no line matches its scope (and, for a merchant coupon, its merchant)
	ReasonZeroEligibleAmount = "zero_eligible_amount" // goods coupon: its eligible lines total 0 (S == 0)
	ReasonBelowThreshold     = "below_threshold"      // goods: S < threshold on undiscounted lines; shipping: goods_total < threshold
	ReasonZeroDiscount       = "zero_discount"        // percent coupon: floor(S*percent_off/100) == 0 even on undiscounted lines
)

// Item is one cart line. Its line total is UnitPrice*Quantity.
type Item struct {
	LineID     string `json:"line_id"`
	ProductID  string `json:"product_id"`
	MerchantID string `json:"merchant_id"`
	CategoryID string `json:"category_id"`
	UnitPrice  int64  `json:"unit_price"`
	Quantity   int64  `json:"quantity"`
}

// Cart is the order being priced.
type Cart struct {
	Items       []Item `json:"items"`
	ShippingFee int64  `json:"shipping_fee"`
}

// Coupon is a claimed coupon instance or an inline definition (what-if).
type Coupon struct {
	CouponID    string       `json:"coupon_id"`
	Kind        domain.Kind  `json:"kind"`
	Issuer      string       `json:"issuer"` // domain.IssuerPlatform or a merchant id
	Threshold   int64        `json:"threshold"`
	AmountOff   int64        `json:"amount_off"`
	PercentOff  int64        `json:"percent_off"`
	MaxDiscount int64        `json:"max_discount"`
	Scope       domain.Scope `json:"scope"`
	Exclusive   bool         `json:"exclusive"`
	ValidFrom   time.Time    `json:"valid_from"`
	ValidUntil  time.Time    `json:"valid_until"`
}

// FromTerms builds the pricing view of a claimed coupon.
func FromTerms(couponID string, t domain.CouponTerms) Coupon {
	return Coupon{
		CouponID: couponID, Kind: t.Kind, Issuer: t.Issuer,
		Threshold: t.Threshold, AmountOff: t.AmountOff, PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount,
		Scope: t.Scope, Exclusive: t.Exclusive, ValidFrom: t.ValidFrom, ValidUntil: t.ValidUntil,
	}
}

// Quote is the answer of Best (spec/pricing.md, "Output").
type Quote struct {
	TotalDiscount    int64           `json:"total_discount"`
	GoodsTotal       int64           `json:"goods_total"`
	ShippingFee      int64           `json:"shipping_fee"`
	Payable          int64           `json:"payable"`
	Coupons          []AppliedCoupon `json:"coupons"`
	Lines            []LineQuote     `json:"lines"`
	ShippingDiscount int64           `json:"shipping_discount"`
	NotApplicable    []NotApplicable `json:"not_applicable"`
}

// AppliedCoupon is one coupon of the chosen combination. Quote.Coupons lists
// them in the order of application: merchant coupons (by the position of the
// merchant's first line in the cart), then the platform goods coupon, then the
// shipping coupon.
type AppliedCoupon struct {
	CouponID string `json:"coupon_id"`
	Discount int64  `json:"discount"`
}

// LineQuote is one cart line after discounts, in cart order.
type LineQuote struct {
	LineID   string `json:"line_id"`
	Discount int64  `json:"discount"`
	Payable  int64  `json:"payable"`
}

// NotApplicable is a coupon that can never apply to this cart; see the Reason constants.
// Quote.NotApplicable keeps the order of the coupons given to Best.
type NotApplicable struct {
	CouponID string `json:"coupon_id"`
	Reason   string `json:"reason"`
}
