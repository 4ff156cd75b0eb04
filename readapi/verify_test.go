package readapi_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

var vt0 = time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)

type vclock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *vclock) Now() time.Time  { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *vclock) Set(t time.Time) { c.mu.Lock(); c.t = t; c.mu.Unlock() }

// memHistory is a small in-memory projections.HistoryIndex: enough for the
// projector (Upsert, Get, checkpoints) and Verify (Get).
type memHistory struct {
	mu   sync.Mutex
	recs map[string]projections.CouponRecord
	cp   uint64
}

var _ projections.HistoryIndex = (*memHistory)(nil)

func newMemHistory() *memHistory { return &memHistory{recs: map[string]projections.CouponRecord{}} }

func (m *memHistory) Upsert(_ context.Context, recs []projections.CouponRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, r := range recs {
		if old, ok := m.recs[r.CouponID]; ok && r.Version <= old.Version {
			continue
		}
		m.recs[r.CouponID] = r
	}
	return nil
}

func (m *memHistory) Get(_ context.Context, ids []string) (map[string]projections.CouponRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := map[string]projections.CouponRecord{}
	for _, id := range ids {
		if r, ok := m.recs[id]; ok {
			out[id] = r
		}
	}
	return out, nil
}

func (m *memHistory) ListByUser(context.Context, string, []string, string, int) (projections.HistoryPage, error) {
	return projections.HistoryPage{}, nil
}

func (m *memHistory) BatchReport(_ context.Context, id string, _ projections.TimeRange) (projections.BatchReport, error) {
	return projections.BatchReport{BatchID: id}, nil
}

func (m *memHistory) TopBatches(context.Context, projections.TimeRange, int) ([]projections.BatchReport, error) {
	return nil, nil
}

func (m *memHistory) TopUsers(context.Context, projections.TimeRange, int) ([]projections.UserReport, error) {
	return nil, nil
}

func (m *memHistory) Checkpoint(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.cp, nil
}

func (m *memHistory) SaveCheckpoint(_ context.Context, pos uint64) error {
	m.mu.Lock()
	m.cp = pos
	m.mu.Unlock()
	return nil
}

func (m *memHistory) Rebuild(context.Context) (projections.HistoryRebuild, error) {
	return nil, errors.New("memHistory: rebuild not supported")
}

// venv is a whole service: bbolt event store, command handlers with the
// Redis guard, and the three projections fed directly from the store.
type venv struct {
	b          redistest.Backend
	rdb        redis.UniversalClient
	cmdDeps    commands.Deps
	store      es.Store
	repo       *commands.Repository
	guard      *redisguard.Guard
	view       *redisview.Store
	ops        *redisops.Store
	hist       *memHistory
	h          *commands.Handlers
	clk        *vclock
	projectors []projections.Projector
	projected  uint64
}

// syncGrantBus grants each shard as it is sent and remembers it done: the
// grant jobs without a bus or a projection.
type syncGrantBus struct {
	shard *commands.GrantShardHandler
	mu    sync.Mutex
	done  map[string][]int
}

func (b *syncGrantBus) SendGrantShards(ctx context.Context, cmds []commands.GrantShard) error {
	for _, c := range cmds {
		if _, err := b.shard.Handle(ctx, c); err != nil {
			return err
		}
		b.mu.Lock()
		b.done[c.JobID] = append(b.done[c.JobID], c.Shard)
		b.mu.Unlock()
	}
	return nil
}

func (b *syncGrantBus) DoneShards(_ context.Context, jobID string) ([]int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return append([]int(nil), b.done[jobID]...), nil
}

func (b *syncGrantBus) GrantJobProgress(_ context.Context, jobID string) (int, domain.GrantCounts, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.done[jobID]), domain.GrantCounts{}, nil
}

