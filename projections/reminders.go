package projections

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// ReminderChangeKind says what a ReminderChange does to the reminder indexes.
type ReminderChangeKind string

// Reminder change kinds. The expiry index is a set of coupons ordered by
// the end of their validity; the claim-opening index is a set of batches
// ordered by their claim start, each with its pending subscribers.
const (
	// ReminderCheckpoint changes nothing but the checkpoint (an event the
	// indexes ignore).
	ReminderCheckpoint ReminderChangeKind = "checkpoint"
	// ExpiryTrack: the coupon is usable until ValidUntil (claimed, granted):
	// remember ValidUntil and index the coupon.
	ExpiryTrack ReminderChangeKind = "expiry_track"
	// ExpiryRetrack: usable again (unlocked, returned usable): index it again
	// with its remembered ValidUntil, unless it was forgotten.
	ExpiryRetrack ReminderChangeKind = "expiry_retrack"
	// ExpiryUntrack: used (redeemed): out of the index, ValidUntil kept (a
	// return brings it back).
	ExpiryUntrack ReminderChangeKind = "expiry_untrack"
	// ExpiryForget: expired, voided or reminded: out of the index for good.
	ExpiryForget ReminderChangeKind = "expiry_forget"
	// OpeningBatch: the batch's claim start is OpensAt (issued, rules
	// changed); a batch with pending subscribers is re-scored.
	OpeningBatch ReminderChangeKind = "opening_batch"
	// OpeningClosed: the batch was stopped; its pending subscribers are
	// dropped (no notification) and later subscriptions ignored.
	OpeningClosed ReminderChangeKind = "opening_closed"
	// OpeningSubscribed: UserID waits for BatchID to open; the batch is
	// indexed at its claim start (OpensAt when the batch is not known).
	OpeningSubscribed ReminderChangeKind = "opening_subscribed"
	// OpeningSent: UserID was reminded; a batch without pending subscribers
	// leaves the index.
	OpeningSent ReminderChangeKind = "opening_sent"
)

// ReminderChange is what one stored event changes in the reminder indexes.
// Stream and Revision identify the event: the store skips a change whose
// Revision is at or below the last one it applied for Stream, and saves
// Position as the projection's checkpoint in the same atomic step.
type ReminderChange struct {
	Kind     ReminderChangeKind
	Stream   string
	Revision uint64
	Position uint64

	CouponID   string    // Expiry*
	ValidUntil time.Time // ExpiryTrack

	BatchID string    // Opening*
	UserID  string    // OpeningSubscribed, OpeningSent
	OpensAt time.Time // OpeningBatch, OpeningSubscribed
}

// followedByReminders tells whether the reminder indexes follow events of
// this type; the others are not decoded.
func followedByReminders(typ string) bool {
	switch typ {
	case domain.EvCouponClaimed, domain.EvCouponGranted, domain.EvCouponUnlocked, domain.EvCouponRedeemed,
		domain.EvCouponReturned, domain.EvCouponExpired, domain.EvCouponClaimVoided, domain.EvCouponExpiryReminded,
		domain.EvBatchIssued, domain.EvBatchRulesChanged, domain.EvBatchStopped,
		domain.EvReminderSubscribed, domain.EvReminderSent:
		return true
	}
	return false
}

