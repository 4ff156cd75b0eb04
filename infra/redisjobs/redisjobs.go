// Package redisjobs is the Redis adapter of the grant jobs: the set of
// unfinished jobs kept by the grant-jobs projection (with its checkpoint),
// and the job leases that let one couponsd instance at a time run a job.
//
// The set and the checkpoint share the hash tag {grantjobs}, so a change and
// its checkpoint are written in one MULTI, also on a Redis Cluster. A lease
// is one key per job: SET NX PX with a random owner token; renewal and
// release compare the token in a Lua script, so only the holder can extend
// or end it.
package redisjobs

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

// Store implements projections.GrantJobsStore, commands.GrantJobIndex and
// commands.JobLeases.
type Store struct {
	rdb         redis.UniversalClient
	activeKey   string
	cpKey       string
	leasePrefix string
}

var (
	_ projections.GrantJobsStore = (*Store)(nil)
	_ commands.GrantJobIndex     = (*Store)(nil)
	_ commands.JobLeases         = (*Store)(nil)
)

// New stores its keys under prefix (e.g. "couponsd:").
func New(rdb redis.UniversalClient, prefix string) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisjobs: nil redis client")
	}
	base := prefix + "grantjobs:"
	return &Store{rdb: rdb, activeKey: base + "{grantjobs}:active", cpKey: base + "{grantjobs}:checkpoint",
		leasePrefix: base + "lease:"}, nil
}

// ActiveKey is the set of unfinished job ids; CheckpointKey the projection's
// checkpoint; LeaseKey a job's lease.
func (s *Store) ActiveKey() string            { return s.activeKey }
func (s *Store) CheckpointKey() string        { return s.cpKey }
func (s *Store) LeaseKey(jobID string) string { return s.leasePrefix + jobID }

func unavailable(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	return fmt.Errorf("%w: redis: %w", domain.ErrUnavailable, err)
}

// MarkGrantJobActive adds the job to the set and saves the checkpoint, atomically.
func (s *Store) MarkGrantJobActive(ctx context.Context, jobID string, pos uint64) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SAdd(ctx, s.activeKey, jobID)
		p.Set(ctx, s.cpKey, pos, 0)
		return nil
	})
	return unavailable(err)
}

// MarkGrantJobFinished removes the job from the set and saves the checkpoint, atomically.
func (s *Store) MarkGrantJobFinished(ctx context.Context, jobID string, pos uint64) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SRem(ctx, s.activeKey, jobID)
		p.Set(ctx, s.cpKey, pos, 0)
		return nil
	})
	return unavailable(err)
}

// Checkpoint reads the projection's position (0 when none).
func (s *Store) Checkpoint(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, s.cpKey).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, unavailable(err)
}

// SaveCheckpoint writes the projection's position.
func (s *Store) SaveCheckpoint(ctx context.Context, pos uint64) error {
	return unavailable(s.rdb.Set(ctx, s.cpKey, pos, 0).Err())
}

// ActiveGrantJobs lists the unfinished jobs, sorted.
func (s *Store) ActiveGrantJobs(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.activeKey).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	slices.Sort(ids)
	return ids, nil
}

// renewLua: KEYS lease. ARGV owner, ttl ms. 1 when extended, 0 when not held.
var renewLua = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0`)

// releaseLua: KEYS lease. ARGV owner. 1 when deleted, 0 when not held.
var releaseLua = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

func checkLease(jobID, owner string, ttl time.Duration, needTTL bool) error {
	if jobID == "" || owner == "" {
		return domain.Invalid("lease", "job id and owner are required")
	}
	if needTTL && ttl < time.Millisecond {
		return domain.Invalid("lease", "ttl must be at least 1ms, got %v", ttl)
	}
	return nil
}

// TryLease takes the job's lease for owner (SET NX PX) when nobody holds it.
func (s *Store) TryLease(ctx context.Context, jobID, owner string, ttl time.Duration) (bool, error) {
	if err := checkLease(jobID, owner, ttl, true); err != nil {
		return false, err
	}
	ok, err := s.rdb.SetArgs(ctx, s.LeaseKey(jobID), owner, redis.SetArgs{Mode: "NX", TTL: ttl}).Result()
	if errors.Is(err, redis.Nil) {
		return false, nil // NX refused: held by someone
	}
	if err != nil {
		return false, unavailable(err)
	}
	return ok == "OK", nil
}

// RenewLease extends owner's lease to ttl from now; false when owner does not hold it.
func (s *Store) RenewLease(ctx context.Context, jobID, owner string, ttl time.Duration) (bool, error) {
	if err := checkLease(jobID, owner, ttl, true); err != nil {
		return false, err
	}
	n, err := renewLua.Run(ctx, s.rdb, []string{s.LeaseKey(jobID)}, owner, ttl.Milliseconds()).Int64()
	if err != nil {
		return false, unavailable(err)
	}
	return n == 1, nil
}

// ReleaseLease ends owner's lease; a lease held by another owner (or none) is left alone.
func (s *Store) ReleaseLease(ctx context.Context, jobID, owner string) error {
	if err := checkLease(jobID, owner, 0, false); err != nil {
		return err
	}
	return unavailable(releaseLua.Run(ctx, s.rdb, []string{s.LeaseKey(jobID)}, owner).Err())
}

// LeaseOwner returns who holds the job's lease ("" when nobody does).
func (s *Store) LeaseOwner(ctx context.Context, jobID string) (string, error) {
	v, err := s.rdb.Get(ctx, s.LeaseKey(jobID)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	return v, unavailable(err)
}