func (e *venv) syncGrants(t *testing.T) *commands.GrantJobs {
	t.Helper()
	leases, err := redisjobs.New(e.b.Client, e.b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	bus := &syncGrantBus{done: map[string][]int{}}
	g, err := commands.NewGrantJobs(e.cmdDeps, commands.GrantJobsDeps{Bus: bus, Tracker: bus, Leases: leases},
		commands.GrantJobsConfig{Upload: commands.GrantUploadConfig{TempDir: t.TempDir()}})
	if err != nil {
		t.Fatal(err)
	}
	bus.shard = g.Shard
	return g
}

func newVenv(t *testing.T, b redistest.Backend) *venv {
	t.Helper()
	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	reg := domain.NewRegistry()
	repo, err := commands.NewRepository(bs, reg)
	if err != nil {
		t.Fatal(err)
	}
	e := &venv{b: b, rdb: b.Client, store: bs, repo: repo, hist: newMemHistory(), clk: &vclock{t: vt0}}
	if e.guard, err = redisguard.New(b.Client, b.Prefix); err != nil {
		t.Fatal(err)
	}
	if e.view, err = redisview.New(b.Client, b.Prefix); err != nil {
		t.Fatal(err)
	}
	if e.ops, err = redisops.New(b.Client, b.Prefix); err != nil {
		t.Fatal(err)
	}
	e.cmdDeps = commands.Deps{Repo: repo, Guard: e.guard, Clock: e.clk}
	if e.h, err = commands.NewHandlers(e.cmdDeps, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	vp, err := projections.NewViewProjector(e.view, repo, reg)
	if err != nil {
		t.Fatal(err)
	}
	op, err := projections.NewOpsProjector(e.ops, reg)
	if err != nil {
		t.Fatal(err)
	}
	hp, err := projections.NewHistoryProjector(e.hist, reg, 0)
	if err != nil {
		t.Fatal(err)
	}
	e.projectors = []projections.Projector{vp, op, hp}
	// The guard is rebuilt once (on an empty store) so its marker is set,
	// as the service does at start-up.
	rb, err := commands.NewRebuildGuardHandler(commands.Deps{Repo: repo, Guard: e.guard, Clock: e.clk})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rb.Handle(context.Background(), commands.RebuildGuard{}); err != nil {
		t.Fatal(err)
	}
	return e
}

// project feeds every event not projected yet to each projector.
func (e *venv) project(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	for {
		recs, err := e.store.ReadAll(ctx, e.projected, 500)
		if err != nil {
			t.Fatal(err)
		}
		for _, rec := range recs {
			for _, p := range e.projectors {
				if err := p.Handle(ctx, rec); err != nil {
					t.Fatalf("%s: event %d (%s): %v", p.Name(), rec.Position, rec.Type, err)
				}
			}
			e.projected = rec.Position
		}
		if len(recs) < 500 {
			return
		}
	}
}

func (e *venv) deps() readapi.VerifyDeps {
	return readapi.VerifyDeps{Repo: e.repo, Guard: e.guard, View: e.view, Ops: e.ops, History: e.hist}
}

func (e *venv) verify(t *testing.T) readapi.VerifyReport {
	t.Helper()
	rep, err := readapi.Verify(context.Background(), e.deps(), 0)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func must[T any](t *testing.T) func(T, error) T {
	return func(v T, err error) T {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
}

func verifyRules(aud string, limit int) domain.Rules {
	r := domain.Rules{
		Name: "flash", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: 10000, AmountOff: 2000,
		Scope: domain.Scope{Kind: domain.ScopeAll}, PerUserLimit: limit,
		ClaimStartsAt: vt0.Add(-time.Hour), ClaimEndsAt: vt0.Add(24 * time.Hour),
		ValidFrom: vt0.Add(-time.Hour), ValidUntil: vt0.Add(7 * 24 * time.Hour), Audience: aud,
	}
	if aud == domain.AudienceTargeted {
		r.Kind, r.Threshold, r.AmountOff, r.PercentOff, r.MaxDiscount = domain.KindPercent, 0, 0, 15, 5000
		r.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"shoes", "bags"}}
		r.Issuer = "m-42"
	}
	return r
}

// build runs a varied history through the real handlers, then projects it:
//
//	b1 public (stock 20 + 5, limit 3): alice c-a1 (key k1, locked by o1) and
//	c-a2; bob c-b1 (key k1, redeemed); carol c-c1 (redeemed then returned);
//	dave c-d1 (locked then unlocked); erin c-e1 (expired); c-voided
//	(reserved, abandoned, voided by the reconciler); c-pending (reserved,
//	never confirmed: in flight as far as anyone knows).
//	b2 targeted (stock 5, limit 1, paused): granted to frank and alice.
func build(t *testing.T, e *venv) {
	t.Helper()
	ctx := context.Background()
	h := e.h
	must[commands.Result[*domain.Batch]](t)(h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: "b1", Rules: verifyRules(domain.AudiencePublic, 3), TotalStock: 20, By: "admin"}))
	must[commands.Result[*domain.Batch]](t)(h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: "b2", Rules: verifyRules(domain.AudienceTargeted, 1), TotalStock: 5, By: "admin"}))
	for _, c := range []struct{ id, user, key string }{
		{"c-a1", "alice", "k1"}, {"c-a2", "alice", ""}, {"c-b1", "bob", "k1"},
		{"c-c1", "carol", ""}, {"c-d1", "dave", ""}, {"c-e1", "erin", ""},
	} {
		must[commands.Result[*domain.Coupon]](t)(h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: "b1", UserID: c.user, IdempotencyKey: c.key, CouponID: c.id}))
	}
	lock := func(id, user, order string) {
		must[commands.Result[*domain.Coupon]](t)(h.Lock.Handle(ctx, commands.LockCoupon{CouponID: id, OrderID: order, UserID: user}))
	}
	lock("c-a1", "alice", "o1")
	lock("c-b1", "bob", "o2")
	must[commands.Result[*domain.Coupon]](t)(h.Redeem.Handle(ctx, commands.RedeemCoupon{CouponID: "c-b1", OrderID: "o2", PaymentID: "p2", Discount: 2000}))
	lock("c-c1", "carol", "o3")
	must[commands.Result[*domain.Coupon]](t)(h.Redeem.Handle(ctx, commands.RedeemCoupon{CouponID: "c-c1", OrderID: "o3", PaymentID: "p3", Discount: 2000}))
	must[commands.Result[*domain.Coupon]](t)(h.Return.Handle(ctx, commands.ReturnCoupon{CouponID: "c-c1", OrderID: "o3"}))
	lock("c-d1", "dave", "o4")
	must[commands.Result[*domain.Coupon]](t)(h.Unlock.Handle(ctx, commands.UnlockCoupon{CouponID: "c-d1", OrderID: "o4"}))

	grants := e.syncGrants(t)
	must[commands.Result[*domain.GrantJob]](t)(grants.Create.Handle(ctx, commands.CreateGrantJob{JobID: "j1", BatchID: "b2",
		Users: func(yield func(string, error) bool) { _ = yield("frank", nil) && yield("alice", nil) }, By: "admin"}))
	if st, err := grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "j1"}); err != nil || st.Granted != 2 {
		t.Fatalf("grant job: %+v %v", st, err)
	}

	// An abandoned reservation, voided by the reconciler.
	if _, err := e.guard.Reserve(ctx, "b1", "hank", "hk", "c-voided", e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	e.clk.Set(vt0.Add(time.Minute))
	if rep, err := h.Reconcile.Handle(ctx, commands.ReconcileReservations{}); err != nil || rep.Voided != 1 {
		t.Fatalf("reconcile: %+v %v", rep, err)
	}
	// A reservation still in flight.
	if _, err := e.guard.Reserve(ctx, "b1", "gina", "gk", "c-pending", e.clk.Now()); err != nil {
		t.Fatal(err)
	}
	must[commands.Result[*domain.Batch]](t)(h.AddStock.Handle(ctx, commands.AddStock{BatchID: "b1", Add: 5, By: "admin"}))
	must[commands.Result[*domain.Batch]](t)(h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: "b2", Action: commands.ActionPause, By: "admin"}))

	e.clk.Set(vt0.Add(8 * 24 * time.Hour))
	if r, err := h.Expire.Handle(ctx, commands.ExpireCoupon{CouponID: "c-e1"}); err != nil || !r.Changed {
		t.Fatalf("expire: %+v %v", r, err)
	}
	e.project(t)
}

