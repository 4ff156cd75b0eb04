// Package redisreminders is the Redis adapter of the reminder indexes kept
// by the reminders projection (projections.RemindersProjector) and polled by
// the reminder workers (commands.ExpiryReminderWorker, ClaimOpeningWorker).
//
// Keys, all under <prefix>reminders:{reminders}: so that a change, the
// per-stream revision it is checked against and the checkpoint are written
// by one script in one Redis Cluster slot:
//
//	rev          HASH  stream -> last applied revision (kept for good, like the ops view's)
//	vu           HASH  coupon -> end of validity (unix ms), while it may still be reminded
//	expiry       ZSET  coupons to remind, scored by end of validity (unix ms)
//	bstart       HASH  batch -> claim start (unix ms)
//	closed       SET   batches that will never open for their subscribers
//	opening      ZSET  batches with pending subscribers, scored by claim start (unix ms)
//	pending:<id> ZSET  the batch's subscribers not reminded yet (score 0, read in byte order)
//	checkpoint   STRING the projection's position
//
// One slot holds every reminder key: the load is one write per coupon or
// batch event, like the ops view's.
package redisreminders

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
)

// Store implements projections.ReminderStore, commands.ExpiryReminderIndex
// and commands.ClaimOpeningIndex.
type Store struct {
	rdb   redis.UniversalClient
	base  string
	apply *redis.Script
	drop  *redis.Script
}

var (
	_ projections.ReminderStore    = (*Store)(nil)
	_ commands.ExpiryReminderIndex = (*Store)(nil)
	_ commands.ClaimOpeningIndex   = (*Store)(nil)
)

// New stores its keys under prefix (e.g. "couponsd:"); it fails fast on a
// nil client.
func New(rdb redis.UniversalClient, prefix string) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisreminders: nil redis client")
	}
	return &Store{rdb: rdb, base: prefix + "reminders:{reminders}:",
		apply: redis.NewScript(applyLua), drop: redis.NewScript(dropLua)}, nil
}

// Key names one of the keys listed in the package doc ("rev", "expiry", ...;
// "pending:<batch id>").
func (s *Store) Key(name string) string { return s.base + name }

func (s *Store) pendingKey(batchID string) string { return s.base + "pending:" + batchID }

// keys of applyLua and dropLua, in this order.
func (s *Store) keys(batchID string) []string {
	return []string{s.Key("rev"), s.Key("vu"), s.Key("expiry"), s.Key("bstart"), s.Key("closed"),
		s.Key("opening"), s.pendingKey(batchID), s.Key("checkpoint")}
}

// applyLua applies one change unless stale, and advances the checkpoint.
// KEYS: rev, vu, expiry, bstart, closed, opening, pending, checkpoint
// ARGV: kind, stream, revision, position, coupon, validUntilMs, batch, user, opensAtMs
const applyLua = `
local function checkpoint()
  local cp = redis.call('GET', KEYS[8])
  if not cp or tonumber(cp) < tonumber(ARGV[4]) then redis.call('SET', KEYS[8], ARGV[4]) end
end
local kind = ARGV[1]
if kind == 'checkpoint' then checkpoint() return 0 end
local cur = redis.call('HGET', KEYS[1], ARGV[2])
if cur and tonumber(cur) >= tonumber(ARGV[3]) then checkpoint() return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
local coupon, batch, user = ARGV[5], ARGV[7], ARGV[8]
if kind == 'expiry_track' then
  redis.call('HSET', KEYS[2], coupon, ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[6], coupon)
elseif kind == 'expiry_retrack' then
  local vu = redis.call('HGET', KEYS[2], coupon)
  if vu then redis.call('ZADD', KEYS[3], vu, coupon) end
elseif kind == 'expiry_untrack' then
  redis.call('ZREM', KEYS[3], coupon)
elseif kind == 'expiry_forget' then
  redis.call('ZREM', KEYS[3], coupon)
  redis.call('HDEL', KEYS[2], coupon)
elseif kind == 'opening_batch' then
  redis.call('HSET', KEYS[4], batch, ARGV[9])
  redis.call('ZADD', KEYS[6], 'XX', ARGV[9], batch)
elseif kind == 'opening_closed' then
  redis.call('SADD', KEYS[5], batch)
  redis.call('DEL', KEYS[7])
  redis.call('ZREM', KEYS[6], batch)
elseif kind == 'opening_subscribed' then
  if redis.call('SISMEMBER', KEYS[5], batch) == 0 then
    redis.call('ZADD', KEYS[7], 0, user)
    local start = redis.call('HGET', KEYS[4], batch)
    if not start then start = ARGV[9] end
    redis.call('ZADD', KEYS[6], start, batch)
  end
elseif kind == 'opening_sent' then
  redis.call('ZREM', KEYS[7], user)
  if redis.call('ZCARD', KEYS[7]) == 0 then redis.call('ZREM', KEYS[6], batch) end
else
  return redis.error_reply('redisreminders: unknown change kind ' .. kind)
end
checkpoint()
return 1`

// dropLua forgets a batch's pending subscribers for good.
// KEYS: as applyLua's. ARGV: batch
const dropLua = `
redis.call('SADD', KEYS[5], ARGV[1])
redis.call('DEL', KEYS[7])
redis.call('ZREM', KEYS[6], ARGV[1])
return 1`

func ms(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return strconv.FormatInt(t.UnixMilli(), 10)
}

