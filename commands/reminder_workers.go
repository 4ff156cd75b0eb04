package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// ExpiryReminderIndex lists coupons whose expiry reminder may be due (kept by
// the reminders projection, ordered by the end of validity).
type ExpiryReminderIndex interface {
	// DueExpiryReminders lists up to limit coupons whose validity ends at or
	// before horizon, earliest first, skipping the first offset of them.
	DueExpiryReminders(ctx context.Context, horizon time.Time, offset, limit int) ([]string, error)
}

// ReminderConfig tunes the reminder workers.
type ReminderConfig struct {
	Lead        time.Duration // how long before the end of validity a coupon is reminded (default 24h)
	Interval    time.Duration // how often each worker polls (default 1s)
	BatchLimit  int           // coupons or batches per poll, subscribers per page (default 500)
	Concurrency int           // appends in flight at once (default 16)
}

// Reminder defaults.
const (
	DefaultReminderLead        = 24 * time.Hour
	DefaultReminderInterval    = time.Second
	DefaultReminderBatchLimit  = 500
	DefaultReminderConcurrency = 16
)

// WithDefaults fills zero fields.
func (c ReminderConfig) WithDefaults() ReminderConfig {
	if c.Lead == 0 {
		c.Lead = DefaultReminderLead
	}
	if c.Interval == 0 {
		c.Interval = DefaultReminderInterval
	}
	if c.BatchLimit == 0 {
		c.BatchLimit = DefaultReminderBatchLimit
	}
	if c.Concurrency == 0 {
		c.Concurrency = DefaultReminderConcurrency
	}
	return c
}

// Validate reports the first invalid setting.
func (c ReminderConfig) Validate() error {
	switch {
	case c.Lead <= 0:
		return fmt.Errorf("reminders: lead must be positive, got %v", c.Lead)
	case c.Interval <= 0:
		return fmt.Errorf("reminders: interval must be positive, got %v", c.Interval)
	case c.BatchLimit < 1:
		return fmt.Errorf("reminders: batch limit must be at least 1, got %d", c.BatchLimit)
	case c.Concurrency < 1:
		return fmt.Errorf("reminders: concurrency must be at least 1, got %d", c.Concurrency)
	}
	return nil
}

// ExpiryReminderWorker reminds shoppers of coupons about to expire. It polls
// the index with horizon now+Lead and lets RemindExpiry decide each coupon.
// A coupon that changed since it was indexed (redeemed, expired, voided,
// already reminded) is skipped: the projection drops it. A locked coupon is
// skipped too and stays indexed, so it is reminded if its order releases it
// before its validity ends.
type ExpiryReminderWorker struct {
	h     *RemindExpiryHandler
	index ExpiryReminderIndex
	clock domain.Clock
	cfg   ReminderConfig
	log   *slog.Logger
}

// NewExpiryReminderWorker fails fast on nil dependencies or an invalid config
// (zero fields take their defaults).
func NewExpiryReminderWorker(repo *Repository, index ExpiryReminderIndex, clock domain.Clock, cfg ReminderConfig, log *slog.Logger) (*ExpiryReminderWorker, error) {
	if repo == nil || index == nil || clock == nil || log == nil {
		return nil, errors.New("commands: NewExpiryReminderWorker needs a repository, an index, a clock and a logger")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h, err := NewRemindExpiryHandler(repo, clock, cfg.Lead)
	if err != nil {
		return nil, err
	}
	return &ExpiryReminderWorker{h: h, index: index, clock: clock, cfg: cfg, log: log}, nil
}

// Run polls every Interval until ctx is done.
func (w *ExpiryReminderWorker) Run(ctx context.Context) {
	pollEvery(ctx, w.cfg.Interval, w.log, "expiry reminders", w.RunOnce)
}

// maxExpiryPages bounds the pages one pass reads: a full page that reminded
// nobody (coupons locked in orders stay indexed) lets the pass read the next
// one, so such coupons never hold back the reminders behind them.
const maxExpiryPages = 20

// RunOnce is one pass; it returns how many coupons it reminded.
func (w *ExpiryReminderWorker) RunOnce(ctx context.Context) (int, error) {
	total := 0
	for page := range maxExpiryPages {
		ids, err := w.index.DueExpiryReminders(ctx, w.clock.Now().Add(w.cfg.Lead), page*w.cfg.BatchLimit, w.cfg.BatchLimit)
		if err != nil {
			return total, err
		}
		n, err := w.remind(ctx, ids)
		total += n
		if err != nil || len(ids) < w.cfg.BatchLimit || n > 0 {
			return total, err
		}
	}
	return total, nil
}

// remind reminds the listed coupons; it returns how many it reminded.
func (w *ExpiryReminderWorker) remind(ctx context.Context, ids []string) (int, error) {
	var (
		mu    sync.Mutex
		n     int
		first error
	)
	forEachBounded(ctx, ids, w.cfg.Concurrency, func(id string) {
		r, err := w.h.Handle(ctx, RemindExpiry{CouponID: id})
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			if r.Changed {
				n++
			}
		case skippable(err):
			w.log.Debug("expiry reminder skipped", "coupon", id, "err", err)
		default:
			w.log.Warn("expiry reminder failed", "coupon", id, "err", err)
			if first == nil {
				first = err
			}
		}
	})
	return n, errors.Join(first, ctx.Err())
}

