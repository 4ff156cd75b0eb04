package redisreminders_test

import (
	"context"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/redisreminders"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/projections"
)

var t0 = time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)

func newStore(t *testing.T, b redistest.Backend) *redisreminders.Store {
	t.Helper()
	s, err := redisreminders.New(b.Client, b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// pos hands out increasing positions.
type pos struct{ n uint64 }

func (p *pos) next() uint64 { p.n++; return p.n }

func apply(t *testing.T, s *redisreminders.Store, cs ...projections.ReminderChange) {
	t.Helper()
	if err := s.ApplyReminderChanges(context.Background(), cs); err != nil {
		t.Fatal(err)
	}
}

func expiryIndex(t *testing.T, s *redisreminders.Store) map[string]int64 {
	t.Helper()
	m, err := s.ExpiryIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func openingIndex(t *testing.T, s *redisreminders.Store) map[string]int64 {
	t.Helper()
	m, err := s.OpeningIndex(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func pending(t *testing.T, s *redisreminders.Store, batchID, after string, limit int) []string {
	t.Helper()
	ids, err := s.PendingClaimOpeningReminders(context.Background(), batchID, after, limit)
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func wantMap(t *testing.T, what string, got, want map[string]int64) {
	t.Helper()
	if !maps.Equal(got, want) {
		t.Fatalf("%s = %v, want %v", what, got, want)
	}
}

func TestExpiryIndexFollowsCoupons(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		ctx := context.Background()
		var p pos
		v1, v2, v3, v4 := t0.Add(24*time.Hour), t0.Add(48*time.Hour), t0.Add(72*time.Hour), t0.Add(96*time.Hour)
		ch := func(kind projections.ReminderChangeKind, coupon string, rev uint64, vu time.Time) projections.ReminderChange {
			return projections.ReminderChange{Kind: kind, Stream: "coupon-" + coupon, Revision: rev, Position: p.next(), CouponID: coupon, ValidUntil: vu}
		}
		apply(t, s,
			ch(projections.ExpiryTrack, "c1", 0, v1),
			ch(projections.ExpiryTrack, "c2", 0, v2),
			ch(projections.ExpiryTrack, "c3", 0, v3),
			ch(projections.ExpiryTrack, "c4", 0, v4),
		)
		wantMap(t, "index", expiryIndex(t, s), map[string]int64{"c1": v1.UnixMilli(), "c2": v2.UnixMilli(), "c3": v3.UnixMilli(), "c4": v4.UnixMilli()})

		// c2 redeemed then returned usable: out, then back with its validity.
		apply(t, s, ch(projections.ExpiryUntrack, "c2", 2, time.Time{}))
		if _, ok := expiryIndex(t, s)["c2"]; ok {
			t.Fatal("a redeemed coupon is still indexed")
		}
		apply(t, s, ch(projections.ExpiryRetrack, "c2", 3, time.Time{}))
		if got := expiryIndex(t, s)["c2"]; got != v2.UnixMilli() {
			t.Fatalf("returned coupon scored %d, want %d", got, v2.UnixMilli())
		}
		// c3 reminded (forgotten): a later unlock does not bring it back.
		apply(t, s, ch(projections.ExpiryForget, "c3", 1, time.Time{}), ch(projections.ExpiryRetrack, "c3", 3, time.Time{}))
		if _, ok := expiryIndex(t, s)["c3"]; ok {
			t.Fatal("a reminded coupon came back")
		}
		// Stale changes (redelivered, at or below the stored revision) change nothing.
		apply(t, s, ch(projections.ExpiryForget, "c1", 0, time.Time{}), ch(projections.ExpiryUntrack, "c2", 3, time.Time{}),
			ch(projections.ExpiryTrack, "c3", 0, v3))
		wantMap(t, "index after stale changes", expiryIndex(t, s), map[string]int64{"c1": v1.UnixMilli(), "c2": v2.UnixMilli(), "c4": v4.UnixMilli()})

		due, err := s.DueExpiryReminders(ctx, v2, 0, 10)
		if err != nil || !slices.Equal(due, []string{"c1", "c2"}) {
			t.Fatalf("due at v2: %v %v, want [c1 c2]", due, err)
		}
		due, err = s.DueExpiryReminders(ctx, v4, 0, 2)
		if err != nil || !slices.Equal(due, []string{"c1", "c2"}) {
			t.Fatalf("due at v4, limit 2: %v %v, want [c1 c2]", due, err)
		}
		due, err = s.DueExpiryReminders(ctx, v1.Add(-time.Millisecond), 0, 10)
		if err != nil || len(due) != 0 {
			t.Fatalf("due before v1: %v %v", due, err)
		}
		if _, err := s.DueExpiryReminders(ctx, v4, 0, 0); err == nil {
			t.Fatal("limit 0 accepted")
		}
	})
}

func TestOpeningIndexFollowsBatchesAndSubscribers(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		ctx := context.Background()
		var p pos
		s1, s2 := t0.Add(time.Hour), t0.Add(3*time.Hour)
		batch := func(kind projections.ReminderChangeKind, id string, rev uint64, start time.Time) projections.ReminderChange {
			return projections.ReminderChange{Kind: kind, Stream: commands.BatchStream(id), Revision: rev, Position: p.next(), BatchID: id, OpensAt: start}
		}
		rem := func(kind projections.ReminderChangeKind, id, user string, rev uint64, opens time.Time) projections.ReminderChange {
			return projections.ReminderChange{Kind: kind, Stream: commands.ReminderStream(id, user), Revision: rev, Position: p.next(),
				BatchID: id, UserID: user, OpensAt: opens}
		}
		// A batch without subscribers is not indexed.
		apply(t, s, batch(projections.OpeningBatch, "b1", 0, s1))
		wantMap(t, "opening", openingIndex(t, s), map[string]int64{})
		apply(t, s, rem(projections.OpeningSubscribed, "b1", "u3", 0, s1), rem(projections.OpeningSubscribed, "b1", "u1", 0, s1),
			rem(projections.OpeningSubscribed, "b1", "u2", 0, s1))
		wantMap(t, "opening", openingIndex(t, s), map[string]int64{"b1": s1.UnixMilli()})
		if got := pending(t, s, "b1", "", 10); !slices.Equal(got, []string{"u1", "u2", "u3"}) {
			t.Fatalf("pending %v", got)
		}
		if got := pending(t, s, "b1", "u1", 1); !slices.Equal(got, []string{"u2"}) {
			t.Fatalf("pending after u1, limit 1: %v", got)
		}
		// Rules change: re-scored, whatever the subscription said.
		apply(t, s, batch(projections.OpeningBatch, "b1", 1, s2))
		wantMap(t, "opening after the start moved", openingIndex(t, s), map[string]int64{"b1": s2.UnixMilli()})
		if due, err := s.DueClaimOpenings(ctx, s1, 10); err != nil || len(due) != 0 {
			t.Fatalf("due at the old start: %v %v", due, err)
		}
		if due, err := s.DueClaimOpenings(ctx, s2, 10); err != nil || !slices.Equal(due, []string{"b1"}) {
			t.Fatalf("due at the new start: %v %v", due, err)
		}
		// Stale batch change (redelivered issue) changes nothing.
		apply(t, s, batch(projections.OpeningBatch, "b1", 0, s1))
		wantMap(t, "opening after a stale change", openingIndex(t, s), map[string]int64{"b1": s2.UnixMilli()})

		// Sent: out of the pending set; the last one takes the batch out.
		apply(t, s, rem(projections.OpeningSent, "b1", "u1", 1, time.Time{}))
		if got := pending(t, s, "b1", "", 10); !slices.Equal(got, []string{"u2", "u3"}) {
			t.Fatalf("pending after u1 sent: %v", got)
		}
		apply(t, s, rem(projections.OpeningSubscribed, "b1", "u1", 0, s1)) // redelivered subscription
		if got := pending(t, s, "b1", "", 10); !slices.Equal(got, []string{"u2", "u3"}) {
			t.Fatalf("a redelivered subscription brought u1 back: %v", got)
		}
		apply(t, s, rem(projections.OpeningSent, "b1", "u2", 1, time.Time{}), rem(projections.OpeningSent, "b1", "u3", 1, time.Time{}))
		wantMap(t, "opening after all sent", openingIndex(t, s), map[string]int64{})

		// Stopped: subscribers dropped; later subscriptions ignored.
		apply(t, s, batch(projections.OpeningBatch, "b2", 0, s1), rem(projections.OpeningSubscribed, "b2", "u1", 0, s1))
		wantMap(t, "opening with b2", openingIndex(t, s), map[string]int64{"b2": s1.UnixMilli()})
		apply(t, s, batch(projections.OpeningClosed, "b2", 1, time.Time{}), rem(projections.OpeningSubscribed, "b2", "u2", 0, s1))
		wantMap(t, "opening after b2 stopped", openingIndex(t, s), map[string]int64{})
		if got := pending(t, s, "b2", "", 10); len(got) != 0 {
			t.Fatalf("stopped batch still has subscribers %v", got)
		}

		// A batch the index has not seen: scored by the subscription's opens_at.
		apply(t, s, rem(projections.OpeningSubscribed, "b3", "u1", 0, s2))
		wantMap(t, "opening with b3", openingIndex(t, s), map[string]int64{"b3": s2.UnixMilli()})
		// Dropped by the worker: gone, and later subscriptions ignored.
		if err := s.DropClaimOpening(ctx, "b3"); err != nil {
			t.Fatal(err)
		}
		apply(t, s, rem(projections.OpeningSubscribed, "b3", "u2", 0, s2))
		wantMap(t, "opening after b3 dropped", openingIndex(t, s), map[string]int64{})
		if got := pending(t, s, "b3", "", 10); len(got) != 0 {
			t.Fatalf("dropped batch still has subscribers %v", got)
		}
	})
}

func TestCheckpointIsSavedWithEveryChangeAndNeverMovesBack(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		ctx := context.Background()
		cp := func() uint64 {
			t.Helper()
			v, err := s.Checkpoint(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
		if cp() != 0 {
			t.Fatal("fresh checkpoint is not 0")
		}
		track := projections.ReminderChange{Kind: projections.ExpiryTrack, Stream: "coupon-c1", Revision: 0, Position: 5, CouponID: "c1", ValidUntil: t0}
		apply(t, s, track)
		if cp() != 5 {
			t.Fatalf("checkpoint %d, want 5", cp())
		}
		stale := track
		stale.Position = 7
		apply(t, s, stale) // skipped as stale, but handled: the checkpoint moves
		if cp() != 7 {
			t.Fatalf("checkpoint %d after a stale change, want 7", cp())
		}
		apply(t, s, projections.ReminderChange{Kind: projections.ReminderCheckpoint, Position: 3})
		if cp() != 7 {
			t.Fatalf("checkpoint moved back to %d", cp())
		}
		var cs []projections.ReminderChange
		for i := range 3 {
			cs = append(cs, projections.ReminderChange{Kind: projections.ExpiryTrack, Stream: fmt.Sprintf("coupon-d%d", i),
				Position: uint64(8 + i), CouponID: fmt.Sprintf("d%d", i), ValidUntil: t0})
		}
		apply(t, s, cs...)
		if cp() != 10 || len(expiryIndex(t, s)) != 4 {
			t.Fatalf("after a pipelined batch: checkpoint %d, index %v", cp(), expiryIndex(t, s))
		}
		// Invalid changes are refused before anything is written.
		bad := []projections.ReminderChange{{Kind: projections.ExpiryTrack, Stream: "coupon-x", Position: 11, CouponID: "x"}}
		if err := s.ApplyReminderChanges(ctx, bad); err == nil || cp() != 10 {
			t.Fatalf("a track without validity: err %v, checkpoint %d", err, cp())
		}
	})
}

// Every key of the adapter is in one Redis Cluster slot (the scripts touch
// several keys at once).
func TestKeysShareOneSlot(t *testing.T) {
	s, err := redisreminders.New(redistest.Embedded(t).Client, "couponsd:")
	if err != nil {
		t.Fatal(err)
	}
	keys := []string{s.Key("rev"), s.Key("vu"), s.Key("expiry"), s.Key("bstart"), s.Key("closed"), s.Key("opening"),
		s.Key("checkpoint"), s.Key("pending:b-1"), s.Key("pending:{b:2}")}
	for _, k := range keys {
		if redistest.KeySlot(k) != redistest.KeySlot(keys[0]) {
			t.Errorf("%q is in slot %d, %q in %d", k, redistest.KeySlot(k), keys[0], redistest.KeySlot(keys[0]))
		}
	}
	if _, err := redisreminders.New(nil, "p:"); err == nil {
		t.Fatal("New accepted a nil client")
	}
}

// The projector over this adapter is idempotent: redelivering every event,
// one by one or in batches, leaves the indexes as they were.
func TestProjectorRedeliveryChangesNothing(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		s := newStore(t, b)
		reg := domain.NewRegistry()
		p, err := projections.NewRemindersProjector(s, reg)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		recs := sampleLog(t, reg)
		if err := p.HandleBatch(ctx, recs); err != nil {
			t.Fatal(err)
		}
		want := snapshot(t, s)
		if len(want.expiry) != 2 || len(want.opening) != 1 {
			t.Fatalf("unexpected indexes %+v", want)
		}
		for _, rec := range recs {
			if err := p.Handle(ctx, rec); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.HandleBatch(ctx, recs[3:]); err != nil {
			t.Fatal(err)
		}
		if got := snapshot(t, s); !reflect.DeepEqual(got, want) {
			t.Fatalf("after redelivery %+v, want %+v", got, want)
		}
		if cp, _ := p.Checkpoint(ctx); cp != recs[len(recs)-1].Position {
			t.Fatalf("checkpoint %d, want %d", cp, recs[len(recs)-1].Position)
		}
	})
}

type indexes struct {
	expiry, opening map[string]int64
	pending         map[string][]string
}

func snapshot(t *testing.T, s *redisreminders.Store) indexes {
	t.Helper()
	ix := indexes{expiry: expiryIndex(t, s), opening: openingIndex(t, s), pending: map[string][]string{}}
	for id := range ix.opening {
		ix.pending[id] = pending(t, s, id, "", 1000)
	}
	return ix
}

// sampleLog is a small event log: coupons claimed, locked, redeemed,
// returned, reminded, expired, voided; batches issued, re-scheduled,
// stopped; subscriptions and a sent reminder.
func sampleLog(t *testing.T, reg *domain.Registry) []es.RecordedEvent {
	t.Helper()
	terms := func(days int) domain.CouponTerms {
		return domain.CouponTerms{BatchID: "b1", ValidFrom: t0, ValidUntil: t0.Add(time.Duration(days) * 24 * time.Hour)}
	}
	rules := func(start time.Time) domain.Rules {
		return domain.Rules{ClaimStartsAt: start, ClaimEndsAt: start.Add(48 * time.Hour), Audience: domain.AudiencePublic}
	}
	type ev struct {
		stream string
		e      domain.Event
	}
	log := []ev{
		{commands.BatchStream("b1"), &domain.BatchIssued{BatchID: "b1", Rules: rules(t0.Add(time.Hour))}},
		{commands.BatchStream("b2"), &domain.BatchIssued{BatchID: "b2", Rules: rules(t0.Add(time.Hour))}},
		{commands.CouponStream("c1"), &domain.CouponClaimed{CouponID: "c1", UserID: "u1", Terms: terms(3)}},
		{commands.CouponStream("c2"), &domain.CouponGranted{CouponID: "c2", UserID: "u2", Terms: terms(4)}},
		{commands.CouponStream("c3"), &domain.CouponClaimed{CouponID: "c3", UserID: "u3", Terms: terms(5)}},
		{commands.CouponStream("c4"), &domain.CouponClaimed{CouponID: "c4", UserID: "u4", Terms: terms(6)}},
		{commands.CouponStream("c5"), &domain.CouponClaimVoided{CouponID: "c5", BatchID: "b1", UserID: "u5"}},
		{commands.CouponStream("c1"), &domain.CouponLocked{CouponID: "c1", BatchID: "b1", OrderID: "o1"}},
		{commands.CouponStream("c2"), &domain.CouponLocked{CouponID: "c2", BatchID: "b1", OrderID: "o2"}},
		{commands.CouponStream("c2"), &domain.CouponRedeemed{CouponID: "c2", BatchID: "b1", OrderID: "o2"}},
		{commands.CouponStream("c2"), &domain.CouponReturned{CouponID: "c2", BatchID: "b1", OrderID: "o2", UsableAgain: true}},
		{commands.CouponStream("c3"), &domain.CouponExpiryReminded{CouponID: "c3", BatchID: "b1"}},
		{commands.CouponStream("c3"), &domain.CouponLocked{CouponID: "c3", BatchID: "b1", OrderID: "o3"}},
		{commands.CouponStream("c3"), &domain.CouponUnlocked{CouponID: "c3", BatchID: "b1", OrderID: "o3"}},
		{commands.CouponStream("c4"), &domain.CouponExpired{CouponID: "c4", BatchID: "b1"}},
		{commands.ReminderStream("b1", "u1"), &domain.ReminderSubscribed{BatchID: "b1", UserID: "u1", OpensAt: t0.Add(time.Hour)}},
		{commands.ReminderStream("b1", "u2"), &domain.ReminderSubscribed{BatchID: "b1", UserID: "u2", OpensAt: t0.Add(time.Hour)}},
		{commands.ReminderStream("b2", "u1"), &domain.ReminderSubscribed{BatchID: "b2", UserID: "u1", OpensAt: t0.Add(time.Hour)}},
		{commands.BatchStream("b1"), &domain.BatchRulesChanged{BatchID: "b1", Rules: rules(t0.Add(2 * time.Hour)), RuleVersion: 1}},
		{commands.BatchStream("b2"), &domain.BatchStopped{BatchID: "b2"}},
		{commands.ReminderStream("b1", "u1"), &domain.ReminderSent{BatchID: "b1", UserID: "u1"}},
		{commands.BatchStream("b1"), &domain.BatchPaused{BatchID: "b1"}},
	}
	revs := map[string]uint64{}
	out := make([]es.RecordedEvent, len(log))
	for i, x := range log {
		name, data, err := reg.Marshal(x.e)
		if err != nil {
			t.Fatal(err)
		}
		rev, seen := revs[x.stream]
		if seen {
			rev++
		}
		revs[x.stream] = rev
		out[i] = es.RecordedEvent{StreamID: x.stream, Revision: rev, Position: uint64(100 + i), Type: name, Data: data}
	}
	return out
}
