package commands

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// DueIndex finds coupons whose deadlines have passed (kept by a projection).
type DueIndex interface {
	DueHolds(ctx context.Context, now time.Time, limit int) ([]string, error)
	DueExpiries(ctx context.Context, now time.Time, limit int) ([]string, error)
}

// WorkerConfig tunes the background workers.
type WorkerConfig struct {
	Interval           time.Duration // how often each worker polls (default 1s)
	ReservationTimeout time.Duration // age at which an unconfirmed reservation is settled (default 30s)
	ReconcileInterval  time.Duration // default 10s
	BatchLimit         int           // items per poll (default 500)
}

// WithDefaults fills zero fields.
func (c WorkerConfig) WithDefaults() WorkerConfig {
	if c.Interval <= 0 {
		c.Interval = time.Second
	}
	if c.ReservationTimeout <= 0 {
		c.ReservationTimeout = 30 * time.Second
	}
	if c.ReconcileInterval <= 0 {
		c.ReconcileInterval = 10 * time.Second
	}
	if c.BatchLimit <= 0 {
		c.BatchLimit = 500
	}
	return c
}

// Workers release timed-out holds, expire coupons and reconcile reservations.
type Workers struct {
	h      *Handlers
	due    DueIndex
	clock  domain.Clock
	cfg    WorkerConfig
	log    *slog.Logger
	keeper *GuardKeeper
}

// SetKeeper makes the reconciler pass also check that the guard still holds
// its state (and start a recovery when Redis lost it).
func (w *Workers) SetKeeper(k *GuardKeeper) { w.keeper = k }

// NewWorkers fails fast on nil dependencies.
func NewWorkers(h *Handlers, due DueIndex, clock domain.Clock, cfg WorkerConfig, log *slog.Logger) (*Workers, error) {
	if h == nil || due == nil || clock == nil || log == nil {
		return nil, errors.New("commands: NewWorkers needs handlers, a due index, a clock and a logger")
	}
	return &Workers{h: h, due: due, clock: clock, cfg: cfg.WithDefaults(), log: log}, nil
}

// Run runs every worker until ctx is done. The reconciler runs once at once.
func (w *Workers) Run(ctx context.Context) {
	go pollEvery(ctx, w.cfg.Interval, w.log, "hold release", w.ReleaseDueHolds)
	go pollEvery(ctx, w.cfg.Interval, w.log, "expiry", w.ExpireDue)
	pollEvery(ctx, w.cfg.ReconcileInterval, w.log, "reconcile", w.Reconcile)
}

// ReleaseDueHolds runs one pass of the hold releaser; it returns how many
// holds it released.
func (w *Workers) ReleaseDueHolds(ctx context.Context) (int, error) {
	ids, err := w.due.DueHolds(ctx, w.clock.Now(), w.cfg.BatchLimit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		r, err := w.h.ReleaseHold.Handle(ctx, ReleaseExpiredHold{CouponID: id})
		if err != nil {
			w.log.Warn("release hold", "coupon", id, "err", err)
			continue
		}
		if r.Changed {
			n++
		}
	}
	return n, nil
}

// ExpireDue runs one pass of the expiry worker; it returns how many coupons it expired.
func (w *Workers) ExpireDue(ctx context.Context) (int, error) {
	ids, err := w.due.DueExpiries(ctx, w.clock.Now(), w.cfg.BatchLimit)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		r, err := w.h.Expire.Handle(ctx, ExpireCoupon{CouponID: id})
		if err != nil {
			w.log.Warn("expire coupon", "coupon", id, "err", err)
			continue
		}
		if r.Changed {
			n++
		}
	}
	return n, nil
}

// Reconcile runs one pass of the reservation reconciler.
func (w *Workers) Reconcile(ctx context.Context) (int, error) {
	if w.keeper != nil {
		if err := w.keeper.Check(ctx); err != nil {
			return 0, err
		}
	}
	rep, err := w.h.Reconcile.Handle(ctx, ReconcileReservations{OlderThan: w.cfg.ReservationTimeout, Limit: w.cfg.BatchLimit})
	if rep.Confirmed+rep.Voided+rep.Failed > 0 {
		w.log.Info("reservations reconciled", "confirmed", rep.Confirmed, "voided", rep.Voided, "failed", rep.Failed)
	}
	return rep.Confirmed + rep.Voided, err
}
