package commands_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/projections"
)

// grantHookStore lets a test intervene in coupon.granted.v1 appends: before
// (an error refuses the append without writing) and after a stored one.
type grantHookStore struct {
	es.Store
	before atomic.Pointer[func(ctx context.Context, stream string) error]
	after  atomic.Pointer[func(stream string)]
}

func (s *grantHookStore) Append(ctx context.Context, stream string, exp es.ExpectedVersion, evs ...es.EventData) (es.AppendResult, error) {
	grant := len(evs) == 1 && evs[0].Type == domain.EvCouponGranted
	if grant {
		if f := s.before.Load(); f != nil {
			if err := (*f)(ctx, stream); err != nil {
				return es.AppendResult{}, err
			}
		}
	}
	res, err := s.Store.Append(ctx, stream, exp, evs...)
	if grant && err == nil {
		if f := s.after.Load(); f != nil {
			(*f)(stream)
		}
	}
	return res, err
}

func (s *grantHookStore) onBefore(f func(ctx context.Context, stream string) error) {
	s.before.Store(&f)
}
func (s *grantHookStore) onAfter(f func(stream string)) { s.after.Store(&f) }

func newGrantWorld(t *testing.T, b redistest.Backend) (*world, *grantHookStore) {
	t.Helper()
	hs := &grantHookStore{}
	w := newWorld(t, b, func(s es.Store) es.Store { hs.Store = s; return hs })
	return w, hs
}

// grantScenario is the 3,000-entry job: 2,800 distinct users in a shuffled
// order plus 200 repeats at random places, 100 of the users already holding
// the batch's per-user limit (1) through claims, and stock 2,000 (1,900 left
// after the claims) for 2,700 eligible users.
type grantScenario struct {
	users   []string
	claimed map[string]bool
	stock   int64
	want    domain.GrantCounts
}

func newGrantScenario() grantScenario {
	rng := rand.New(rand.NewPCG(7, 11))
	const distinct, repeats = 2800, 200
	sc := grantScenario{claimed: map[string]bool{}, stock: 2000}
	for i := range distinct {
		u := fmt.Sprintf("g%05d", i)
		sc.users = append(sc.users, u)
		if i%28 == 5 {
			sc.claimed[u] = true
		}
	}
	rng.Shuffle(len(sc.users), func(i, j int) { sc.users[i], sc.users[j] = sc.users[j], sc.users[i] })
	for range repeats {
		u := sc.users[rng.IntN(distinct)]
		at := rng.IntN(len(sc.users) + 1)
		sc.users = slices.Insert(sc.users, at, u)
	}
	// The expected outcome, entry by entry.
	left := sc.stock - int64(len(sc.claimed))
	seen := map[string]bool{}
	sc.want.Total = len(sc.users)
	for i, u := range sc.users {
		switch {
		case seen[u]:
			sc.want.Skipped++
		case sc.claimed[u]:
			sc.want.Skipped++
		case left == 0:
			sc.want.NotGranted = len(sc.users) - i
		default:
			left--
			sc.want.Granted++
		}
		if sc.want.NotGranted > 0 {
			break
		}
		seen[u] = true
	}
	return sc
}

// setUp issues b1 and makes the claims.
func (sc grantScenario) setUp(t *testing.T, w *world) {
	t.Helper()
	w.issue(t, "b1", sc.stock, 1)
	for u := range sc.claimed {
		if _, err := w.claim(u, ""); err != nil {
			t.Fatal(err)
		}
	}
}

func (w *world) createJob(t *testing.T, jobID, batchID string, users []string) {
	t.Helper()
	if _, err := w.h.Grants.Create.Handle(context.Background(), commands.CreateGrantJob{JobID: jobID, BatchID: batchID, UserIDs: users, By: "admin"}); err != nil {
		t.Fatal(err)
	}
}

