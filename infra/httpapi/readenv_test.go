package httpapi

import (
	"context"
	"log/slog"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/history/boltindex"
	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/redisidem"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

// readEnv is env plus the read side: the projectors (usable view on the
// embedded Redis, history index, grant-jobs set) run through the embedded
// pipeline against the same bbolt store, tracked by a Progress; the grant
// worker; and the operator endpoints.
type readEnv struct {
	*env
	handlers *commands.Handlers
	progress *projections.Progress
	view     *redisview.Live
	history  projections.HistoryIndex
	// paused lets a test hold a projector (by name) to observe a lagging read side.
	paused map[string]*pausable
	// readyErr is what Queries.Ready answers.
	readyErr atomic.Pointer[error]
	verify   func(context.Context) (any, error)
}

// readConfig tunes newReadEnv.
type readConfig struct {
	maxWait time.Duration                    // readapi wait bound for min_position
	targets map[string]projections.Projector // extra replay targets
	verify  func(context.Context) (any, error)
	config  func(*Config) // server config changes
}

type readOption func(*readConfig)

func withMaxWait(d time.Duration) readOption { return func(c *readConfig) { c.maxWait = d } }
func withReplayTarget(name string, p projections.Projector) readOption {
	return func(c *readConfig) { c.targets[name] = p }
}
func withServerConfig(f func(*Config)) readOption { return func(c *readConfig) { c.config = f } }
func withVerify(f func(context.Context) (any, error)) readOption {
	return func(c *readConfig) { c.verify = f }
}

func newReadEnv(t *testing.T, opts ...readOption) *readEnv {
	t.Helper()
	rc := readConfig{maxWait: 2 * time.Second, targets: map[string]projections.Projector{}}
	for _, o := range opts {
		o(&rc)
	}
	ctx := context.Background()
	logBuf := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ws := newWriteSide(t, log)
	clock, store, conn, guard, reg, repo, handlers, batches, jobs := ws.clock, ws.store, ws.conn, ws.guard, ws.reg, ws.repo, ws.handlers, ws.batches, ws.jobs
	idem, err := redisidem.New(conn.Client, conn.Prefix)
	if err != nil {
		t.Fatal(err)
	}

	// The read side.
	view, err := redisview.OpenLive(ctx, conn.Client, conn.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	history := openHistory(t)
	viewProj, err := projections.NewViewProjector(view, repo, reg)
	if err != nil {
		t.Fatal(err)
	}
	histProj, err := projections.NewHistoryProjector(history, reg, 0)
	if err != nil {
		t.Fatal(err)
	}
	jobsProj, err := projections.NewGrantJobsProjector(jobs, reg)
	if err != nil {
		t.Fatal(err)
	}
	all := []projections.Projector{viewProj, histProj, jobsProj}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = p.Name()
	}
	progress := projections.NewProgress(names...)
	re := &readEnv{handlers: handlers, progress: progress, view: view, history: history, paused: map[string]*pausable{}, verify: rc.verify}
	targets := map[string]readapi.ReplayTarget{}
	var running []projections.Projector
	for _, p := range all {
		g := &projections.Gate{}
		targets[p.Name()] = readapi.ReplayTarget{Projector: p, Gate: g}
		pp := newPausable(projections.Gated(p, g))
		re.paused[p.Name()] = pp
		running = append(running, projections.Tracked(pp, progress))
	}
	for name, p := range rc.targets {
		targets[name] = readapi.ReplayTarget{Projector: p, Gate: &projections.Gate{}}
	}
	coupons, err := readapi.NewCoupons(view, history, progress, rc.maxWait)
	if err != nil {
		t.Fatal(err)
	}
	reports, err := readapi.NewReports(history)
	if err != nil {
		t.Fatal(err)
	}
	var replayN atomic.Int64
	replays, err := readapi.NewReplays(store, targets, func() string { return "replay-" + strconv.FormatInt(replayN.Add(1), 10) })
	if err != nil {
		t.Fatal(err)
	}
	worker, err := commands.NewGrantWorker(handlers.Grants.Run, jobs, jobs,
		commands.GrantWorkerConfig{Interval: 20 * time.Millisecond, LeaseTTL: 3 * time.Second, Owner: "test"}, log)
	if err != nil {
		t.Fatal(err)
	}

	catalog, err := readapi.NewCatalog(view, clock, time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	checkout, err := readapi.NewCheckout(view, catalog, guard, clock)
	if err != nil {
		t.Fatal(err)
	}
	promReg := prometheus.NewRegistry()
	scfg := Config{JWTSecret: testSecret}
	if rc.config != nil {
		rc.config(&scfg)
	}
	srv, err := New(scfg, Deps{
		Commands: handlers, Batches: batches, Repo: repo, Idempotency: idem,
		Metrics: NewMetrics(promReg), Registry: promReg, Clock: clock, Logger: log,
		Queries: &Queries{Coupons: coupons, Reports: reports, Counts: guard, Checkout: checkout, Ready: func(context.Context) error {
			if p := re.readyErr.Load(); p != nil {
				return *p
			}
			return nil
		}},
		WakeGrants: worker.Wake,
		Admin: &Admin{Replays: replays, Verify: func(ctx context.Context) (any, error) {
			if re.verify == nil {
				return nil, domain.Errorf(domain.ErrUnavailable, "verify is not wired in this test")
			}
			return re.verify(ctx)
		}},
	})
	if err != nil {
		t.Fatal(err)
	}

	// Run the projectors and the grant worker until the test ends (cleanups
	// run last-in first-out: these stop before the store and Redis close).
	rctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for _, p := range running {
		wg.Go(func() {
			if err := pipeline.RunEmbedded(rctx, store, p, log); err != nil && rctx.Err() == nil {
				t.Errorf("projector %s stopped: %v", p.Name(), err)
			}
		})
	}
	wg.Go(func() { worker.Run(rctx) })
	wg.Go(func() { ws.runGrants(rctx) })
	t.Cleanup(func() {
		for _, p := range re.paused {
			p.resume()
		}
		cancel()
		wg.Wait()
	})

	ts := httptest.NewServer(srv.Echo())
	t.Cleanup(ts.Close)
	e := &env{t: t, clock: clock, srv: srv, ts: ts, repo: repo, guard: guard, reg: promReg, logBuf: logBuf}
	e.admin = e.token("boss", RoleAdmin)
	e.alice = e.token("alice", RoleUser)
	e.bob = e.token("bob", RoleUser)
	e.service = e.token("orders", RoleService)
	re.env = e
	return re
}

// openHistory is the history index of the tests: the embedded adapter.
func openHistory(t *testing.T) projections.HistoryIndex {
	t.Helper()
	ix, err := boltindex.Open(t.TempDir(), boltindex.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ix.Close() })
	return ix
}

// sync waits until every projector applied every stored event.
func (re *readEnv) sync() {
	re.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	head, err := re.repo.Store().LastPosition(ctx)
	if err != nil {
		re.t.Fatal(err)
	}
	if err := re.progress.WaitFor(ctx, head); err != nil {
		re.t.Fatalf("projections did not reach position %d: %v", head, err)
	}
}

func (re *readEnv) setReady(err error) {
	if err == nil {
		re.readyErr.Store(nil)
		return
	}
	re.readyErr.Store(&err)
}

// pausable holds a projector's handling while paused.
type pausable struct {
	projections.Projector
	mu   sync.Mutex
	open chan struct{} // closed while running
}

func newPausable(p projections.Projector) *pausable {
	open := make(chan struct{})
	close(open)
	return &pausable{Projector: p, open: open}
}

func (p *pausable) pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
		p.open = make(chan struct{})
	default:
	}
}

func (p *pausable) resume() {
	p.mu.Lock()
	defer p.mu.Unlock()
	select {
	case <-p.open:
	default:
		close(p.open)
	}
}

func (p *pausable) Handle(ctx context.Context, rec es.RecordedEvent) error {
	p.mu.Lock()
	open := p.open
	p.mu.Unlock()
	select {
	case <-open:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.Projector.Handle(ctx, rec)
}
