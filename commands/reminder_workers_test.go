package commands_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisreminders"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/projections"
)

const day = 24 * time.Hour

// remWorld is one couponsd "process" on an embedded event store in a
// directory and a Redis: restart closes the store and opens everything anew
// on the same directory and Redis, as a new process would.
type remWorld struct {
	t     *testing.T
	dir   string
	b     redistest.Backend
	clock *fakeClock
	store *boltstore.Store
	repo  *commands.Repository
	h     *commands.Handlers
	idx   *redisreminders.Store
	proj  *projections.RemindersProjector
}

func newRemWorld(t *testing.T, b redistest.Backend) *remWorld {
	t.Helper()
	w := &remWorld{t: t, dir: t.TempDir(), b: b, clock: &fakeClock{t: t0}}
	w.open()
	t.Cleanup(func() { _ = w.store.Close() })
	return w
}

func (w *remWorld) open() {
	w.t.Helper()
	var err error
	if w.store, err = boltstore.Open(w.dir, boltstore.Options{Now: w.clock.Now}); err != nil {
		w.t.Fatal(err)
	}
	if w.repo, err = commands.NewRepository(w.store, domain.NewRegistry()); err != nil {
		w.t.Fatal(err)
	}
	g, err := redisguard.New(w.b.Client, w.b.Prefix)
	if err != nil {
		w.t.Fatal(err)
	}
	if w.h, err = commands.NewHandlers(commands.Deps{Repo: w.repo, Guard: g, Clock: w.clock}, 30*time.Minute); err != nil {
		w.t.Fatal(err)
	}
	if w.idx, err = redisreminders.New(w.b.Client, w.b.Prefix); err != nil {
		w.t.Fatal(err)
	}
	if w.proj, err = projections.NewRemindersProjector(w.idx, w.repo.Registry()); err != nil {
		w.t.Fatal(err)
	}
}

// restart stops this process (nothing of it survives but the store's
// directory and Redis) and starts a new one.
func (w *remWorld) restart() {
	w.t.Helper()
	if err := w.store.Close(); err != nil {
		w.t.Fatal(err)
	}
	w.open()
}

// project brings the reminders projection up to date, in batches of 5.
func (w *remWorld) project() {
	w.t.Helper()
	ctx := context.Background()
	from, err := w.proj.Checkpoint(ctx)
	if err != nil {
		w.t.Fatal(err)
	}
	var recs []es.RecordedEvent
	if err := es.Scan(ctx, w.store, from, 100, func(r es.RecordedEvent) error { recs = append(recs, r); return nil }); err != nil {
		w.t.Fatal(err)
	}
	for chunk := range slices.Chunk(recs, 5) {
		if err := w.proj.HandleBatch(ctx, chunk); err != nil {
			w.t.Fatal(err)
		}
	}
}

// issueBatch issues a public batch claimable over [start, start+5d) whose
// coupons are valid until validUntil.
func (w *remWorld) issueBatch(id string, start, validUntil time.Time) {
	w.t.Helper()
	r := rules(5)
	r.ClaimStartsAt, r.ClaimEndsAt = start, start.Add(5*day)
	r.ValidFrom, r.ValidUntil = start, validUntil
	if _, err := w.h.IssueBatch.Handle(context.Background(), commands.IssueBatch{BatchID: id, Rules: r, TotalStock: 1000, By: "admin"}); err != nil {
		w.t.Fatal(err)
	}
}

func (w *remWorld) claimOf(batchID, userID string) string {
	w.t.Helper()
	res, err := w.h.Claim.Handle(context.Background(), commands.ClaimCoupon{BatchID: batchID, UserID: userID, CouponID: newID()})
	if err != nil {
		w.t.Fatal(err)
	}
	return res.Aggregate.ID
}

func (w *remWorld) lock(couponID, userID, order string) {
	w.t.Helper()
	if _, err := w.h.Lock.Handle(context.Background(), commands.LockCoupon{CouponID: couponID, OrderID: order, UserID: userID}); err != nil {
		w.t.Fatal(err)
	}
}

// perStream counts the events of type typ per stream.
func (w *remWorld) perStream(typ string) map[string]int {
	w.t.Helper()
	out := map[string]int{}
	if err := es.Scan(context.Background(), w.store, 0, 500, func(r es.RecordedEvent) error {
		if r.Type == typ {
			out[r.StreamID]++
		}
		return nil
	}); err != nil {
		w.t.Fatal(err)
	}
	return out
}