// grantsByUser reads every coupon.granted.v1 of the store.
func (w *world) grantsByUser(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	var after uint64
	reg := domain.NewRegistry()
	for {
		recs, err := w.store.ReadAll(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			after = r.Position
			if r.Type != domain.EvCouponGranted {
				continue
			}
			e, err := reg.Unmarshal(r.Type, r.Data)
			if err != nil {
				t.Fatal(err)
			}
			g := e.(*domain.CouponGranted)
			out[g.UserID] = append(out[g.UserID], g.CouponID)
		}
		if len(recs) < 1000 {
			return out
		}
	}
}

// checkGrantLedger checks the invariants of a finished scenario job: every
// user got at most one coupon, none of the claimants got one, the guard's
// consumed stock is the claims plus the grants, nothing is left pending.
func (w *world) checkGrantLedger(t *testing.T, sc grantScenario, granted int) {
	t.Helper()
	ctx := context.Background()
	byUser := w.grantsByUser(t)
	n := 0
	for u, ids := range byUser {
		n += len(ids)
		if len(ids) != 1 {
			t.Errorf("user %s got %d grants", u, len(ids))
		}
		if sc.claimed[u] {
			t.Errorf("user %s held the limit and still got a grant", u)
		}
	}
	if n != granted || w.countEvents(t, domain.EvCouponGranted) != granted {
		t.Fatalf("%d coupon.granted.v1 events, want %d", n, granted)
	}
	rem, err := w.guard.Remaining(ctx, "b1")
	if err != nil {
		t.Fatal(err)
	}
	if consumed := sc.stock - rem; consumed != int64(granted+len(sc.claimed)) {
		t.Fatalf("guard consumed %d, want %d claims + %d grants", consumed, len(sc.claimed), granted)
	}
	if p, _ := w.guard.Pending(ctx, t0.Add(24*time.Hour), 0); len(p) != 0 {
		t.Fatalf("%d reservations left pending, e.g. %+v", len(p), p[0])
	}
}

func TestGrantJobCountsEveryEntryOnce(t *testing.T) {
	sc := newGrantScenario()
	if sc.want.Granted != 1900 || sc.want.Sum() != 3000 || sc.want.NotGranted == 0 || sc.want.Skipped < 100 {
		t.Fatalf("scenario %+v", sc.want)
	}
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, _ := newGrantWorld(t, b)
		sc.setUp(t, w)
		ctx := context.Background()
		w.createJob(t, "job-1", "b1", sc.users)

		start := time.Now()
		st, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
		el := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d entries, %d grants in %v: %.0f grants/s, %.0f entries/s", b.Name, st.Total, st.Granted, el.Round(time.Millisecond),
			float64(st.Granted)/el.Seconds(), float64(st.Total)/el.Seconds())
		if st.GrantCounts != sc.want || st.State != commands.GrantJobFinished || st.Outcome != domain.GrantJobSoldOut {
			t.Fatalf("status %+v, want counts %+v sold out", st, sc.want)
		}
		w.checkGrantLedger(t, sc, sc.want.Granted)

		got, err := w.h.Grants.GetGrantJob(ctx, "job-1")
		if err != nil || got != st {
			t.Fatalf("GetGrantJob = %+v %v, want %+v", got, err, st)
		}
		// Running a finished job again changes nothing.
		again, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
		if err != nil || again != st {
			t.Fatalf("second run %+v %v, want %+v", again, err, st)
		}
		if n := w.countEvents(t, domain.EvGrantJobFinished); n != 1 {
			t.Fatalf("%d finished events", n)
		}
		w.checkGrantLedger(t, sc, sc.want.Granted)
	})
}

