package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// RedeemCoupon confirms the order's use of a locked coupon (TCC confirm).
type RedeemCoupon struct {
	CouponID  string
	OrderID   string
	PaymentID string
	Discount  int64
}

// RedeemCouponHandler handles RedeemCoupon.
type RedeemCouponHandler struct{ couponHandler }

// NewRedeemCouponHandler fails fast on missing dependencies.
func NewRedeemCouponHandler(repo *Repository, clock domain.Clock) (*RedeemCouponHandler, error) {
	ch, err := newCouponHandler("RedeemCouponHandler", repo, clock)
	if err != nil {
		return nil, err
	}
	return &RedeemCouponHandler{ch}, nil
}

// Handle redeems; repeats for the same order record nothing and succeed.
func (h *RedeemCouponHandler) Handle(ctx context.Context, cmd RedeemCoupon) (Result[*domain.Coupon], error) {
	return changeCoupon(ctx, h.repo, cmd.CouponID, func(c *domain.Coupon) error {
		return c.Redeem(cmd.OrderID, cmd.PaymentID, cmd.Discount, h.clock.Now())
	})
}