func (w *remWorld) expiryWorker() *commands.ExpiryReminderWorker {
	w.t.Helper()
	wk, err := commands.NewExpiryReminderWorker(w.repo, w.idx, w.clock, commands.ReminderConfig{Interval: 5 * time.Millisecond, Concurrency: 4}, discardLogger())
	if err != nil {
		w.t.Fatal(err)
	}
	return wk
}

func (w *remWorld) openingWorker() *commands.ClaimOpeningWorker {
	w.t.Helper()
	wk, err := commands.NewClaimOpeningWorker(w.repo, w.idx, w.clock, commands.ReminderConfig{Interval: 5 * time.Millisecond, BatchLimit: 2, Concurrency: 3}, discardLogger())
	if err != nil {
		w.t.Fatal(err)
	}
	return wk
}

func runOnce(t *testing.T, pass func(context.Context) (int, error)) int {
	t.Helper()
	n, err := pass(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantOncePerStream fails unless every stream of streams has exactly one
// event of type typ, and no other stream has any.
func (w *remWorld) wantOncePerStream(typ string, streams []string) {
	w.t.Helper()
	got := w.perStream(typ)
	for _, s := range streams {
		if got[s] != 1 {
			w.t.Errorf("%s has %d %s events, want 1", s, got[s], typ)
		}
	}
	if len(got) != len(streams) {
		w.t.Errorf("%d streams have %s events, want %d: %v", len(got), typ, len(streams), got)
	}
}

func couponStreams(ids []string) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = commands.CouponStream(id)
	}
	return out
}

// live runs the projector and the worker in the background (as the service
// does) until the returned stop is called.
func (w *remWorld) live(run func(context.Context)) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); projections.Run(ctx, w.store, w.proj, discardLogger()) }()
	go func() { defer wg.Done(); run(ctx) }()
	return func() { cancel(); wg.Wait() }
}

// eventually polls cond every 5ms for up to 10s.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// Each coupon is reminded once, across a crash between the reminder and
// its projection and across restarts of the worker and the projector.
func TestExpiryRemindersOncePerCouponAcrossRestarts(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newRemWorld(t, b)
		// Coupons of b1 are valid until t0+3d (reminded from t0+2d), of b2 until t0+5d (from t0+4d).
		w.issueBatch("b1", t0.Add(-time.Hour), t0.Add(3*day))
		w.issueBatch("b2", t0.Add(-time.Hour), t0.Add(5*day))
		var first, second []string
		for i := range 6 {
			first = append(first, w.claimOf("b1", fmt.Sprintf("u%d", i)))
			second = append(second, w.claimOf("b2", fmt.Sprintf("u%d", i)))
		}
		w.project()
		wk := w.expiryWorker()
		if n := runOnce(t, wk.RunOnce); n != 0 {
			t.Fatalf("reminded %d coupons a day before they were due", n)
		}

		// Due: b1's coupons are reminded. The process dies before the
		// projector sees the reminders: the index still lists them.
		w.clock.Set(t0.Add(2*day + time.Hour))
		if n := runOnce(t, wk.RunOnce); n != len(first) {
			t.Fatalf("reminded %d coupons, want %d", n, len(first))
		}
		w.restart()
		due, err := w.idx.DueExpiryReminders(context.Background(), w.clock.Now().Add(day), 0, 100)
		if err != nil || len(due) != len(first) {
			t.Fatalf("after the crash the index lists %v (%v), want b1's %d coupons", due, err, len(first))
		}
		if n := runOnce(t, w.expiryWorker().RunOnce); n != 0 {
			t.Fatalf("the restarted worker reminded %d coupons again", n)
		}
		w.wantOncePerStream(domain.EvCouponExpiryReminded, couponStreams(first))

		// A live projector and worker; then another restart, later, for b2.
		stop := w.live(w.expiryWorker().Run)
		eventually(t, "the projector to drop reminded coupons", func() bool {
			m, err := w.idx.ExpiryIndex(context.Background())
			return err == nil && len(m) == len(second)
		})
		stop()
		w.restart()
		w.clock.Set(t0.Add(4*day + time.Hour))
		stop = w.live(w.expiryWorker().Run)
		eventually(t, "b2's reminders", func() bool {
			return len(w.perStream(domain.EvCouponExpiryReminded)) == len(first)+len(second)
		})
		eventually(t, "an empty index", func() bool {
			m, err := w.idx.ExpiryIndex(context.Background())
			return err == nil && len(m) == 0
		})
		stop()
		w.wantOncePerStream(domain.EvCouponExpiryReminded, couponStreams(append(first, second...)))
	})
}

