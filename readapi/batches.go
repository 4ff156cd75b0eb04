// Package readapi answers queries: from the event store (audit trails,
// time travel) and from the projections (views, reports).
package readapi

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/couponsd/couponsd/domain/es"
	"strings"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

// BatchCounts are a batch's per-coupon counters, kept by a projection.
type BatchCounts struct {
	Claimed  int64 `json:"claimed"`
	Redeemed int64 `json:"redeemed"`
	Expired  int64 `json:"expired"`
}

// CountsReader reads batch counters from a projection.
type CountsReader interface {
	BatchCounts(ctx context.Context, batchID string) (BatchCounts, error)
}

// StockReader reads the live remaining stock (the stock guard).
type StockReader interface {
	Remaining(ctx context.Context, batchID string) (int64, error)
}

// BatchView is a batch with live counts.
type BatchView struct {
	ID          string             `json:"id"`
	Rules       domain.Rules       `json:"rules"`
	RuleVersion int                `json:"rule_version"`
	Status      domain.BatchStatus `json:"status"`
	TotalStock  int64              `json:"total_stock"`
	Remaining   int64              `json:"remaining"`
	// Reserved is stock taken by claims (total - remaining), durable or in flight.
	Reserved int64 `json:"reserved"`
	BatchCounts
	IssuedAt time.Time `json:"issued_at"`
	Version  int64     `json:"version"`
}

// Batches answers batch queries.
type Batches struct {
	repo   *commands.Repository
	stock  StockReader
	counts CountsReader
	clock  domain.Clock
}

// NewBatches fails fast on nil dependencies.
func NewBatches(repo *commands.Repository, stock StockReader, counts CountsReader, clock domain.Clock) (*Batches, error) {
	if repo == nil || stock == nil || counts == nil || clock == nil {
		return nil, errors.New("readapi: NewBatches needs a repository, a stock reader, a counts reader and a clock")
	}
	return &Batches{repo: repo, stock: stock, counts: counts, clock: clock}, nil
}

// Get returns the batch from the event store with live counts.
func (q *Batches) Get(ctx context.Context, id string) (BatchView, error) {
	if err := domain.ValidateID("batch_id", id); err != nil {
		return BatchView{}, err
	}
	b, err := q.repo.LoadBatch(ctx, id)
	if err != nil {
		return BatchView{}, err
	}
	if !b.Exists() {
		return BatchView{}, domain.Errorf(domain.ErrNotFound, "batch %s not found", id)
	}
	v := View(b, q.clock.Now())
	if v.Remaining, err = q.stock.Remaining(ctx, id); err != nil {
		return BatchView{}, err
	}
	v.Reserved = v.TotalStock - v.Remaining
	if v.BatchCounts, err = q.counts.BatchCounts(ctx, id); err != nil {
		return BatchView{}, err
	}
	return v, nil
}

// View renders a batch aggregate (without live counts).
func View(b *domain.Batch, now time.Time) BatchView {
	return BatchView{ID: b.ID, Rules: b.Rules, RuleVersion: b.RuleVersion, Status: b.Status(now),
		TotalStock: b.TotalStock, Remaining: b.TotalStock, IssuedAt: b.IssuedAt, Version: b.Version()}
}

// AuditEvent is one stored event of a coupon, for the audit trail.
type AuditEvent struct {
	Revision   uint64          `json:"revision"`
	Position   uint64          `json:"position"`
	Type       string          `json:"type"`
	RecordedAt time.Time       `json:"recorded_at"`
	Data       json.RawMessage `json:"data"`
}

// CouponEvents reads a coupon's events straight from the event store.
func CouponEvents(ctx context.Context, repo *commands.Repository, couponID string) ([]AuditEvent, error) {
	if err := domain.ValidateID("coupon_id", couponID); err != nil {
		return nil, err
	}
	recs, err := repo.Store().ReadStream(ctx, commands.CouponStream(couponID), 0)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, domain.Errorf(domain.ErrNotFound, "coupon %s not found", couponID)
	}
	out := make([]AuditEvent, len(recs))
	for i, r := range recs {
		out[i] = auditEventOf(r)
	}
	return out, nil
}

func auditEventOf(r es.RecordedEvent) AuditEvent {
	return AuditEvent{Revision: r.Revision, Position: r.Position, Type: r.Type, RecordedAt: r.RecordedAt, Data: json.RawMessage(r.Data)}
}

// UserAuditEvent is one stored event of one of a user's coupons.
type UserAuditEvent struct {
	CouponID string `json:"coupon_id"`
	AuditEvent
}

// UserEvents reads, straight from the event store, every event of every
// coupon the user ever held, in store order. It scans the store once.
func UserEvents(ctx context.Context, repo *commands.Repository, userID string) ([]UserAuditEvent, error) {
	if err := domain.ValidateID("user_id", userID); err != nil {
		return nil, err
	}
	mine := map[string]bool{}
	out := []UserAuditEvent{}
	err := es.Scan(ctx, repo.Store(), 0, 2000, func(r es.RecordedEvent) error {
		id, ok := strings.CutPrefix(r.StreamID, "coupon-")
		if !ok {
			return nil
		}
		if r.Revision == 0 {
			e, err := repo.Registry().Unmarshal(r.Type, r.Data)
			if err != nil {
				return err
			}
			if ownerOf(e) == userID {
				mine[id] = true
			}
		}
		if mine[id] {
			out = append(out, UserAuditEvent{CouponID: id, AuditEvent: auditEventOf(r)})
		}
		return nil
	})
	return out, err
}