func (s *Store) run(ctx context.Context, c redis.Scripter, ch projections.ReminderChange) *redis.Cmd {
	return s.apply.Run(ctx, c, s.keys(ch.BatchID), string(ch.Kind), ch.Stream, ch.Revision, ch.Position,
		ch.CouponID, ms(ch.ValidUntil), ch.BatchID, ch.UserID, ms(ch.OpensAt))
}

func check(ch projections.ReminderChange) error {
	switch ch.Kind {
	case projections.ReminderCheckpoint:
		return nil
	case projections.ExpiryTrack:
		if ch.ValidUntil.IsZero() {
			return domain.Invalid("valid_until", "is required to index coupon %s", ch.CouponID)
		}
	case projections.OpeningBatch, projections.OpeningSubscribed:
		if ch.OpensAt.IsZero() {
			return domain.Invalid("opens_at", "is required to index batch %s", ch.BatchID)
		}
	}
	if ch.Stream == "" {
		return domain.Invalid("stream", "is required for a %s change", ch.Kind)
	}
	return nil
}

// ApplyReminderChanges applies changes in order in one pipeline; each script
// call is atomic with its checkpoint, so a failure part-way leaves the
// checkpoint at the last change applied.
func (s *Store) ApplyReminderChanges(ctx context.Context, cs []projections.ReminderChange) error {
	for _, ch := range cs {
		if err := check(ch); err != nil {
			return err
		}
	}
	switch len(cs) {
	case 0:
		return nil
	case 1:
		return redisx.Unavailable(s.run(ctx, s.rdb, cs[0]).Err())
	}
	err := redisx.Pipelined(ctx, s.rdb, []*redis.Script{s.apply}, func(p redis.Pipeliner) error {
		for _, ch := range cs {
			s.run(ctx, p, ch)
		}
		return nil
	})
	return redisx.Unavailable(err)
}

// Checkpoint reads the projection's position (0 when none).
func (s *Store) Checkpoint(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, s.Key("checkpoint")).Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, redisx.Unavailable(err)
}

func limitOf(limit int) (int64, error) {
	if limit < 1 {
		return 0, domain.Invalid("limit", "must be at least 1, got %d", limit)
	}
	return int64(limit), nil
}

// DueExpiryReminders lists coupons whose validity ends at or before horizon,
// earliest first, after skipping offset of them.
func (s *Store) DueExpiryReminders(ctx context.Context, horizon time.Time, offset, limit int) ([]string, error) {
	n, err := limitOf(limit)
	if err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("redisreminders: negative offset %d", offset)
	}
	ids, err := s.rdb.ZRangeByScore(ctx, s.Key("expiry"), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(horizon.UnixMilli(), 10), Offset: int64(offset), Count: n}).Result()
	return ids, redisx.Unavailable(err)
}

// DueClaimOpenings lists batches with pending subscribers whose claim start
// is at or before now, earliest first.
func (s *Store) DueClaimOpenings(ctx context.Context, now time.Time, limit int) ([]string, error) {
	n, err := limitOf(limit)
	if err != nil {
		return nil, err
	}
	ids, err := s.rdb.ZRangeByScore(ctx, s.Key("opening"), &redis.ZRangeBy{
		Min: "-inf", Max: strconv.FormatInt(now.UnixMilli(), 10), Count: n}).Result()
	return ids, redisx.Unavailable(err)
}

// PendingClaimOpeningReminders lists the batch's subscribers not reminded
// yet, in byte order, after the user id after ("" from the first). Paging by
// value (not by rank) is stable while reminded users leave the set.
func (s *Store) PendingClaimOpeningReminders(ctx context.Context, batchID, after string, limit int) ([]string, error) {
	n, err := limitOf(limit)
	if err != nil {
		return nil, err
	}
	lo := "-"
	if after != "" {
		lo = "(" + after
	}
	ids, err := s.rdb.ZRangeByLex(ctx, s.pendingKey(batchID), &redis.ZRangeBy{Min: lo, Max: "+", Count: n}).Result()
	return ids, redisx.Unavailable(err)
}

// DropClaimOpening forgets the batch's pending subscribers and ignores its
// later subscriptions (the batch will never open for them).
func (s *Store) DropClaimOpening(ctx context.Context, batchID string) error {
	return redisx.Unavailable(s.drop.Run(ctx, s.rdb, s.keys(batchID), batchID).Err())
}

// ExpiryIndex reads the whole expiry index (coupon -> end of validity, unix
// ms), for inspection and tests.
func (s *Store) ExpiryIndex(ctx context.Context) (map[string]int64, error) {
	return s.zmap(ctx, s.Key("expiry"))
}

// OpeningIndex reads the whole claim-opening index (batch -> claim start,
// unix ms), for inspection and tests.
func (s *Store) OpeningIndex(ctx context.Context) (map[string]int64, error) {
	return s.zmap(ctx, s.Key("opening"))
}

func (s *Store) zmap(ctx context.Context, key string) (map[string]int64, error) {
	zs, err := s.rdb.ZRangeWithScores(ctx, key, 0, -1).Result()
	if err != nil {
		return nil, redisx.Unavailable(err)
	}
	out := make(map[string]int64, len(zs))
	for _, z := range zs {
		id, _ := z.Member.(string)
		out[id] = int64(z.Score)
	}
	return out, nil
}