// Two instances polling the same index remind each coupon once.
func TestExpiryRemindersOnceWithTwoWorkers(t *testing.T) {
	w := newRemWorld(t, redistest.Embedded(t))
	w.issueBatch("b1", t0.Add(-time.Hour), t0.Add(3*day))
	var ids []string
	for i := range 20 {
		ids = append(ids, w.claimOf("b1", fmt.Sprintf("u%d", i)))
	}
	w.project()
	w.clock.Set(t0.Add(2*day + time.Hour))
	a, b := w.expiryWorker(), w.expiryWorker()
	var wg sync.WaitGroup
	var na, nb int
	wg.Add(2)
	go func() { defer wg.Done(); na, _ = a.RunOnce(context.Background()) }()
	go func() { defer wg.Done(); nb, _ = b.RunOnce(context.Background()) }()
	wg.Wait()
	if na+nb != len(ids) {
		t.Fatalf("the workers reminded %d+%d coupons, want %d in all", na, nb, len(ids))
	}
	w.wantOncePerStream(domain.EvCouponExpiryReminded, couponStreams(ids))
}

// Redeemed, expired and voided coupons are not reminded; a locked one is
// reminded once unlocked, if still valid; one unlocked too late is not.
func TestExpiryRemindersSkipUsedAndWaitForUnlock(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newRemWorld(t, b)
		ctx := context.Background()
		w.issueBatch("short", t0.Add(-time.Hour), t0.Add(2*day)) // due from t0+1d
		w.issueBatch("long", t0.Add(-time.Hour), t0.Add(5*day))  // due from t0+4d
		usable := w.claimOf("long", "ann")
		redeemed := w.claimOf("long", "bob")
		w.lock(redeemed, "bob", "o-bob")
		if _, err := w.h.Redeem.Handle(ctx, commands.RedeemCoupon{CouponID: redeemed, OrderID: "o-bob", PaymentID: "p", Discount: 1}); err != nil {
			t.Fatal(err)
		}
		unlockedInTime := w.claimOf("long", "cat")
		w.lock(unlockedInTime, "cat", "o-cat")
		unlockedLate := w.claimOf("short", "dan")
		w.lock(unlockedLate, "dan", "o-dan")
		expired := w.claimOf("short", "eve")
		voided := "v-1"
		if _, err := w.repo.SaveCoupon(ctx, domain.VoidClaim(voided, "long", "fay", "test", w.clock.Now())); err != nil {
			t.Fatal(err)
		}
		w.project()
		wk := w.expiryWorker()

		// t0+2d+1m: the short batch's coupons are past validity; the one
		// still usable is expired by the expiry worker.
		w.clock.Set(t0.Add(2*day + time.Minute))
		if n := runOnce(t, wk.RunOnce); n != 0 {
			t.Fatalf("reminded %d coupons past their validity", n)
		}
		if _, err := w.h.Expire.Handle(ctx, commands.ExpireCoupon{CouponID: expired}); err != nil {
			t.Fatal(err)
		}
		// dan's order is cancelled after validity ended: no reminder.
		if _, err := w.h.Unlock.Handle(ctx, commands.UnlockCoupon{CouponID: unlockedLate, OrderID: "o-dan"}); err != nil {
			t.Fatal(err)
		}
		w.project()

		// t0+4d+1h: ann is reminded; cat is still locked: skipped, kept.
		w.clock.Set(t0.Add(4*day + time.Hour))
		if n := runOnce(t, wk.RunOnce); n != 1 {
			t.Fatalf("reminded %d coupons, want 1 (ann's)", n)
		}
		w.project()
		m, err := w.idx.ExpiryIndex(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := m[unlockedInTime]; !ok {
			t.Fatalf("the locked coupon left the index: %v", m)
		}
		for _, id := range []string{redeemed, expired, voided, usable} {
			if _, ok := m[id]; ok {
				t.Fatalf("coupon %s is still indexed: %v", id, m)
			}
		}
		// cat's order is cancelled before validity ends: reminded now.
		w.clock.Set(t0.Add(4*day + 2*time.Hour))
		if _, err := w.h.Unlock.Handle(ctx, commands.UnlockCoupon{CouponID: unlockedInTime, OrderID: "o-cat"}); err != nil {
			t.Fatal(err)
		}
		w.project()
		if n := runOnce(t, wk.RunOnce); n != 1 {
			t.Fatalf("reminded %d coupons after the unlock, want 1", n)
		}
		w.project()
		if n := runOnce(t, wk.RunOnce); n != 0 {
			t.Fatalf("reminded %d more", n)
		}
		w.wantOncePerStream(domain.EvCouponExpiryReminded, couponStreams([]string{usable, unlockedInTime}))
		// What is left indexed is dan's coupon, past validity (the expiry worker's business).
		if m, _ := w.idx.ExpiryIndex(ctx); len(m) != 1 || m[unlockedLate] == 0 {
			t.Fatalf("index left %v, want only %s", m, unlockedLate)
		}
	})
}

