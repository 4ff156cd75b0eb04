package commands

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// RemindExpiry records a coupon's expiry reminder (coupon.expiring_soon.v1
// to its holder). Sent by the expiry reminder worker.
type RemindExpiry struct{ CouponID string }

// RemindExpiryHandler handles RemindExpiry.
type RemindExpiryHandler struct {
	couponHandler
	lead time.Duration
}

// NewRemindExpiryHandler fails fast on missing dependencies; lead is how long
// before the end of its validity a coupon is reminded.
func NewRemindExpiryHandler(repo *Repository, clock domain.Clock, lead time.Duration) (*RemindExpiryHandler, error) {
	ch, err := newCouponHandler("RemindExpiryHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	if lead <= 0 {
		return nil, errors.New("commands: RemindExpiryHandler needs a positive lead time")
	}
	return &RemindExpiryHandler{couponHandler: ch, lead: lead}, nil
}

// Handle appends coupon.expiry_reminded.v1 with the coupon's loaded revision
// as the expected one: of two attempts (a restart, two instances) only one
// lands; the other reloads, finds the coupon reminded and gets ErrConflict.
// Refusals are those of domain.Coupon.RemindExpiry.
func (h *RemindExpiryHandler) Handle(ctx context.Context, cmd RemindExpiry) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.RemindExpiry(h.lead, h.clock.Now())
	})
}
