package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/eventstore/esdbstore"
	"github.com/couponsd/couponsd/infra/httpapi"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisidem"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redislimit"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/readapi"
	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// app is the composition root: every adapter and handler, wired once.
type app struct {
	cfg      Config
	log      *slog.Logger
	clock    domain.Clock
	metrics  *httpapi.Metrics
	registry *prometheus.Registry
	store    es.Store
	redis    *redisx.Conn
	guard    *redisguard.Guard
	jobs     *redisjobs.Store
	keeper   *commands.GuardKeeper
	ops      *redisops.Store
	repo     *commands.Repository
	handlers *commands.Handlers
	rebuild  *commands.RebuildGuardHandler
	closers  []func() error
}

func open(ctx context.Context, cfg Config, log *slog.Logger) (a *app, err error) {
	a = &app{cfg: cfg, log: log, clock: domain.SystemClock{}, registry: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			a.Close()
		}
	}()
	a.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	a.metrics = httpapi.NewMetrics(a.registry)

	if err = os.MkdirAll(cfg.DataDir, 0o755); err != nil {
		return a, err
	}
	if a.store, err = a.openStore(ctx); err != nil {
		return a, fmt.Errorf("event store: %w", err)
	}
	a.closers = append(a.closers, a.store.Close)

	if a.redis, err = redisx.Open(ctx, redisx.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix}, log); err != nil {
		return a, fmt.Errorf("redis: %w", err)
	}
	a.closers = append(a.closers, a.redis.Close)
	if a.guard, err = redisguard.New(a.redis.Client, a.redis.Prefix, redisguard.RequireInitialized()); err != nil {
		return a, err
	}
	if err = a.guard.Load(ctx); err != nil {
		return a, fmt.Errorf("load guard scripts: %w", err)
	}
	if a.jobs, err = redisjobs.New(a.redis.Client, a.redis.Prefix); err != nil {
		return a, err
	}
	if a.ops, err = redisops.New(a.redis.Client, a.redis.Prefix); err != nil {
		return a, err
	}
	if a.repo, err = commands.NewRepository(a.store, domain.NewRegistry()); err != nil {
		return a, err
	}
	deps := commands.Deps{Repo: a.repo, Guard: a.guard, Clock: a.clock}
	if a.handlers, err = commands.NewHandlers(deps, cfg.HoldTimeout); err != nil {
		return a, err
	}
	if a.rebuild, err = commands.NewRebuildGuardHandler(deps); err != nil {
		return a, err
	}
	// Claims in flight when Redis lost its data finish within the request
	// timeout (10s); the guard is rebuilt once they have.
	if a.keeper, err = commands.NewGuardKeeper(a.guard, a.rebuild, a.jobs, instanceID(), cfg.GuardSettle, log); err != nil {
		return a, err
	}
	a.handlers.Claim.SetKeeper(a.keeper)
	return a, nil
}

func (a *app) Close() {
	for i := len(a.closers) - 1; i >= 0; i-- {
		if err := a.closers[i](); err != nil {
			a.log.Warn("close", "err", err)
		}
	}
	a.closers = nil
}

