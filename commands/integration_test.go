package commands_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redistest"
)

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

var t0 = time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)

type world struct {
	store es.Store
	guard *redisguard.Guard
	clock *fakeClock
	deps  commands.Deps
	h     *commands.Handlers
}

func newWorld(t testing.TB, b redistest.Backend, wrap func(es.Store) es.Store) *world {
	t.Helper()
	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	var store es.Store = bs
	if wrap != nil {
		store = wrap(bs)
	}
	g, err := redisguard.New(b.Client, b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	repo, err := commands.NewRepository(store, domain.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	clk := &fakeClock{t: t0}
	d := commands.Deps{Repo: repo, Guard: g, Clock: clk}
	h, err := commands.NewHandlers(d, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return &world{store: store, guard: g, clock: clk, deps: d, h: h}
}

func rules(limit int) domain.Rules {
	return domain.Rules{
		Name: "flash", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: 10000, AmountOff: 2000,
		Scope: domain.Scope{Kind: domain.ScopeAll}, PerUserLimit: limit,
		ClaimStartsAt: t0.Add(-time.Hour), ClaimEndsAt: t0.Add(24 * time.Hour),
		ValidFrom: t0.Add(-time.Hour), ValidUntil: t0.Add(7 * 24 * time.Hour), Audience: domain.AudiencePublic,
	}
}

func (w *world) issue(t testing.TB, id string, stock int64, limit int) {
	t.Helper()
	if _, err := w.h.IssueBatch.Handle(context.Background(), commands.IssueBatch{BatchID: id, Rules: rules(limit), TotalStock: stock, By: "admin"}); err != nil {
		t.Fatal(err)
	}
}

func (w *world) countEvents(t *testing.T, typ string) int {
	t.Helper()
	n := 0
	var after uint64
	for {
		recs, err := w.store.ReadAll(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			after = r.Position
			if r.Type == typ {
				n++
			}
		}
		if len(recs) < 1000 {
			return n
		}
	}
}

func (w *world) claim(userID, key string) (commands.Result[*domain.Coupon], error) {
	return w.h.Claim.Handle(context.Background(), commands.ClaimCoupon{BatchID: "b1", UserID: userID, IdempotencyKey: key, CouponID: newID()})
}

var idSeq atomic.Int64

func newID() string { return fmt.Sprintf("c%08d", idSeq.Add(1)) }

// The headline guarantee: 2,000 concurrent claims on stock 500 from 1,000
// users with a limit of 2 → exactly 500 coupons, durable, no user above 2.
func TestConcurrentClaimsNeverOversell(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 500, 2)
		var ok, soldOut, other atomic.Int64
		perUser := make([]atomic.Int64, 1000)
		var wg sync.WaitGroup
		jobs := make(chan int)
		for range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range jobs {
					u := i % 1000
					_, err := w.claim(fmt.Sprintf("u%04d", u), "")
					switch {
					case err == nil:
						ok.Add(1)
						perUser[u].Add(1)
					case errors.Is(err, domain.ErrSoldOut):
						soldOut.Add(1)
					default:
						other.Add(1)
						t.Errorf("unexpected: %v", err)
					}
				}
			}()
		}
		for i := range 2000 {
			jobs <- i
		}
		close(jobs)
		wg.Wait()
		if ok.Load() != 500 || soldOut.Load() != 1500 || other.Load() != 0 {
			t.Fatalf("accepted %d sold out %d other %d; want 500/1500/0", ok.Load(), soldOut.Load(), other.Load())
		}
		for u := range perUser {
			if perUser[u].Load() > 2 {
				t.Fatalf("user %d got %d coupons", u, perUser[u].Load())
			}
		}
		if rem, _ := w.guard.Remaining(context.Background(), "b1"); rem != 0 {
			t.Fatalf("remaining %d", rem)
		}
		if n := w.countEvents(t, domain.EvCouponClaimed); n != 500 {
			t.Fatalf("event store holds %d claimed events, want 500", n)
		}
		if p, _ := w.guard.Pending(context.Background(), t0.Add(time.Hour), 10); len(p) != 0 {
			t.Fatalf("unconfirmed reservations left: %v", p)
		}
	})
}

