package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// ExpireCoupon records the end of a usable coupon's validity. Sent by the
// expiry worker; it records nothing if the coupon is not due.
type ExpireCoupon struct{ CouponID string }

// ExpireCouponHandler handles ExpireCoupon.
type ExpireCouponHandler struct{ couponHandler }

// NewExpireCouponHandler fails fast on missing dependencies.
func NewExpireCouponHandler(repo *Repository, clock domain.Clock) (*ExpireCouponHandler, error) {
	ch, err := newCouponHandler("ExpireCouponHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	return &ExpireCouponHandler{ch}, nil
}

// Handle expires the coupon if it is usable and past its validity.
func (h *ExpireCouponHandler) Handle(ctx context.Context, cmd ExpireCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		if !c.Exists() {
			return domain.Errorf(domain.ErrNotFound, "coupon %s not found", cmd.CouponID)
		}
		c.Expire(h.clock.Now())
		return nil
	})
}
