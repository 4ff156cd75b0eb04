package readapi

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

// Coupon listing statuses (GET /v1/me/coupons?status=...).
const (
	StatusUsable  = "usable"
	StatusLocked  = "locked"
	StatusUsed    = "used"
	StatusExpired = "expired"
)

// UsableView reads the Redis usable-coupons view.
type UsableView interface {
	List(ctx context.Context, userID, status, cursor string, limit int) (ViewPage, error)
	Batches(ctx context.Context) ([]projections.BatchEntry, error)
}

// ViewPage is a page of the usable view.
type ViewPage struct {
	Coupons []projections.ViewCoupon
	Next    string
}

// ClaimCounts reads how many coupons of each batch a user holds (the stock guard).
type ClaimCounts interface {
	UserCounts(ctx context.Context, batchIDs []string, userID string) (map[string]int64, error)
}

// CouponItem is one coupon in a listing.
type CouponItem struct {
	ID          string        `json:"id"`
	BatchID     string        `json:"batch_id"`
	UserID      string        `json:"user_id"`
	Status      string        `json:"status"`
	Kind        string        `json:"kind"`
	Issuer      string        `json:"issuer"`
	Threshold   int64         `json:"threshold"`
	AmountOff   int64         `json:"amount_off"`
	PercentOff  int64         `json:"percent_off"`
	MaxDiscount int64         `json:"max_discount"`
	Scope       *domain.Scope `json:"scope,omitempty"` // absent for used and expired coupons
	Exclusive   bool          `json:"exclusive"`
	ValidFrom   time.Time     `json:"valid_from"`
	ValidUntil  time.Time     `json:"valid_until"`
	ObtainedAt  time.Time     `json:"obtained_at"`
	OrderID     string        `json:"order_id,omitempty"`
	HoldUntil   time.Time     `json:"hold_until,omitzero"`
	Discount    int64         `json:"discount,omitempty"`
	RedeemedAt  time.Time     `json:"redeemed_at,omitzero"`
	ExpiredAt   time.Time     `json:"expired_at,omitzero"`
	Version     uint64        `json:"version"`
}

// CouponList is a page of coupons.
type CouponList struct {
	Coupons    []CouponItem `json:"coupons"`
	NextCursor string       `json:"next_cursor,omitempty"`
}

// Coupons answers coupon listings: usable and locked from the Redis view,
// used and expired from the history index.
type Coupons struct {
	view     UsableView
	history  projections.HistoryIndex
	progress *projections.Progress
	maxWait  time.Duration
}

// NewCoupons fails fast on nil dependencies. maxWait bounds the wait for
// min_position (read-your-writes).
func NewCoupons(view UsableView, history projections.HistoryIndex, progress *projections.Progress, maxWait time.Duration) (*Coupons, error) {
	if view == nil || history == nil || progress == nil {
		return nil, errors.New("readapi: NewCoupons needs a view, a history index and a progress tracker")
	}
	if maxWait <= 0 {
		maxWait = 2 * time.Second
	}
	return &Coupons{view: view, history: history, progress: progress, maxWait: maxWait}, nil
}

// WaitFor blocks until the projections serving a query reached minPosition
// (bounded by maxWait; past it the answer is 503 unavailable, retryable).
func (q *Coupons) WaitFor(ctx context.Context, minPosition uint64, projectors ...string) error {
	if minPosition == 0 {
		return nil
	}
	wctx, cancel := context.WithTimeout(ctx, q.maxWait)
	defer cancel()
	if err := q.progress.WaitFor(wctx, minPosition, projectors...); err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return domain.Errorf(domain.ErrUnavailable, "projections have not reached position %d yet; retry", minPosition)
	}
	return nil
}