func TestPerUserLimitAndIdempotentRetry(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 10, 1)
		first, err := w.claim("alice", "k1")
		if err != nil {
			t.Fatal(err)
		}
		again, err := w.claim("alice", "k1")
		if err != nil || again.Aggregate.ID != first.Aggregate.ID || again.Changed {
			t.Fatalf("retry: %+v %v; want the first coupon %s unchanged", again, err, first.Aggregate.ID)
		}
		if _, err := w.claim("alice", "k2"); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("second claim: %v, want already_claimed", err)
		}
		if rem, _ := w.guard.Remaining(context.Background(), "b1"); rem != 9 {
			t.Fatalf("remaining %d, want 9", rem)
		}
	})
}

// failingStore fails coupon appends: before writing (mode "before") or
// after writing (mode "after": the append landed but the caller saw an error).
type failingStore struct {
	es.Store
	mode atomic.Value
}

func (f *failingStore) Append(ctx context.Context, stream string, exp es.ExpectedVersion, evs ...es.EventData) (es.AppendResult, error) {
	mode, _ := f.mode.Load().(string)
	if len(evs) == 1 && evs[0].Type == domain.EvCouponClaimed {
		switch mode {
		case "before":
			return es.AppendResult{}, domain.Errorf(domain.ErrUnavailable, "disk on fire")
		case "after":
			if _, err := f.Store.Append(ctx, stream, exp, evs...); err != nil {
				return es.AppendResult{}, err
			}
			return es.AppendResult{}, context.DeadlineExceeded
		}
	}
	return f.Store.Append(ctx, stream, exp, evs...)
}

func TestFailedAppendReleasesReservation(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		fs := &failingStore{}
		w := newWorld(t, b, func(s es.Store) es.Store { fs.Store = s; return fs })
		w.issue(t, "b1", 5, 1)
		fs.mode.Store("before")
		if _, err := w.claim("bob", "k"); !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("claim: %v, want unavailable", err)
		}
		if rem, _ := w.guard.Remaining(context.Background(), "b1"); rem != 5 {
			t.Fatalf("remaining %d, want 5 (released)", rem)
		}
		if n := w.countEvents(t, domain.EvCouponClaimVoided); n != 1 {
			t.Fatalf("%d void events, want 1", n)
		}
		fs.mode.Store("")
		// The key was forgotten with the release: a retry claims for real.
		r, err := w.claim("bob", "k")
		if err != nil || !r.Changed {
			t.Fatalf("retry after release: %+v %v", r, err)
		}
	})
}

func TestAmbiguousAppendIsDetected(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		fs := &failingStore{}
		w := newWorld(t, b, func(s es.Store) es.Store { fs.Store = s; return fs })
		w.issue(t, "b1", 5, 1)
		fs.mode.Store("after")
		r, err := w.claim("bob", "k")
		if err != nil {
			t.Fatalf("the append landed, the claim must succeed: %v", err)
		}
		if r.Aggregate.UserID != "bob" {
			t.Fatalf("coupon %+v", r.Aggregate)
		}
		if rem, _ := w.guard.Remaining(context.Background(), "b1"); rem != 4 {
			t.Fatalf("remaining %d, want 4", rem)
		}
		if n := w.countEvents(t, domain.EvCouponClaimed); n != 1 {
			t.Fatalf("%d claimed events, want 1", n)
		}
	})
}

