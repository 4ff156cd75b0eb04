// Package redislimit is a fixed-window rate limiter on Redis, shared by every
// couponsd instance: one INCR (plus PEXPIRE on the window's first hit) per
// decision, on a key hash-tagged by the limited subject.
package redislimit

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/domain"
)

// Limiter limits events per subject and window.
type Limiter struct {
	rdb    redis.UniversalClient
	prefix string
	limit  int64
	window time.Duration
	now    func() time.Time
	script *redis.Script
}

// KEYS: counter; ARGV: window ms. Returns the count after this hit and the
// window's remaining ttl in ms.
const hitLua = `
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {n, ttl}`

// New allows limit events per window and subject. now is the injected clock.
func New(rdb redis.UniversalClient, prefix string, limit int, window time.Duration, now func() time.Time) (*Limiter, error) {
	if rdb == nil || limit < 1 || window <= 0 || now == nil {
		return nil, errors.New("redislimit: New needs a client, a positive limit and window, and a clock")
	}
	return &Limiter{rdb: rdb, prefix: prefix + "ratelimit:", limit: int64(limit), window: window, now: now, script: redis.NewScript(hitLua)}, nil
}

// Allow counts one event of subject. Past the limit it returns an error
// matching domain.ErrRateLimited and how long until the window resets.
func (l *Limiter) Allow(ctx context.Context, subject string) (retryAfter time.Duration, err error) {
	w := l.now().UnixMilli() / l.window.Milliseconds()
	key := l.prefix + "{" + subject + "}:" + strconv.FormatInt(w, 10)
	res, err := l.script.Run(ctx, l.rdb, []string{key}, l.window.Milliseconds()).Int64Slice()
	if err != nil {
		return 0, fmt.Errorf("%w: rate limiter: %w", domain.ErrUnavailable, err)
	}
	if res[0] > l.limit {
		ra := time.Duration(res[1]) * time.Millisecond
		return ra, domain.Errorf(domain.ErrRateLimited, "at most %d claims per %v; retry in %v", l.limit, l.window, ra.Round(time.Second))
	}
	return 0, nil
}
