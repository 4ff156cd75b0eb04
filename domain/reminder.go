package domain

import (
	"errors"
	"time"
)

// Reminder event names (stored; never rename one, add a .v2 instead).
const (
	EvCouponExpiryReminded = "coupon.expiry_reminded.v1"
	EvReminderSubscribed   = "reminder.subscribed.v1"
	EvReminderSent         = "reminder.sent.v1"
)

// Notification names of the reminder events (see Notification).
const (
	NotifyCouponExpiringSoon = "coupon.expiring_soon.v1"
	NotifyBatchClaimOpening  = "batch.claim_opening.v1"
)

// reminderEvents lists the reminder events (expiry and claim-opening).
func reminderEvents() []Event {
	return []Event{&CouponExpiryReminded{}, &ReminderSubscribed{}, &ReminderSent{}}
}

var (
	_ Notification = (*CouponExpiryReminded)(nil)
	_ Notification = (*ReminderSent)(nil)
)

// CouponExpiryReminded: the shopper was told that a usable coupon expires
// soon. It is appended to the coupon's own stream, at most once per coupon.
type CouponExpiryReminded struct {
	CouponID   string    `json:"coupon_id"`
	BatchID    string    `json:"batch_id"`
	UserID     string    `json:"user_id"`
	ValidUntil time.Time `json:"valid_until"`
	At         time.Time `json:"at"`
}

// ReminderSubscribed: a shopper asked to be told when a scheduled public
// batch opens for claims. OpensAt is the batch's claim start at that time (a
// later rules change moves the notification, not this record).
type ReminderSubscribed struct {
	BatchID string    `json:"batch_id"`
	UserID  string    `json:"user_id"`
	OpensAt time.Time `json:"opens_at"`
	At      time.Time `json:"at"`
}

// ReminderSent: the shopper was told that the batch is open for claims
// (OpenedAt is its claim start). Recorded at most once per subscription.
type ReminderSent struct {
	BatchID  string    `json:"batch_id"`
	UserID   string    `json:"user_id"`
	OpenedAt time.Time `json:"opened_at"`
	At       time.Time `json:"at"`
}

// EventName implementations: explicit, never reflected from the type.
func (*CouponExpiryReminded) EventName() string { return EvCouponExpiryReminded }
func (*ReminderSubscribed) EventName() string   { return EvReminderSubscribed }
func (*ReminderSent) EventName() string         { return EvReminderSent }

// NotificationName is coupon.expiring_soon.v1.
func (*CouponExpiryReminded) NotificationName() string { return NotifyCouponExpiringSoon }

// Recipient is the coupon's holder.
func (e *CouponExpiryReminded) Recipient() string { return e.UserID }

// NotificationName is batch.claim_opening.v1.
func (*ReminderSent) NotificationName() string { return NotifyBatchClaimOpening }

// Recipient is the subscribed shopper.
func (e *ReminderSent) Recipient() string { return e.UserID }

// Reminder is the aggregate of one shopper's claim-opening reminder for one
// batch (stream reminder-..., see commands.ReminderStream): subscribed once,
// sent at most once.
type Reminder struct {
	BatchID      string
	UserID       string
	OpensAt      time.Time // the claim start when subscribed
	SubscribedAt time.Time
	Sent         bool
	OpenedAt     time.Time // the claim start the reminder was sent for
	SentAt       time.Time
	version      int64
	changes      []Event
}

// NewReminderFromHistory rebuilds a reminder; an empty history gives one that does not exist.
func NewReminderFromHistory(batchID, userID string, history []Event) *Reminder {
	r := &Reminder{BatchID: batchID, UserID: userID, version: -1}
	for _, e := range history {
		r.Apply(e)
	}
	return r
}

// Exists tells whether the shopper subscribed.
func (r *Reminder) Exists() bool { return r.version >= 0 }

// Version is the revision of the last applied event (-1: new stream).
func (r *Reminder) Version() int64 { return r.version }

