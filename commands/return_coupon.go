package commands

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/domain"
)

// ReturnCoupon gives a redeemed coupon back after a refund.
type ReturnCoupon struct {
	CouponID string
	OrderID  string
}

// ReturnCouponHandler handles ReturnCoupon.
type ReturnCouponHandler struct {
	repo  *Repository
	clock domain.Clock
}

// NewReturnCouponHandler fails fast on missing dependencies.
func NewReturnCouponHandler(repo *Repository, clock domain.Clock) (*ReturnCouponHandler, error) {
	if repo == nil || clock == nil {
		return nil, errors.New("commands: ReturnCouponHandler needs a repository and a clock")
	}
	return &ReturnCouponHandler{repo: repo, clock: clock}, nil
}

// Handle returns the coupon: usable again while valid, else expired.
func (h *ReturnCouponHandler) Handle(ctx context.Context, cmd ReturnCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Return(cmd.OrderID, h.clock.Now())
	})
}
