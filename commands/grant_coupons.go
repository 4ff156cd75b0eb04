package commands

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/google/uuid"
)

// Grant jobs (targeted distribution): CreateGrantJob stores the request as
// grantjob.created.v1; RunGrantJob grants one coupon per listed user, in list
// order, and records grantjob.finished.v1 with the counts. A job is resumable:
// each user's coupon id is derived from (job id, user id), appended with
// NoStream, so a retried, resumed or concurrent run grants nothing twice.

const grantJobStreamPrefix = "grantjob-"

// GrantJobStream names the event stream of a grant job.
func GrantJobStream(id string) string { return grantJobStreamPrefix + id }

// GrantJobIDOfStream returns the job id of a grant job stream name.
func GrantJobIDOfStream(stream string) (string, bool) {
	return strings.CutPrefix(stream, grantJobStreamPrefix)
}

// grantNamespace is the UUID v5 namespace of granted coupon ids. Never change
// it: resumed jobs find their earlier grants through it.
var grantNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:couponsd:grant-coupon"))

// maxGrantAttempts bounds the coupon ids tried for one user of one job: a new
// id is only used when the previous one was voided (its reservation was
// abandoned, e.g. by a crash, and settled by the reconciler).
const maxGrantAttempts = 3

// GrantCouponID is the coupon id (UUID v5) of job's grant to user. Attempt 0
// is the first id; attempt n > 0 is only used once attempt n-1 was voided.
func GrantCouponID(jobID, userID string, attempt int) string {
	name := jobID + "\x00" + userID // ids hold no control characters: unambiguous
	if attempt > 0 {
		name += "\x00" + strconv.Itoa(attempt)
	}
	return uuid.NewSHA1(grantNamespace, []byte(name)).String()
}

func loadGrantJob(ctx context.Context, repo *Repository, id string) (*domain.GrantJob, error) {
	evs, err := repo.load(ctx, GrantJobStream(id))
	if err != nil {
		return nil, err
	}
	return domain.NewGrantJobFromHistory(id, evs), nil
}

func saveGrantJob(ctx context.Context, repo *Repository, j *domain.GrantJob) (uint64, error) {
	res, err := repo.save(ctx, GrantJobStream(j.ID), j.BaseVersion(), j.Changes())
	return res.Position, err
}

// finishedGrantJob reads only a job's finished event (revision 1), so a
// finished job is answered without decoding its user list.
func finishedGrantJob(ctx context.Context, repo *Repository, id string) (*domain.GrantJobFinished, error) {
	recs, err := repo.store.ReadStream(ctx, GrantJobStream(id), 1)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if rec.Type != domain.EvGrantJobFinished {
			continue
		}
		e, err := repo.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return nil, err
		}
		return e.(*domain.GrantJobFinished), nil
	}
	return nil, nil
}

// ---- create ----

// CreateGrantJob asks for one coupon of BatchID for every listed user.
// JobID comes from the HTTP layer (derived from the Idempotency-Key when
// there is one). UserIDs keeps its order and duplicates.
type CreateGrantJob struct {
	JobID   string
	BatchID string
	UserIDs []string
	By      string
}

// CreateGrantJobHandler handles CreateGrantJob.
type CreateGrantJobHandler struct{ d Deps }

// NewCreateGrantJobHandler fails fast on missing dependencies.
func NewCreateGrantJobHandler(d Deps) (*CreateGrantJobHandler, error) {
	if err := d.validate("CreateGrantJobHandler"); err != nil {
		return nil, err
	}
	return &CreateGrantJobHandler{d: d}, nil
}