func TestReconcilerSettlesAbandonedReservations(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 5, 2)
		ctx := context.Background()
		// A crash right after the reservation: no event.
		if _, err := w.guard.Reserve(ctx, "b1", "carol", "k-lost", "lost", t0); err != nil {
			t.Fatal(err)
		}
		// A crash after the append, before the confirm.
		if _, err := w.guard.Reserve(ctx, "b1", "carol", "k-landed", "landed", t0); err != nil {
			t.Fatal(err)
		}
		bt, _ := w.deps.Repo.LoadBatch(ctx, "b1")
		c, _ := domain.ClaimCoupon("landed", "carol", "k-landed", bt, t0)
		if _, err := w.deps.Repo.SaveCoupon(ctx, c); err != nil {
			t.Fatal(err)
		}
		w.clock.Set(t0.Add(time.Minute))
		rep, err := w.h.Reconcile.Handle(ctx, commands.ReconcileReservations{OlderThan: 30 * time.Second})
		if err != nil || rep.Voided != 1 || rep.Confirmed != 1 || rep.Failed != 0 {
			t.Fatalf("report %+v err %v", rep, err)
		}
		if rem, _ := w.guard.Remaining(ctx, "b1"); rem != 4 {
			t.Fatalf("remaining %d, want 4", rem)
		}
		// A second pass finds nothing: idempotent.
		rep, err = w.h.Reconcile.Handle(ctx, commands.ReconcileReservations{OlderThan: 30 * time.Second})
		if err != nil || rep != (commands.ReconcileReport{}) {
			t.Fatalf("second pass %+v %v", rep, err)
		}
		// The lost claim can never land late.
		late, _ := domain.ClaimCoupon("lost", "carol", "k-lost", bt, t0)
		if _, err := w.deps.Repo.SaveCoupon(ctx, late); !errors.Is(err, domain.ErrConcurrency) {
			t.Fatalf("late append: %v, want concurrency", err)
		}
		// The retried request of the landed claim gets its coupon.
		r, err := w.claim("carol", "k-landed")
		if err != nil || r.Aggregate.ID != "landed" {
			t.Fatalf("retry: %+v %v", r, err)
		}
	})
}

// A retry arriving while the first request's append is unfinished adopts
// the reservation: exactly one coupon for the key.
func TestRetryAdoptsPendingReservation(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 5, 2)
		ctx := context.Background()
		if _, err := w.guard.Reserve(ctx, "b1", "dave", "k", "first", t0); err != nil {
			t.Fatal(err)
		}
		r, err := w.claim("dave", "k")
		if err != nil || r.Aggregate.ID != "first" {
			t.Fatalf("adopt: %+v %v", r, err)
		}
		if n := w.countEvents(t, domain.EvCouponClaimed); n != 1 {
			t.Fatalf("%d claims", n)
		}
		if p, _ := w.guard.Pending(ctx, t0.Add(time.Hour), 10); len(p) != 0 {
			t.Fatalf("pending left %v", p)
		}
	})
}

func TestGuardRebuildFromEvents(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 10, 2)
		ctx := context.Background()
		for _, u := range []string{"a", "a", "b"} {
			if _, err := w.claim(u, "key-"+u+newID()); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := w.claim("e", "kept"); err != nil {
			t.Fatal(err)
		}
		// A fresh, empty guard (as after Redis lost its data).
		g2, _ := redisguard.New(b.Client, b.Prefix+"rebuilt:")
		if ok, _ := g2.Initialized(ctx); ok {
			t.Fatal("new guard claims to be initialized")
		}
		d2 := w.deps
		d2.Guard = g2
		rb, _ := commands.NewRebuildGuardHandler(d2)
		rep, err := rb.Handle(ctx, commands.RebuildGuard{})
		if err != nil || rep.Batches != 1 || rep.Coupons != 4 {
			t.Fatalf("rebuild %+v %v", rep, err)
		}
		if rem, _ := g2.Remaining(ctx, "b1"); rem != 6 {
			t.Fatalf("remaining %d, want 6", rem)
		}
		if _, err := g2.Reserve(ctx, "b1", "a", "", "x", t0); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("user a at limit: %v", err)
		}
		res, err := g2.Reserve(ctx, "b1", "e", "kept", "y", t0)
		if err != nil || !res.Duplicate {
			t.Fatalf("idempotency record lost: %+v %v", res, err)
		}
	})
}

