package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// ReturnCoupon gives a redeemed coupon back after a refund.
type ReturnCoupon struct {
	CouponID string
	OrderID  string
}

// ReturnCouponHandler handles ReturnCoupon.
type ReturnCouponHandler struct{ couponHandler }

// NewReturnCouponHandler fails fast on missing dependencies.
func NewReturnCouponHandler(repo *Repository, clock domain.Clock) (*ReturnCouponHandler, error) {
	ch, err := newCouponHandler("ReturnCouponHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	return &ReturnCouponHandler{ch}, nil
}

// Handle returns the coupon: usable again while valid, else expired.
func (h *ReturnCouponHandler) Handle(ctx context.Context, cmd ReturnCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Return(cmd.OrderID, h.clock.Now())
	})
}