// Handle stores the job (it is run by a GrantWorker, or RunGrantJob). A
// repeat with the same job id, batch and list returns the stored job with
// Changed false; the same job id with another request is a conflict. The
// batch must exist (not_found) and take grants: not stopped or ended (conflict).
func (h *CreateGrantJobHandler) Handle(ctx context.Context, cmd CreateGrantJob) (Result[*domain.GrantJob], error) {
	var none Result[*domain.GrantJob]
	if err := domain.ValidateID("job_id", cmd.JobID); err != nil {
		return none, err
	}
	if err := domain.ValidateID("batch_id", cmd.BatchID); err != nil {
		return none, err
	}
	// A repeat gets the first outcome, whatever happened to the batch since.
	if out, err, done := h.existing(ctx, cmd); done {
		return out, err
	}
	b, err := h.d.Repo.LoadBatch(ctx, cmd.BatchID)
	if err != nil {
		return none, err
	}
	j, err := domain.CreateGrantJob(cmd.JobID, b, cmd.UserIDs, cmd.By, h.d.Clock.Now())
	if err != nil {
		return none, err
	}
	pos, err := saveGrantJob(ctx, h.d.Repo, j)
	if errors.Is(err, domain.ErrConcurrency) {
		if out, err, done := h.existing(ctx, cmd); done {
			return out, err
		}
	}
	if err != nil {
		return none, err
	}
	return Result[*domain.GrantJob]{Aggregate: j, Position: pos, Changed: true}, nil
}

func (h *CreateGrantJobHandler) existing(ctx context.Context, cmd CreateGrantJob) (Result[*domain.GrantJob], error, bool) {
	j, err := loadGrantJob(ctx, h.d.Repo, cmd.JobID)
	if err != nil {
		return Result[*domain.GrantJob]{}, err, true
	}
	if !j.Exists() {
		return Result[*domain.GrantJob]{}, nil, false
	}
	if !j.SameRequest(cmd.BatchID, cmd.UserIDs) {
		return Result[*domain.GrantJob]{}, domain.Errorf(domain.ErrConflict, "grant job %s already exists with another batch or user list", cmd.JobID), true
	}
	return Result[*domain.GrantJob]{Aggregate: j}, nil, true
}

// ---- progress ----

// GrantJobState is where a grant job is, as seen by this process.
type GrantJobState string

// Grant job states.
const (
	GrantJobPending  GrantJobState = "pending"  // stored, not running in this process
	GrantJobRunning  GrantJobState = "running"  // running in this process
	GrantJobFinished GrantJobState = "finished" // grantjob.finished.v1 is stored
)

// GrantJobStatus is a grant job's progress. Counts are final once State is
// finished; while running they grow; while pending only Total is known.
type GrantJobStatus struct {
	JobID   string        `json:"job_id"`
	BatchID string        `json:"batch_id"`
	State   GrantJobState `json:"state"`
	domain.GrantCounts
	Outcome    string    `json:"outcome,omitempty"`
	FinishedAt time.Time `json:"finished_at,omitzero"`
}

// GrantProgress is the in-process registry of grant job progress: the counts
// of the jobs running here, and a bounded memory of recent ones. Build one
// with NewGrantProgress and share it between the runner and the queries.
type GrantProgress struct {
	mu       sync.Mutex
	jobs     map[string]*jobProgress
	retired  []string // finished or pending entries, oldest first, for eviction
	capacity int
}

type jobProgress struct {
	batchID  string
	total    int
	state    GrantJobState
	outcome  string
	finished time.Time
	granted  atomic.Int64
	skipped  atomic.Int64
	notGrant atomic.Int64
	failed   atomic.Int64
}

// defaultProgressMemory is how many finished or pending jobs are remembered.
const defaultProgressMemory = 1024

// NewGrantProgress returns an empty registry.
func NewGrantProgress() *GrantProgress {
	return &GrantProgress{jobs: map[string]*jobProgress{}, capacity: defaultProgressMemory}
}

func (p *jobProgress) counts() domain.GrantCounts {
	return domain.GrantCounts{Total: p.total, Granted: int(p.granted.Load()), Skipped: int(p.skipped.Load()),
		NotGranted: int(p.notGrant.Load()), Failed: int(p.failed.Load())}
}

// start registers a run; it returns nil when the job is already running here.
func (g *GrantProgress) start(jobID, batchID string, total int) *jobProgress {
	g.mu.Lock()
	defer g.mu.Unlock()
	if p := g.jobs[jobID]; p != nil && p.state == GrantJobRunning {
		return nil
	}
	p := &jobProgress{batchID: batchID, total: total, state: GrantJobRunning}
	g.jobs[jobID] = p
	return p
}