func TestVerifyCleanStateHasNoDrift(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		e := newVenv(t, b)
		build(t, e)
		rep := e.verify(t)
		if !rep.OK() {
			t.Fatalf("clean state reports drift:\n%s", rep)
		}
		if !slices.Equal(rep.Pending, []string{"c-pending"}) {
			t.Fatalf("pending %v, want [c-pending]", rep.Pending)
		}
		last, _ := e.store.LastPosition(context.Background())
		if rep.UpTo != last || rep.Events != int(last) {
			t.Fatalf("up to %d after %d events, want %d", rep.UpTo, rep.Events, last)
		}
		// 9 coupons (8 + the voided one); users alice bob carol dave erin frank.
		for k, want := range map[string]int{"guard batches": 2, "view batches": 2, "ops batches": 2,
			"view users": 6, "view coupons": 8, "history coupons": 9} {
			if rep.Checked[k] != want {
				t.Errorf("checked %s = %d, want %d (%v)", k, rep.Checked[k], want, rep.Checked)
			}
		}
		if len(rep.Notes) != 0 {
			t.Errorf("notes on a caught-up state: %v", rep.Notes)
		}
		if rem, _ := e.guard.Remaining(context.Background(), "b1"); rem != 25-6-1 {
			t.Fatalf("guard remaining %d, want 18 (25 - 6 claims - 1 in flight)", rem)
		}
		s := rep.String()
		if !strings.Contains(s, "no drift") || !strings.Contains(s, "c-pending") {
			t.Fatalf("report:\n%s", s)
		}
	})
}

