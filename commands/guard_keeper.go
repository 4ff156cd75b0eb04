package commands

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"
)

// GuardKeeper brings the stock guard back after Redis lost its data while
// the service runs. The guard then holds no batch and no "initialized"
// marker: claims are refused (ErrGuardEmpty, 503) instead of recreating
// batches with full stock. The keeper waits until every claim reserved
// before the loss has settled (its append landed or failed), then rebuilds
// the guard from the event store under a lease, so that one instance
// rebuilds and the others see the marker.
type GuardKeeper struct {
	guard   StockGuard
	rebuild *RebuildGuardHandler
	leases  JobLeases
	owner   string
	settle  time.Duration
	log     *slog.Logger

	mu      sync.Mutex
	running bool
	done    chan struct{}
}

// guardRebuildLease names the lease of the instance rebuilding the guard.
const guardRebuildLease = "guard-rebuild"

// NewGuardKeeper fails fast on nil dependencies. settle is how long claims
// in flight may take to land (at least the request timeout).
func NewGuardKeeper(guard StockGuard, rebuild *RebuildGuardHandler, leases JobLeases, owner string, settle time.Duration, log *slog.Logger) (*GuardKeeper, error) {
	if guard == nil || rebuild == nil || leases == nil || owner == "" || log == nil || settle < 0 {
		return nil, errors.New("commands: NewGuardKeeper needs a guard, a rebuild handler, leases, an owner and a logger")
	}
	return &GuardKeeper{guard: guard, rebuild: rebuild, leases: leases, owner: owner, settle: settle, log: log}, nil
}

// Kick starts a recovery in the background unless one runs; the returned
// channel closes when it ends.
func (k *GuardKeeper) Kick() <-chan struct{} {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.running {
		return k.done
	}
	k.running, k.done = true, make(chan struct{})
	done := k.done
	go func() {
		defer func() {
			k.mu.Lock()
			k.running = false
			k.mu.Unlock()
			close(done)
		}()
		if err := k.recoverGuard(context.Background()); err != nil {
			k.log.Error("stock guard recovery failed; retried on the next check", "err", err)
		}
	}()
	return done
}

// Check kicks a recovery when the guard lost its state.
func (k *GuardKeeper) Check(ctx context.Context) error {
	ok, err := k.guard.Initialized(ctx)
	if err != nil || ok {
		return err
	}
	k.Kick()
	return nil
}

func (k *GuardKeeper) recoverGuard(ctx context.Context) error {
	k.log.Warn("stock guard holds no state: claims are refused until it is rebuilt from the event store", "settle", k.settle)
	time.Sleep(k.settle)
	for {
		ok, err := k.guard.Initialized(ctx)
		if err != nil {
			return err
		}
		if ok {
			return nil // another instance rebuilt it
		}
		got, err := k.leases.TryLease(ctx, guardRebuildLease, k.owner, 5*time.Minute)
		if err != nil {
			return err
		}
		if !got {
			time.Sleep(500 * time.Millisecond)
			continue
		}
		defer func() { _ = k.leases.ReleaseLease(context.WithoutCancel(ctx), guardRebuildLease, k.owner) }()
		if ok, err := k.guard.Initialized(ctx); err != nil || ok {
			return err
		}
		rep, err := k.rebuild.Handle(ctx, RebuildGuard{})
		if err != nil {
			return err
		}
		k.log.Warn("stock guard rebuilt from the event store", "batches", rep.Batches, "coupons", rep.Coupons, "position", rep.Position)
		return nil
	}
}
