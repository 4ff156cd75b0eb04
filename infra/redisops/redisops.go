// Package redisops is the Redis adapter of the operations view: per-batch
// counters and the deadline indexes (order holds, validity ends) the workers
// poll. Every key of one batch carries the hash tag {b:<id>}, so each script
// runs in one Redis Cluster slot.
package redisops

import (
	"context"
	"errors"
	"strconv"
	"time"

	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
	"github.com/redis/go-redis/v9"
)

// Store implements projections.OpsStore, readapi.CountsReader and commands.DueIndex.
type Store struct {
	*KeyCheckpoint
	rdb    redis.UniversalClient
	prefix string
	apply  *redis.Script
}

var (
	_ projections.OpsStore = (*Store)(nil)
	_ readapi.CountsReader = (*Store)(nil)
)

// New fails fast on a nil client.
func New(rdb redis.UniversalClient, prefix string) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisops: nil redis client")
	}
	return &Store{KeyCheckpoint: &KeyCheckpoint{rdb: rdb, key: prefix + "ops:checkpoint"}, rdb: rdb, prefix: prefix + "ops:", apply: redis.NewScript(applyLua)}, nil
}

// KEYS: cver, cexp, counts, holds, expiries
// ARGV: coupon, rev, dClaimed, dRedeemed, dExpired, dReturned, holdMs|"",
// clearHold, setExpiry, validUntilMs|"", clearExpiry
const applyLua = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
if ARGV[10] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[10]) end
local names = {'claimed', 'redeemed', 'expired', 'returned'}
for i = 1, 4 do
  local d = tonumber(ARGV[2 + i])
  if d ~= 0 then redis.call('HINCRBY', KEYS[3], names[i], d) end