// A run stopped midway (a crash, a shutdown, a lost lease) leaves grants in
// every state: stored and confirmed, stored but unconfirmed, reserved but not
// stored. A later run, in a new process, finishes the job with the counts an
// uninterrupted run gives, granting nobody twice. With reconcile, the
// reconciler settles the abandoned reservations first (voiding the ones never
// stored), and the resumed run grants those users under a fresh coupon id.
func TestGrantJobResumesAfterCrash(t *testing.T) {
	sc := newGrantScenario()
	for _, reconcile := range []bool{false, true} {
		t.Run(fmt.Sprintf("reconcile=%v", reconcile), func(t *testing.T) {
			redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
				w, hs := newGrantWorld(t, b)
				sc.setUp(t, w)
				w.createJob(t, "job-1", "b1", sc.users)

				crashCtx, crash := context.WithCancel(context.Background())
				var stored atomic.Int64
				hs.onAfter(func(string) {
					if stored.Add(1) == 700 {
						crash()
					}
				})
				// After the crash nothing more is written.
				hs.onBefore(func(ctx context.Context, _ string) error { return crashCtx.Err() })
				_, err := w.h.Grants.Run.Handle(crashCtx, commands.RunGrantJob{JobID: "job-1"})
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("crashed run: %v, want context.Canceled", err)
				}
				hs.onBefore(func(context.Context, string) error { return nil })
				hs.onAfter(func(string) {})
				ctx := context.Background()
				pending, _ := w.guard.Pending(ctx, t0.Add(24*time.Hour), 0)
				t.Logf("after the crash: %d grants stored, %d reservations pending", stored.Load(), len(pending))
				if st, err := w.h.Grants.GetGrantJob(ctx, "job-1"); err != nil || st.State != commands.GrantJobPending || st.Total != 3000 {
					t.Fatalf("after the crash: %+v %v, want pending with total 3000", st, err)
				}
				if reconcile {
					w.clock.Set(t0.Add(time.Minute))
					rep, err := w.h.Reconcile.Handle(ctx, commands.ReconcileReservations{OlderThan: 30 * time.Second, Limit: 10000})
					if err != nil || rep.Failed != 0 || rep.Confirmed+rep.Voided != len(pending) {
						t.Fatalf("reconcile %+v %v, %d pending", rep, err, len(pending))
					}
					t.Logf("reconciler: %+v", rep)
				}

				// A new process: fresh handlers, fresh progress registry.
				fresh, err := commands.NewGrantJobs(w.deps)
				if err != nil {
					t.Fatal(err)
				}
				st, err := fresh.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
				if err != nil {
					t.Fatal(err)
				}
				if st.GrantCounts != sc.want || st.Outcome != domain.GrantJobSoldOut {
					t.Fatalf("resumed run %+v, want %+v", st.GrantCounts, sc.want)
				}
				w.checkGrantLedger(t, sc, sc.want.Granted)
			})
		})
	}
}

// The crash states one by one, deterministically: a reservation never
// stored, one stored but not confirmed, one voided by the reconciler.
func TestGrantJobFinishesEveryCrashState(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, _ := newGrantWorld(t, b)
		w.issue(t, "b1", 10, 1)
		ctx := context.Background()
		users := []string{"lost", "landed", "voided", "fresh"}
		w.createJob(t, "job-1", "b1", users)
		id := func(u string, attempt int) string { return commands.GrantCouponID("job-1", u, attempt) }
		bt, _ := w.deps.Repo.LoadBatch(ctx, "b1")
		for _, u := range []string{"lost", "landed", "voided"} {
			if err := w.guard.ReserveGrant(ctx, "b1", u, id(u, 0), t0); err != nil {
				t.Fatal(err)
			}
		}
		c, _ := domain.GrantCoupon(id("landed", 0), "landed", "job-1", bt, t0)
		if _, err := w.deps.Repo.SaveCoupon(ctx, c); err != nil {
			t.Fatal(err)
		}
		// What the reconciler does to an abandoned reservation: void, release.
		v := domain.VoidClaim(id("voided", 0), "b1", "voided", "reservation_abandoned", t0)
		if _, err := w.deps.Repo.SaveCoupon(ctx, v); err != nil {
			t.Fatal(err)
		}
		if err := w.guard.Release(ctx, "b1", id("voided", 0)); err != nil {
			t.Fatal(err)
		}

		st, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (domain.GrantCounts{Total: 4, Granted: 4}); st.GrantCounts != want || st.Outcome != domain.GrantJobCompleted {
			t.Fatalf("status %+v, want %+v completed", st, want)
		}
		byUser := w.grantsByUser(t)
		for u, want := range map[string]string{"lost": id("lost", 0), "landed": id("landed", 0), "voided": id("voided", 1), "fresh": id("fresh", 0)} {
			if got := byUser[u]; len(got) != 1 || got[0] != want {
				t.Errorf("%s: grants %v, want [%s]", u, got, want)
			}
		}
		if rem, _ := w.guard.Remaining(ctx, "b1"); rem != 6 {
			t.Fatalf("remaining %d, want 6", rem)
		}
		if p, _ := w.guard.Pending(ctx, t0.Add(24*time.Hour), 0); len(p) != 0 {
			t.Fatalf("pending left: %+v", p)
		}
	})
}

