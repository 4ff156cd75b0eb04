package pricing

import (
	"errors"
	"fmt"
	"slices"

	"github.com/couponsd/couponsd/domain"
)

// ErrTooComplex marks a search stopped at MaxWork. The error Best returns then
// is also a *domain.Error of kind domain.ErrInvalidArgument (a 400), so
// errors.Is matches both.
var ErrTooComplex = errors.New("pricing: too many interacting coupons")

type tooComplexError struct{ de *domain.Error }

func (e *tooComplexError) Error() string   { return e.de.Error() }
func (e *tooComplexError) Unwrap() []error { return []error{e.de, ErrTooComplex} }

func errTooComplex() error {
	return &tooComplexError{de: &domain.Error{Kind: domain.ErrInvalidArgument,
		Message: "coupons: too many interacting coupons to find the exact best combination; pass fewer coupons"}}
}

func validateCart(c Cart) error {
	if len(c.Items) == 0 || len(c.Items) > MaxLines {
		return domain.Invalid("items", "must hold 1..%d lines", MaxLines)
	}
	seen := make(map[string]struct{}, len(c.Items))
	var total int64
	for i, it := range c.Items {
		f := func(name string) string { return fmt.Sprintf("items[%d].%s", i, name) }
		for _, id := range [...]struct{ name, v string }{
			{"line_id", it.LineID}, {"product_id", it.ProductID}, {"merchant_id", it.MerchantID}, {"category_id", it.CategoryID},
		} {
			if err := validateID(f, id.name, id.v); err != nil {
				return err
			}
		}
		if _, dup := seen[it.LineID]; dup {
			return domain.Invalid(f("line_id"), "duplicate line id %q", it.LineID)
		}
		seen[it.LineID] = struct{}{}
		if it.UnitPrice < 0 || it.UnitPrice > domain.MaxMoney {
			return domain.Invalid(f("unit_price"), "must be between 0 and %d", domain.MaxMoney)
		}
		if it.Quantity < 1 || it.Quantity > domain.MaxMoney {
			return domain.Invalid(f("quantity"), "must be between 1 and %d", domain.MaxMoney)
		}
		if it.UnitPrice > 0 && it.Quantity > domain.MaxMoney/it.UnitPrice {
			return domain.Invalid(f("quantity"), "unit_price*quantity must not exceed %d", domain.MaxMoney)
		}
		total += it.UnitPrice * it.Quantity
		if total > domain.MaxMoney {
			return domain.Invalid("items", "the goods total (sum of unit_price*quantity) must not exceed %d", domain.MaxMoney)
		}
	}
	if c.ShippingFee < 0 || c.ShippingFee > domain.MaxMoney {
		return domain.Invalid("shipping_fee", "must be between 0 and %d", domain.MaxMoney)
	}
	return nil
}

func validateCoupons(cs []Coupon) error {
	if len(cs) > MaxCoupons {
		return domain.Invalid("coupons", "must hold at most %d coupons", MaxCoupons)
	}
	seen := make(map[string]struct{}, len(cs))
	for i := range cs {
		c := &cs[i]
		f := func(name string) string { return fmt.Sprintf("coupons[%d].%s", i, name) }
		if err := validateCoupon(f, c); err != nil {
			return err
		}
		if _, dup := seen[c.CouponID]; dup {
			return domain.Invalid(f("coupon_id"), "duplicate coupon id %q", c.CouponID)
		}
		seen[c.CouponID] = struct{}{}
	}
	return nil
}

// validateID is domain.ValidateID with the field name built only on failure.
func validateID(f func(string) string, name, v string) error {
	if domain.ValidateID(name, v) == nil {
		return nil
	}
	return domain.ValidateID(f(name), v)
}

// validateCoupon mirrors domain.Rules.Validate for the coupon terms, so the
// engine accepts exactly the terms a batch can issue. f names a field.
func validateCoupon(f func(string) string, c *Coupon) error {
	if err := validateID(f, "coupon_id", c.CouponID); err != nil {
		return err
	}
	switch c.Kind {
	case domain.KindThreshold, domain.KindDirect, domain.KindPercent, domain.KindShipping:
	default:
		return domain.Invalid(f("kind"), "must be one of threshold, direct, percent, shipping")
	}
	if err := validateID(f, "issuer", c.Issuer); err != nil {
		return err
	}
	for _, m := range [...]struct {
		f string
		v int64
	}{{"threshold", c.Threshold}, {"amount_off", c.AmountOff}, {"max_discount", c.MaxDiscount}} {
		if m.v < 0 || m.v > domain.MaxMoney {
			return domain.Invalid(f(m.f), "must be between 0 and %d", domain.MaxMoney)
		}
	}
	switch c.Kind {
	case domain.KindPercent:
		if c.PercentOff < 1 || c.PercentOff > 99 {
			return domain.Invalid(f("percent_off"), "must be between 1 and 99 for a percent coupon")
		}
		if c.AmountOff != 0 {
			return domain.Invalid(f("amount_off"), "a percent coupon takes percent_off, not amount_off")
		}
	default:
		if c.Kind == domain.KindThreshold && c.Threshold <= 0 {
			return domain.Invalid(f("threshold"), "must be > 0 for a threshold coupon")
		}
		if c.AmountOff <= 0 {
			return domain.Invalid(f("amount_off"), "must be > 0")
		}
		if c.PercentOff != 0 {
			return domain.Invalid(f("percent_off"), "only percent coupons take percent_off")
		}
		if c.MaxDiscount != 0 {
			return domain.Invalid(f("max_discount"), "only percent coupons take max_discount")
		}
	}
	switch c.Scope.Kind {
	case domain.ScopeAll:
		if len(c.Scope.IDs) != 0 {
			return domain.Invalid(f("scope.ids"), "must be empty for scope all")
		}
	case domain.ScopeMerchant, domain.ScopeCategory, domain.ScopeProduct:
		if c.Kind == domain.KindShipping {
			return domain.Invalid(f("scope.kind"), "a shipping coupon applies to the shipping fee: scope must be all")
		}
		if len(c.Scope.IDs) == 0 || len(c.Scope.IDs) > domain.MaxScopeIDs {
			return domain.Invalid(f("scope.ids"), "must hold 1..%d ids", domain.MaxScopeIDs)
		}
		var ids map[string]struct{}
		if len(c.Scope.IDs) > 16 {
			ids = make(map[string]struct{}, len(c.Scope.IDs))
		}
		for j, id := range c.Scope.IDs {
			fj := func(string) string { return f(fmt.Sprintf("scope.ids[%d]", j)) }
			if err := validateID(fj, "scope.ids", id); err != nil {
				return err
			}
			dup := false
			if ids != nil {
				_, dup = ids[id]
				ids[id] = struct{}{}
			} else {
				dup = slices.Contains(c.Scope.IDs[:j], id)
			}
			if dup {
				return domain.Invalid(fj(""), "duplicate id %q", id)
			}
		}
	default:
		return domain.Invalid(f("scope.kind"), "must be one of all, merchant, category, product")
	}
	if c.ValidFrom.IsZero() {
		return domain.Invalid(f("valid_from"), "is required")
	}
	if c.ValidUntil.IsZero() || !c.ValidUntil.After(c.ValidFrom) {
		return domain.Invalid(f("valid_until"), "is required and must be after valid_from")
	}
	return nil
}
