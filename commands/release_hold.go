package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// ReleaseExpiredHold unlocks a coupon whose order hold timed out (reason
// hold_expired). Sent by the hold worker; it records nothing if not due.
type ReleaseExpiredHold struct{ CouponID string }

// ReleaseExpiredHoldHandler handles ReleaseExpiredHold.
type ReleaseExpiredHoldHandler struct{ couponHandler }

// NewReleaseExpiredHoldHandler fails fast on missing dependencies.
func NewReleaseExpiredHoldHandler(repo *Repository, clock domain.Clock) (*ReleaseExpiredHoldHandler, error) {
	ch, err := newCouponHandler("ReleaseExpiredHoldHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	return &ReleaseExpiredHoldHandler{ch}, nil
}

// Handle releases the hold when it has run out.
func (h *ReleaseExpiredHoldHandler) Handle(ctx context.Context, cmd ReleaseExpiredHold) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		if !c.Exists() {
			return domain.Errorf(domain.ErrNotFound, "coupon %s not found", cmd.CouponID)
		}
		c.ReleaseExpiredHold(h.clock.Now())
		return nil
	})
}