func TestGrantJobFailedAppendsAreSettled(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, hs := newGrantWorld(t, b)
		w.issue(t, "b1", 10, 1)
		ctx := context.Background()
		users := []string{"u1", "u2", "u3", "u4", "u5"}
		w.createJob(t, "job-1", "b1", users)
		bad := map[string]bool{commands.CouponStream(commands.GrantCouponID("job-1", "u2", 0)): true,
			commands.CouponStream(commands.GrantCouponID("job-1", "u4", 0)): true}
		hs.onBefore(func(_ context.Context, stream string) error {
			if bad[stream] {
				return domain.Errorf(domain.ErrUnavailable, "disk on fire")
			}
			return nil
		})
		st, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
		if err != nil {
			t.Fatal(err)
		}
		if want := (domain.GrantCounts{Total: 5, Granted: 3, Failed: 2}); st.GrantCounts != want || st.Outcome != domain.GrantJobCompleted {
			t.Fatalf("status %+v, want %+v", st, want)
		}
		if rem, _ := w.guard.Remaining(ctx, "b1"); rem != 7 {
			t.Fatalf("remaining %d, want 7 (failed grants released)", rem)
		}
		if n := w.countEvents(t, domain.EvCouponClaimVoided); n != 2 {
			t.Fatalf("%d voids, want 2", n)
		}
	})
}

// stopBeforeGuard stops the batch just before the guard is asked for user's grant.
type stopBeforeGuard struct {
	commands.StockGuard
	user string
	stop func()
}

func (g *stopBeforeGuard) ReserveGrant(ctx context.Context, batchID, userID, couponID string, now time.Time) error {
	if userID == g.user {
		g.stop()
	}
	return g.StockGuard.ReserveGrant(ctx, batchID, userID, couponID, now)
}

func TestGrantJobStopsOnClosedBatch(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, _ := newGrantWorld(t, b)
		w.issue(t, "b1", 10, 1)
		ctx := context.Background()
		w.createJob(t, "job-1", "b1", []string{"u1", "u2", "u1", "u3", "u4"})
		d := w.deps
		d.Guard = &stopBeforeGuard{StockGuard: w.guard, user: "u3", stop: func() {
			if _, err := w.h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: "b1", Action: commands.ActionStop, By: "admin"}); err != nil {
				t.Error(err)
			}
		}}
		g, err := commands.NewGrantJobs(d)
		if err != nil {
			t.Fatal(err)
		}
		st, err := g.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
		if err != nil {
			t.Fatal(err)
		}
		// u1, u2 granted; the repeat of u1 skipped; then the guard refuses.
		if want := (domain.GrantCounts{Total: 5, Granted: 2, Skipped: 1, Failed: 2}); st.GrantCounts != want || st.Outcome != domain.GrantJobBatchClosed {
			t.Fatalf("status %+v, want %+v batch closed", st, want)
		}
		if n := w.countEvents(t, domain.EvCouponGranted); n != 2 {
			t.Fatalf("%d grants, want 2", n)
		}
	})
}

