package redisguard

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

// reserveGrantsSrc: KEYS meta, stock, users, pending, pinfo. ARGV now_ms,
// then user and coupon id pairs. Reserves one unit per pair, in order, and
// returns one status per pair: "coupon_taken" (the coupon id is reserved
// already: an earlier or concurrent run of the same shard, checked first so
// that run's own unit is not mistaken for the user's limit),
// "already_claimed" (the user holds the per-user limit), "sold_out", "ok";
// or one
// {"not_found"} / {"stopped"} for the whole call.
const reserveGrantsSrc = `
local m = redis.call('HMGET', KEYS[1], 'stopped', 'limit')
if not m[2] then return {'not_found'} end
if m[1] == '1' then return {'stopped'} end
local limit = tonumber(m[2])
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local out = {}
for i = 2, #ARGV, 2 do
  local user, coupon = ARGV[i], ARGV[i + 1]
  local held = tonumber(redis.call('HGET', KEYS[3], user) or '0')
  if redis.call('HEXISTS', KEYS[5], coupon) == 1 then
    out[#out + 1] = 'coupon_taken'
  elseif held >= limit then
    out[#out + 1] = 'already_claimed'
  elseif stock <= 0 then
    out[#out + 1] = 'sold_out'
  else
    stock = stock - 1
    redis.call('DECR', KEYS[2])
    redis.call('HINCRBY', KEYS[3], user, 1)
    redis.call('ZADD', KEYS[4], ARGV[1], coupon)
    redis.call('HSET', KEYS[5], coupon, user .. '\0')
    out[#out + 1] = 'ok'
  end
end
return out
`

// confirmManySrc: KEYS pending, pinfo. ARGV coupon ids. Returns how many were pending.
const confirmManySrc = `
local n = 0
for i = 1, #ARGV do
  n = n + redis.call('ZREM', KEYS[1], ARGV[i])
  redis.call('HDEL', KEYS[2], ARGV[i])
end
return n
`

var (
	reserveGrantsScript = &script{"reserve-grants", redis.NewScript(reserveGrantsSrc), func(k BatchKeys) []string {
		return []string{k.Meta, k.Stock, k.Users, k.Pending, k.PInfo}
	}}
	confirmManyScript = &script{"confirm-many", redis.NewScript(confirmManySrc), func(k BatchKeys) []string {
		return []string{k.Pending, k.PInfo}
	}}
)

// ReserveGrants reserves one unit per (users[i], couponIDs[i]) in one atomic
// step, in order: per pair, the coupon id, then the per-user limit, then
// the stock. A stopped or unknown batch refuses the whole call
// (ErrNotClaimable, ErrNotFound).
func (g *Guard) ReserveGrants(ctx context.Context, batchID string, users, couponIDs []string, now int64) ([]commands.GrantSlot, error) {
	if len(users) != len(couponIDs) {
		return nil, fmt.Errorf("redisguard: ReserveGrants: %d users for %d coupon ids", len(users), len(couponIDs))
	}
	if len(users) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 1+2*len(users))
	args = append(args, now)
	for i, u := range users {
		if err := checkIDs(batchID, u, couponIDs[i]); err != nil {
			return nil, err
		}
		args = append(args, u, couponIDs[i])
	}
	v, err := g.run(ctx, reserveGrantsScript, batchID, args...)
	if err != nil {
		return nil, err
	}
	r, ok := v.([]any)
	if !ok || len(r) == 0 {
		return nil, fmt.Errorf("redisguard: reserve grants: unexpected reply %v", v)
	}
	switch str(r[0]) {
	case "not_found":
		return nil, domain.Errorf(domain.ErrNotFound, "batch %s not found", batchID)
	case "stopped":
		return nil, domain.Errorf(domain.ErrNotClaimable, "batch %s is stopped", batchID)
	}
	if len(r) != len(users) {
		return nil, fmt.Errorf("redisguard: reserve grants: %d statuses for %d users", len(r), len(users))
	}
	out := make([]commands.GrantSlot, len(r))
	for i, s := range r {
		switch str(s) {
		case "ok":
			out[i] = commands.GrantReserved
		case "already_claimed":
			out[i] = commands.GrantUserHoldsLimit
		case "sold_out":
			out[i] = commands.GrantSoldOut
		case "coupon_taken":
			out[i] = commands.GrantCouponTaken
		default:
			return nil, fmt.Errorf("redisguard: reserve grants: unexpected status %q", str(s))
		}
	}
	return out, nil
}

// ConfirmMany confirms reservations of one batch in one step; confirming
// twice changes nothing.
func (g *Guard) ConfirmMany(ctx context.Context, batchID string, couponIDs []string) error {
	if len(couponIDs) == 0 {
		return nil
	}
	args := make([]any, len(couponIDs))
	for i, id := range couponIDs {
		args[i] = id
	}
	_, err := g.run(ctx, confirmManyScript, batchID, args...)
	return err
}