// BaseVersion is the stored revision the pending changes were made on.
func (r *Reminder) BaseVersion() int64 { return r.version - int64(len(r.changes)) }

// Changes are the events recorded by the last command.
func (r *Reminder) Changes() []Event { return r.changes }

// SubscribeReminder records reminder.subscribed.v1: userID asks to be told
// when batch b opens for claims. The batch must exist (ErrNotFound), be
// public and neither stopped nor ended (ErrNotClaimable), and not be open
// yet (ErrConflict: the claim window has started).
func SubscribeReminder(b *Batch, userID string, now time.Time) (*Reminder, error) {
	if err := ValidateID("batch_id", b.ID); err != nil {
		return nil, err
	}
	if err := ValidateID("user_id", userID); err != nil {
		return nil, err
	}
	// Subscribing is the mirror of sending: allowed exactly while
	// CheckOpening says "not yet".
	switch err := CheckOpening(b, now); {
	case err == nil:
		return nil, Errorf(ErrConflict, "batch %s is already open for claims", b.ID)
	case !errors.Is(err, ErrConflict):
		return nil, err
	}
	r := NewReminderFromHistory(b.ID, userID, nil)
	r.record(&ReminderSubscribed{BatchID: b.ID, UserID: userID, OpensAt: b.Rules.ClaimStartsAt, At: now})
	return r, nil
}

// CheckOpening tells whether claim-opening reminders of batch b may be sent
// at now: nil when the batch is public, not stopped, and its claim window has
// started and not ended (a paused batch still counts: the pause is
// temporary). ErrConflict means not yet (the start is later, e.g. moved by a
// rules change); ErrNotFound and ErrNotClaimable are final: the reminders
// are dropped without a notification.
func CheckOpening(b *Batch, now time.Time) error {
	if !b.Exists() {
		return Errorf(ErrNotFound, "batch %s not found", b.ID)
	}
	if b.Rules.Audience != AudiencePublic {
		return Errorf(ErrNotClaimable, "batch %s is targeted: coupons are granted, not claimed", b.ID)
	}
	switch s := b.Status(now); s {
	case BatchStoppedSt, BatchEnded:
		return Errorf(ErrNotClaimable, "batch %s is %s", b.ID, s)
	case BatchScheduled:
		return Errorf(ErrConflict, "batch %s opens at %s", b.ID, b.Rules.ClaimStartsAt.Format(time.RFC3339))
	}
	return nil
}

// Send records reminder.sent.v1 once batch b (the reminder's batch) is open
// (see CheckOpening). A reminder is sent at most once: a repeat is refused
// with ErrConflict.
func (r *Reminder) Send(b *Batch, now time.Time) error {
	if !r.Exists() {
		return Errorf(ErrNotFound, "no reminder of batch %s for user %s", r.BatchID, r.UserID)
	}
	if b.ID != r.BatchID {
		return Invalid("batch", "is %s, the reminder is for batch %s", b.ID, r.BatchID)
	}
	if r.Sent {
		return Errorf(ErrConflict, "the reminder of batch %s for user %s was already sent", r.BatchID, r.UserID)
	}
	if err := CheckOpening(b, now); err != nil {
		return err
	}
	r.record(&ReminderSent{BatchID: r.BatchID, UserID: r.UserID, OpenedAt: b.Rules.ClaimStartsAt, At: now})
	return nil
}

func (r *Reminder) record(e Event) {
	r.Apply(e)
	r.changes = append(r.changes, e)
}

// Apply folds one event into the state. It never fails; unknown events are ignored.
func (r *Reminder) Apply(e Event) {
	switch e := e.(type) {
	case *ReminderSubscribed:
		r.BatchID, r.UserID, r.OpensAt, r.SubscribedAt = e.BatchID, e.UserID, e.OpensAt, e.At
	case *ReminderSent:
		r.Sent, r.OpenedAt, r.SentAt = true, e.OpenedAt, e.At
	}
	r.version++
}
