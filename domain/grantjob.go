package domain

import (
	"fmt"
	"slices"
	"time"
)

// Grant job event names.
const (
	EvGrantJobCreated  = "grantjob.created.v1"
	EvGrantJobFinished = "grantjob.finished.v1"
)

// grantJobEvents lists the grant job events.
func grantJobEvents() []Event {
	return []Event{&GrantJobCreated{}, &GrantJobFinished{}}
}

// MaxGrantJobUsers bounds the user list of one grant job. The list is stored
// inline in grantjob.created.v1; larger distributions need a streamed list.
const MaxGrantJobUsers = 100_000

// Grant job outcomes, recorded in grantjob.finished.v1.
const (
	// GrantJobCompleted: every listed entry was processed.
	GrantJobCompleted = "completed"
	// GrantJobSoldOut: the batch ran out of stock; the entries from there on
	// are counted as not granted.
	GrantJobSoldOut = "sold_out"
	// GrantJobBatchClosed: the batch was stopped or ended while the job ran
	// (or its coupons' fixed validity is over); the entries from there on are
	// counted as failed.
	GrantJobBatchClosed = "batch_closed"
)

// GrantCounts is how a grant job's listed entries ended. Every entry is
// counted once: Total = Granted + Skipped + NotGranted + Failed.
type GrantCounts struct {
	Total      int `json:"total"`
	Granted    int `json:"granted"`     // a coupon was granted (by this job)
	Skipped    int `json:"skipped"`     // listed twice, or the user already holds the batch's per-user limit
	NotGranted int `json:"not_granted"` // the stock ran out before this entry
	Failed     int `json:"failed"`      // an error, or the batch closed before this entry
}

// Sum is Granted + Skipped + NotGranted + Failed.
func (c GrantCounts) Sum() int { return c.Granted + c.Skipped + c.NotGranted + c.Failed }

// GrantJobCreated: the back office asked for coupons of a batch to be granted
// to a list of users (targeted distribution). UserIDs keeps the list's order
// and duplicates; the job processes it in that order.
type GrantJobCreated struct {
	JobID   string    `json:"job_id"`
	BatchID string    `json:"batch_id"`
	UserIDs []string  `json:"user_ids"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// GrantJobFinished: the job processed its list; the counts are final.
type GrantJobFinished struct {
	JobID   string `json:"job_id"`
	BatchID string `json:"batch_id"`
	GrantCounts
	Outcome string    `json:"outcome"`
	At      time.Time `json:"at"`
}

// EventName implementations.
func (*GrantJobCreated) EventName() string  { return EvGrantJobCreated }
func (*GrantJobFinished) EventName() string { return EvGrantJobFinished }

// GrantJob is the aggregate of one targeted distribution (stream grantjob-<id>).
type GrantJob struct {
	ID         string
	BatchID    string
	UserIDs    []string
	By         string
	CreatedAt  time.Time
	Finished   bool
	Counts     GrantCounts // final counts, once Finished
	Outcome    string
	FinishedAt time.Time
	version    int64
	changes    []Event
}

// NewGrantJobFromHistory rebuilds a job; an empty history gives a job that does not exist.
func NewGrantJobFromHistory(id string, history []Event) *GrantJob {
	j := &GrantJob{ID: id, version: -1}
	for _, e := range history {
		j.Apply(e)
	}
	return j
}

// Exists tells whether the job was created.
func (j *GrantJob) Exists() bool { return j.version >= 0 }

// Version is the revision of the last applied event (-1: new stream).
func (j *GrantJob) Version() int64 { return j.version }

// BaseVersion is the stored revision the pending changes were made on.
func (j *GrantJob) BaseVersion() int64 { return j.version - int64(len(j.changes)) }

// Changes are the events recorded by the last command.
func (j *GrantJob) Changes() []Event { return j.changes }

// Total is the number of listed entries (duplicates included).
func (j *GrantJob) Total() int { return len(j.UserIDs) }

// CreateGrantJob validates a grant request and records grantjob.created.v1.
// The batch must exist and still take grants: not stopped, not ended, and
// its coupons not born expired.
func CreateGrantJob(id string, b *Batch, userIDs []string, by string, now time.Time) (*GrantJob, error) {
	if err := ValidateID("job_id", id); err != nil {
		return nil, err
	}
	if err := ValidateID("batch_id", b.ID); err != nil {
		return nil, err
	}
	if len(userIDs) == 0 || len(userIDs) > MaxGrantJobUsers {
		return nil, Invalid("user_ids", "must hold 1..%d user ids, got %d", MaxGrantJobUsers, len(userIDs))
	}
	for i, u := range userIDs {
		if err := ValidateID(fmt.Sprintf("user_ids[%d]", i), u); err != nil {
			return nil, err
		}
	}
	if err := b.mutable(now, "grant"); err != nil {
		return nil, err
	}
	if err := b.checkNotBornExpired(now, ErrConflict); err != nil {
		return nil, err
	}
	j := NewGrantJobFromHistory(id, nil)
	j.record(&GrantJobCreated{JobID: id, BatchID: b.ID, UserIDs: slices.Clone(userIDs), By: by, At: now})
	return j, nil
}

// SameRequest tells whether a repeated create asks for exactly this job
// (same batch, same list in the same order).
func (j *GrantJob) SameRequest(batchID string, userIDs []string) bool {
	return j.Exists() && j.BatchID == batchID && slices.Equal(j.UserIDs, userIDs)
}

// Finish records grantjob.finished.v1 with the final counts. Every listed
// entry must be counted exactly once; a job finishes only once.
func (j *GrantJob) Finish(c GrantCounts, outcome string, now time.Time) error {
	if !j.Exists() {
		return Errorf(ErrNotFound, "grant job %s not found", j.ID)
	}
	if j.Finished {
		return Errorf(ErrConflict, "grant job %s has already finished", j.ID)
	}
	switch outcome {
	case GrantJobCompleted, GrantJobSoldOut, GrantJobBatchClosed:
	default:
		return Invalid("outcome", "unknown outcome %q", outcome)
	}
	if c.Granted < 0 || c.Skipped < 0 || c.NotGranted < 0 || c.Failed < 0 {
		return Invalid("counts", "must not be negative: %+v", c)
	}
	if c.Total != j.Total() || c.Sum() != c.Total {
		return Invalid("counts", "%+v do not add up to the job's %d entries", c, j.Total())
	}
	if c.NotGranted > 0 && outcome != GrantJobSoldOut {
		return Invalid("counts", "not_granted entries need outcome %s, got %s", GrantJobSoldOut, outcome)
	}
	j.record(&GrantJobFinished{JobID: j.ID, BatchID: j.BatchID, GrantCounts: c, Outcome: outcome, At: now})
	return nil
}

func (j *GrantJob) record(e Event) {
	j.Apply(e)
	j.changes = append(j.changes, e)
}

// Apply folds one event into the state. It never fails.
func (j *GrantJob) Apply(e Event) {
	switch e := e.(type) {
	case *GrantJobCreated:
		j.BatchID, j.UserIDs, j.By, j.CreatedAt = e.BatchID, e.UserIDs, e.By, e.At
	case *GrantJobFinished:
		j.Finished, j.Counts, j.Outcome, j.FinishedAt = true, e.GrantCounts, e.Outcome, e.At
		if j.BatchID == "" {
			j.BatchID = e.BatchID
		}
	}
	j.version++
}
