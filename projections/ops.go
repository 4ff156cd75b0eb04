// Package projections turns stored events into read models. Every projector
// is idempotent: it keeps the last applied revision per coupon and skips any
// event at or below it, so at-least-once delivery is safe.
package projections

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// OpsChange is what one coupon event changes in the operations view: the
// per-batch counters and the two deadline indexes the workers poll (order
// holds to release, validity ends to expire).
type OpsChange struct {
	BatchID  string
	CouponID string
	Revision uint64

	Claimed, Redeemed, Expired, Returned int64 // counter deltas

	// Hold deadline: set (HoldUntil non-zero) or cleared (ClearHold).
	HoldUntil time.Time
	ClearHold bool
	// Expiry deadline: set from the coupon's validity (SetExpiry with
	// ValidUntil, or the stored one when ValidUntil is zero) or cleared.
	SetExpiry   bool
	ValidUntil  time.Time
	ClearExpiry bool
}

// OpsChangeOf maps a coupon event onto its OpsChange; ok is false for events
// the view ignores.
func OpsChangeOf(e domain.Event, rev uint64) (c OpsChange, ok bool) {
	c.Revision = rev
	switch e := e.(type) {
	case *domain.CouponClaimed:
		c.BatchID, c.CouponID, c.Claimed, c.SetExpiry, c.ValidUntil = e.Terms.BatchID, e.CouponID, 1, true, e.Terms.ValidUntil
	case *domain.CouponGranted:
		c.BatchID, c.CouponID, c.Claimed, c.SetExpiry, c.ValidUntil = e.Terms.BatchID, e.CouponID, 1, true, e.Terms.ValidUntil
	case *domain.CouponLocked:
		c.BatchID, c.CouponID, c.HoldUntil, c.ClearExpiry = e.BatchID, e.CouponID, e.HoldUntil, true
	case *domain.CouponUnlocked:
		c.BatchID, c.CouponID, c.ClearHold, c.SetExpiry = e.BatchID, e.CouponID, true, true
	case *domain.CouponRedeemed:
		c.BatchID, c.CouponID, c.Redeemed, c.ClearHold = e.BatchID, e.CouponID, 1, true
	case *domain.CouponReturned:
		c.BatchID, c.CouponID, c.Redeemed, c.Returned = e.BatchID, e.CouponID, -1, 1
		c.SetExpiry = e.UsableAgain
	case *domain.CouponExpired:
		c.BatchID, c.CouponID, c.Expired, c.ClearExpiry = e.BatchID, e.CouponID, 1, true
	default:
		return c, false
	}
	return c, true
}

// OpsStore keeps the operations view. Apply must skip a change whose
// Revision is at or below the coupon's last applied one.
type OpsStore interface {
	Apply(ctx context.Context, c OpsChange) error
	// ApplyAll applies changes in order (pipelined), each skipped when stale.
	ApplyAll(ctx context.Context, cs []OpsChange) error
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// OpsProjector feeds the operations view.
type OpsProjector struct {
	store OpsStore
	reg   *domain.Registry
}

// NewOpsProjector fails fast on nil dependencies.
func NewOpsProjector(store OpsStore, reg *domain.Registry) (*OpsProjector, error) {
	if store == nil || reg == nil {
		return nil, errors.New("projections: NewOpsProjector needs a store and a registry")
	}
	return &OpsProjector{store: store, reg: reg}, nil
}

// Name identifies the projector (checkpoints, metrics). Never change it: a
// new name starts from the beginning.
func (p *OpsProjector) Name() string { return "ops" }

// Checkpoint is the position of the last event handled.
func (p *OpsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.store.Checkpoint(ctx)
}

// Handle projects one stored event and advances the checkpoint.
func (p *OpsProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	if len(rec.Type) > 7 && rec.Type[:7] == "coupon." {
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		if c, ok := OpsChangeOf(e, rec.Revision); ok {
			if err := p.store.Apply(ctx, c); err != nil {
				return err
			}
		}
	}
	return p.store.SaveCheckpoint(ctx, rec.Position)
}

// HandleBatch projects events in order in one pipelined write, then saves
// the checkpoint of the last one.
func (p *OpsProjector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	if len(recs) == 0 {
		return nil
	}
	var cs []OpsChange
	for _, rec := range recs {
		if len(rec.Type) <= 7 || rec.Type[:7] != "coupon." {
			continue
		}
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		if c, ok := OpsChangeOf(e, rec.Revision); ok {
			cs = append(cs, c)
		}
	}
	if err := p.store.ApplyAll(ctx, cs); err != nil {
		return err
	}
	return p.store.SaveCheckpoint(ctx, recs[len(recs)-1].Position)
}