func serve(ctx context.Context, cfg Config, log *slog.Logger) error {
	a, err := open(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer a.Close()

	// The guard is rebuilt from the event store when Redis holds nothing
	// (first start on an empty Redis, or Redis lost its data).
	if ok, err := a.guard.Initialized(ctx); err != nil {
		return err
	} else if !ok {
		rep, err := a.rebuild.Handle(ctx, commands.RebuildGuard{})
		if err != nil {
			return fmt.Errorf("rebuild guard: %w", err)
		}
		log.Info("stock guard rebuilt from the event store", "batches", rep.Batches, "coupons", rep.Coupons, "position", rep.Position)
	}

	secret, err := jwtSecret(cfg)
	if err != nil {
		return err
	}
	batches, err := readapi.NewBatches(a.repo, a.guard, a.ops, a.clock)
	if err != nil {
		return err
	}
	idem, err := redisidem.New(a.redis.Client, a.redis.Prefix)
	if err != nil {
		return err
	}
	grantBus, err := a.openGrants(ctx)
	if err != nil {
		return err
	}
	runOutbound, err := a.openOutbound(ctx)
	if err != nil {
		return err
	}
	rs, err := a.openReadSide(ctx)
	if err != nil {
		return err
	}
	replays, err := readapi.NewReplays(a.store, rs.targets, newReplayID)
	if err != nil {
		return err
	}
	reminders, err := commands.NewSubscribeReminderHandler(a.repo, a.clock)
	if err != nil {
		return err
	}
	admin := &httpapi.Admin{Replays: replays, Verify: a.verifier(rs)}
	var limiter httpapi.ClaimLimiter
	if cfg.ClaimsPerMinute > 0 {
		if limiter, err = redislimit.New(a.redis.Client, a.redis.Prefix, cfg.ClaimsPerMinute, time.Minute, a.clock.Now); err != nil {
			return err
		}
	}
	srv, err := httpapi.New(httpapi.Config{JWTSecret: secret, MaxInflightClaims: cfg.MaxInflightClaims}, httpapi.Deps{
		Commands: a.handlers, Batches: batches, Repo: a.repo, Idempotency: idem,
		Metrics: a.metrics, Registry: a.registry, Logger: log, Clock: a.clock,
		Queries: rs.queries, WakeGrants: rs.grants.Wake, Reminders: reminders, Admin: admin, ClaimLimiter: limiter,
	})
	if err != nil {
		return err
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goRun := func(f func(context.Context)) {
		wg.Add(1)
		go func() { defer wg.Done(); f(runCtx) }()
	}
	goRun(func(ctx context.Context) {
		if err := grantBus.Run(ctx); err != nil {
			log.Error("grant shard consumer stopped", "err", err)
		}
	})
	if runOutbound != nil {
		goRun(runOutbound)
	}
	if err := rs.run(a, goRun); err != nil {
		return err
	}
	workers, err := commands.NewWorkers(a.handlers, a.ops, a.clock, commands.WorkerConfig{
		Interval: cfg.WorkerInterval, ReservationTimeout: cfg.ReservationTimeout, ReconcileInterval: cfg.ReconcileInterval,
	}, log)
	if err != nil {
		return err
	}
	workers.SetKeeper(a.keeper)
	goRun(workers.Run)
	confirmer := a.guard.NewConfirmer(0, log)
	a.handlers.Claim.SetConfirmer(confirmer)
	goRun(confirmer.Run)

	httpSrv := srv.HTTPServer(cfg.Addr)
	errc := make(chan error, 1)
	go func() { errc <- httpSrv.ListenAndServe() }()
	log.Info("couponsd serving", "addr", cfg.Addr, "data_dir", cfg.DataDir, "redis_embedded", a.redis.Embedded)
	select {
	case err = <-errc:
	case <-ctx.Done():
		log.Info("shutting down")
		sctx, scancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
		defer scancel()
		err = httpSrv.Shutdown(sctx)
	}
	cancel()
	wg.Wait()
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

func newReplayID() string { return uuid.Must(uuid.NewV7()).String() }

// openStore opens the event store: EventStoreDB when COUPONS_EVENTSTORE_URL
// is set, else the embedded bbolt store in the data dir.
func (a *app) openStore(ctx context.Context) (es.Store, error) {
	if a.cfg.EventStoreURL != "" {
		// KurrentDB (EventStoreDB's new name) speaks the same protocol; the
		// v4 client knows the esdb schemes only.
		url := strings.Replace(a.cfg.EventStoreURL, "kurrentdb", "esdb", 1)
		return esdbstore.Open(ctx, url, esdbstore.Options{Logger: a.log, StreamPrefixes: commands.StreamPrefixes()})
	}
	return boltstore.Open(filepath.Join(a.cfg.DataDir, "events"), boltstore.Options{
		Now: a.clock.Now, Logger: a.log, OnCommit: a.metrics.ObserveAppendBatch,
	})
}

// instanceID names this process (leases, logs).
func instanceID() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s-%d-%d", host, os.Getpid(), time.Now().UnixNano())
}