// Claim-opening reminders: three shoppers (one subscribing twice) are
// reminded once each, across a crash before the projection and a restart.
func TestClaimOpeningRemindersOnceAcrossRestarts(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newRemWorld(t, b)
		ctx := context.Background()
		opens := t0.Add(day)
		w.issueBatch("flash", opens, opens.Add(7*day))
		sub := w.subscriber()
		users := []string{"ann", "bob", "cat", "bob"}
		for i, u := range users {
			res, err := sub.Handle(ctx, commands.SubscribeReminder{BatchID: "flash", UserID: u})
			if err != nil {
				t.Fatal(err)
			}
			if res.Changed != (i < 3) || !res.Aggregate.OpensAt.Equal(opens) || res.Aggregate.UserID != u {
				t.Fatalf("subscription %d of %s: changed %v, %+v", i, u, res.Changed, res.Aggregate)
			}
		}
		w.project()
		wk := w.openingWorker()
		w.clock.Set(opens.Add(-time.Second))
		if n := runOnce(t, wk.RunOnce); n != 0 {
			t.Fatalf("sent %d reminders before the opening", n)
		}
		w.clock.Set(opens.Add(time.Second))
		if n := runOnce(t, wk.RunOnce); n != 3 {
			t.Fatalf("sent %d reminders, want 3", n)
		}
		streams := []string{commands.ReminderStream("flash", "ann"), commands.ReminderStream("flash", "bob"), commands.ReminderStream("flash", "cat")}
		w.wantOncePerStream(domain.EvReminderSent, streams)

		// Crash before the projector saw them, restart: nothing more.
		w.restart()
		if due, _ := w.idx.DueClaimOpenings(ctx, w.clock.Now(), 10); !slices.Equal(due, []string{"flash"}) {
			t.Fatalf("after the crash the index lists %v, want [flash]", due)
		}
		if n := runOnce(t, w.openingWorker().RunOnce); n != 0 {
			t.Fatalf("the restarted worker sent %d reminders again", n)
		}
		stop := w.live(w.openingWorker().Run)
		eventually(t, "the batch to leave the index", func() bool {
			m, err := w.idx.OpeningIndex(ctx)
			return err == nil && len(m) == 0
		})
		stop()
		w.wantOncePerStream(domain.EvReminderSent, streams)
		// A late repeat of a subscription changes nothing.
		if _, err := w.subscriber().Handle(ctx, commands.SubscribeReminder{BatchID: "flash", UserID: "ann"}); err == nil {
			t.Fatal("subscribing to an open batch succeeded")
		}
	})
}

// A batch whose start moved later is not reminded before the new start,
// whether the projection has seen the change or not; a batch stopped before
// opening drops its subscriptions without a notification.
func TestClaimOpeningFollowsMovedStartAndDropsStopped(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newRemWorld(t, b)
		ctx := context.Background()
		opens, later := t0.Add(day), t0.Add(2*day)
		for _, id := range []string{"seen", "unseen", "stopped", "stopped-unseen"} {
			w.issueBatch(id, opens, opens.Add(7*day))
			for _, u := range []string{"ann", "bob"} {
				if _, err := w.subscriber().Handle(ctx, commands.SubscribeReminder{BatchID: id, UserID: u}); err != nil {
					t.Fatal(err)
				}
			}
		}
		move := func(id string) {
			bt, err := w.repo.LoadBatch(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			r := bt.Rules
			r.ClaimStartsAt = later
			if _, err := w.h.ChangeRules.Handle(ctx, commands.ChangeBatchRules{BatchID: id, Rules: r, By: "admin"}); err != nil {
				t.Fatal(err)
			}
		}
		stop := func(id string) {
			if _, err := w.h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: id, Action: commands.ActionStop, By: "admin"}); err != nil {
				t.Fatal(err)
			}
		}
		w.project()
		move("seen")
		stop("stopped")
		w.project()
		move("unseen") // not projected before the opening
		stop("stopped-unseen")
		if m, _ := w.idx.OpeningIndex(ctx); m["seen"] != later.UnixMilli() || m["unseen"] != opens.UnixMilli() || len(m) != 3 {
			t.Fatalf("opening index %v", m)
		}

		wk := w.openingWorker()
		w.clock.Set(opens.Add(time.Minute))
		if n := runOnce(t, wk.RunOnce); n != 0 {
			t.Fatalf("sent %d reminders before the new start", n)
		}
		if m, _ := w.idx.OpeningIndex(ctx); len(m) != 2 || m["stopped-unseen"] != 0 {
			t.Fatalf("after the first pass the index is %v, want seen and unseen only", m)
		}
		w.project()
		if m, _ := w.idx.OpeningIndex(ctx); m["seen"] != later.UnixMilli() || m["unseen"] != later.UnixMilli() || len(m) != 2 {
			t.Fatalf("opening index %v, want both moved batches at the new start", m)
		}
		w.clock.Set(later.Add(time.Minute))
		if n := runOnce(t, wk.RunOnce); n != 4 {
			t.Fatalf("sent %d reminders at the new start, want 4", n)
		}
		w.project()
		w.wantOncePerStream(domain.EvReminderSent, []string{
			commands.ReminderStream("seen", "ann"), commands.ReminderStream("seen", "bob"),
			commands.ReminderStream("unseen", "ann"), commands.ReminderStream("unseen", "bob")})
		if m, _ := w.idx.OpeningIndex(ctx); len(m) != 0 {
			t.Fatalf("index left %v", m)
		}
	})
}