// ReminderChangeOf maps a stored event onto its change; ok is false for
// events the indexes ignore (a locked coupon, for one, stays indexed: it is
// reminded if released before its validity ends).
func ReminderChangeOf(e domain.Event, rec es.RecordedEvent) (c ReminderChange, ok bool) {
	c = ReminderChange{Stream: rec.StreamID, Revision: rec.Revision, Position: rec.Position}
	switch e := e.(type) {
	case *domain.CouponClaimed:
		c.Kind, c.CouponID, c.ValidUntil = ExpiryTrack, e.CouponID, e.Terms.ValidUntil
	case *domain.CouponGranted:
		c.Kind, c.CouponID, c.ValidUntil = ExpiryTrack, e.CouponID, e.Terms.ValidUntil
	case *domain.CouponUnlocked:
		c.Kind, c.CouponID = ExpiryRetrack, e.CouponID
	case *domain.CouponReturned:
		if !e.UsableAgain {
			return c, false // coupon.expired.v1 follows
		}
		c.Kind, c.CouponID = ExpiryRetrack, e.CouponID
	case *domain.CouponRedeemed:
		c.Kind, c.CouponID = ExpiryUntrack, e.CouponID
	case *domain.CouponExpired:
		c.Kind, c.CouponID = ExpiryForget, e.CouponID
	case *domain.CouponClaimVoided:
		c.Kind, c.CouponID = ExpiryForget, e.CouponID
	case *domain.CouponExpiryReminded:
		c.Kind, c.CouponID = ExpiryForget, e.CouponID
	case *domain.BatchIssued:
		c.Kind, c.BatchID, c.OpensAt = OpeningBatch, e.BatchID, e.Rules.ClaimStartsAt
	case *domain.BatchRulesChanged:
		c.Kind, c.BatchID, c.OpensAt = OpeningBatch, e.BatchID, e.Rules.ClaimStartsAt
	case *domain.BatchStopped:
		c.Kind, c.BatchID = OpeningClosed, e.BatchID
	case *domain.ReminderSubscribed:
		c.Kind, c.BatchID, c.UserID, c.OpensAt = OpeningSubscribed, e.BatchID, e.UserID, e.OpensAt
	case *domain.ReminderSent:
		c.Kind, c.BatchID, c.UserID = OpeningSent, e.BatchID, e.UserID
	default:
		return c, false
	}
	return c, true
}

// ReminderStore keeps the reminder indexes the reminder workers poll.
type ReminderStore interface {
	// ApplyReminderChanges applies changes in order. Each one is skipped
	// when stale (Revision at or below its Stream's stored revision) and is
	// written together with its Position as the checkpoint, atomically; a
	// ReminderCheckpoint change only saves the checkpoint. The checkpoint
	// never moves back.
	ApplyReminderChanges(ctx context.Context, cs []ReminderChange) error
	// Checkpoint is the position of the last event applied (0 when none).
	Checkpoint(ctx context.Context) (uint64, error)
}

// RemindersProjector keeps both reminder indexes: the coupons to remind of
// their expiry, by end of validity (added when usable, removed when
// redeemed, expired, voided or reminded; kept while locked), and the batches
// with claim-opening subscribers, by claim start (following rules changes,
// dropped when stopped, a subscriber dropped once reminded). One projector,
// so that one checkpoint covers both.
type RemindersProjector struct {
	store ReminderStore
	reg   *domain.Registry
}

var _ BatchProjector = (*RemindersProjector)(nil)

// NewRemindersProjector fails fast on nil dependencies.
func NewRemindersProjector(store ReminderStore, reg *domain.Registry) (*RemindersProjector, error) {
	if store == nil || reg == nil {
		return nil, errors.New("projections: NewRemindersProjector needs a store and a registry")
	}
	return &RemindersProjector{store: store, reg: reg}, nil
}

// Name identifies the projector (checkpoints, metrics). Never change it: a
// new name starts from the beginning.
func (p *RemindersProjector) Name() string { return "reminders" }

// Checkpoint is the position of the last event handled.
func (p *RemindersProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.store.Checkpoint(ctx)
}

// Handle projects one stored event together with its checkpoint.
func (p *RemindersProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	return p.HandleBatch(ctx, []es.RecordedEvent{rec})
}

// HandleBatch projects events in order in one pipelined write; the
// checkpoint ends at the last one.
func (p *RemindersProjector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	if len(recs) == 0 {
		return nil
	}
	var cs []ReminderChange
	for _, rec := range recs {
		c, ok, err := p.changeOf(rec)
		if err != nil {
			return err
		}
		if ok {
			cs = append(cs, c)
		}
	}
	if last := recs[len(recs)-1].Position; len(cs) == 0 || cs[len(cs)-1].Position != last {
		cs = append(cs, ReminderChange{Kind: ReminderCheckpoint, Position: last})
	}
	return p.store.ApplyReminderChanges(ctx, cs)
}

func (p *RemindersProjector) changeOf(rec es.RecordedEvent) (ReminderChange, bool, error) {
	if !followedByReminders(rec.Type) {
		return ReminderChange{}, false, nil
	}
	e, err := p.reg.Unmarshal(rec.Type, rec.Data)
	if err != nil {
		return ReminderChange{}, false, err
	}
	c, ok := ReminderChangeOf(e, rec)
	return c, ok, nil
}