// stop ends a run: finished with its final status, or back to pending.
func (g *GrantProgress) stop(jobID string, p *jobProgress, fin *domain.GrantJobFinished) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.jobs[jobID] != p {
		return
	}
	q := &jobProgress{batchID: p.batchID, total: p.total, state: GrantJobPending}
	if fin != nil {
		q.state, q.outcome, q.finished = GrantJobFinished, fin.Outcome, fin.At
		q.granted.Store(int64(fin.Granted))
		q.skipped.Store(int64(fin.Skipped))
		q.notGrant.Store(int64(fin.NotGranted))
		q.failed.Store(int64(fin.Failed))
	}
	g.retireLocked(jobID, q)
}

// remember caches a pending job's total (so a poll does not decode its list again).
func (g *GrantProgress) remember(jobID, batchID string, total int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.jobs[jobID] == nil {
		g.retireLocked(jobID, &jobProgress{batchID: batchID, total: total, state: GrantJobPending})
	}
}

func (g *GrantProgress) retireLocked(jobID string, p *jobProgress) {
	g.jobs[jobID] = p
	g.retired = append(g.retired, jobID)
	for len(g.retired) > g.capacity {
		old := g.retired[0]
		g.retired = g.retired[1:]
		if q := g.jobs[old]; q != nil && q.state != GrantJobRunning && !g.listedLocked(old) {
			delete(g.jobs, old)
		}
	}
}

// listedLocked tells whether id is still in the retired queue (re-retired later).
func (g *GrantProgress) listedLocked(id string) bool {
	for _, r := range g.retired {
		if r == id {
			return true
		}
	}
	return false
}

// Snapshot returns what this process knows of a job.
func (g *GrantProgress) Snapshot(jobID string) (GrantJobStatus, bool) {
	g.mu.Lock()
	p := g.jobs[jobID]
	g.mu.Unlock()
	if p == nil {
		return GrantJobStatus{}, false
	}
	st := GrantJobStatus{JobID: jobID, BatchID: p.batchID, State: p.state, GrantCounts: p.counts(),
		Outcome: p.outcome, FinishedAt: p.finished}
	if st.State == GrantJobPending {
		st.GrantCounts = domain.GrantCounts{Total: p.total}
	}
	return st, true
}

func finishedStatus(e *domain.GrantJobFinished) GrantJobStatus {
	return GrantJobStatus{JobID: e.JobID, BatchID: e.BatchID, State: GrantJobFinished, GrantCounts: e.GrantCounts,
		Outcome: e.Outcome, FinishedAt: e.At}
}

func finishedJobStatus(j *domain.GrantJob) GrantJobStatus {
	return GrantJobStatus{JobID: j.ID, BatchID: j.BatchID, State: GrantJobFinished, GrantCounts: j.Counts,
		Outcome: j.Outcome, FinishedAt: j.FinishedAt}
}

// ---- run ----

// RunGrantJob processes a stored grant job to its end.
type RunGrantJob struct{ JobID string }

// RunGrantJobHandler handles RunGrantJob.
type RunGrantJobHandler struct {
	d        Deps
	progress *GrantProgress
	// window bounds the coupon appends in flight (they are group-committed).
	window int
	// refreshEvery is how many entries are processed between batch reloads.
	refreshEvery int
	// settleTimeout bounds the clean-up after a failed append.
	settleTimeout time.Duration
}

// NewRunGrantJobHandler fails fast on missing dependencies.
func NewRunGrantJobHandler(d Deps, progress *GrantProgress) (*RunGrantJobHandler, error) {
	if err := d.validate("RunGrantJobHandler"); err != nil {
		return nil, err
	}
	if progress == nil {
		return nil, errors.New("commands: RunGrantJobHandler needs a progress registry")
	}
	return &RunGrantJobHandler{d: d, progress: progress, window: 64, refreshEvery: 256, settleTimeout: 5 * time.Second}, nil
}

