package commands

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// GrantJobState is where a grant job is.
type GrantJobState string

// Grant job states.
const (
	GrantJobPending  GrantJobState = "pending"  // stored; no shard done yet
	GrantJobRunning  GrantJobState = "running"  // some shards done
	GrantJobFinished GrantJobState = "finished" // grantjob.finished.v1 is stored
)

// GrantJobStatus is a grant job's progress. Total counts every listed
// entry; duplicates of the list are skipped from the start; the other
// counts grow as shards get done, and are final once State is finished.
type GrantJobStatus struct {
	JobID   string        `json:"job_id"`
	BatchID string        `json:"batch_id"`
	State   GrantJobState `json:"state"`
	domain.GrantCounts
	Duplicates int       `json:"duplicates"`
	Shards     int       `json:"shards"`
	ShardsDone int       `json:"shards_done"`
	Outcome    string    `json:"outcome,omitempty"`
	CreatedAt  time.Time `json:"created_at,omitzero"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

func finishedJobStatus(j *domain.GrantJob) GrantJobStatus {
	return GrantJobStatus{JobID: j.ID, BatchID: j.BatchID, State: GrantJobFinished, GrantCounts: j.Counts,
		Duplicates: j.Duplicates, Shards: j.Shards, ShardsDone: j.Shards, Outcome: j.Outcome,
		CreatedAt: j.CreatedAt, FinishedAt: j.FinishedAt}
}

// GrantJobs bundles the grant job handlers.
type GrantJobs struct {
	Create  *CreateGrantJobHandler
	Run     *RunGrantJobHandler
	Shard   *GrantShardHandler
	tracker GrantJobTracker
	repo    *Repository
}

// GrantJobsDeps are the ports of the grant jobs beyond Deps.
type GrantJobsDeps struct {
	Bus     GrantShardBus
	Tracker GrantJobTracker
	Leases  JobLeases
}

// GrantJobsConfig tunes the grant jobs.
type GrantJobsConfig struct {
	Upload      GrantUploadConfig
	Shard       GrantShardConfig
	Coordinator GrantCoordinatorConfig
}

// NewGrantJobs builds the grant job handlers; it fails fast on nil ports.
func NewGrantJobs(d Deps, p GrantJobsDeps, cfg GrantJobsConfig) (*GrantJobs, error) {
	if p.Bus == nil || p.Tracker == nil || p.Leases == nil {
		return nil, errors.New("commands: NewGrantJobs needs a shard bus, a tracker and leases")
	}
	create, err := NewCreateGrantJobHandler(d, cfg.Upload)
	if err != nil {
		return nil, err
	}
	run, err := NewRunGrantJobHandler(d, p.Bus, p.Tracker, cfg.Coordinator)
	if err != nil {
		return nil, err
	}
	shard, err := NewGrantShardHandler(d, p.Leases, cfg.Shard)
	if err != nil {
		return nil, err
	}
	return &GrantJobs{Create: create, Run: run, Shard: shard, tracker: p.Tracker, repo: d.Repo}, nil
}

// GetGrantJob reports a job's progress: final counts once finished, else
// the live counts of its done shards (from the grant-jobs projection).
// Unknown: not_found.
func (g *GrantJobs) GetGrantJob(ctx context.Context, id string) (GrantJobStatus, error) {
	if err := domain.ValidateID("job_id", id); err != nil {
		return GrantJobStatus{}, err
	}
	job, err := loadGrantJob(ctx, g.repo, id)
	if err != nil {
		return GrantJobStatus{}, err
	}
	if !job.Exists() {
		return GrantJobStatus{}, domain.Errorf(domain.ErrNotFound, "grant job %s not found", id)
	}
	if job.Finished {
		return finishedJobStatus(job), nil
	}
	st := GrantJobStatus{JobID: id, BatchID: job.BatchID, State: GrantJobPending, Duplicates: job.Duplicates,
		Shards: job.Shards, CreatedAt: job.CreatedAt}
	st.Total, st.Skipped = job.Total, job.Duplicates
	if job.Legacy {
		return st, nil
	}
	n, c, err := g.tracker.GrantJobProgress(ctx, id)
	if err != nil {
		return GrantJobStatus{}, err
	}
	st.ShardsDone = n
	st.Granted, st.Skipped, st.NotGranted, st.Failed = c.Granted, job.Duplicates+c.Skipped, c.NotGranted, c.Failed
	if n > 0 {
		st.State = GrantJobRunning
	}
	return st, nil
}
