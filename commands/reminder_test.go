package commands_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/redistest"
)

func TestReminderStreamIsUnambiguous(t *testing.T) {
	pairs := [][2]string{{"a-b", "c"}, {"a", "b-c"}, {"a-b-c", "d"}, {"0190a3b4-7c1d-7e2f-8a9b-0c1d2e3f4a5b", "alice"}, {"b", "1-x"}, {"ü", "-"}}
	seen := map[string][2]string{}
	for _, p := range pairs {
		s := commands.ReminderStream(p[0], p[1])
		if prev, dup := seen[s]; dup {
			t.Fatalf("%v and %v share the stream %q", prev, p, s)
		}
		seen[s] = p
		b, u, ok := commands.ReminderOfStream(s)
		if !ok || b != p[0] || u != p[1] {
			t.Fatalf("ReminderOfStream(%q) = %q %q %v, want %q %q", s, b, u, ok, p[0], p[1])
		}
	}
	for _, s := range []string{"", "reminder-", "reminder-x-a-b", "reminder-01-a-b", "reminder-+1-a-b", "reminder-0--b",
		"reminder-3-abc", "reminder-3-abc-", "reminder-3-ab-c", "coupon-1-a-b", "batch-a"} {
		if b, u, ok := commands.ReminderOfStream(s); ok {
			t.Errorf("ReminderOfStream(%q) = %q %q, want not a reminder stream", s, b, u)
		}
	}
}

func TestSubscribeReminderHandler(t *testing.T) {
	w := newRemWorld(t, redistest.Embedded(t))
	ctx := context.Background()
	opens := t0.Add(day)
	w.issueBatch("sched", opens, opens.Add(7*day))
	w.issueBatch("open", t0.Add(-time.Hour), t0.Add(7*day))
	w.issueBatch("stopped", opens, opens.Add(7*day))
	if _, err := w.h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: "stopped", Action: commands.ActionStop, By: "admin"}); err != nil {
		t.Fatal(err)
	}
	tr := rules(1)
	tr.ClaimStartsAt, tr.ClaimEndsAt, tr.Audience = opens, opens.Add(day), domain.AudienceTargeted
	if _, err := w.h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: "targeted", Rules: tr, TotalStock: 5, By: "admin"}); err != nil {
		t.Fatal(err)
	}
	h := w.subscriber()
	for _, tc := range []struct {
		batch, user string
		want        error
	}{
		{"nope", "ann", domain.ErrNotFound},
		{"open", "ann", domain.ErrConflict},
		{"stopped", "ann", domain.ErrNotClaimable},
		{"targeted", "ann", domain.ErrNotClaimable},
		{"sched", "", domain.ErrInvalidArgument},
		{"", "ann", domain.ErrInvalidArgument},
	} {
		if _, err := h.Handle(ctx, commands.SubscribeReminder{BatchID: tc.batch, UserID: tc.user}); !errors.Is(err, tc.want) {
			t.Errorf("subscribe %q/%q: %v, want %v", tc.batch, tc.user, err, tc.want)
		}
	}
	if n := len(w.perStream(domain.EvReminderSubscribed)); n != 0 {
		t.Fatalf("refused subscriptions stored %d events", n)
	}

	// Concurrent repeats of one subscription: one is new, every answer is the same.
	var wg sync.WaitGroup
	results := make([]commands.Result[*domain.Reminder], 8)
	errs := make([]error, 8)
	for i := range results {
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = h.Handle(ctx, commands.SubscribeReminder{BatchID: "sched", UserID: "ann"})
		}()
	}
	wg.Wait()
	created := 0
	for i, r := range results {
		if errs[i] != nil {
			t.Fatalf("subscription %d: %v", i, errs[i])
		}
		if r.Changed {
			created++
			if r.Position == 0 {
				t.Error("a new subscription has no position")
			}
		}
		a := r.Aggregate
		if a.BatchID != "sched" || a.UserID != "ann" || !a.OpensAt.Equal(opens) || !a.Exists() {
			t.Fatalf("subscription %d: %+v", i, a)
		}
	}
	if created != 1 {
		t.Fatalf("%d subscriptions reported new, want 1", created)
	}
	w.wantOncePerStream(domain.EvReminderSubscribed, []string{commands.ReminderStream("sched", "ann")})
	r, err := w.repo.LoadReminder(ctx, "sched", "ann")
	if err != nil || !r.Exists() || r.Sent || r.Version() != 0 {
		t.Fatalf("stored reminder %+v %v", r, err)
	}
}

// SendOpeningReminders pages through many subscribers with bounded
// concurrency, and a second run sends nothing.
func TestSendOpeningRemindersPages(t *testing.T) {
	w := newRemWorld(t, redistest.Embedded(t))
	ctx := context.Background()
	opens := t0.Add(day)
	w.issueBatch("big", opens, opens.Add(7*day))
	h := w.subscriber()
	const n = 23
	for i := range n {
		if _, err := h.Handle(ctx, commands.SubscribeReminder{BatchID: "big", UserID: fmt.Sprintf("user-%02d", i)}); err != nil {
			t.Fatal(err)
		}
	}
	w.project()
	send, err := commands.NewSendOpeningRemindersHandler(w.repo, w.clock, w.idx, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	w.clock.Set(opens)
	rep, err := send.Handle(ctx, commands.SendOpeningReminders{BatchID: "big"})
	if err != nil || rep.Sent != n || rep.Skipped != 0 || rep.Failed != 0 || rep.NotYet || rep.Dropped {
		t.Fatalf("first run %+v %v, want %d sent", rep, err, n)
	}
	rep, err = send.Handle(ctx, commands.SendOpeningReminders{BatchID: "big"})
	if err != nil || rep.Sent != 0 || rep.Skipped != n {
		t.Fatalf("second run (index not projected yet) %+v %v, want %d skipped", rep, err, n)
	}
	if got := len(w.perStream(domain.EvReminderSent)); got != n {
		t.Fatalf("%d reminders stored, want %d", got, n)
	}
}
