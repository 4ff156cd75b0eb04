package readapi

import (
	"context"
	"errors"
	"github.com/couponsd/couponsd/domain/es"
	"sort"
	"strings"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

// BatchReportView is a batch's usage with its redemption rate.
type BatchReportView struct {
	projections.BatchReport
	// RedemptionRate is redeemed / claimed (0 when nothing was claimed).
	RedemptionRate float64   `json:"redemption_rate"`
	From           time.Time `json:"from,omitzero"`
	To             time.Time `json:"to,omitzero"`
}

// Reports answers usage reports from the history index.
type Reports struct{ history projections.HistoryIndex }

// NewReports fails fast on a nil index.
func NewReports(h projections.HistoryIndex) (*Reports, error) {
	if h == nil {
		return nil, errors.New("readapi: NewReports needs a history index")
	}
	return &Reports{history: h}, nil
}

func checkRange(r projections.TimeRange) error {
	if !r.From.IsZero() && !r.To.IsZero() && !r.To.After(r.From) {
		return domain.Invalid("to", "must be after from")
	}
	return nil
}

// Batch reports one batch.
func (q *Reports) Batch(ctx context.Context, batchID string, r projections.TimeRange) (BatchReportView, error) {
	if err := domain.ValidateID("batch_id", batchID); err != nil {
		return BatchReportView{}, err
	}
	if err := checkRange(r); err != nil {
		return BatchReportView{}, err
	}
	rep, err := q.history.BatchReport(ctx, batchID, r)
	if err != nil {
		return BatchReportView{}, err
	}
	return withRate(rep, r), nil
}

func withRate(rep projections.BatchReport, r projections.TimeRange) BatchReportView {
	v := BatchReportView{BatchReport: rep, From: r.From, To: r.To}
	if rep.Claimed > 0 {
		v.RedemptionRate = float64(rep.Redeemed) / float64(rep.Claimed)
	}
	return v
}

// TopBatches ranks batches by redemptions in the range.
func (q *Reports) TopBatches(ctx context.Context, r projections.TimeRange, limit int) ([]BatchReportView, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	reps, err := q.history.TopBatches(ctx, r, clampLimit(limit))
	if err != nil {
		return nil, err
	}
	out := make([]BatchReportView, len(reps))
	for i, rep := range reps {
		out[i] = withRate(rep, r)
	}
	return out, nil
}

// TopUsers ranks shoppers by redemptions in the range.
func (q *Reports) TopUsers(ctx context.Context, r projections.TimeRange, limit int) ([]projections.UserReport, error) {
	if err := checkRange(r); err != nil {
		return nil, err
	}
	return q.history.TopUsers(ctx, r, clampLimit(limit))
}

func clampLimit(n int) int {
	if n <= 0 {
		return 10
	}
	if n > 100 {
		return 100
	}
	return n
}

// AsOf answers "which coupons did this user hold, in which state, at time t"
// straight from the event store (not the projections): it folds every coupon
// event of the user recorded at or before t.
func AsOf(ctx context.Context, repo *commands.Repository, userID string, t time.Time) ([]CouponItem, error) {
	if err := domain.ValidateID("user_id", userID); err != nil {
		return nil, err
	}
	coupons := map[string]*domain.Coupon{}
	var order []string
	err := es.Scan(ctx, repo.Store(), 0, 2000, func(rec es.RecordedEvent) error {
		if rec.RecordedAt.After(t) {
			return es.ErrStopScan
		}
		if !strings.HasPrefix(rec.Type, "coupon.") {
			return nil
		}
		e, err := repo.Registry().Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		id := strings.TrimPrefix(rec.StreamID, "coupon-")
		c := coupons[id]
		if c == nil {
			if ownerOf(e) != userID {
				return nil
			}
			c = domain.NewCouponFromHistory(id, nil)
			coupons[id] = c
			order = append(order, id)
		}
		c.Apply(e)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return asOfItems(coupons, order), nil
}

func ownerOf(e domain.Event) string {
	switch e := e.(type) {
	case *domain.CouponClaimed:
		return e.UserID
	case *domain.CouponGranted:
		return e.UserID
	}
	return ""
}

func asOfItems(coupons map[string]*domain.Coupon, order []string) []CouponItem {
	out := make([]CouponItem, 0, len(order))
	for _, id := range order {
		c := coupons[id]
		if !c.Exists() {
			continue
		}
		t := c.Terms
		status := string(c.Status)
		if c.Status == domain.CouponUsed {
			status = StatusUsed
		}
		out = append(out, CouponItem{ID: c.ID, BatchID: t.BatchID, UserID: c.UserID, Status: status, Kind: string(t.Kind),
			Issuer: t.Issuer, Threshold: t.Threshold, AmountOff: t.AmountOff, PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount,
			Scope: &t.Scope, Exclusive: t.Exclusive, ValidFrom: t.ValidFrom, ValidUntil: t.ValidUntil, ObtainedAt: c.ObtainedAt,
			OrderID: c.OrderID, HoldUntil: c.HoldUntil, Version: uint64(c.Version())})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ObtainedAt.After(out[j].ObtainedAt) })
	return out
}
