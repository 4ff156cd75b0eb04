package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// UnlockCoupon cancels an order's hold (TCC cancel).
type UnlockCoupon struct {
	CouponID string
	OrderID  string
}

// UnlockCouponHandler handles UnlockCoupon.
type UnlockCouponHandler struct{ couponHandler }

// NewUnlockCouponHandler fails fast on missing dependencies.
func NewUnlockCouponHandler(repo *Repository, clock domain.Clock) (*UnlockCouponHandler, error) {
	ch, err := newCouponHandler("UnlockCouponHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	return &UnlockCouponHandler{ch}, nil
}

// Handle unlocks; a repeat for the same order succeeds and records nothing.
func (h *UnlockCouponHandler) Handle(ctx context.Context, cmd UnlockCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Unlock(cmd.OrderID, h.clock.Now())
	})
}
