package domain_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// The coupon of these tests is claimed at claimStart from windowRules: valid
// on [t0+2d, t0+20d), so with a lead of one day its reminder is due from
// t0+19d.
const remindLead = day

var (
	remValidUntil = at(20 * day)
	remDue        = remValidUntil.Add(-remindLead)
)

func remClaimed() domain.Event {
	return &domain.CouponClaimed{CouponID: "c-r", UserID: "u-r", Terms: windowRules().TermsAt("b-r", 0, claimStart), At: claimStart}
}

func remLocked(order string, t time.Time) domain.Event {
	return &domain.CouponLocked{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", OrderID: order, HoldUntil: t.Add(time.Hour), At: t}
}

func remUnlocked(order string, t time.Time) domain.Event {
	return &domain.CouponUnlocked{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", OrderID: order, Reason: domain.UnlockOrderCancelled, At: t}
}

func remRedeemed(order string, t time.Time) domain.Event {
	return &domain.CouponRedeemed{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", OrderID: order, PaymentID: "p", Discount: 1, At: t}
}

func remReturned(order string, usable bool, t time.Time) domain.Event {
	return &domain.CouponReturned{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", OrderID: order, UsableAgain: usable, At: t}
}

func remReminded(t time.Time) domain.Event {
	return &domain.CouponExpiryReminded{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", ValidUntil: remValidUntil, At: t}
}

func TestRemindExpiry(t *testing.T) {
	early := at(5 * day)
	claimed := remClaimed()
	cases := []struct {
		name    string
		history []domain.Event
		lead    time.Duration
		now     time.Time
		want    error // nil: reminded
	}{
		{"usable, exactly lead before the end", []domain.Event{claimed}, remindLead, remDue, nil},
		{"usable, inside the lead", []domain.Event{claimed}, remindLead, remValidUntil.Add(-time.Millisecond), nil},
		{"usable, a longer lead", []domain.Event{claimed}, 2 * day, at(18 * day), nil},
		{"not due yet", []domain.Event{claimed}, remindLead, remDue.Add(-time.Nanosecond), domain.ErrConflict},
		{"validity over", []domain.Event{claimed}, remindLead, remValidUntil, domain.ErrOutsideValidity},
		{"already reminded", []domain.Event{claimed, remReminded(remDue)}, remindLead, remDue.Add(time.Hour), domain.ErrConflict},
		{"reminded, locked and unlocked", []domain.Event{claimed, remReminded(remDue), remLocked("o", remDue), remUnlocked("o", remDue)},
			remindLead, remDue.Add(time.Hour), domain.ErrConflict},
		{"locked", []domain.Event{claimed, remLocked("o", early)}, remindLead, remDue, domain.ErrConflict},
		{"unlocked before the reminder", []domain.Event{claimed, remLocked("o", early), remUnlocked("o", early)}, remindLead, remDue, nil},
		{"redeemed", []domain.Event{claimed, remLocked("o", early), remRedeemed("o", early)}, remindLead, remDue, domain.ErrConflict},
		{"returned usable", []domain.Event{claimed, remLocked("o", early), remRedeemed("o", early), remReturned("o", true, early)},
			remindLead, remDue, nil},
		{"expired", []domain.Event{claimed, &domain.CouponExpired{CouponID: "c-r", ValidUntil: remValidUntil, At: remValidUntil}},
			remindLead, remDue, domain.ErrConflict},
		{"voided claim", []domain.Event{&domain.CouponClaimVoided{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", Reason: "x", At: early}},
			remindLead, remDue, domain.ErrNotFound},
		{"no such coupon", nil, remindLead, remDue, domain.ErrNotFound},
		{"zero lead", []domain.Event{claimed}, 0, remDue, domain.ErrInvalidArgument},
		{"negative lead", []domain.Event{claimed}, -time.Hour, remDue, domain.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := domain.NewCouponFromHistory("c-r", tc.history)
			before := c.Version()
			err := c.RemindExpiry(tc.lead, tc.now)
			wantErr(t, err, tc.want)
			if tc.want != nil {
				if len(c.Changes()) != 0 || c.Version() != before {
					t.Fatalf("a refused reminder recorded %v", names(c.Changes()))
				}
				return
			}
			wantNames(t, c.Changes(), domain.EvCouponExpiryReminded)
			got := c.Changes()[0].(*domain.CouponExpiryReminded)
			want := &domain.CouponExpiryReminded{CouponID: "c-r", BatchID: "b-r", UserID: "u-r", ValidUntil: remValidUntil, At: tc.now}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("event %+v, want %+v", got, want)
			}
			if !c.ExpiryReminded || c.Status != domain.CouponUsable || c.Version() != before+1 || c.BaseVersion() != before {
				t.Fatalf("after the reminder: reminded %v status %s version %d base %d", c.ExpiryReminded, c.Status, c.Version(), c.BaseVersion())
			}
			// Once only: the same coupon, and the coupon rebuilt from its stream, refuse a second one.
			wantErr(t, c.RemindExpiry(tc.lead, tc.now), domain.ErrConflict)
			again := domain.NewCouponFromHistory("c-r", append(append([]domain.Event{}, tc.history...), got))
			wantErr(t, again.RemindExpiry(tc.lead, tc.now), domain.ErrConflict)
		})
	}
}

func TestExpiryReminderIsANotification(t *testing.T) {
	var e domain.Event = remReminded(remDue)
	n, ok := e.(domain.Notification)
	if !ok {
		t.Fatal("coupon.expiry_reminded.v1 is not a Notification")
	}
	if n.NotificationName() != "coupon.expiring_soon.v1" || n.Recipient() != "u-r" || n.EventName() != "coupon.expiry_reminded.v1" {
		t.Fatalf("notification %q to %q (event %q)", n.NotificationName(), n.Recipient(), n.EventName())
	}
	var s domain.Event = &domain.ReminderSent{BatchID: "b", UserID: "u-9"}
	n, ok = s.(domain.Notification)
	if !ok || n.NotificationName() != "batch.claim_opening.v1" || n.Recipient() != "u-9" || n.EventName() != "reminder.sent.v1" {
		t.Fatalf("reminder.sent.v1 as a notification: %v %+v", ok, n)
	}
	if _, ok := domain.Event(&domain.ReminderSubscribed{}).(domain.Notification); ok {
		t.Fatal("reminder.subscribed.v1 must not notify anyone")
	}
}

// A scheduled public batch: claims open at claimStart (t0+1d), end at claimEnd (t0+11d).
func remBatch(t *testing.T, mutate func(*domain.Rules)) *domain.Batch {
	t.Helper()
	r := baseRules()
	if mutate != nil {
		mutate(&r)
	}
	return issued(t, "b-1", r, 10)
}

func stoppedBatch(t *testing.T) *domain.Batch {
	t.Helper()
	b := remBatch(t, nil)
	if err := b.Stop("admin", t0); err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSubscribeReminder(t *testing.T) {
	targeted := func(r *domain.Rules) { r.Audience = domain.AudienceTargeted }
	cases := []struct {
		name  string
		batch func(t *testing.T) *domain.Batch
		user  string
		now   time.Time
		want  error
	}{
		{"scheduled", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "u-1", t0, nil},
		{"just before the start", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "u-1", claimStart.Add(-time.Nanosecond), nil},
		{"open", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "u-1", claimStart, domain.ErrConflict},
		{"ended", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "u-1", claimEnd, domain.ErrNotClaimable},
		{"targeted", func(t *testing.T) *domain.Batch { return remBatch(t, targeted) }, "u-1", t0, domain.ErrNotClaimable},
		{"stopped", stoppedBatch, "u-1", t0, domain.ErrNotClaimable},
		{"unknown batch", func(*testing.T) *domain.Batch { return domain.NewBatchFromHistory("b-9", nil) }, "u-1", t0, domain.ErrNotFound},
		{"no user", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "", t0, domain.ErrInvalidArgument},
		{"control character", func(t *testing.T) *domain.Batch { return remBatch(t, nil) }, "u\x00", t0, domain.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r, err := domain.SubscribeReminder(tc.batch(t), tc.user, tc.now)
			wantErr(t, err, tc.want)
			if tc.want != nil {
				if r != nil {
					t.Fatalf("a refused subscription returned %+v", r)
				}
				return
			}
			wantNames(t, r.Changes(), domain.EvReminderSubscribed)
			want := &domain.ReminderSubscribed{BatchID: "b-1", UserID: tc.user, OpensAt: claimStart, At: tc.now}
			if got := r.Changes()[0]; !reflect.DeepEqual(got, want) {
				t.Fatalf("event %+v, want %+v", got, want)
			}
			if !r.Exists() || r.BaseVersion() != -1 || r.Version() != 0 || r.Sent || !r.OpensAt.Equal(claimStart) {
				t.Fatalf("reminder %+v", r)
			}
		})
	}
}

func TestSendReminder(t *testing.T) {
	subscribed := &domain.ReminderSubscribed{BatchID: "b-1", UserID: "u-1", OpensAt: claimStart, At: t0}
	sent := &domain.ReminderSent{BatchID: "b-1", UserID: "u-1", OpenedAt: claimStart, At: claimStart}
	later := claimStart.Add(day)
	moved := func(t *testing.T) *domain.Batch {
		b := remBatch(t, nil)
		r := b.Rules
		r.ClaimStartsAt = later
		if err := b.ChangeRules(r, "admin", t0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	paused := func(t *testing.T) *domain.Batch {
		b := remBatch(t, nil)
		if err := b.Pause("admin", claimStart); err != nil {
			t.Fatal(err)
		}
		return b
	}
	madeTargeted := func(t *testing.T) *domain.Batch {
		b := remBatch(t, nil)
		r := b.Rules
		r.Audience = domain.AudienceTargeted
		if err := b.ChangeRules(r, "admin", t0); err != nil {
			t.Fatal(err)
		}
		return b
	}
	plain := func(t *testing.T) *domain.Batch { return remBatch(t, nil) }
	cases := []struct {
		name    string
		history []domain.Event
		batch   func(t *testing.T) *domain.Batch
		now     time.Time
		want    error
	}{
		{"at the start", []domain.Event{subscribed}, plain, claimStart, nil},
		{"later in the window", []domain.Event{subscribed}, plain, claimStart.Add(time.Hour), nil},
		{"paused after the start", []domain.Event{subscribed}, paused, claimStart.Add(time.Hour), nil},
		{"before the start", []domain.Event{subscribed}, plain, claimStart.Add(-time.Nanosecond), domain.ErrConflict},
		{"start moved later", []domain.Event{subscribed}, moved, claimStart, domain.ErrConflict},
		{"start moved, reached", []domain.Event{subscribed}, moved, later, nil},
		{"already sent", []domain.Event{subscribed, sent}, plain, claimStart.Add(time.Hour), domain.ErrConflict},
		{"stopped", []domain.Event{subscribed}, stoppedBatch, claimStart, domain.ErrNotClaimable},
		{"made targeted", []domain.Event{subscribed}, madeTargeted, claimStart, domain.ErrNotClaimable},
		{"ended", []domain.Event{subscribed}, plain, claimEnd, domain.ErrNotClaimable},
		{"not subscribed", nil, plain, claimStart, domain.ErrNotFound},
		{"another batch", []domain.Event{subscribed}, func(t *testing.T) *domain.Batch { return issued(t, "b-2", baseRules(), 1) },
			claimStart, domain.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := domain.NewReminderFromHistory("b-1", "u-1", tc.history)
			before := r.Version()
			b := tc.batch(t)
			err := r.Send(b, tc.now)
			wantErr(t, err, tc.want)
			if tc.want != nil {
				if len(r.Changes()) != 0 {
					t.Fatalf("a refused send recorded %v", names(r.Changes()))
				}
				return
			}
			wantNames(t, r.Changes(), domain.EvReminderSent)
			want := &domain.ReminderSent{BatchID: "b-1", UserID: "u-1", OpenedAt: b.Rules.ClaimStartsAt, At: tc.now}
			if got := r.Changes()[0]; !reflect.DeepEqual(got, want) {
				t.Fatalf("event %+v, want %+v", got, want)
			}
			if !r.Sent || r.BaseVersion() != before || r.Version() != before+1 {
				t.Fatalf("reminder %+v", r)
			}
			wantErr(t, r.Send(b, tc.now), domain.ErrConflict)
		})
	}
}
