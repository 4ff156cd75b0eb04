package httpapi

import (
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/readapi"
)

// BatchView is the JSON of a batch (with live counts).
type BatchView = readapi.BatchView

// CouponView is the JSON of a coupon.
type CouponView struct {
	ID          string              `json:"id"`
	BatchID     string              `json:"batch_id"`
	UserID      string              `json:"user_id"`
	Status      domain.CouponStatus `json:"status"`
	Source      string              `json:"source"`
	Kind        domain.Kind         `json:"kind"`
	Issuer      string              `json:"issuer"`
	Threshold   int64               `json:"threshold"`
	AmountOff   int64               `json:"amount_off"`
	PercentOff  int64               `json:"percent_off"`
	MaxDiscount int64               `json:"max_discount"`
	Scope       domain.Scope        `json:"scope"`
	Exclusive   bool                `json:"exclusive"`
	ValidFrom   time.Time           `json:"valid_from"`
	ValidUntil  time.Time           `json:"valid_until"`
	ObtainedAt  time.Time           `json:"obtained_at"`
	OrderID     string              `json:"order_id,omitempty"`
	HoldUntil   time.Time           `json:"hold_until,omitzero"`
	RuleVersion int                 `json:"rule_version"`
	Version     int64               `json:"version"`
	// Position is the global event store position of the event this request
	// appended (for a claim: of coupon.claimed.v1); absent when nothing was appended.
	Position uint64 `json:"position,omitempty"`
}

// couponView renders a coupon aggregate.
func couponView(c *domain.Coupon) CouponView {
	t := c.Terms
	return CouponView{
		ID: c.ID, BatchID: t.BatchID, UserID: c.UserID, Status: c.Status, Source: c.Source,
		Kind: t.Kind, Issuer: t.Issuer, Threshold: t.Threshold, AmountOff: t.AmountOff, PercentOff: t.PercentOff,
		MaxDiscount: t.MaxDiscount, Scope: t.Scope, Exclusive: t.Exclusive,
		ValidFrom: t.ValidFrom.UTC(), ValidUntil: t.ValidUntil.UTC(), ObtainedAt: c.ObtainedAt.UTC(),
		OrderID: c.OrderID, HoldUntil: c.HoldUntil.UTC(), RuleVersion: t.RuleVersion, Version: c.Version(),
	}
}

// CouponEventsView is the audit trail of a coupon.
type CouponEventsView struct {
	CouponID string               `json:"coupon_id"`
	Events   []readapi.AuditEvent `json:"events"`
}

// batchRules is a batch request body (spec/api.md): the rules, plus the
// stock when issuing.
// Times are strings so a bad one is reported with its field name.
type batchRules struct {
	Name          string     `json:"name"`
	Kind          string     `json:"kind"`
	Issuer        string     `json:"issuer"`
	Threshold     int64      `json:"threshold"`
	AmountOff     int64      `json:"amount_off"`
	PercentOff    int64      `json:"percent_off"`
	MaxDiscount   int64      `json:"max_discount"`
	Scope         scopeInput `json:"scope"`
	Exclusive     bool       `json:"exclusive"`
	PerUserLimit  int        `json:"per_user_limit"`
	ClaimStartsAt string     `json:"claim_starts_at"`
	ClaimEndsAt   string     `json:"claim_ends_at"`
	ValidFrom     string     `json:"valid_from"`
	ValidUntil    string     `json:"valid_until"`
	ValidDays     int        `json:"valid_days"`
	Audience      string     `json:"audience"`
	// TotalStock is the initial stock when issuing; PATCH refuses it.
	TotalStock *int64 `json:"total_stock"`
}

type scopeInput struct {
	Kind string   `json:"kind"`
	IDs  []string `json:"ids"`
}

// rules converts the body to domain rules (the domain validates them).
func (r batchRules) rules() (domain.Rules, error) {

	out := domain.Rules{
		Name: r.Name, Kind: domain.Kind(r.Kind), Issuer: r.Issuer, Threshold: r.Threshold, AmountOff: r.AmountOff,
		PercentOff: r.PercentOff, MaxDiscount: r.MaxDiscount, Scope: domain.Scope{Kind: r.Scope.Kind, IDs: r.Scope.IDs},
		Exclusive: r.Exclusive, PerUserLimit: r.PerUserLimit, ValidDays: r.ValidDays, Audience: r.Audience,
	}
	for _, f := range []struct {
		name string
		in   string
		out  *time.Time
	}{
		{"claim_starts_at", r.ClaimStartsAt, &out.ClaimStartsAt}, {"claim_ends_at", r.ClaimEndsAt, &out.ClaimEndsAt},
		{"valid_from", r.ValidFrom, &out.ValidFrom}, {"valid_until", r.ValidUntil, &out.ValidUntil},
	} {
		t, err := timeField(f.name, f.in)
		if err != nil {
			return domain.Rules{}, err
		}
		*f.out = t
	}
	return out, nil
}

type addStockRequest struct {
	Add int64 `json:"add"`
}

type lockRequest struct {
	OrderID string `json:"order_id"`
	UserID  string `json:"user_id"`
}

type redeemRequest struct {
	OrderID   string `json:"order_id"`
	PaymentID string `json:"payment_id"`
	Discount  int64  `json:"discount"`
}

type orderRequest struct {
	OrderID string `json:"order_id"`
}