func TestOrderFlowRaces(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		w.issue(t, "b1", 10, 2)
		ctx := context.Background()
		r, err := w.claim("erin", "")
		if err != nil {
			t.Fatal(err)
		}
		id := r.Aggregate.ID
		// Two orders race to lock: exactly one wins.
		var wins, conflicts atomic.Int64
		var wg sync.WaitGroup
		for _, o := range []string{"o1", "o2"} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := w.h.Lock.Handle(ctx, commands.LockCoupon{CouponID: id, OrderID: o, UserID: "erin"})
				switch {
				case err == nil:
					wins.Add(1)
				case errors.Is(err, domain.ErrConflict):
					conflicts.Add(1)
				default:
					t.Errorf("lock: %v", err)
				}
			}()
		}
		wg.Wait()
		if wins.Load() != 1 || conflicts.Load() != 1 {
			t.Fatalf("wins %d conflicts %d", wins.Load(), conflicts.Load())
		}
		c, _ := w.deps.Repo.LoadCoupon(ctx, id)
		// The payment callback arrives 8 times at once: one redemption.
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := w.h.Redeem.Handle(ctx, commands.RedeemCoupon{CouponID: id, OrderID: c.OrderID, PaymentID: "p1", Discount: 2000}); err != nil {
					t.Errorf("redeem: %v", err)
				}
			}()
		}
		wg.Wait()
		if n := w.countEvents(t, domain.EvCouponRedeemed); n != 1 {
			t.Fatalf("%d redeemed events, want 1", n)
		}
	})
}

// dueIndex is a DueIndex over explicit lists.
type dueIndex struct{ holds, expiries []string }

func (d dueIndex) DueHolds(context.Context, time.Time, int) ([]string, error) { return d.holds, nil }
func (d dueIndex) DueExpiries(context.Context, time.Time, int) ([]string, error) {
	return d.expiries, nil
}

func TestWorkersReleaseHoldsAndExpire(t *testing.T) {
	b := redistest.Embedded(t)
	w := newWorld(t, b, nil)
	w.issue(t, "b1", 10, 2)
	ctx := context.Background()
	locked, _ := w.claim("fay", "")
	usable, _ := w.claim("fay", "")
	if _, err := w.h.Lock.Handle(ctx, commands.LockCoupon{CouponID: locked.Aggregate.ID, OrderID: "o", UserID: "fay"}); err != nil {
		t.Fatal(err)
	}
	wk, err := commands.NewWorkers(w.h, dueIndex{holds: []string{locked.Aggregate.ID}, expiries: []string{usable.Aggregate.ID}}, w.clock, commands.WorkerConfig{}, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := wk.ReleaseDueHolds(ctx); n != 0 {
		t.Fatalf("released %d holds before the timeout", n)
	}
	w.clock.Set(t0.Add(31 * time.Minute))
	if n, _ := wk.ReleaseDueHolds(ctx); n != 1 {
		t.Fatalf("released %d holds, want 1", n)
	}
	evs, _ := w.store.ReadStream(ctx, commands.CouponStream(locked.Aggregate.ID), 0)
	last, _ := w.deps.Repo.Registry().Unmarshal(evs[len(evs)-1].Type, evs[len(evs)-1].Data)
	if u, ok := last.(*domain.CouponUnlocked); !ok || u.Reason != domain.UnlockHoldExpired {
		t.Fatalf("last event %#v, want unlocked with reason hold_expired", last)
	}
	if n, _ := wk.ExpireDue(ctx); n != 0 {
		t.Fatalf("expired %d coupons before validity ended", n)
	}
	w.clock.Set(t0.Add(8 * 24 * time.Hour))
	if n, _ := wk.ExpireDue(ctx); n != 1 {
		t.Fatalf("expired %d coupons, want 1", n)
	}
	if n, _ := wk.ExpireDue(ctx); n != 0 {
		t.Fatalf("second pass expired %d, want 0", n)
	}
}