// Handle processes every listed entry in order and records
// grantjob.finished.v1. For each entry: a user listed before is skipped; a
// user whose coupon of this job exists already is counted granted (a
// resumed run); otherwise the stock guard reserves a unit (refused: the user
// holds the per-user limit → skipped; sold out → this and every later entry
// not granted, and the run stops), coupon.granted.v1 is appended with
// NoStream and the reservation confirmed; a failed append is settled like a
// failed claim (voided, unit released) and counted failed.
//
// A cancelled ctx stops the run without finishing the job; running it again
// resumes it and ends with the same counts. A finished job is answered at
// once. Infrastructure errors also stop the run unfinished.
func (h *RunGrantJobHandler) Handle(ctx context.Context, cmd RunGrantJob) (GrantJobStatus, error) {
	if err := domain.ValidateID("job_id", cmd.JobID); err != nil {
		return GrantJobStatus{}, err
	}
	done, err := finishedGrantJob(ctx, h.d.Repo, cmd.JobID)
	if err != nil {
		return GrantJobStatus{}, err
	}
	if done != nil {
		return finishedStatus(done), nil
	}
	job, err := loadGrantJob(ctx, h.d.Repo, cmd.JobID)
	if err != nil {
		return GrantJobStatus{}, err
	}
	if !job.Exists() {
		return GrantJobStatus{}, domain.Errorf(domain.ErrNotFound, "grant job %s not found", cmd.JobID)
	}
	if job.Finished { // finished between the two reads
		return finishedJobStatus(job), nil
	}
	p := h.progress.start(job.ID, job.BatchID, job.Total())
	if p == nil {
		return GrantJobStatus{}, domain.Errorf(domain.ErrConflict, "grant job %s is already running", job.ID)
	}
	var fin *domain.GrantJobFinished
	defer func() { h.progress.stop(job.ID, p, fin) }()

	r := &grantRun{h: h, job: job, p: p, sem: make(chan struct{}, max(h.window, 1))}
	outcome, err := r.process(ctx)
	if err != nil {
		return GrantJobStatus{}, err
	}
	fin, err = h.finish(ctx, job, p.counts(), outcome)
	if err != nil {
		return GrantJobStatus{}, err
	}
	return finishedStatus(fin), nil
}

func (h *RunGrantJobHandler) finish(ctx context.Context, job *domain.GrantJob, c domain.GrantCounts, outcome string) (*domain.GrantJobFinished, error) {
	if err := job.Finish(c, outcome, h.d.Clock.Now()); err != nil {
		return nil, err
	}
	_, err := saveGrantJob(ctx, h.d.Repo, job)
	if errors.Is(err, domain.ErrConcurrency) {
		// Finished meanwhile by another run: its counts stand.
		fin, ferr := finishedGrantJob(ctx, h.d.Repo, job.ID)
		if ferr == nil && fin == nil {
			ferr = err
		}
		return fin, ferr
	}
	if err != nil {
		return nil, err
	}
	return job.Changes()[0].(*domain.GrantJobFinished), nil
}

// grantRun is one run of one job.
type grantRun struct {
	h     *RunGrantJobHandler
	job   *domain.GrantJob
	p     *jobProgress
	batch *domain.Batch
	// pending: coupon ids of this batch reserved in the guard but not
	// confirmed when the run started (a previous run stopped mid-grant).
	pending map[string]bool
	sem     chan struct{}
	wg      sync.WaitGroup
}

// process walks the list. It returns the outcome once every entry is
// counted, or an error (the job stays unfinished and resumable).
func (r *grantRun) process(ctx context.Context) (outcome string, err error) {
	defer r.wg.Wait()
	if err := r.reloadBatch(ctx); err != nil {
		return "", err
	}
	if err := r.loadPending(ctx); err != nil {
		return "", err
	}
	users := r.job.UserIDs
	seen := make(map[string]struct{}, len(users))
	for i, u := range users {
		if err := ctx.Err(); err != nil {
			return "", err
		}
		if i > 0 && i%r.h.refreshEvery == 0 {
			if err := r.reloadBatch(ctx); err != nil {
				return "", err
			}
		}
		if _, dup := seen[u]; dup {
			r.p.skipped.Add(1)
			continue
		}
		seen[u] = struct{}{}
		stop, err := r.grantOne(ctx, u)
		if err != nil {
			return "", err
		}
		if stop != "" {
			rest := int64(len(users) - i)
			if stop == domain.GrantJobSoldOut {
				r.p.notGrant.Add(rest)
			} else {
				r.p.failed.Add(rest)
			}
			outcome = stop
			break
		}
	}
	r.wg.Wait()
	if err := ctx.Err(); err != nil {
		return "", err // appends cut short: their reservations are settled on resume
	}
	if outcome == "" {
		outcome = domain.GrantJobCompleted
	}
	return outcome, nil
}

