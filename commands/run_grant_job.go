package commands

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// GrantShardBus sends grant shard commands to the shard consumers (over
// Watermill: Kafka in production, in process when embedded). Delivery is at
// least once; the consumers are idempotent.
type GrantShardBus interface {
	SendGrantShards(ctx context.Context, cmds []GrantShard) error
}

// GrantJobTracker is the live progress of grant jobs, kept by the grant-jobs
// projection from grantshard.done.v1 events.
type GrantJobTracker interface {
	// DoneShards lists the job's shards known to be done.
	DoneShards(ctx context.Context, jobID string) ([]int, error)
	// GrantJobProgress is the number of done shards and their summed counts.
	GrantJobProgress(ctx context.Context, jobID string) (shardsDone int, counts domain.GrantCounts, err error)
}

// RunGrantJob coordinates a stored grant job to its end.
type RunGrantJob struct{ JobID string }

// GrantCoordinatorConfig tunes the coordinator.
type GrantCoordinatorConfig struct {
	// Interval is how often the job's progress is read (default 500ms).
	Interval time.Duration
	// StallTimeout: when no shard got done for this long, the shards not
	// done are checked in the event store and sent again (default 15s:
	// longer than a shard lease, so a dead consumer's shards are free).
	StallTimeout time.Duration
	// SendChunk is the number of shard commands per bus call (default 500).
	SendChunk int
}

// WithDefaults fills zero fields.
func (c GrantCoordinatorConfig) WithDefaults() GrantCoordinatorConfig {
	if c.Interval <= 0 {
		c.Interval = 500 * time.Millisecond
	}
	if c.StallTimeout <= 0 {
		c.StallTimeout = 15 * time.Second
	}
	if c.SendChunk <= 0 {
		c.SendChunk = 500
	}
	return c
}

// RunGrantJobHandler handles RunGrantJob: it is the job's coordinator (the
// grant worker runs it under the job's lease, so one instance at a time).
type RunGrantJobHandler struct {
	d       Deps
	bus     GrantShardBus
	tracker GrantJobTracker
	cfg     GrantCoordinatorConfig
}

// NewRunGrantJobHandler fails fast on missing dependencies.
func NewRunGrantJobHandler(d Deps, bus GrantShardBus, tracker GrantJobTracker, cfg GrantCoordinatorConfig) (*RunGrantJobHandler, error) {
	if err := d.validate("RunGrantJobHandler"); err != nil {
		return nil, err
	}
	if bus == nil || tracker == nil {
		return nil, errors.New("commands: RunGrantJobHandler needs a shard bus and a tracker")
	}
	return &RunGrantJobHandler{d: d, bus: bus, tracker: tracker, cfg: cfg.WithDefaults()}, nil
}

// Handle sends every shard not done yet to the consumers, waits for them
// (sending again the shards not done when progress stalls: a consumer died,
// or an in-process bus lost its messages in a crash), and once every shard
// is done records grantjob.finished.v1 with the exact sum of the shards'
// counts read from the event store, the list's duplicates counted as
// skipped. A cancelled ctx leaves the job unfinished; running it again
// resumes it. A finished job is answered at once.
func (h *RunGrantJobHandler) Handle(ctx context.Context, cmd RunGrantJob) (GrantJobStatus, error) {
	if err := domain.ValidateID("job_id", cmd.JobID); err != nil {
		return GrantJobStatus{}, err
	}
	job, err := loadGrantJob(ctx, h.d.Repo, cmd.JobID)
	if err != nil {
		return GrantJobStatus{}, err
	}
	switch {
	case !job.Exists():
		return GrantJobStatus{}, domain.Errorf(domain.ErrNotFound, "grant job %s not found", cmd.JobID)
	case job.Finished:
		return finishedJobStatus(job), nil
	case job.Legacy:
		return GrantJobStatus{}, domain.Errorf(domain.ErrConflict, "grant job %s has the retired inline-list format; submit it again", job.ID)
	}
	done := make(map[int]bool, job.Shards)
	var sentAt, progressAt time.Time
	lastDone := -1
	for {
		ids, err := h.tracker.DoneShards(ctx, job.ID)
		if err != nil {
			return GrantJobStatus{}, err
		}
		for _, n := range ids {
			if n >= 0 && n < job.Shards {
				done[n] = true
			}
		}
		if len(done) > lastDone {
			lastDone, progressAt = len(done), time.Now()
		}
		if len(done) < job.Shards && (sentAt.IsZero() || (time.Since(progressAt) >= h.cfg.StallTimeout && time.Since(sentAt) >= h.cfg.StallTimeout)) {
			if err := h.send(ctx, job, done, !sentAt.IsZero()); err != nil {
				return GrantJobStatus{}, err
			}
			sentAt = time.Now()
		}
		if len(done) >= job.Shards {
			st, complete, err := h.finish(ctx, job)
			if err != nil || complete {
				return st, err
			}
			// The tracker ran ahead of the store's reads: check again.
			clear(done)
		}
		select {
		case <-ctx.Done():
			return GrantJobStatus{}, ctx.Err()
		case <-time.After(h.cfg.Interval):
		}
	}
}