// skippable: the coupon is not (or no longer) to be reminded now.
func skippable(err error) bool {
	for _, k := range []error{domain.ErrConflict, domain.ErrConcurrency, domain.ErrOutsideValidity, domain.ErrNotFound} {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}

// ClaimOpeningWorker sends the claim-opening reminders of batches whose claim
// window has started. Each due batch is re-checked in the event store (see
// SendOpeningRemindersHandler): a batch whose start moved later is left
// (the projection re-scores it), one that will never open has its
// subscriptions dropped without a notification.
type ClaimOpeningWorker struct {
	h     *SendOpeningRemindersHandler
	index ClaimOpeningIndex
	clock domain.Clock
	cfg   ReminderConfig
	log   *slog.Logger
}

// NewClaimOpeningWorker fails fast on nil dependencies or an invalid config
// (zero fields take their defaults; Lead is not used).
func NewClaimOpeningWorker(repo *Repository, index ClaimOpeningIndex, clock domain.Clock, cfg ReminderConfig, log *slog.Logger) (*ClaimOpeningWorker, error) {
	if repo == nil || index == nil || clock == nil || log == nil {
		return nil, errors.New("commands: NewClaimOpeningWorker needs a repository, an index, a clock and a logger")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	h, err := NewSendOpeningRemindersHandler(repo, clock, index, cfg.BatchLimit, cfg.Concurrency)
	if err != nil {
		return nil, err
	}
	return &ClaimOpeningWorker{h: h, index: index, clock: clock, cfg: cfg, log: log}, nil
}

// Run polls every Interval until ctx is done.
func (w *ClaimOpeningWorker) Run(ctx context.Context) {
	pollEvery(ctx, w.cfg.Interval, w.log, "claim-opening reminders", w.RunOnce)
}

// RunOnce is one pass over the due batches; it returns how many reminders it sent.
func (w *ClaimOpeningWorker) RunOnce(ctx context.Context) (int, error) {
	ids, err := w.index.DueClaimOpenings(ctx, w.clock.Now(), w.cfg.BatchLimit)
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		rep, err := w.h.Handle(ctx, SendOpeningReminders{BatchID: id})
		n += rep.Sent
		switch {
		case err != nil:
			w.log.Warn("claim-opening reminders failed", "batch", id, "sent", rep.Sent, "failed", rep.Failed, "err", err)
			if first == nil {
				first = err
			}
		case rep.Dropped:
			w.log.Info("claim-opening reminders dropped: the batch will not open", "batch", id)
		case rep.Sent > 0:
			w.log.Info("claim-opening reminders sent", "batch", id, "sent", rep.Sent, "skipped", rep.Skipped)
		}
	}
	return n, first
}

// pollEvery runs pass at once and then every interval until ctx is done.
func pollEvery(ctx context.Context, every time.Duration, log *slog.Logger, name string, pass func(context.Context) (int, error)) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := pass(ctx); err != nil && ctx.Err() == nil {
			log.Warn("worker pass failed", "worker", name, "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
