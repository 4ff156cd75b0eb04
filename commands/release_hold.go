package commands

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/domain"
)

// ReleaseExpiredHold unlocks a coupon whose order hold timed out (reason
// hold_expired). Sent by the hold worker; it records nothing if not due.
type ReleaseExpiredHold struct{ CouponID string }

// ReleaseExpiredHoldHandler handles ReleaseExpiredHold.
type ReleaseExpiredHoldHandler struct {
	repo  *Repository
	clock domain.Clock
}

// NewReleaseExpiredHoldHandler fails fast on missing dependencies.
func NewReleaseExpiredHoldHandler(repo *Repository, clock domain.Clock) (*ReleaseExpiredHoldHandler, error) {
	if repo == nil || clock == nil {
		return nil, errors.New("commands: ReleaseExpiredHoldHandler needs a repository and a clock")
	}
	return &ReleaseExpiredHoldHandler{repo: repo, clock: clock}, nil
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