// keyOf returns the key (as it is stored) of a view user, a guard batch or
// an ops batch.
func userKey(e *venv, user string, i int) string { return e.view.UserKeys(user)[i] }

func hset(t *testing.T, e *venv, key string, kv ...any) {
	t.Helper()
	if err := e.rdb.HSet(context.Background(), key, kv...).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestVerifyNamesEachCorruptedEntry(t *testing.T) {
	ms := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	cases := []struct {
		name    string
		corrupt func(t *testing.T, e *venv)
		want    []readapi.Drift
	}{
		{
			name: "view terms field",
			corrupt: func(t *testing.T, e *venv) {
				ctx := context.Background()
				raw, err := e.rdb.HGet(ctx, userKey(e, "carol", 0), "c-c1").Result()
				if err != nil {
					t.Fatal(err)
				}
				var vt projections.ViewTerms
				if err := json.Unmarshal([]byte(raw), &vt); err != nil {
					t.Fatal(err)
				}
				vt.AmountOff = 1500
				b, _ := json.Marshal(vt)
				hset(t, e, userKey(e, "carol", 0), "c-c1", string(b))
			},
			want: []readapi.Drift{{Component: "view", Entity: "user carol coupon c-c1", Field: "terms.amount_off", Expected: "2000", Actual: "1500"}},
		},
		{
			name: "view terms unreadable",
			corrupt: func(t *testing.T, e *venv) {
				hset(t, e, userKey(e, "alice", 0), "c-a2", "{oops")
			},
			want: nil, // checked below: one drift on user alice coupon c-a2, field terms
		},
		{
			name: "view lock lost",
			corrupt: func(t *testing.T, e *venv) {
				e.rdb.HDel(context.Background(), userKey(e, "alice", 1), "c-a1")
			},
			want: []readapi.Drift{{Component: "view", Entity: "user alice coupon c-a1", Field: "status", Expected: "locked", Actual: "usable"}},
		},
		{
			name: "view coupon deleted",
			corrupt: func(t *testing.T, e *venv) {
				ctx := context.Background()
				e.rdb.HDel(ctx, userKey(e, "dave", 0), "c-d1")
				e.rdb.ZRem(ctx, userKey(e, "dave", 3), "c-d1")
			},
			want: []readapi.Drift{{Component: "view", Entity: "user dave coupon c-d1", Field: "status", Expected: "usable", Actual: "removed"}},
		},
		{
			name: "view coupon not expected",
			corrupt: func(t *testing.T, e *venv) {
				ctx := context.Background()
				hset(t, e, userKey(e, "ghost", 0), "c-ghost", `{"b":"b1","k":"direct","i":"platform","a":100,"s":{"kind":"all"},"f":0,"u":1,"o":0}`)
				hset(t, e, userKey(e, "ghost", 2), "c-ghost", "0")
				e.rdb.ZAdd(ctx, userKey(e, "ghost", 3), redis.Z{Score: 0, Member: "c-ghost"})
			},
			want: []readapi.Drift{{Component: "view", Entity: "user ghost coupon c-ghost", Field: "status", Expected: "absent", Actual: "usable"}},
		},
		{
			name: "view catalog entry",
			corrupt: func(t *testing.T, e *venv) {
				ctx := context.Background()
				raw, err := e.rdb.HGet(ctx, e.view.CatalogKey(), "b1").Result()
				if err != nil {
					t.Fatal(err)
				}
				ver, body, _ := strings.Cut(raw, "|")
				var be projections.BatchEntry
				if err := json.Unmarshal([]byte(body), &be); err != nil {
					t.Fatal(err)
				}
				be.Paused = true
				b, _ := json.Marshal(be)
				hset(t, e, e.view.CatalogKey(), "b1", ver+"|"+string(b))
			},
			want: []readapi.Drift{{Component: "view", Entity: "batch b1", Field: "paused", Expected: "false", Actual: "true"}},
		},
		{
			name: "guard stock",
			corrupt: func(t *testing.T, e *venv) {
				e.rdb.Incr(context.Background(), e.guard.Keys("b1").Stock)
			},
			want: []readapi.Drift{{Component: "guard", Entity: "batch b1", Field: "remaining", Expected: "18", Actual: "19"}},
		},
		{
			name: "guard per-user count",
			corrupt: func(t *testing.T, e *venv) {
				e.rdb.HIncrBy(context.Background(), e.guard.Keys("b1").Users, "alice", 1)
			},
			want: []readapi.Drift{{Component: "guard", Entity: "batch b1 user alice", Field: "count", Expected: "2", Actual: "3"}},
		},
		{
			name: "guard idempotency record",
			corrupt: func(t *testing.T, e *venv) {
				e.rdb.HDel(context.Background(), e.guard.Keys("b1").Idem, "alice\x00k1")
			},
			want: []readapi.Drift{{Component: "guard", Entity: `batch b1 user alice idempotency key "k1"`, Field: "coupon", Expected: "c-a1", Actual: "absent"}},
		},
		{
			name: "guard policy",
			corrupt: func(t *testing.T, e *venv) {
				hset(t, e, e.guard.Keys("b2").Meta, "paused", "0")
			},
			want: []readapi.Drift{{Component: "guard", Entity: "batch b2", Field: "paused", Expected: "true", Actual: "false"}},
		},
		{
			name: "ops counter",
			corrupt: func(t *testing.T, e *venv) {
				hset(t, e, e.ops.BatchKeys("b1")[2], "claimed", "99")
			},
			want: []readapi.Drift{{Component: "ops", Entity: "batch b1", Field: "claimed", Expected: "6", Actual: "99"}},
		},
		{
			name: "ops expiry deadline",
			corrupt: func(t *testing.T, e *venv) {
				e.rdb.ZRem(context.Background(), e.ops.BatchKeys("b1")[4], "c-d1")
			},
			want: []readapi.Drift{{Component: "ops", Entity: "batch b1 coupon c-d1", Field: "expiry", Expected: ms(vt0.Add(7 * 24 * time.Hour)), Actual: "absent"}},
		},
		{
			name: "history record of a voided claim",
			corrupt: func(t *testing.T, e *venv) {
				_ = e.hist.Upsert(context.Background(), []projections.CouponRecord{{CouponID: "c-voided", BatchID: "b1", UserID: "hank", Status: "usable"}})
			},
			want: []readapi.Drift{{Component: "history", Entity: "coupon c-voided", Field: "record", Expected: "absent", Actual: "status usable"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
				e := newVenv(t, b)
				build(t, e)
				if rep := e.verify(t); !rep.OK() {
					t.Fatalf("drift before corruption:\n%s", rep)
				}
				tc.corrupt(t, e)
				rep := e.verify(t)
				if tc.want == nil { // an unreadable value: named, its raw content quoted
					if len(rep.Drifts) != 1 || rep.Drifts[0].Entity != "user alice coupon c-a2" || rep.Drifts[0].Field != "terms" ||
						rep.Drifts[0].Actual != `unreadable "{oops"` {
						t.Fatalf("drifts:\n%s", rep)
					}
					return
				}
				if !slices.Equal(rep.Drifts, tc.want) {
					t.Fatalf("drifts:\n%s\nwant:\n%v", rep, tc.want)
				}
				if !strings.Contains(rep.String(), tc.want[0].String()) {
					t.Fatalf("report does not name the drift:\n%s", rep)
				}
			})
		})
	}
}

