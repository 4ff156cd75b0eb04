package commands

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// LockCoupon holds a coupon for an order (TCC try).
type LockCoupon struct {
	CouponID string
	OrderID  string
	UserID   string
}

// LockCouponHandler handles LockCoupon.
type LockCouponHandler struct {
	repo  *Repository
	clock domain.Clock
	hold  time.Duration
}

// NewLockCouponHandler fails fast on missing dependencies; hold is the hold
// timeout after which an unredeemed lock is released.
func NewLockCouponHandler(repo *Repository, clock domain.Clock, hold time.Duration) (*LockCouponHandler, error) {
	if repo == nil || clock == nil || hold <= 0 {
		return nil, errors.New("commands: LockCouponHandler needs a repository, a clock and a positive hold")
	}
	return &LockCouponHandler{repo: repo, clock: clock, hold: hold}, nil
}

// Handle locks; of two orders racing, exactly one wins.
func (h *LockCouponHandler) Handle(ctx context.Context, cmd LockCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Lock(cmd.OrderID, cmd.UserID, h.hold, h.clock.Now())
	})
}
