package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/elastic/go-elasticsearch/v8"
	"github.com/prometheus/client_golang/prometheus"
	bolt "go.etcd.io/bbolt"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/history/boltindex"
	"github.com/couponsd/couponsd/infra/history/esindex"
	"github.com/couponsd/couponsd/infra/httpapi"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redisreminders"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

// readSide is every projector, its gate and the queries they serve.
type readSide struct {
	progress   *projections.Progress
	projectors []projections.Projector
	view       *redisview.Live
	targets    map[string]readapi.ReplayTarget
	live       []projections.Projector // gated and tracked, one event at a time (Kafka mode)
	jobs       *redisjobs.Store
	history    projections.HistoryIndex
	queries    *httpapi.Queries
	grants     *commands.GrantWorker
	reminders  *redisreminders.Store
}

// Bounds of /readyz: projections further behind than this are not ready.
const (
	readyMaxLagEvents  = 10_000
	readyMaxLagSeconds = 30
)

func (a *app) openReadSide(ctx context.Context) (*readSide, error) {
	rs := &readSide{}
	var err error
	if rs.view, err = redisview.OpenLive(ctx, a.redis.Client, a.redis.Prefix); err != nil {
		return nil, err
	}
	if rs.history, err = a.openHistory(ctx); err != nil {
		return nil, fmt.Errorf("history index: %w", err)
	}

	reg := a.repo.Registry()
	opsProj, err := projections.NewOpsProjector(a.ops, reg)
	if err != nil {
		return nil, err
	}
	cp, err := redisops.NewCheckpoint(a.redis.Client, a.redis.Prefix+"guard-sync:checkpoint")
	if err != nil {
		return nil, err
	}
	syncProj, err := projections.NewGuardSyncProjector(a.repo, a.guard, cp)
	if err != nil {
		return nil, err
	}
	viewProj, err := projections.NewViewProjector(rs.view, a.repo, reg)
	if err != nil {
		return nil, err
	}
	histProj, err := projections.NewHistoryProjector(rs.history, reg, 0)
	if err != nil {
		return nil, err
	}
	jobs := a.jobs
	rs.jobs = jobs
	jobsProj, err := projections.NewGrantJobsProjector(jobs, reg)
	if err != nil {
		return nil, err
	}
	if rs.grants, err = commands.NewGrantWorker(a.handlers.Grants.Run, jobs, jobs, commands.GrantWorkerConfig{}, a.log); err != nil {
		return nil, err
	}
	if rs.reminders, err = redisreminders.New(a.redis.Client, a.redis.Prefix); err != nil {
		return nil, err
	}
	remProj, err := projections.NewRemindersProjector(rs.reminders, reg)
	if err != nil {
		return nil, err
	}
	all := []projections.Projector{opsProj, syncProj, viewProj, histProj, jobsProj, remProj}
	names := make([]string, len(all))
	for i, p := range all {
		names[i] = p.Name()
	}
	rs.progress = projections.NewProgress(names...)
	rs.targets = map[string]readapi.ReplayTarget{}
	for _, p := range all {
		g := &projections.Gate{}
		rs.targets[p.Name()] = readapi.ReplayTarget{Projector: p, Gate: g}
		rs.live = append(rs.live, projections.Tracked(projections.Gated(p, g), rs.progress))
		if bp, ok := p.(projections.BatchProjector); ok {
			// Embedded pipeline: redelivery restarts from the projector's own
			// checkpoint, so events may be applied in bulk after their ack.
			rs.projectors = append(rs.projectors, projections.NewBatching(bp, g, rs.progress, projections.BatchConfig{}))
			continue
		}
		rs.projectors = append(rs.projectors, projections.Tracked(projections.Gated(p, g), rs.progress))
	}

	coupons, err := readapi.NewCoupons(rs.view, rs.history, rs.progress, 2*time.Second)
	if err != nil {
		return nil, err
	}
	reports, err := readapi.NewReports(rs.history)
	if err != nil {
		return nil, err
	}
	catalog, err := readapi.NewCatalog(rs.view, a.clock, 0)
	if err != nil {
		return nil, err
	}
	checkout, err := readapi.NewCheckout(rs.view, catalog, a.guard, a.clock)
	if err != nil {
		return nil, err
	}
	rs.queries = &httpapi.Queries{Coupons: coupons, Reports: reports, Counts: a.guard, Checkout: checkout, Ready: a.ready(rs)}
	return rs, nil
}