func (r *grantRun) reloadBatch(ctx context.Context) error {
	b, err := r.h.d.Repo.LoadBatch(ctx, r.job.BatchID)
	if err != nil {
		return err
	}
	if !b.Exists() {
		return domain.Errorf(domain.ErrNotFound, "batch %s of grant job %s not found", r.job.BatchID, r.job.ID)
	}
	r.batch = b
	return nil
}

// loadPending lists the batch's unconfirmed reservations: those of this job
// are grants a previous run reserved and may or may not have appended.
func (r *grantRun) loadPending(ctx context.Context) error {
	prs, err := r.h.d.Guard.Pending(ctx, r.h.d.Clock.Now().Add(24*time.Hour), 0)
	if err != nil {
		return err
	}
	r.pending = map[string]bool{}
	for _, pr := range prs {
		if pr.BatchID == r.job.BatchID {
			r.pending[pr.CouponID] = true
		}
	}
	return nil
}

// grantOne handles the first listed entry of user u. It returns a stop
// outcome (sold out, batch closed) when this and every later entry cannot be
// granted; an error stops the run unfinished.
func (r *grantRun) grantOne(ctx context.Context, u string) (stop string, err error) {
	d, batchID := r.h.d, r.job.BatchID
	for attempt := range maxGrantAttempts {
		id := GrantCouponID(r.job.ID, u, attempt)
		c, err := d.Repo.LoadCoupon(ctx, id)
		if err != nil {
			return "", err
		}
		if c.Exists() {
			// Granted by an earlier run of this job.
			if r.pending[id] {
				_ = d.Guard.Confirm(ctx, batchID, id)
			}
			r.p.granted.Add(1)
			return "", nil
		}
		if c.Version() >= 0 {
			continue // voided: that attempt never completed; the next id is free
		}
		now := d.Clock.Now()
		grant, gerr := domain.GrantCoupon(id, u, r.job.ID, r.batch, now)
		if r.pending[id] {
			// Reserved by an earlier run that stopped before or during the
			// append: finish it (NoStream: at most one append lands).
			if gerr != nil {
				r.settle(id, u)
				return domain.GrantJobBatchClosed, nil
			}
			r.appendGrant(ctx, grant, u)
			return "", nil
		}
		if gerr != nil {
			return domain.GrantJobBatchClosed, nil
		}
		err = r.reserve(ctx, u, id, now)
		switch {
		case err == nil, errors.Is(err, domain.ErrConflict):
			// ErrConflict: this very coupon id is reserved and unconfirmed,
			// i.e. by an earlier run of this job: finish that reservation.
			r.appendGrant(ctx, grant, u)
			return "", nil
		case errors.Is(err, domain.ErrAlreadyClaimed):
			r.p.skipped.Add(1)
			return "", nil
		case errors.Is(err, domain.ErrSoldOut):
			return domain.GrantJobSoldOut, nil
		case errors.Is(err, domain.ErrNotClaimable):
			return domain.GrantJobBatchClosed, nil // stopped
		default:
			return "", err
		}
	}
	r.p.failed.Add(1) // every attempt was voided
	return "", nil
}