end
if ARGV[8] == '1' then redis.call('ZREM', KEYS[4], ARGV[1]) end
if ARGV[7] ~= '' then redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1]) end
if ARGV[11] == '1' then redis.call('ZREM', KEYS[5], ARGV[1]) end
if ARGV[9] == '1' then
  local vu = ARGV[10]
  if vu == '' then vu = redis.call('HGET', KEYS[2], ARGV[1]) end
  if vu then redis.call('ZADD', KEYS[5], vu, ARGV[1]) end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1`

// BatchKeys lists the keys of one batch, all in the slot of {b:<id>}.
func (s *Store) BatchKeys(batchID string) []string {
	t := s.prefix + "{b:" + batchID + "}:"
	return []string{t + "cver", t + "cexp", t + "counts", t + "holds", t + "expiries"}
}

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func b01(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

func unavailable(err error) error { return redisx.Unavailable(err) }

// ApplyAll applies changes in order in one pipeline.
func (s *Store) ApplyAll(ctx context.Context, cs []projections.OpsChange) error {
	if len(cs) == 0 {
		return nil
	}
	err := redisx.Pipelined(ctx, s.rdb, []*redis.Script{s.apply}, func(p redis.Pipeliner) error {
		for _, c := range cs {
			if c.Claimed != 0 {
				p.SAdd(ctx, s.prefix+"batches", c.BatchID)
			}
			s.run(ctx, p, c)
		}
		return nil
	})
	return unavailable(err)
}

func (s *Store) run(ctx context.Context, c redis.Scripter, ch projections.OpsChange) *redis.Cmd {
	return s.apply.Run(ctx, c, s.BatchKeys(ch.BatchID), ch.CouponID, ch.Revision,
		ch.Claimed, ch.Redeemed, ch.Expired, ch.Returned, ms(ch.HoldUntil), b01(ch.ClearHold),
		b01(ch.SetExpiry), ms(ch.ValidUntil), b01(ch.ClearExpiry))
}

// Apply applies one change unless the coupon already has it.
func (s *Store) Apply(ctx context.Context, c projections.OpsChange) error {
	if c.Claimed != 0 {
		if err := s.rdb.SAdd(ctx, s.prefix+"batches", c.BatchID).Err(); err != nil {
			return unavailable(err)
		}
	}
	return unavailable(s.run(ctx, s.rdb, c).Err())
}

// BatchCounts reads a batch's counters.
func (s *Store) BatchCounts(ctx context.Context, batchID string) (readapi.BatchCounts, error) {
	m, err := s.rdb.HGetAll(ctx, s.BatchKeys(batchID)[2]).Result()
	if err != nil {
		return readapi.BatchCounts{}, unavailable(err)
	}
	n := func(k string) int64 { v, _ := strconv.ParseInt(m[k], 10, 64); return v }
	return readapi.BatchCounts{Claimed: n("claimed"), Redeemed: n("redeemed"), Expired: n("expired")}, nil
}

// DueHolds lists coupons whose order hold ends at or before now.
func (s *Store) DueHolds(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return s.due(ctx, 3, now, limit)
}

// DueExpiries lists usable coupons whose validity ends at or before now.
func (s *Store) DueExpiries(ctx context.Context, now time.Time, limit int) ([]string, error) {
	return s.due(ctx, 4, now, limit)
}

func (s *Store) due(ctx context.Context, key int, now time.Time, limit int) ([]string, error) {
	var out []string
	iter := s.rdb.SScan(ctx, s.prefix+"batches", 0, "", 500).Iterator()
	for iter.Next(ctx) && len(out) < limit {
		ids, err := s.rdb.ZRangeByScore(ctx, s.BatchKeys(iter.Val())[key], &redis.ZRangeBy{
			Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: int64(limit - len(out))}).Result()
		if err != nil {
			return nil, unavailable(err)
		}
		out = append(out, ids...)
	}
	return out, unavailable(iter.Err())
}

// KeyCheckpoint is a projector checkpoint kept in one Redis key.
type KeyCheckpoint struct {
	rdb redis.UniversalClient
	key string
}

// NewCheckpoint stores a checkpoint under key.
func NewCheckpoint(rdb redis.UniversalClient, key string) (*KeyCheckpoint, error) {
	if rdb == nil || key == "" {
		return nil, errors.New("redisops: NewCheckpoint needs a client and a key")
	}
	return &KeyCheckpoint{rdb: rdb, key: key}, nil
}

// Checkpoint reads the position (0 when none).
func (c *KeyCheckpoint) Checkpoint(ctx context.Context) (uint64, error) {
	v, err := c.rdb.Get(ctx, c.key).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, unavailable(err)
}

// SaveCheckpoint writes the position.
func (c *KeyCheckpoint) SaveCheckpoint(ctx context.Context, pos uint64) error {
	return unavailable(c.rdb.Set(ctx, c.key, pos, 0).Err())
}

// ---- inspection (couponsd verify) ----

var _ readapi.OpsInspector = (*Store)(nil)

// inspectPage is how many deadline entries one ZRANGE reads.
const inspectPage = 5000

// BatchIDs lists the batches registered in the operations view (those with
// claimed or granted coupons, which the deadline workers poll).
func (s *Store) BatchIDs(ctx context.Context) ([]string, error) {
	ids, err := s.rdb.SMembers(ctx, s.prefix+"batches").Result()
	return ids, unavailable(err)
}

// InspectBatches reads batches' counters and deadline indexes as they are:
// one pipeline for the counters and index sizes, one for the index pages.
func (s *Store) InspectBatches(ctx context.Context, batchIDs []string) ([]readapi.OpsSnapshot, error) {
	counts := make([]*redis.MapStringStringCmd, len(batchIDs))
	sizes := make([][2]*redis.IntCmd, len(batchIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range batchIDs {
			k := s.BatchKeys(id)
			counts[i] = p.HGetAll(ctx, k[2])
			sizes[i] = [2]*redis.IntCmd{p.ZCard(ctx, k[3]), p.ZCard(ctx, k[4])}
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	pages := make([][2][]*redis.ZSliceCmd, len(batchIDs))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range batchIDs {
			k := s.BatchKeys(id)
			for j := range 2 {
				for start := int64(0); start < sizes[i][j].Val(); start += inspectPage {
					pages[i][j] = append(pages[i][j], p.ZRangeWithScores(ctx, k[3+j], start, start+inspectPage-1))
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]readapi.OpsSnapshot, len(batchIDs))
	for i, id := range batchIDs {
		snap := readapi.OpsSnapshot{BatchID: id, Counts: counts[i].Val(), Holds: map[string]int64{}, Expiries: map[string]int64{}}
		for j, dst := range []map[string]int64{snap.Holds, snap.Expiries} {
			for _, page := range pages[i][j] {
				for _, z := range page.Val() {
					id, _ := z.Member.(string)
					dst[id] = int64(z.Score)
				}
			}
		}
		out[i] = snap
	}
	return out, nil
}
