package domain

import "time"

// BatchStatus is a batch's activity state at a given time.
type BatchStatus string

// Batch statuses. Scheduled, running and ended follow the claim window;
// paused and stopped are set by the back office; stopped is final.
const (
	BatchScheduled BatchStatus = "scheduled"
	BatchRunning   BatchStatus = "running"
	BatchPausedSt  BatchStatus = "paused"
	BatchEnded     BatchStatus = "ended"
	BatchStoppedSt BatchStatus = "stopped"
)

// Batch is the aggregate of a coupon batch: its template, stock and activity.
type Batch struct {
	ID          string
	Rules       Rules
	RuleVersion int
	TotalStock  int64
	Paused      bool
	Stopped     bool
	IssuedAt    time.Time
	version     int64 // revision of the last applied event; -1 for a new stream
	stockKeys   map[string]struct{}
	changes     []Event
}

// NewBatchFromHistory rebuilds a batch; an empty history gives a batch that does not exist.
func NewBatchFromHistory(id string, history []Event) *Batch {
	b := &Batch{ID: id, version: -1}
	for _, e := range history {
		b.Apply(e)
	}
	return b
}

// Exists tells whether the batch was issued.
func (b *Batch) Exists() bool { return b.version >= 0 }

// Version is the revision of the last stored event (-1: new stream).
func (b *Batch) Version() int64 { return b.version }

// Changes are the events recorded by the last command, not yet stored.
func (b *Batch) Changes() []Event { return b.changes }

// BaseVersion is the stored revision the changes were made on (the append's
// expected version; -1 for a new stream).
func (b *Batch) BaseVersion() int64 { return b.version - int64(len(b.changes)) }

// Status is the activity state at now.
func (b *Batch) Status(now time.Time) BatchStatus {
	switch {
	case b.Stopped:
		return BatchStoppedSt
	case !now.Before(b.Rules.ClaimEndsAt):
		return BatchEnded
	case now.Before(b.Rules.ClaimStartsAt):
		return BatchScheduled
	case b.Paused:
		return BatchPausedSt
	default:
		return BatchRunning
	}
}

// IssueBatch validates the rules and stock and records batch.issued.v1.
func IssueBatch(id string, rules Rules, totalStock int64, by string, now time.Time) (*Batch, error) {
	if err := ValidateID("id", id); err != nil {
		return nil, err
	}
	rules = rules.Normalized()
	if err := rules.Validate(); err != nil {
		return nil, err
	}
	if totalStock < 1 || totalStock > MaxStock {
		return nil, Invalid("total_stock", "must be between 1 and %d", MaxStock)
	}
	if !now.Before(rules.ClaimEndsAt) {
		return nil, Invalid("claim_ends_at", "is already in the past")
	}
	b := NewBatchFromHistory(id, nil)
	b.record(&BatchIssued{BatchID: id, Rules: rules, TotalStock: totalStock, IssuedBy: by, At: now})
	return b, nil
}

func (b *Batch) mutable(now time.Time, what string) error {
	if !b.Exists() {
		return Errorf(ErrNotFound, "batch %s not found", b.ID)
	}
	switch b.Status(now) {
	case BatchStoppedSt:
		return Errorf(ErrConflict, "batch %s is stopped: cannot %s", b.ID, what)
	case BatchEnded:
		return Errorf(ErrConflict, "batch %s has ended: cannot %s", b.ID, what)
	}
	return nil
}

// ChangeRules replaces the rules of a batch that has not started yet.
func (b *Batch) ChangeRules(rules Rules, by string, now time.Time) error {
	if err := b.mutable(now, "change its rules"); err != nil {
		return err
	}
	if b.Status(now) != BatchScheduled {
		return Errorf(ErrConflict, "batch %s has started: its rules are fixed", b.ID)
	}
	rules = rules.Normalized()
	if err := rules.Validate(); err != nil {
		return err
	}
	if !now.Before(rules.ClaimStartsAt) {
		return Invalid("claim_starts_at", "must stay in the future when rules change before the start")
	}
	b.record(&BatchRulesChanged{BatchID: b.ID, Rules: rules, RuleVersion: b.RuleVersion + 1, By: by, At: now})
	return nil
}

