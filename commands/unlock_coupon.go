package commands

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/domain"
)

// UnlockCoupon cancels an order's hold (TCC cancel).
type UnlockCoupon struct {
	CouponID string
	OrderID  string
}

// UnlockCouponHandler handles UnlockCoupon.
type UnlockCouponHandler struct {
	repo  *Repository
	clock domain.Clock
}

// NewUnlockCouponHandler fails fast on missing dependencies.
func NewUnlockCouponHandler(repo *Repository, clock domain.Clock) (*UnlockCouponHandler, error) {
	if repo == nil || clock == nil {
		return nil, errors.New("commands: UnlockCouponHandler needs a repository and a clock")
	}
	return &UnlockCouponHandler{repo: repo, clock: clock}, nil
}

// Handle unlocks; a repeat for the same order succeeds and records nothing.
func (h *UnlockCouponHandler) Handle(ctx context.Context, cmd UnlockCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Unlock(cmd.OrderID, h.clock.Now())
	})
}
