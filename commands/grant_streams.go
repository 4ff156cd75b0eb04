package commands

import (
	"context"
	"strconv"
	"strings"

	"github.com/couponsd/couponsd/domain"
	"github.com/google/uuid"
)

// Grant jobs (targeted distribution) in short: CreateGrantJob streams an
// uploaded list through temporary files, splits the distinct users into
// shards (grantshard.listed.v1, one stream per shard) and records
// grantjob.created.v2; RunGrantJob (the job's coordinator, one instance at a
// time under a lease) sends the shards as commands over the grant shard bus;
// GrantShardHandler (any instance) grants a shard's users and records
// grantshard.done.v1; once every shard is done the coordinator records
// grantjob.finished.v1 with the exact sum. Each user's coupon id is derived
// from (job id, user id), appended with NoStream, so a retried, redelivered
// or concurrent shard grants nothing twice.

const (
	grantJobStreamPrefix   = "grantjob-"
	grantShardStreamPrefix = "grantshard-"
)

// GrantJobStream names the event stream of a grant job.
func GrantJobStream(id string) string { return grantJobStreamPrefix + id }

// GrantJobIDOfStream returns the job id of a grant job stream name.
func GrantJobIDOfStream(stream string) (string, bool) {
	return strings.CutPrefix(stream, grantJobStreamPrefix)
}

// GrantShardStream names the event stream of shard n of a job.
func GrantShardStream(jobID string, n int) string {
	return grantShardStreamPrefix + jobID + "-" + strconv.Itoa(n)
}

// GrantShardOfStream returns the job id and shard number of a shard stream name.
func GrantShardOfStream(stream string) (jobID string, shard int, ok bool) {
	rest, ok := strings.CutPrefix(stream, grantShardStreamPrefix)
	if !ok {
		return "", 0, false
	}
	i := strings.LastIndexByte(rest, '-')
	if i <= 0 {
		return "", 0, false
	}
	n, err := strconv.Atoi(rest[i+1:])
	if err != nil || n < 0 {
		return "", 0, false
	}
	return rest[:i], n, true
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

func loadGrantShard(ctx context.Context, repo *Repository, jobID string, n int) (*domain.GrantShard, error) {
	evs, err := repo.load(ctx, GrantShardStream(jobID, n))
	if err != nil {
		return nil, err
	}
	return domain.NewGrantShardFromHistory(jobID, n, evs), nil
}

func saveGrantShard(ctx context.Context, repo *Repository, s *domain.GrantShard) error {
	_, err := repo.save(ctx, GrantShardStream(s.JobID, s.Shard), s.BaseVersion(), s.Changes())
	return err
}

// shardDone reads only a shard's events after its list (revision 1 on), so
// a finished shard is found without decoding its users. nil: not done.
func shardDone(ctx context.Context, repo *Repository, jobID string, n int) (*domain.GrantShardDone, error) {
	recs, err := repo.store.ReadStream(ctx, GrantShardStream(jobID, n), 1)
	if err != nil {
		return nil, err
	}
	for _, rec := range recs {
		if rec.Type != domain.EvGrantShardDone {
			continue
		}
		e, err := repo.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return nil, err
		}
		return e.(*domain.GrantShardDone), nil
	}
	return nil, nil
}