// send sends the shards not done; check first looks each one up in the
// event store (the tracker may have lost what it knew).
func (h *RunGrantJobHandler) send(ctx context.Context, job *domain.GrantJob, done map[int]bool, check bool) error {
	var stored []*domain.GrantShardDone
	if check {
		var todo []int
		for n := range job.Shards {
			if !done[n] {
				todo = append(todo, n)
			}
		}
		var err error
		if stored, err = h.shardDones(ctx, job.ID, todo, job.Shards); err != nil {
			return err
		}
	}
	var cmds []GrantShard
	for n := range job.Shards {
		if done[n] {
			continue
		}
		if stored != nil && stored[n] != nil {
			done[n] = true
			continue
		}
		cmds = append(cmds, GrantShard{JobID: job.ID, BatchID: job.BatchID, Shard: n})
		if len(cmds) == h.cfg.SendChunk {
			if err := h.bus.SendGrantShards(ctx, cmds); err != nil {
				return err
			}
			cmds = cmds[:0]
		}
	}
	if len(cmds) > 0 {
		return h.bus.SendGrantShards(ctx, cmds)
	}
	return nil
}

// finish reads every shard's done event and records the job's final counts.
// complete is false when a shard turns out not done yet.
func (h *RunGrantJobHandler) finish(ctx context.Context, job *domain.GrantJob) (GrantJobStatus, bool, error) {
	all := make([]int, job.Shards)
	for n := range all {
		all[n] = n
	}
	dones, err := h.shardDones(ctx, job.ID, all, job.Shards)
	if err != nil {
		return GrantJobStatus{}, false, err
	}
	total := domain.GrantCounts{Total: job.Duplicates, Skipped: job.Duplicates}
	outcomes := make([]string, 0, len(dones))
	for _, d := range dones {
		if d == nil {
			return GrantJobStatus{}, false, nil
		}
		total = total.Add(d.GrantCounts)
		outcomes = append(outcomes, d.Outcome)
	}
	if err := job.Finish(total, domain.CombineGrantOutcomes(outcomes...), h.d.Clock.Now()); err != nil {
		return GrantJobStatus{}, false, fmt.Errorf("grant job %s: %w", job.ID, err)
	}
	_, err = saveGrantJob(ctx, h.d.Repo, job)
	if errors.Is(err, domain.ErrConcurrency) {
		// Finished meanwhile by another coordinator: its counts stand.
		stored, lerr := loadGrantJob(ctx, h.d.Repo, job.ID)
		if lerr != nil {
			return GrantJobStatus{}, false, lerr
		}
		return finishedJobStatus(stored), stored.Finished, nil
	}
	if err != nil {
		return GrantJobStatus{}, false, err
	}
	return finishedJobStatus(job), true, nil
}

// shardDones reads the done events of the listed shards, 16 at once, into
// a slice indexed by shard number (of length total; nil: not done).
func (h *RunGrantJobHandler) shardDones(ctx context.Context, jobID string, shards []int, total int) ([]*domain.GrantShardDone, error) {
	dones := make([]*domain.GrantShardDone, total)
	var mu sync.Mutex
	var first error
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for _, n := range shards {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			d, err := shardDone(ctx, h.d.Repo, jobID, n)
			mu.Lock()
			defer mu.Unlock()
			if err != nil && first == nil {
				first = err
			}
			dones[n] = d
		}()
	}
	wg.Wait()
	return dones, first
}