// A record rewritten with stale content under a higher version: every
// differing field of that coupon is named, and nothing else.
func TestVerifyStaleHistoryRecord(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		e := newVenv(t, b)
		build(t, e)
		ctx := context.Background()
		cur, _ := e.hist.Get(ctx, []string{"c-b1"})
		stale := cur["c-b1"]
		stale.Version += 3
		stale.Status, stale.PaymentID, stale.Discount = "locked", "", 0
		stale.RedeemedAt, stale.EndedAt = time.Time{}, time.Time{}
		if err := e.hist.Upsert(ctx, []projections.CouponRecord{stale}); err != nil {
			t.Fatal(err)
		}
		rep := e.verify(t)
		var fields []string
		for _, d := range rep.Drifts {
			if d.Component != "history" || d.Entity != "coupon c-b1" {
				t.Fatalf("unexpected drift %s\n%s", d, rep)
			}
			fields = append(fields, d.Field)
		}
		if want := []string{"status", "version", "payment_id", "discount", "redeemed_at", "ended_at"}; !slices.Equal(fields, want) {
			t.Fatalf("fields %v, want %v\n%s", fields, want, rep)
		}
		if s := rep.Drifts[0].String(); s != "history coupon c-b1: status expected redeemed, actual locked" {
			t.Fatalf("drift reads %q", s)
		}
	})
}

