package domain

import (
	"fmt"
	"slices"
	"time"
)

// Grant job event names. A job's own stream (grantjob-<id>) holds
// grantjob.created.v2 and grantjob.finished.v1; its user list lives in shard
// streams (grantshard-<id>-<n>), each listed, started and done once.
const (
	// EvGrantJobCreatedV1 is the first form of a job, with its user list
	// inline (at most 100,000 ids). It is decoded, never written any more.
	EvGrantJobCreatedV1 = "grantjob.created.v1"
	EvGrantJobCreated   = "grantjob.created.v2"
	EvGrantJobFinished  = "grantjob.finished.v1"
	EvGrantShardListed  = "grantshard.listed.v1"
	EvGrantShardStarted = "grantshard.started.v1"
	EvGrantShardDone    = "grantshard.done.v1"
)

// grantJobEvents lists the grant job events.
func grantJobEvents() []Event {
	return []Event{&GrantJobCreatedV1{}, &GrantJobCreated{}, &GrantJobFinished{},
		&GrantShardListed{}, &GrantShardStarted{}, &GrantShardDone{}}
}

// Bounds of a grant job.
const (
	// MaxGrantJobEntries bounds one job's list (duplicates included).
	MaxGrantJobEntries = 50_000_000
	// DefaultGrantShardSize is the number of distinct users per shard.
	DefaultGrantShardSize = 1000
	// MaxGrantShardSize bounds a shard (its listed event stays well under
	// the 1 MiB event and message size limits of EventStoreDB and Kafka).
	MaxGrantShardSize = 10_000
)

// Grant job outcomes, recorded in grantjob.finished.v1 and grantshard.done.v1.
const (
	// GrantJobCompleted: every listed entry was processed.
	GrantJobCompleted = "completed"
	// GrantJobSoldOut: the batch ran out of stock; some entries were not granted.
	GrantJobSoldOut = "sold_out"
	// GrantJobBatchClosed: the batch was stopped or ended while the job ran
	// (or its coupons' fixed validity is over); the entries processed from
	// then on are counted as failed.
	GrantJobBatchClosed = "batch_closed"
)

// GrantCounts is how a grant job's (or shard's) listed entries ended. Every
// entry is counted once: Total = Granted + Skipped + NotGranted + Failed.
type GrantCounts struct {
	Total      int `json:"total"`
	Granted    int `json:"granted"`     // a coupon was granted (by this job)
	Skipped    int `json:"skipped"`     // listed twice, or the user already holds the batch's per-user limit
	NotGranted int `json:"not_granted"` // the stock ran out before this entry
	Failed     int `json:"failed"`      // an error, or the batch closed before this entry
}

// Sum is Granted + Skipped + NotGranted + Failed.
func (c GrantCounts) Sum() int { return c.Granted + c.Skipped + c.NotGranted + c.Failed }

// Add returns the field-wise sum of c and d.
func (c GrantCounts) Add(d GrantCounts) GrantCounts {
	return GrantCounts{Total: c.Total + d.Total, Granted: c.Granted + d.Granted, Skipped: c.Skipped + d.Skipped,
		NotGranted: c.NotGranted + d.NotGranted, Failed: c.Failed + d.Failed}
}

func (c GrantCounts) check(total int) error {
	if c.Granted < 0 || c.Skipped < 0 || c.NotGranted < 0 || c.Failed < 0 {
		return Invalid("counts", "must not be negative: %+v", c)
	}
	if c.Total != total || c.Sum() != c.Total {
		return Invalid("counts", "%+v do not add up to %d entries", c, total)
	}
	return nil
}

func checkOutcome(c GrantCounts, outcome string) error {
	switch outcome {
	case GrantJobCompleted, GrantJobSoldOut, GrantJobBatchClosed:
	default:
		return Invalid("outcome", "unknown outcome %q", outcome)
	}
	if c.NotGranted > 0 && outcome != GrantJobSoldOut {
		return Invalid("counts", "not_granted entries need outcome %s, got %s", GrantJobSoldOut, outcome)
	}
	return nil
}