func TestCreateGrantJob(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, _ := newGrantWorld(t, b)
		w.issue(t, "b1", 10, 1)
		w.issue(t, "stopped", 10, 1)
		ctx := context.Background()
		if _, err := w.h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: "stopped", Action: commands.ActionStop, By: "admin"}); err != nil {
			t.Fatal(err)
		}
		first, err := w.h.Grants.Create.Handle(ctx, commands.CreateGrantJob{JobID: "job-1", BatchID: "b1", UserIDs: []string{"u1", "u2"}, By: "admin"})
		if err != nil || !first.Changed || first.Position == 0 {
			t.Fatalf("create: %+v %v", first, err)
		}
		cases := []struct {
			name    string
			cmd     commands.CreateGrantJob
			kind    error
			changed bool
		}{
			{"repeat", commands.CreateGrantJob{JobID: "job-1", BatchID: "b1", UserIDs: []string{"u1", "u2"}, By: "someone else"}, nil, false},
			{"same id, other list", commands.CreateGrantJob{JobID: "job-1", BatchID: "b1", UserIDs: []string{"u2", "u1"}}, domain.ErrConflict, false},
			{"same id, other batch", commands.CreateGrantJob{JobID: "job-1", BatchID: "stopped", UserIDs: []string{"u1", "u2"}}, domain.ErrConflict, false},
			{"stopped batch", commands.CreateGrantJob{JobID: "job-2", BatchID: "stopped", UserIDs: []string{"u1"}}, domain.ErrConflict, false},
			{"unknown batch", commands.CreateGrantJob{JobID: "job-2", BatchID: "nope", UserIDs: []string{"u1"}}, domain.ErrNotFound, false},
			{"no users", commands.CreateGrantJob{JobID: "job-2", BatchID: "b1"}, domain.ErrInvalidArgument, false},
			{"bad user", commands.CreateGrantJob{JobID: "job-2", BatchID: "b1", UserIDs: []string{"u1", "u\n"}}, domain.ErrInvalidArgument, false},
			{"bad job id", commands.CreateGrantJob{JobID: "", BatchID: "b1", UserIDs: []string{"u1"}}, domain.ErrInvalidArgument, false},
			{"bad batch id", commands.CreateGrantJob{JobID: "job-2", BatchID: "", UserIDs: []string{"u1"}}, domain.ErrInvalidArgument, false},
			{"another job", commands.CreateGrantJob{JobID: "job-3", BatchID: "b1", UserIDs: []string{"u1"}}, nil, true},
		}
		for _, tc := range cases {
			r, err := w.h.Grants.Create.Handle(ctx, tc.cmd)
			if tc.kind == nil && err != nil || tc.kind != nil && !errors.Is(err, tc.kind) {
				t.Fatalf("%s: %v, want %v", tc.name, err, tc.kind)
			}
			if err == nil && (r.Changed != tc.changed || r.Aggregate == nil || r.Aggregate.ID != tc.cmd.JobID) {
				t.Fatalf("%s: %+v", tc.name, r)
			}
		}
		if n := w.countEvents(t, domain.EvGrantJobCreated); n != 2 {
			t.Fatalf("%d created events, want 2", n)
		}
		// A repeat after the batch was stopped still returns the job.
		if _, err := w.h.Activity.Handle(ctx, commands.ChangeBatchActivity{BatchID: "b1", Action: commands.ActionStop, By: "admin"}); err != nil {
			t.Fatal(err)
		}
		if r, err := w.h.Grants.Create.Handle(ctx, commands.CreateGrantJob{JobID: "job-1", BatchID: "b1", UserIDs: []string{"u1", "u2"}}); err != nil || r.Changed {
			t.Fatalf("repeat after stop: %+v %v", r, err)
		}
		if _, err := w.h.Grants.GetGrantJob(ctx, "nope"); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown job: %v", err)
		}
	})
}