// Projections past upTo show up in the notes, and their extra events as drift.
func TestVerifyUpToBeforeTheProjections(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		e := newVenv(t, b)
		build(t, e)
		last, _ := e.store.LastPosition(context.Background())
		rep, err := readapi.Verify(context.Background(), e.deps(), last-1) // before erin's coupon expired
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Notes) != 4 || !strings.Contains(rep.Notes[0], "guard reflects them") || !strings.Contains(rep.Notes[1], "past") {
			t.Fatalf("notes %v", rep.Notes)
		}
		if rep.OK() {
			t.Fatal("no drift although the projections applied an event after upTo")
		}
		for _, d := range rep.Drifts {
			if !strings.Contains(d.Entity, "c-e1") && !(d.Component == "ops" && d.Entity == "batch b1") {
				t.Fatalf("drift %s is not about the expiry of c-e1\n%s", d, rep)
			}
		}
	})
}

func TestVerifyReportTable(t *testing.T) {
	rep := readapi.VerifyReport{UpTo: 7, Events: 7, Checked: map[string]int{"guard batches": 1},
		Drifts:  []readapi.Drift{{Component: "guard", Entity: "batch b-1", Field: "remaining", Expected: "12", Actual: "11"}},
		Pending: []string{"c-1"}}
	if got := rep.Drifts[0].String(); got != "guard batch b-1: remaining expected 12, actual 11" {
		t.Fatalf("drift reads %q", got)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"up to position 7", "1 guard batches", "1 drift(s)", "COMPONENT", "batch b-1", "remaining", "c-1"} {
		if !strings.Contains(b.String(), want) {
			t.Fatalf("table lacks %q:\n%s", want, b.String())
		}
	}
}
