package commands

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"
)

// GrantJobIndex lists the grant jobs not finished yet (kept by the
// grant-jobs projection).
type GrantJobIndex interface {
	ActiveGrantJobs(ctx context.Context) ([]string, error)
}

// JobLeases gives one runner at a time the right to run a job. A lease is
// held by an owner token and ends after ttl unless renewed.
type JobLeases interface {
	// TryLease takes the lease when nobody holds it; false when someone does.
	TryLease(ctx context.Context, jobID, owner string, ttl time.Duration) (bool, error)
	// RenewLease extends the lease to ttl from now; false when owner no
	// longer holds it (it expired, or another owner took it).
	RenewLease(ctx context.Context, jobID, owner string, ttl time.Duration) (bool, error)
	// ReleaseLease ends the lease if owner holds it; otherwise it changes nothing.
	ReleaseLease(ctx context.Context, jobID, owner string) error
}

// GrantWorkerConfig tunes the grant worker.
type GrantWorkerConfig struct {
	Interval time.Duration // how often the active jobs are polled (default 2s)
	LeaseTTL time.Duration // lease length, renewed every third of it (default 15s)
	MaxJobs  int           // jobs coordinated at once by this instance (default 8)
	Owner    string        // this instance's name in lease tokens (default host-pid)
}

// WithDefaults fills zero fields.
func (c GrantWorkerConfig) WithDefaults() GrantWorkerConfig {
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 15 * time.Second
	}
	if c.MaxJobs <= 0 {
		c.MaxJobs = 8
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
	return c
}

// GrantWorker runs the unfinished grant jobs: the ones just created and the
// ones a crash or a restart left behind. Every job runs under a lease, so two
// instances never run the same job at once; the run is resumable, so a job
// whose runner died is finished by whoever leases it next.
type GrantWorker struct {
	run    *RunGrantJobHandler
	index  GrantJobIndex
	leases JobLeases
	cfg    GrantWorkerConfig
	log    *slog.Logger
	wake   chan struct{}

	mu      sync.Mutex
	running map[string]bool
	// done: jobs seen finished that the projection has not dropped from the
	// active set yet (so they are not leased and logged again meanwhile).
	done map[string]bool
	wg   sync.WaitGroup
}

// NewGrantWorker fails fast on nil dependencies.
func NewGrantWorker(run *RunGrantJobHandler, index GrantJobIndex, leases JobLeases, cfg GrantWorkerConfig, log *slog.Logger) (*GrantWorker, error) {
	if run == nil || index == nil || leases == nil || log == nil {
		return nil, errors.New("commands: NewGrantWorker needs a run handler, a job index, leases and a logger")
	}
	return &GrantWorker{run: run, index: index, leases: leases, cfg: cfg.WithDefaults(), log: log,
		wake: make(chan struct{}, 1), running: map[string]bool{}, done: map[string]bool{}}, nil
}