// run starts every projector (embedded pipeline, or Kafka when
// COUPONS_KAFKA_BROKERS is set) and the lag gauges.
func (rs *readSide) run(a *app, goRun func(func(context.Context))) error {
	if a.cfg.KafkaBrokers != "" {
		if err := rs.runKafka(a, goRun, rs.jobs); err != nil {
			return err
		}
	} else {
		ww, err := newWipeWatch(context.Background(), a)
		if err != nil {
			return err
		}
		goRun(ww.run)
		resets := rs.redisResets(a)
		for _, p := range rs.projectors {
			goRun(func(ctx context.Context) { ww.supervise(ctx, p, p.Name(), resets[p.Name()], rs.progress) })
		}
	}
	goRun(rs.grants.Run)
	rcfg := commands.ReminderConfig{Lead: a.cfg.ExpiryReminderLead}
	expiry, err := commands.NewExpiryReminderWorker(a.repo, rs.reminders, a.clock, rcfg, a.log)
	if err != nil {
		return err
	}
	opening, err := commands.NewClaimOpeningWorker(a.repo, rs.reminders, a.clock, rcfg, a.log)
	if err != nil {
		return err
	}
	goRun(expiry.Run)
	goRun(opening.Run)
	lagEvents := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "couponsd_projection_lag_events",
		Help: "Events appended to the store that a projection has not applied yet."}, []string{"projection"})
	lagSeconds := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "couponsd_projection_lag_seconds",
		Help: "Age of the last applied event while a projection is behind (0 when caught up)."}, []string{"projection"})
	a.registry.MustRegister(lagEvents, lagSeconds)
	goRun(func(ctx context.Context) {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			if head, err := a.store.LastPosition(ctx); err == nil {
				for _, n := range rs.progress.Names() {
					ev, sec := rs.lag(n, head, a.clock.Now())
					lagEvents.WithLabelValues(n).Set(float64(ev))
					lagSeconds.WithLabelValues(n).Set(sec)
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	})
	return nil
}

func (rs *readSide) lag(name string, head uint64, now time.Time) (events uint64, seconds float64) {
	pos, at := rs.progress.Position(name)
	if pos >= head {
		return 0, 0
	}
	if !at.IsZero() {
		seconds = now.Sub(at).Seconds()
	}
	return head - pos, seconds
}

// ready: Redis answers, the store answers, and every projection is within bounds.
func (a *app) ready(rs *readSide) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		if err := a.redis.Client.Ping(ctx).Err(); err != nil {
			return fmt.Errorf("redis: %w", err)
		}
		head, err := a.store.LastPosition(ctx)
		if err != nil {
			return fmt.Errorf("event store: %w", err)
		}
		for _, n := range rs.progress.Names() {
			ev, sec := rs.lag(n, head, a.clock.Now())
			if ev > readyMaxLagEvents || sec > readyMaxLagSeconds {
				return fmt.Errorf("projection %s is %d events (%.0fs) behind", n, ev, sec)
			}
		}
		return nil
	}
}

// verifier waits (bounded) for every projection to reach the store's head,
// then compares every derived state with the events up to it.
func (a *app) verifier(rs *readSide) func(ctx context.Context) (any, error) {
	return func(ctx context.Context) (any, error) {
		head, err := a.store.LastPosition(ctx)
		if err != nil {
			return nil, err
		}
		wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_ = rs.progress.WaitFor(wctx, head)
		cancel()
		return readapi.Verify(ctx, readapi.VerifyDeps{Repo: a.repo, Guard: a.guard, View: rs.view, Ops: a.ops, History: rs.history}, head)
	}
}

// openHistory opens the history index: Elasticsearch when
// COUPONS_ELASTICSEARCH_URL is set (comma-separated node URLs), else the
// embedded bbolt index in the data dir.
func (a *app) openHistory(ctx context.Context) (projections.HistoryIndex, error) {
	if a.cfg.ElasticsearchURL == "" {
		hist, err := a.openBoltHistory(filepath.Join(a.cfg.DataDir, "history"))
		if err != nil {
			return nil, err
		}
		a.closers = append(a.closers, hist.Close)
		return hist, nil
	}
	client, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: strings.Split(a.cfg.ElasticsearchURL, ",")})
	if err != nil {
		return nil, err
	}
	// Each bulk refreshes the shard: the live projector writes one bulk per
	// batch (at most every 5 ms), and reads see every flushed batch, which
	// read-your-writes (min_position) relies on.
	return esindex.New(ctx, client, esindex.Options{Prefix: "couponsd-", Refresh: esindex.RefreshTrue})
}

// openBoltHistory opens the embedded history index. It is written without
// fsync (a projection, rebuilt from the event store), so after an OS crash
// the file may be damaged: it is then moved aside and a fresh index is
// created, which the history projector fills again from the first event.
func (a *app) openBoltHistory(dir string) (hist *boltindex.Index, err error) {
	damaged := false
	open := func() (h *boltindex.Index, err error) {
		defer func() {
			if r := recover(); r != nil { // bbolt panics on some damaged pages
				damaged, err = true, fmt.Errorf("history index damaged: %v", r)
			}
		}()
		return boltindex.Open(dir, boltindex.Options{NoSync: true})
	}
	hist, err = open()
	if err == nil || !(damaged || errors.Is(err, bolt.ErrInvalid) || errors.Is(err, bolt.ErrChecksum) || errors.Is(err, bolt.ErrVersionMismatch)) {
		return hist, err // fine, or not a damaged file (locked by another process, permissions...)
	}
	aside := fmt.Sprintf("%s.damaged-%d", dir, time.Now().Unix())
	a.log.Error("history index unreadable; moving it aside and rebuilding it from the event store", "err", err, "moved_to", aside)
	if rerr := os.Rename(dir, aside); rerr != nil {
		return nil, fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
	}
	return open()
}
