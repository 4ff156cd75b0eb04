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
	"strconv"
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
	_ commands.GrantJobTracker   = (*Store)(nil)
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
		s.forgetProgress(p, ctx, jobID)
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

// doneKey is the set of a job's done shards; countsKey their summed counts.
func (s *Store) doneKey(jobID string) string {
	return s.activeKey[:len(s.activeKey)-len("active")] + "done:" + jobID
}
func (s *Store) countsKey(jobID string) string {
	return s.activeKey[:len(s.activeKey)-len("active")] + "counts:" + jobID
}

// shardDoneLua: KEYS done set, counts hash, checkpoint. ARGV shard, pos,
// granted, skipped, not_granted, failed. Adds the counts only the first time
// the shard is seen done, so a replayed event changes nothing.
var shardDoneLua = redis.NewScript(`
if redis.call('SADD', KEYS[1], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[2], 'granted', ARGV[3])
  redis.call('HINCRBY', KEYS[2], 'skipped', ARGV[4])
  redis.call('HINCRBY', KEYS[2], 'not_granted', ARGV[5])
  redis.call('HINCRBY', KEYS[2], 'failed', ARGV[6])
end
redis.call('SET', KEYS[3], ARGV[2])
return 1`)

// MarkGrantShardDone adds a done shard's counts to its job's progress
// (once per shard) and saves the checkpoint, atomically.
func (s *Store) MarkGrantShardDone(ctx context.Context, jobID string, shard int, c domain.GrantCounts, pos uint64) error {
	err := shardDoneLua.Run(ctx, s.rdb, []string{s.doneKey(jobID), s.countsKey(jobID), s.cpKey},
		shard, pos, c.Granted, c.Skipped, c.NotGranted, c.Failed).Err()
	return unavailable(err)
}

// DoneShards lists the job's shards seen done.
func (s *Store) DoneShards(ctx context.Context, jobID string) ([]int, error) {
	vs, err := s.rdb.SMembers(ctx, s.doneKey(jobID)).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]int, 0, len(vs))
	for _, v := range vs {
		n, err := strconv.Atoi(v)
		if err != nil {
			return nil, fmt.Errorf("redisjobs: bad shard number %q", v)
		}
		out = append(out, n)
	}
	slices.Sort(out)
	return out, nil
}

// GrantJobProgress is the number of shards seen done and their summed counts.
func (s *Store) GrantJobProgress(ctx context.Context, jobID string) (int, domain.GrantCounts, error) {
	var card *redis.IntCmd
	var counts *redis.MapStringStringCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		card = p.SCard(ctx, s.doneKey(jobID))
		counts = p.HGetAll(ctx, s.countsKey(jobID))
		return nil
	})
	if err != nil {
		return 0, domain.GrantCounts{}, unavailable(err)
	}
	m := counts.Val()
	n := func(k string) int { v, _ := strconv.Atoi(m[k]); return v }
	c := domain.GrantCounts{Granted: n("granted"), Skipped: n("skipped"), NotGranted: n("not_granted"), Failed: n("failed")}
	c.Total = c.Sum()
	return int(card.Val()), c, nil
}

// forgetProgress drops a finished job's progress (its finished event has the final counts).
func (s *Store) forgetProgress(p redis.Pipeliner, ctx context.Context, jobID string) {
	p.Del(ctx, s.doneKey(jobID), s.countsKey(jobID))
}
