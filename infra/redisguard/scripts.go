package redisguard

import (
	"github.com/redis/go-redis/v9"
)

// Every script touches only the keys of one batch, passed in KEYS; they all
// share the batch's hash tag, hence one Redis Cluster slot. Numbers travel as
// the caller's decimal strings (never re-formatted by Lua, which would use
// %.14g) and comparisons use tonumber (exact below 2^53).

// syncSrc: KEYS meta, stock. ARGV version, rule_version, paused, stopped,
// public, limit, start_ms, end_ms, total. Returns 1 when applied, 0 when the
// stored version is already at or past ARGV[1].
const syncSrc = `
local cur = redis.call('HGET', KEYS[1], 'version')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
if not cur and ARGV[10] ~= '1' then
  return -1
end
local old = redis.call('HGET', KEYS[1], 'total')
redis.call('HSET', KEYS[1],
  'version', ARGV[1], 'rule_version', ARGV[2], 'paused', ARGV[3],
  'stopped', ARGV[4], 'public', ARGV[5], 'limit', ARGV[6],
  'start_ms', ARGV[7], 'end_ms', ARGV[8], 'total', ARGV[9])
if old then
  local d = tonumber(ARGV[9]) - tonumber(old)
  if d ~= 0 then
    redis.call('INCRBY', KEYS[2], string.format('%d', d))
  end
else
  redis.call('SET', KEYS[2], ARGV[9])
end
return 1
`

// reserveSrc: KEYS meta, stock, users, idem, pending, pinfo. ARGV user,
// idempotency key (may be empty), coupon id, now_ms, mode ("claim" or
// "grant"). Returns {status, ...}:
//
//	{"ok", rule_version}
//	{"dup", coupon, pending 0|1, rule_version}
//	{"not_found"} {"stopped"} {"targeted"} {"ended"} {"not_started"}
//	{"paused"} {"already_claimed", held, limit} {"sold_out"} {"coupon_taken"}
const reserveSrc = `
local user, ikey, coupon, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local grant = ARGV[5] == 'grant'
local ifield = nil
if ikey ~= '' then
  ifield = user .. '\0' .. ikey
  local prev = redis.call('HGET', KEYS[4], ifield)
  if prev then
    local pend = 0
    if redis.call('ZSCORE', KEYS[5], prev) then pend = 1 end
    return {'dup', prev, pend, redis.call('HGET', KEYS[1], 'rule_version') or '0'}
  end
end
local m = redis.call('HMGET', KEYS[1], 'rule_version', 'paused', 'stopped',
  'public', 'limit', 'start_ms', 'end_ms')
if not m[1] then return {'not_found'} end
if m[3] == '1' then return {'stopped'} end
if not grant then
  if m[4] ~= '1' then return {'targeted'} end
  if now >= tonumber(m[7]) then return {'ended'} end
  if now < tonumber(m[6]) then return {'not_started'} end
  if m[2] == '1' then return {'paused'} end
end
local held = tonumber(redis.call('HGET', KEYS[3], user) or '0')
if held >= tonumber(m[5]) then return {'already_claimed', held, m[5]} end
if tonumber(redis.call('GET', KEYS[2]) or '0') <= 0 then return {'sold_out'} end
if redis.call('HEXISTS', KEYS[6], coupon) == 1 then return {'coupon_taken'} end
redis.call('DECR', KEYS[2])
redis.call('HINCRBY', KEYS[3], user, 1)
if ifield then redis.call('HSET', KEYS[4], ifield, coupon) end
redis.call('ZADD', KEYS[5], ARGV[4], coupon)
redis.call('HSET', KEYS[6], coupon, user .. '\0' .. ikey)
return {'ok', m[1]}
`

// confirmSrc: KEYS pending, pinfo. ARGV coupon. Returns 1 if it was pending.
const confirmSrc = `
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return n
`

// releaseSrc: KEYS stock, users, idem, pending, pinfo. ARGV coupon. Gives
// the unit back only while the coupon is pending, so a release racing a
// confirm (or a second release) changes nothing. Returns 1 if released.
const releaseSrc = `
local coupon = ARGV[1]
if not redis.call('ZSCORE', KEYS[4], coupon) then return 0 end
local info = redis.call('HGET', KEYS[5], coupon)
redis.call('ZREM', KEYS[4], coupon)
redis.call('HDEL', KEYS[5], coupon)
redis.call('INCR', KEYS[1])
if info then
  local user, ikey = info, ''
  local i = string.find(info, '\0', 1, true)
  if i then
    user = string.sub(info, 1, i - 1)
    ikey = string.sub(info, i + 1)
  end
  if redis.call('HINCRBY', KEYS[2], user, -1) <= 0 then
    redis.call('HDEL', KEYS[2], user)
  end
  if ikey ~= '' and redis.call('HGET', KEYS[3], info) == coupon then
    redis.call('HDEL', KEYS[3], info)
  end
end
return 1
`

// script is a Lua script with the batch keys it is called with.
type script struct {
	name string
	*redis.Script
	keys func(k BatchKeys) []string
}

var (
	syncScript = &script{"sync", redis.NewScript(syncSrc), func(k BatchKeys) []string {
		return []string{k.Meta, k.Stock}
	}}
	reserveScript = &script{"reserve", redis.NewScript(reserveSrc), func(k BatchKeys) []string {
		return []string{k.Meta, k.Stock, k.Users, k.Idem, k.Pending, k.PInfo}
	}}
	confirmScript = &script{"confirm", redis.NewScript(confirmSrc), func(k BatchKeys) []string {
		return []string{k.Pending, k.PInfo}
	}}
	releaseScript = &script{"release", redis.NewScript(releaseSrc), func(k BatchKeys) []string {
		return []string{k.Stock, k.Users, k.Idem, k.Pending, k.PInfo}
	}}
	// scripts lists every script, for Load and the slot test.
	scripts = []*script{syncScript, reserveScript, confirmScript, releaseScript, reserveGrantsScript, confirmManyScript}
)