// List lists a user's coupons with a status.
func (q *Coupons) List(ctx context.Context, userID, status, cursor string, limit int, minPosition uint64) (CouponList, error) {
	if err := domain.ValidateID("user_id", userID); err != nil {
		return CouponList{}, err
	}
	if limit < 0 || limit > 200 {
		return CouponList{}, domain.Invalid("limit", "must be between 1 and 200")
	}
	if limit == 0 {
		limit = 50
	}
	out := CouponList{Coupons: []CouponItem{}}
	switch status {
	case "", StatusUsable, StatusLocked:
		if status == "" {
			status = StatusUsable
		}
		if err := q.WaitFor(ctx, minPosition, "view"); err != nil {
			return out, err
		}
		p, err := q.view.List(ctx, userID, status, cursor, limit)
		if err != nil {
			return out, err
		}
		for _, c := range p.Coupons {
			out.Coupons = append(out.Coupons, itemOfView(c))
		}
		out.NextCursor = p.Next
	case StatusUsed, StatusExpired:
		if err := q.WaitFor(ctx, minPosition, "history"); err != nil {
			return out, err
		}
		st := string(domain.CouponUsed)
		if status == StatusExpired {
			st = string(domain.CouponExpiredS)
		}
		p, err := q.history.ListByUser(ctx, userID, []string{st}, cursor, limit)
		if err != nil {
			return out, err
		}
		for _, r := range p.Records {
			out.Coupons = append(out.Coupons, itemOfRecord(r))
		}
		out.NextCursor = p.Next
	default:
		return out, domain.Invalid("status", "must be usable, locked, used or expired")
	}
	return out, nil
}

func ms(v int64) time.Time { return time.UnixMilli(v).UTC() }

func itemOfView(c projections.ViewCoupon) CouponItem {
	t := c.Terms
	return CouponItem{ID: c.CouponID, BatchID: t.BatchID, UserID: c.UserID, Status: c.Status(), Kind: string(t.Kind),
		Issuer: t.Issuer, Threshold: t.Threshold, AmountOff: t.AmountOff, PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount,
		Scope: &t.Scope, Exclusive: t.Exclusive, ValidFrom: ms(t.ValidFrom), ValidUntil: ms(t.ValidUntil), ObtainedAt: ms(t.ObtainedAt),
		OrderID: c.OrderID, HoldUntil: c.HoldUntil, Version: c.Version}
}

func itemOfRecord(r projections.CouponRecord) CouponItem {
	status := r.Status
	if status == string(domain.CouponUsed) {
		status = StatusUsed
	}
	return CouponItem{ID: r.CouponID, BatchID: r.BatchID, UserID: r.UserID, Status: status, Kind: r.Kind, Issuer: r.Issuer,
		Threshold: r.Threshold, AmountOff: r.AmountOff, PercentOff: r.PercentOff, MaxDiscount: r.MaxDiscount,
		ValidFrom: r.ValidFrom, ValidUntil: r.ValidUntil, ObtainedAt: r.ObtainedAt, OrderID: r.OrderID, Discount: r.Discount,
		RedeemedAt: r.RedeemedAt, ExpiredAt: r.ExpiredAt, Version: r.Version}
}

// ClaimableBatch is a public batch claimable now.
type ClaimableBatch struct {
	ID           string       `json:"id"`
	Rules        domain.Rules `json:"rules"`
	TotalStock   int64        `json:"total_stock"`
	ClaimedByMe  bool         `json:"claimed_by_me"`
	ClaimedCount int64        `json:"claimed_count"`
}

// Claimable lists public batches claimable now, each with whether the
// caller holds coupons of it. fresh skips the catalog cache (read-your-writes).
func (q *Checkout) Claimable(ctx context.Context, userID string, fresh bool) ([]ClaimableBatch, error) {
	counts, now := q.counts, q.clock.Now()
	bs, err := q.catalog.batches(ctx, fresh)
	if err != nil {
		return nil, err
	}
	var ids []string
	out := []ClaimableBatch{}
	for _, b := range bs {
		if !claimableAt(b, now) {
			continue
		}
		out = append(out, ClaimableBatch{ID: b.BatchID, Rules: b.Rules, TotalStock: b.TotalStock})
		ids = append(ids, b.BatchID)
	}
	if len(ids) == 0 {
		return out, nil
	}
	m, err := counts.UserCounts(ctx, ids, userID)
	if err != nil {
		return nil, err
	}
	for i := range out {
		out[i].ClaimedCount = m[out[i].ID]
		out[i].ClaimedByMe = out[i].ClaimedCount > 0
	}
	sortClaimable(out)
	return out, nil
}