func (w *remWorld) subscriber() *commands.SubscribeReminderHandler {
	w.t.Helper()
	h, err := commands.NewSubscribeReminderHandler(w.repo, w.clock)
	if err != nil {
		w.t.Fatal(err)
	}
	return h
}

func TestReminderConfig(t *testing.T) {
	c := commands.ReminderConfig{}.WithDefaults()
	if c.Lead != 24*time.Hour || c.Interval != time.Second || c.BatchLimit != 500 || c.Concurrency < 1 {
		t.Fatalf("defaults %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []commands.ReminderConfig{
		{Lead: -time.Hour}, {Interval: -1}, {BatchLimit: -1}, {Concurrency: -2},
	} {
		if err := bad.WithDefaults().Validate(); err == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	w := newRemWorld(t, redistest.Embedded(t))
	if _, err := commands.NewExpiryReminderWorker(w.repo, w.idx, w.clock, commands.ReminderConfig{Lead: -1}, discardLogger()); err == nil {
		t.Error("a negative lead was accepted")
	}
	if _, err := commands.NewExpiryReminderWorker(w.repo, nil, w.clock, commands.ReminderConfig{}, discardLogger()); err == nil {
		t.Error("NewExpiryReminderWorker accepted a nil index")
	}
	if _, err := commands.NewClaimOpeningWorker(nil, w.idx, w.clock, commands.ReminderConfig{}, discardLogger()); err == nil {
		t.Error("NewClaimOpeningWorker accepted a nil repository")
	}
	if _, err := commands.NewClaimOpeningWorker(w.repo, w.idx, nil, commands.ReminderConfig{}, discardLogger()); err == nil {
		t.Error("NewClaimOpeningWorker accepted a nil clock")
	}
	if _, err := commands.NewSubscribeReminderHandler(w.repo, nil); err == nil {
		t.Error("NewSubscribeReminderHandler accepted a nil clock")
	}
	if _, err := commands.NewRemindExpiryHandler(w.repo, w.clock, 0); err == nil {
		t.Error("NewRemindExpiryHandler accepted a zero lead")
	}
	if _, err := commands.NewSendOpeningRemindersHandler(w.repo, w.clock, nil, 1, 1); err == nil {
		t.Error("NewSendOpeningRemindersHandler accepted a nil index")
	}
}

// Locked coupons at the head of the index (more than a page of them) do not
// hold back the reminders of usable coupons behind them.
func TestExpiryRemindersPassLockedCoupons(t *testing.T) {
	b := redistest.Embedded(t)
	w := newRemWorld(t, b)
	w.issueBatch("early", t0.Add(-time.Hour), t0.Add(2*day))
	w.issueBatch("late", t0.Add(-time.Hour), t0.Add(2*day+time.Hour))
	for i := range 5 {
		u := fmt.Sprintf("locked%d", i)
		w.lock(w.claimOf("early", u), u, "order-"+u)
	}
	usable := w.claimOf("late", "free")
	w.project()
	w.clock.Set(t0.Add(day + 2*time.Hour)) // both batches within the 24h lead
	wk, err := commands.NewExpiryReminderWorker(w.repo, w.idx, w.clock, commands.ReminderConfig{Interval: time.Millisecond, BatchLimit: 2}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if n := runOnce(t, wk.RunOnce); n != 1 {
		t.Fatalf("reminded %d coupons, want the one usable coupon behind 5 locked ones", n)
	}
	w.wantOncePerStream(domain.EvCouponExpiryReminded, couponStreams([]string{usable}))
}