// reserve takes a unit for a grant; a guard that does not know the batch
// (its sync failed) is synced from the event store and asked again.
func (r *grantRun) reserve(ctx context.Context, u, couponID string, now time.Time) error {
	d := r.h.d
	err := d.Guard.ReserveGrant(ctx, r.job.BatchID, u, couponID, now)
	if !errors.Is(err, domain.ErrNotFound) {
		return err
	}
	if err := r.reloadBatch(ctx); err != nil {
		return err
	}
	if err := d.Guard.SyncBatch(ctx, GuardBatchOf(r.batch)); err != nil {
		return err
	}
	return d.Guard.ReserveGrant(ctx, r.job.BatchID, u, couponID, now)
}

// appendGrant appends a reserved grant in the background (at most window at
// once) and counts it.
func (r *grantRun) appendGrant(ctx context.Context, c *domain.Coupon, u string) {
	r.sem <- struct{}{}
	r.wg.Add(1)
	go func() {
		defer func() { <-r.sem; r.wg.Done() }()
		d := r.h.d
		_, err := d.Repo.SaveCoupon(ctx, c)
		switch {
		case err == nil:
			// Best effort: an unconfirmed grant is confirmed by the reconciler
			// or by a resumed run.
			_ = d.Guard.Confirm(ctx, r.job.BatchID, c.ID)
			r.p.granted.Add(1)
		case ctx.Err() != nil:
			// Stopping: the append may still land. The reservation stays
			// pending; a resumed run (or the reconciler) settles it, and the
			// run ends unfinished (process returns ctx.Err()).
		case r.settle(c.ID, u):
			r.p.granted.Add(1) // the void found the grant stored
		default:
			r.p.failed.Add(1)
		}
	}()
}

// settle makes a failed grant final like a failed claim: void (NoStream) and
// release, or confirm when the grant did land. It reports whether it landed.
func (r *grantRun) settle(couponID, userID string) (landed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), r.h.settleTimeout)
	defer cancel()
	landed, err := voidReservation(ctx, r.h.d, r.job.BatchID, couponID, userID, "grant_failed")
	return err == nil && landed
}

// ---- query and bundle ----

// GrantJobs bundles the grant job handlers around one progress registry.
type GrantJobs struct {
	Create   *CreateGrantJobHandler
	Run      *RunGrantJobHandler
	Progress *GrantProgress
	repo     *Repository
}

// NewGrantJobs builds the grant job handlers with a fresh progress registry.
func NewGrantJobs(d Deps) (*GrantJobs, error) {
	return NewGrantJobsWithProgress(d, NewGrantProgress())
}

// NewGrantJobsWithProgress builds the grant job handlers around progress.
func NewGrantJobsWithProgress(d Deps, progress *GrantProgress) (*GrantJobs, error) {
	create, err := NewCreateGrantJobHandler(d)
	if err != nil {
		return nil, err
	}
	run, err := NewRunGrantJobHandler(d, progress)
	if err != nil {
		return nil, err
	}
	return &GrantJobs{Create: create, Run: run, Progress: progress, repo: d.Repo}, nil
}

// GetGrantJob reports a job's progress: finished (final counts, from the
// finished event), running here (live counts), or pending (stored, not
// running in this process: only the total). Unknown: not_found.
func (g *GrantJobs) GetGrantJob(ctx context.Context, id string) (GrantJobStatus, error) {
	if err := domain.ValidateID("job_id", id); err != nil {
		return GrantJobStatus{}, err
	}
	fin, err := finishedGrantJob(ctx, g.repo, id)
	if err != nil {
		return GrantJobStatus{}, err
	}
	if fin != nil {
		return finishedStatus(fin), nil
	}
	if st, ok := g.Progress.Snapshot(id); ok {
		return st, nil
	}
	job, err := loadGrantJob(ctx, g.repo, id)
	if err != nil {
		return GrantJobStatus{}, err
	}
	if !job.Exists() {
		return GrantJobStatus{}, domain.Errorf(domain.ErrNotFound, "grant job %s not found", id)
	}
	if job.Finished { // finished between the two reads
		return finishedJobStatus(job), nil
	}
	g.Progress.remember(id, job.BatchID, job.Total())
	return GrantJobStatus{JobID: id, BatchID: job.BatchID, State: GrantJobPending, GrantCounts: domain.GrantCounts{Total: job.Total()}}, nil
}