// Progress is observable while the job runs: pending before, running with
// growing counts during, finished after.
func TestGrantJobProgressIsObservable(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, hs := newGrantWorld(t, b)
		w.issue(t, "b1", 100, 1)
		ctx := context.Background()
		users := make([]string, 50)
		for i := range users {
			users[i] = fmt.Sprintf("u%02d", i)
		}
		w.createJob(t, "job-1", "b1", users)
		st, err := w.h.Grants.GetGrantJob(ctx, "job-1")
		if err != nil || st.State != commands.GrantJobPending || st.Total != 50 || st.Granted != 0 || st.BatchID != "b1" {
			t.Fatalf("before: %+v %v", st, err)
		}
		// Hold every grant from the 21st on until the test has looked.
		var n atomic.Int64
		reached, release := make(chan struct{}), make(chan struct{})
		hs.onBefore(func(context.Context, string) error {
			if k := n.Add(1); k >= 21 {
				if k == 21 {
					close(reached)
				}
				<-release
			}
			return nil
		})
		done := make(chan error, 1)
		go func() {
			_, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"})
			done <- err
		}()
		<-reached
		// Appends before the 21st may still be in flight: wait for them.
		deadline := time.Now().Add(5 * time.Second)
		for {
			st, err = w.h.Grants.GetGrantJob(ctx, "job-1")
			if err != nil || st.State != commands.GrantJobRunning {
				t.Fatalf("during: %+v %v", st, err)
			}
			if st.Granted >= 20 || time.Now().After(deadline) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		if st.Granted != 20 || st.Total != 50 || st.Skipped+st.Failed+st.NotGranted != 0 {
			t.Fatalf("during: %+v, want 20 of 50 granted", st)
		}
		if _, err := w.h.Grants.Run.Handle(ctx, commands.RunGrantJob{JobID: "job-1"}); !errors.Is(err, domain.ErrConflict) {
			t.Fatalf("a second run in the same process: %v, want conflict", err)
		}
		close(release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
		st, err = w.h.Grants.GetGrantJob(ctx, "job-1")
		if err != nil || st.State != commands.GrantJobFinished || st.Granted != 50 || st.Outcome != domain.GrantJobCompleted || st.FinishedAt.IsZero() {
			t.Fatalf("after: %+v %v", st, err)
		}
	})
}

// catchUp feeds the projector every event after its checkpoint.
func catchUp(t *testing.T, store es.Store, p projections.Projector) {
	t.Helper()
	ctx := context.Background()
	for {
		from, err := p.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		recs, err := store.ReadAll(ctx, from, 500)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			return
		}
		for _, r := range recs {
			if err := p.Handle(ctx, r); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// Two instances poll the same jobs: each job runs on exactly one of them at a
// time; a job left unfinished is picked up again; finished jobs leave the
// active set through the projection.
func TestGrantWorkersNeverRunAJobTwiceAtOnce(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, hs := newGrantWorld(t, b)
		w.issue(t, "b1", 1000, 1)
		ctx := context.Background()
		jobs, err := redisjobs.New(b.Client, b.Prefix)
		if err != nil {
			t.Fatal(err)
		}
		proj, err := projections.NewGrantJobsProjector(jobs)
		if err != nil {
			t.Fatal(err)
		}
		if proj.Name() != "grant-jobs" {
			t.Fatalf("projector name %q", proj.Name())
		}
		users := make([]string, 300)
		for i := range users {
			users[i] = fmt.Sprintf("u%03d", i)
		}
		w.createJob(t, "job-1", "b1", users)
		catchUp(t, w.store, proj)
		if ids, err := jobs.ActiveGrantJobs(ctx); err != nil || !slices.Equal(ids, []string{"job-1"}) {
			t.Fatalf("active %v %v", ids, err)
		}

		// Instance A and B: separate processes (own handlers and progress).
		newWorker := func(owner string) *commands.GrantWorker {
			g, err := commands.NewGrantJobs(w.deps)
			if err != nil {
				t.Fatal(err)
			}
			gw, err := commands.NewGrantWorker(g.Run, jobs, jobs, commands.GrantWorkerConfig{LeaseTTL: 3 * time.Second, Owner: owner}, discardLogger())
			if err != nil {
				t.Fatal(err)
			}
			return gw
		}
		a, bw := newWorker("A"), newWorker("B")

		var n atomic.Int64
		reached, release := make(chan struct{}), make(chan struct{})
		hs.onBefore(func(context.Context, string) error {
			if n.Add(1) == 100 {
				close(reached)
				<-release
			}
			return nil
		})
		var wg sync.WaitGroup
		var ranA int
		var errA error
		wg.Add(1)
		go func() { defer wg.Done(); ranA, errA = a.RunOnce(ctx) }()
		<-reached
		owner, err := jobs.LeaseOwner(ctx, "job-1")
		if err != nil || len(owner) < 2 || owner[:2] != "A/" {
			t.Fatalf("lease owner %q %v, want A's", owner, err)
		}
		if ranB, err := bw.RunOnce(ctx); err != nil || ranB != 0 {
			t.Fatalf("B ran %d jobs (%v) while A holds the lease", ranB, err)
		}
		close(release)
		wg.Wait()
		if errA != nil || ranA != 1 {
			t.Fatalf("A ran %d: %v", ranA, errA)
		}
		if owner, _ := jobs.LeaseOwner(ctx, "job-1"); owner != "" {
			t.Fatalf("lease still held by %q after the run", owner)
		}
		// Until the projection drops it, A knows the job is done.
		if ranA, err := a.RunOnce(ctx); err != nil || ranA != 0 {
			t.Fatalf("A ran the finished job again: %d %v", ranA, err)
		}
		catchUp(t, w.store, proj)
		if ids, err := jobs.ActiveGrantJobs(ctx); err != nil || len(ids) != 0 {
			t.Fatalf("active after finish %v %v", ids, err)
		}
		if n := w.countEvents(t, domain.EvCouponGranted); n != 300 {
			t.Fatalf("%d grants, want 300", n)
		}
		if ranB, err := bw.RunOnce(ctx); err != nil || ranB != 0 {
			t.Fatalf("B ran %d (%v) with nothing active", ranB, err)
		}
	})
}