// CombineGrantOutcomes is the outcome of a job from its shards' outcomes:
// sold out when any shard ran out of stock, else batch closed when any shard
// met a closed batch, else completed.
func CombineGrantOutcomes(outcomes ...string) string {
	out := GrantJobCompleted
	for _, o := range outcomes {
		switch o {
		case GrantJobSoldOut:
			return GrantJobSoldOut
		case GrantJobBatchClosed:
			out = GrantJobBatchClosed
		}
	}
	return out
}

// GrantJobCreatedV1 is the first, inline-list form of grantjob.created
// (kept so stored jobs stay readable; never written).
type GrantJobCreatedV1 struct {
	JobID   string    `json:"job_id"`
	BatchID string    `json:"batch_id"`
	UserIDs []string  `json:"user_ids"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// GrantList describes an uploaded user list once it is split into shards:
// Total entries (duplicates included), of which Duplicates repeat an earlier
// entry; the distinct users are spread over Shards shards of at most
// ShardSize users. SHA256 (hex) fingerprints the list as uploaded, so a
// retried upload can be told from another one.
type GrantList struct {
	Total      int    `json:"total"`
	Duplicates int    `json:"duplicates"`
	Shards     int    `json:"shards"`
	ShardSize  int    `json:"shard_size"`
	SHA256     string `json:"list_sha256"`
}

// Distinct is the number of distinct users of the list.
func (l GrantList) Distinct() int { return l.Total - l.Duplicates }

// GrantJobCreated: the back office asked for one coupon of a batch for each
// user of a list (targeted distribution). The list itself is in the job's
// shard streams, listed before this event is written.
type GrantJobCreated struct {
	JobID   string `json:"job_id"`
	BatchID string `json:"batch_id"`
	GrantList
	By string    `json:"by"`
	At time.Time `json:"at"`
}

// GrantJobFinished: every shard is done; the counts are final. Duplicates of
// the list are counted as skipped.
type GrantJobFinished struct {
	JobID   string `json:"job_id"`
	BatchID string `json:"batch_id"`
	GrantCounts
	Outcome string    `json:"outcome"`
	At      time.Time `json:"at"`
}

// GrantShardListed: one shard of a job's list (distinct users, sorted).
type GrantShardListed struct {
	JobID   string    `json:"job_id"`
	BatchID string    `json:"batch_id"`
	Shard   int       `json:"shard"`
	UserIDs []string  `json:"user_ids"`
	At      time.Time `json:"at"`
}

// GrantShardStarted: a consumer began granting the shard. A shard seen
// started is resumed carefully (each user's grant is looked up first).
type GrantShardStarted struct {
	JobID string    `json:"job_id"`
	Shard int       `json:"shard"`
	At    time.Time `json:"at"`
}

// GrantShardDone: every user of the shard is counted.
type GrantShardDone struct {
	JobID   string `json:"job_id"`
	BatchID string `json:"batch_id"`
	Shard   int    `json:"shard"`
	GrantCounts
	Outcome string    `json:"outcome"`
	At      time.Time `json:"at"`
}

// EventName implementations.
func (*GrantJobCreatedV1) EventName() string { return EvGrantJobCreatedV1 }
func (*GrantJobCreated) EventName() string   { return EvGrantJobCreated }
func (*GrantJobFinished) EventName() string  { return EvGrantJobFinished }
func (*GrantShardListed) EventName() string  { return EvGrantShardListed }
func (*GrantShardStarted) EventName() string { return EvGrantShardStarted }
func (*GrantShardDone) EventName() string    { return EvGrantShardDone }

// GrantJob is the aggregate of one targeted distribution (stream grantjob-<id>).
type GrantJob struct {
	ID      string
	BatchID string
	GrantList
	By         string
	CreatedAt  time.Time
	Legacy     bool // created by grantjob.created.v1 (inline list, no shards)
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

// CheckGrantList validates a list's description.
func CheckGrantList(l GrantList) error {
	switch {
	case l.Total < 1 || l.Total > MaxGrantJobEntries:
		return Invalid("user_ids", "must hold 1..%d user ids, got %d", MaxGrantJobEntries, l.Total)
	case l.Duplicates < 0 || l.Duplicates >= l.Total:
		return Invalid("duplicates", "must be in 0..%d, got %d", l.Total-1, l.Duplicates)
	case l.ShardSize < 1 || l.ShardSize > MaxGrantShardSize:
		return Invalid("shard_size", "must be in 1..%d, got %d", MaxGrantShardSize, l.ShardSize)
	case l.Shards < (l.Distinct()+l.ShardSize-1)/l.ShardSize || l.Shards > l.Distinct():
		return Invalid("shards", "%d shards cannot hold %d users of at most %d each", l.Shards, l.Distinct(), l.ShardSize)
	case len(l.SHA256) != 64:
		return Invalid("list_sha256", "must be 64 hex digits")
	}
	return nil
}

// CreateGrantJob validates a grant request and records grantjob.created.v2.
// The batch must exist and still take grants: not stopped, not ended, and
// its coupons not born expired.
func CreateGrantJob(id string, b *Batch, list GrantList, by string, now time.Time) (*GrantJob, error) {
	if err := ValidateID("job_id", id); err != nil {
		return nil, err
	}
	if err := ValidateID("batch_id", b.ID); err != nil {
		return nil, err
	}
	if err := CheckGrantList(list); err != nil {
		return nil, err
	}
	if err := CheckGrantable(b, now); err != nil {
		return nil, err
	}
	j := NewGrantJobFromHistory(id, nil)
	j.record(&GrantJobCreated{JobID: id, BatchID: b.ID, GrantList: list, By: by, At: now})
	return j, nil
}

// CheckGrantable tells whether b takes grants at now: it exists, is not
// stopped or ended, and its coupons are not born expired.
func CheckGrantable(b *Batch, now time.Time) error {
	if err := b.mutable(now, "grant"); err != nil {
		return err
	}
	return b.checkNotBornExpired(now, ErrConflict)
}

// SameRequest tells whether a repeated create asks for exactly this job
// (same batch, same list as uploaded).
func (j *GrantJob) SameRequest(batchID string, list GrantList) bool {
	return j.Exists() && j.BatchID == batchID && j.SHA256 == list.SHA256 && j.Total == list.Total
}

// Finish records grantjob.finished.v1 with the final counts: the sum of the
// shards' counts plus the list's duplicates as skipped. Every listed entry
// must be counted exactly once; a job finishes only once.
func (j *GrantJob) Finish(c GrantCounts, outcome string, now time.Time) error {
	if !j.Exists() {
		return Errorf(ErrNotFound, "grant job %s not found", j.ID)
	}
	if j.Finished {
		return Errorf(ErrConflict, "grant job %s has already finished", j.ID)
	}
	if err := checkOutcome(c, outcome); err != nil {
		return err
	}
	if err := c.check(j.Total); err != nil {
		return err
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
	case *GrantJobCreatedV1:
		j.BatchID, j.By, j.CreatedAt, j.Legacy = e.BatchID, e.By, e.At, true
		j.Total = len(e.UserIDs)
	case *GrantJobCreated:
		j.BatchID, j.GrantList, j.By, j.CreatedAt = e.BatchID, e.GrantList, e.By, e.At
	case *GrantJobFinished:
		j.Finished, j.Counts, j.Outcome, j.FinishedAt = true, e.GrantCounts, e.Outcome, e.At
		if j.BatchID == "" {
			j.BatchID = e.BatchID
		}
	}
	j.version++
}

// GrantShard is the aggregate of one shard of a job's list
// (stream grantshard-<job>-<n>): listed, then started, then done, each once.
type GrantShard struct {
	JobID   string
	Shard   int
	BatchID string
	UserIDs []string
	Started bool
	Done    bool
	Counts  GrantCounts // once Done
	Outcome string
	version int64
	changes []Event
}

// NewGrantShardFromHistory rebuilds a shard; an empty history gives a shard
// that does not exist.
func NewGrantShardFromHistory(jobID string, shard int, history []Event) *GrantShard {
	s := &GrantShard{JobID: jobID, Shard: shard, version: -1}
	for _, e := range history {
		s.Apply(e)
	}
	return s
}

// Exists tells whether the shard was listed.
func (s *GrantShard) Exists() bool { return s.version >= 0 }

// Version is the revision of the last applied event (-1: new stream).
func (s *GrantShard) Version() int64 { return s.version }

// BaseVersion is the stored revision the pending changes were made on.
func (s *GrantShard) BaseVersion() int64 { return s.version - int64(len(s.changes)) }

// Changes are the events recorded by the last command.
func (s *GrantShard) Changes() []Event { return s.changes }

// ListGrantShard records one shard of a job's list: 1..MaxGrantShardSize
// valid, distinct user ids.
func ListGrantShard(jobID, batchID string, shard int, userIDs []string, now time.Time) (*GrantShard, error) {
	if err := ValidateID("job_id", jobID); err != nil {
		return nil, err
	}
	if err := ValidateID("batch_id", batchID); err != nil {
		return nil, err
	}
	if shard < 0 {
		return nil, Invalid("shard", "must not be negative, got %d", shard)
	}
	if len(userIDs) == 0 || len(userIDs) > MaxGrantShardSize {
		return nil, Invalid("user_ids", "a shard holds 1..%d users, got %d", MaxGrantShardSize, len(userIDs))
	}
	seen := make(map[string]struct{}, len(userIDs))
	for i, u := range userIDs {
		if err := ValidateID(fmt.Sprintf("user_ids[%d]", i), u); err != nil {
			return nil, err
		}
		if _, dup := seen[u]; dup {
			return nil, Invalid(fmt.Sprintf("user_ids[%d]", i), "user %s is listed twice in one shard", u)
		}
		seen[u] = struct{}{}
	}
	s := NewGrantShardFromHistory(jobID, shard, nil)
	s.record(&GrantShardListed{JobID: jobID, BatchID: batchID, Shard: shard, UserIDs: slices.Clone(userIDs), At: now})
	return s, nil
}

// Start records that a consumer began the shard. Only a listed shard that
// was neither started nor done can start.
func (s *GrantShard) Start(now time.Time) error {
	switch {
	case !s.Exists():
		return Errorf(ErrNotFound, "grant shard %s/%d not found", s.JobID, s.Shard)
	case s.Done:
		return Errorf(ErrConflict, "grant shard %s/%d is done", s.JobID, s.Shard)
	case s.Started:
		return Errorf(ErrConflict, "grant shard %s/%d has already started", s.JobID, s.Shard)
	}
	s.record(&GrantShardStarted{JobID: s.JobID, Shard: s.Shard, At: now})
	return nil
}

// Finish records the shard's counts: every listed user counted once.
func (s *GrantShard) Finish(c GrantCounts, outcome string, now time.Time) error {
	if !s.Exists() {
		return Errorf(ErrNotFound, "grant shard %s/%d not found", s.JobID, s.Shard)
	}
	if s.Done {
		return Errorf(ErrConflict, "grant shard %s/%d is already done", s.JobID, s.Shard)
	}
	if err := checkOutcome(c, outcome); err != nil {
		return err
	}
	if err := c.check(len(s.UserIDs)); err != nil {
		return err
	}
	s.record(&GrantShardDone{JobID: s.JobID, BatchID: s.BatchID, Shard: s.Shard, GrantCounts: c, Outcome: outcome, At: now})
	return nil
}

func (s *GrantShard) record(e Event) {
	s.Apply(e)
	s.changes = append(s.changes, e)
}

// Apply folds one event into the state. It never fails.
func (s *GrantShard) Apply(e Event) {
	switch e := e.(type) {
	case *GrantShardListed:
		s.BatchID, s.UserIDs = e.BatchID, e.UserIDs
	case *GrantShardStarted:
		s.Started = true
	case *GrantShardDone:
		s.Done, s.Counts, s.Outcome = true, e.GrantCounts, e.Outcome
	}
	s.version++
}