// Pause suspends claims; pausing a paused batch changes nothing.
func (b *Batch) Pause(by string, now time.Time) error {
	if err := b.mutable(now, "pause"); err != nil {
		return err
	}
	if !b.Paused {
		b.record(&BatchPaused{BatchID: b.ID, By: by, At: now})
	}
	return nil
}

// Resume allows claims again; resuming a batch that is not paused changes nothing.
func (b *Batch) Resume(by string, now time.Time) error {
	if err := b.mutable(now, "resume"); err != nil {
		return err
	}
	if b.Paused {
		b.record(&BatchResumed{BatchID: b.ID, By: by, At: now})
	}
	return nil
}

// Stop closes the batch for good; stopping a stopped batch changes nothing.
func (b *Batch) Stop(by string, now time.Time) error {
	if !b.Exists() {
		return Errorf(ErrNotFound, "batch %s not found", b.ID)
	}
	if b.Stopped {
		return nil
	}
	if b.Status(now) == BatchEnded {
		return Errorf(ErrConflict, "batch %s has ended: cannot stop", b.ID)
	}
	b.record(&BatchStopped{BatchID: b.ID, By: by, At: now})
	return nil
}

// AddStock adds n units. A repeated idempotency key changes nothing.
func (b *Batch) AddStock(n int64, idempotencyKey, by string, now time.Time) error {
	// A retry returns the first outcome: checked before anything that may
	// have changed since (the total, the batch's status).
	if idempotencyKey != "" {
		if _, seen := b.stockKeys[idempotencyKey]; seen {
			return nil
		}
	}
	if err := b.mutable(now, "add stock"); err != nil {
		return err
	}
	if n < 1 || n > MaxStock {
		return Invalid("add", "must be between 1 and %d", MaxStock)
	}
	if b.TotalStock+n > MaxStock {
		return Invalid("add", "total stock would exceed %d", MaxStock)
	}
	b.record(&BatchStockAdded{BatchID: b.ID, Added: n, TotalStock: b.TotalStock + n, IdempotencyKey: idempotencyKey, By: by, At: now})
	return nil
}

// CheckClaimable tells whether a shopper may claim at now (stock and
// per-user limits are the stock guard's business).
func (b *Batch) CheckClaimable(now time.Time) error {
	if !b.Exists() {
		return Errorf(ErrNotFound, "batch %s not found", b.ID)
	}
	if b.Rules.Audience != AudiencePublic {
		return Errorf(ErrNotClaimable, "batch %s is targeted: coupons are granted, not claimed", b.ID)
	}
	if s := b.Status(now); s != BatchRunning {
		return Errorf(ErrNotClaimable, "batch %s is %s", b.ID, s)
	}
	return b.checkNotBornExpired(now, ErrNotClaimable)
}

// checkNotBornExpired refuses to hand out a coupon whose fixed validity
// window is already over at now (it would be born expired, yet use stock and
// the shopper's per-user limit).
func (b *Batch) checkNotBornExpired(now time.Time, kind error) error {
	if !b.Rules.ValidUntil.IsZero() && !now.Before(b.Rules.ValidUntil) {
		return Errorf(kind, "batch %s: its coupons were valid until %s", b.ID, b.Rules.ValidUntil.Format(time.RFC3339))
	}
	return nil
}

func (b *Batch) record(e Event) {
	b.Apply(e)
	b.changes = append(b.changes, e)
}

// Apply folds one event into the state. It never fails; unknown events are ignored.
func (b *Batch) Apply(e Event) {
	switch e := e.(type) {
	case *BatchIssued:
		b.Rules, b.TotalStock, b.IssuedAt = e.Rules, e.TotalStock, e.At
	case *BatchRulesChanged:
		b.Rules, b.RuleVersion = e.Rules, e.RuleVersion
	case *BatchPaused:
		b.Paused = true
	case *BatchResumed:
		b.Paused = false
	case *BatchStopped:
		b.Stopped = true
	case *BatchStockAdded:
		b.TotalStock = e.TotalStock
		if e.IdempotencyKey != "" {
			if b.stockKeys == nil {
				b.stockKeys = map[string]struct{}{}
			}
			b.stockKeys[e.IdempotencyKey] = struct{}{}
		}
	}
	b.version++
}