// Run(ctx) picks a job up by polling, and a job cut short by a shutdown is
// finished by another instance.
func TestGrantWorkerRunResumesAfterShutdown(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w, hs := newGrantWorld(t, b)
		w.issue(t, "b1", 1000, 1)
		jobs, _ := redisjobs.New(b.Client, b.Prefix)
		proj, _ := projections.NewGrantJobsProjector(jobs)
		users := make([]string, 400)
		for i := range users {
			users[i] = fmt.Sprintf("u%03d", i)
		}
		w.createJob(t, "job-1", "b1", users)
		catchUp(t, w.store, proj)

		cfg := commands.GrantWorkerConfig{Interval: 10 * time.Millisecond, LeaseTTL: 3 * time.Second, Owner: "A"}
		first, err := commands.NewGrantWorker(w.h.Grants.Run, jobs, jobs, cfg, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		runCtx, shutdown := context.WithCancel(context.Background())
		var n atomic.Int64
		hs.onAfter(func(string) {
			if n.Add(1) == 150 {
				shutdown()
			}
		})
		first.Run(runCtx) // returns once the shutdown stopped the job
		ctx := context.Background()
		if st, _ := w.h.Grants.GetGrantJob(ctx, "job-1"); st.State != commands.GrantJobPending {
			t.Fatalf("after shutdown: %+v", st)
		}
		if owner, _ := jobs.LeaseOwner(ctx, "job-1"); owner != "" {
			t.Fatalf("lease still held by %q after shutdown", owner)
		}
		hs.onAfter(func(string) {})

		g, _ := commands.NewGrantJobs(w.deps)
		cfg.Owner = "B"
		second, _ := commands.NewGrantWorker(g.Run, jobs, jobs, cfg, discardLogger())
		ctx2, stop := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { defer close(done); second.Run(ctx2) }()
		second.Wake()
		deadline := time.Now().Add(10 * time.Second)
		for {
			st, err := g.GetGrantJob(ctx, "job-1")
			if err != nil {
				t.Fatal(err)
			}
			if st.State == commands.GrantJobFinished {
				if want := (domain.GrantCounts{Total: 400, Granted: 400}); st.GrantCounts != want {
					t.Fatalf("finished with %+v, want %+v", st.GrantCounts, want)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not finished: %+v", st)
			}
			time.Sleep(5 * time.Millisecond)
		}
		stop()
		<-done
		if n := w.countEvents(t, domain.EvCouponGranted); n != 400 {
			t.Fatalf("%d grants, want 400", n)
		}
	})
}