// Wake asks for a poll now (e.g. right after a job was created) instead of
// at the next tick.
func (w *GrantWorker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run polls until ctx is done, starting every job it can lease (at most
// MaxJobs at once) in the background. On return every job it ran has
// stopped and released its lease; unfinished ones resume later.
func (w *GrantWorker) Run(ctx context.Context) {
	defer w.wg.Wait()
	t := time.NewTicker(w.cfg.Interval)
	defer t.Stop()
	for {
		if err := w.poll(ctx); err != nil && ctx.Err() == nil {
			w.log.Warn("grant worker poll failed", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-w.wake:
		}
	}
}

func (w *GrantWorker) poll(ctx context.Context) error {
	ids, err := w.active(ctx)
	if err != nil {
		return err
	}
	for _, id := range ids {
		if !w.claimSlot(id) {
			continue
		}
		token, ok, err := w.lease(ctx, id)
		if err != nil || !ok {
			w.freeSlot(id)
			if err != nil {
				return err
			}
			continue
		}
		w.wg.Add(1)
		go func() {
			defer w.wg.Done()
			st, err := w.runLeased(ctx, id, token)
			w.logRun(ctx, id, st, err)
			w.endSlot(id, err == nil)
		}()
	}
	return nil
}

// RunOnce is one synchronous pass: it runs every active job it can lease,
// one after the other, to its end. It returns how many jobs it ran to the
// finish and the first error met.
func (w *GrantWorker) RunOnce(ctx context.Context) (int, error) {
	ids, err := w.active(ctx)
	if err != nil {
		return 0, err
	}
	n := 0
	var first error
	for _, id := range ids {
		if ctx.Err() != nil {
			return n, ctx.Err()
		}
		if !w.claimSlot(id) {
			continue
		}
		token, ok, err := w.lease(ctx, id)
		finished := false
		if err == nil && ok {
			var st GrantJobStatus
			st, err = w.runLeased(ctx, id, token)
			w.logRun(ctx, id, st, err)
			if finished = err == nil; finished {
				n++
			}
		}
		w.endSlot(id, finished)
		if err != nil && first == nil {
			first = err
		}
	}
	return n, first
}

// active lists the active jobs not known to be finished, and forgets the
// finished ones the projection has dropped.
func (w *GrantWorker) active(ctx context.Context) ([]string, error) {
	ids, err := w.index.ActiveGrantJobs(ctx)
	if err != nil {
		return nil, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	listed := make(map[string]bool, len(ids))
	out := ids[:0]
	for _, id := range ids {
		listed[id] = true
		if !w.done[id] {
			out = append(out, id)
		}
	}
	for id := range w.done {
		if !listed[id] {
			delete(w.done, id)
		}
	}
	return out, nil
}

// claimSlot marks id as running here; false when it already is, or when
// MaxJobs jobs are running.
func (w *GrantWorker) claimSlot(id string) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.running[id] || w.done[id] || len(w.running) >= w.cfg.MaxJobs {
		return false
	}
	w.running[id] = true
	return true
}

func (w *GrantWorker) freeSlot(id string) { w.endSlot(id, false) }

// endSlot frees id's slot; finished remembers it as done.
func (w *GrantWorker) endSlot(id string, finished bool) {
	w.mu.Lock()
	delete(w.running, id)
	if finished {
		w.done[id] = true
	}
	w.mu.Unlock()
}

// lease tries to lease id under a fresh token (one per lease, so a stale
// renewal of an earlier lease of this instance can never extend this one).
func (w *GrantWorker) lease(ctx context.Context, id string) (string, bool, error) {
	token, err := leaseToken(w.cfg.Owner)
	if err != nil {
		return "", false, err
	}
	ok, err := w.leases.TryLease(ctx, id, token, w.cfg.LeaseTTL)
	return token, ok, err
}

// runLeased runs a leased job, renewing the lease every third of its TTL.
// When the lease is lost (or cannot be renewed for half its TTL) the run is
// cancelled before another instance may take the job over; it resumes there.
func (w *GrantWorker) runLeased(ctx context.Context, id, token string) (GrantJobStatus, error) {
	jctx, cancel := context.WithCancel(ctx)
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		ttl := w.cfg.LeaseTTL
		t := time.NewTicker(ttl / 3)
		defer t.Stop()
		last := time.Now()
		for {
			select {
			case <-jctx.Done():
				return
			case <-t.C:
			}
			ok, err := w.leases.RenewLease(jctx, id, token, ttl)
			switch {
			case err == nil && ok:
				last = time.Now()
			case err == nil:
				w.log.Warn("grant job lease lost; stopping the run", "job", id)
				cancel()
				return
			case time.Since(last) > ttl/2:
				w.log.Warn("grant job lease cannot be renewed; stopping the run", "job", id, "err", err)
				cancel()
				return
			}
		}
	}()
	st, err := w.run.Handle(jctx, RunGrantJob{JobID: id})
	cancel()
	<-renewed
	rctx, rcancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer rcancel()
	if rerr := w.leases.ReleaseLease(rctx, id, token); rerr != nil {
		w.log.Warn("grant job lease release failed; it expires by itself", "job", id, "err", rerr)
	}
	return st, err
}

func (w *GrantWorker) logRun(ctx context.Context, id string, st GrantJobStatus, err error) {
	switch {
	case err != nil && ctx.Err() != nil:
		w.log.Info("grant job stopped; it resumes later", "job", id)
	case err != nil:
		w.log.Warn("grant job run failed; it resumes later", "job", id, "err", err)
	default:
		w.log.Info("grant job finished", "job", id, "batch", st.BatchID, "outcome", st.Outcome, "total", st.Total,
			"granted", st.Granted, "skipped", st.Skipped, "not_granted", st.NotGranted, "failed", st.Failed)
	}
}
