// Package redisguard implements commands.StockGuard on Redis with Lua
// scripts: every admission decision (claim window, pause, audience, per-user
// limit, stock, idempotency key) is one atomic script over the keys of one
// batch, which share a hash tag and so live in one Redis Cluster slot.
package redisguard

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/readapi"
)

var _ commands.StockGuard = (*Guard)(nil)

// DefaultPrefix is the key prefix used when New is given an empty one.
const DefaultPrefix = "couponsd:"

// rebuildChunk is how many hash fields one HSET writes during Rebuild.
const rebuildChunk = 1000

// Guard is the Redis stock guard. It is safe for concurrent use.
type Guard struct {
	rdb    redis.UniversalClient
	prefix string
	strict bool
}

// Option tunes a Guard.
type Option func(*Guard)

// RequireInitialized makes SyncBatch refuse (commands.ErrGuardEmpty) to
// create a batch the guard does not hold while the guard is not initialized:
// after a Redis data loss a batch must come back with its consumed stock,
// through a rebuild from the event store, never as fresh full stock. The
// service always runs with it; tests of the scripts alone may not.
func RequireInitialized() Option { return func(g *Guard) { g.strict = true } }

// New returns a guard storing its keys under prefix ("" means DefaultPrefix).
func New(client redis.UniversalClient, prefix string, opts ...Option) (*Guard, error) {
	if client == nil {
		return nil, errors.New("redisguard: nil redis client")
	}
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisguard: prefix %q must not contain '{' or '}'", prefix)
	}
	g := &Guard{rdb: client, prefix: prefix}
	for _, o := range opts {
		o(g)
	}
	return g, nil
}

// BatchKeys are the Redis keys of one batch. They share the hash tag
// {b:<batch id>}, so they hash to one cluster slot.
type BatchKeys struct {
	Meta    string // hash: version, rule_version, paused, stopped, public, limit, start_ms, end_ms, total
	Stock   string // string: remaining units
	Users   string // hash: user id -> units held
	Idem    string // hash: user id \x00 idempotency key -> coupon id
	Pending string // sorted set: coupon id scored by reservation time (unix ms)
	PInfo   string // hash: coupon id -> user id \x00 idempotency key
}

// All lists the keys.
func (k BatchKeys) All() []string {
	return []string{k.Meta, k.Stock, k.Users, k.Idem, k.Pending, k.PInfo}
}

// Keys returns the keys of a batch.
func (g *Guard) Keys(batchID string) BatchKeys {
	base := g.prefix + "{b:" + batchID + "}:"
	return BatchKeys{
		Meta:    base + "meta",
		Stock:   base + "stock",
		Users:   base + "users",
		Idem:    base + "idem",
		Pending: base + "pending",
		PInfo:   base + "pinfo",
	}
}

// BatchesKey is the set of known batch ids (only used by single-key commands).
func (g *Guard) BatchesKey() string { return g.prefix + "batches" }

// InitializedKey marks a guard whose state was rebuilt.
func (g *Guard) InitializedKey() string { return g.prefix + "guard:initialized" }

// Load loads every script into the script cache (SCRIPT LOAD, on every
// master of a cluster). Calls use EVALSHA and fall back to EVAL on NOSCRIPT,
// so Load is an optimisation for startup, not a requirement.
func (g *Guard) Load(ctx context.Context) error {
	for _, s := range scripts {
		if err := s.Load(ctx, g.rdb).Err(); err != nil {
			return g.fail("load "+s.name+" script", err)
		}
	}
	return nil
}

func (g *Guard) run(ctx context.Context, s *script, batchID string, args ...any) (any, error) {
	v, err := s.Run(ctx, g.rdb, s.keys(g.Keys(batchID)), args...).Result()
	if err != nil {
		return nil, g.fail(s.name, err)
	}
	return v, nil
}

// SyncBatch stores a batch's policy and stock; a version at or below the
// stored one changes nothing. A grown total adds the difference to the
// remaining stock.
func (g *Guard) SyncBatch(ctx context.Context, b commands.GuardBatch) error {
	if b.BatchID == "" {
		return domain.Invalid("batch_id", "is required")
	}
	// A batch the guard does not hold may only be created while the guard
	// is initialized: after a Redis data loss, a batch's state must come
	// back with its consumed stock (a rebuild from the event store), never
	// as fresh full stock.
	initialized := true
	if g.strict {
		var err error
		if initialized, err = g.Initialized(ctx); err != nil {
			return err
		}
	}
	v, err := g.run(ctx, syncScript, b.BatchID,
		b.Version, b.RuleVersion, flag(b.Paused), flag(b.Stopped), flag(b.Public),
		b.PerUserLimit, b.ClaimStartsAt.UnixMilli(), b.ClaimEndsAt.UnixMilli(), b.TotalStock, flag(initialized),
	)
	if err != nil {
		return err
	}
	if n, ok := v.(int64); ok && n < 0 {
		return commands.ErrGuardEmpty
	}
	if err := g.rdb.SAdd(ctx, g.BatchesKey(), b.BatchID).Err(); err != nil {
		return g.fail("sync: register batch", err)
	}
	return nil
}

// Reserve takes one unit for userID, checking the batch's claim policy, the
// per-user limit, the stock and the idempotency key in one atomic step.
func (g *Guard) Reserve(ctx context.Context, batchID, userID, idempotencyKey, couponID string, now time.Time) (commands.Reservation, error) {
	if err := checkIDs(batchID, userID, couponID); err != nil {
		return commands.Reservation{}, err
	}
	v, err := g.run(ctx, reserveScript, batchID, userID, idempotencyKey, couponID, now.UnixMilli(), "claim")
	if err != nil {
		return commands.Reservation{}, err
	}
	return g.reserveResult(v, batchID, userID)
}

// ReserveGrant takes one unit for a grant: only a stopped batch, the
// per-user limit and the stock can refuse it.
func (g *Guard) ReserveGrant(ctx context.Context, batchID, userID, couponID string, now time.Time) error {
	if err := checkIDs(batchID, userID, couponID); err != nil {
		return err
	}
	v, err := g.run(ctx, reserveScript, batchID, userID, "", couponID, now.UnixMilli(), "grant")
	if err != nil {
		return err
	}
	_, err = g.reserveResult(v, batchID, userID)
	return err
}

func (g *Guard) reserveResult(v any, batchID, userID string) (commands.Reservation, error) {
	r, ok := v.([]any)
	if !ok || len(r) == 0 {
		return commands.Reservation{}, fmt.Errorf("redisguard: reserve: unexpected reply %v", v)
	}
	status := str(r[0])
	switch status {
	case "ok":
		return commands.Reservation{RuleVersion: atoi(at(r, 1))}, nil
	case "dup":
		return commands.Reservation{
			CouponID:    str(at(r, 1)),
			Duplicate:   true,
			Pending:     atoi(at(r, 2)) == 1,
			RuleVersion: atoi(at(r, 3)),
		}, nil
	case "not_found":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotFound, "batch %s not found", batchID)
	case "stopped":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotClaimable, "batch %s is stopped", batchID)
	case "targeted":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotClaimable, "batch %s is targeted: coupons are granted, not claimed", batchID)
	case "ended":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotClaimable, "batch %s has ended", batchID)
	case "not_started":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotClaimable, "batch %s has not started yet", batchID)
	case "paused":
		return commands.Reservation{}, domain.Errorf(domain.ErrNotClaimable, "batch %s is paused", batchID)
	case "already_claimed":
		return commands.Reservation{}, domain.Errorf(domain.ErrAlreadyClaimed,
			"user %s already holds %d coupon(s) of batch %s (limit %d)", userID, atoi(at(r, 1)), batchID, atoi(at(r, 2)))
	case "sold_out":
		return commands.Reservation{}, domain.Errorf(domain.ErrSoldOut, "batch %s is sold out", batchID)
	case "coupon_taken":
		return commands.Reservation{}, domain.Errorf(domain.ErrConflict, "coupon id is already reserved in batch %s", batchID)
	}
	return commands.Reservation{}, fmt.Errorf("redisguard: reserve: unexpected status %q", status)
}

// Confirm marks a reservation as durable; confirming twice changes nothing.
func (g *Guard) Confirm(ctx context.Context, batchID, couponID string) error {
	_, err := g.run(ctx, confirmScript, batchID, couponID)
	return err
}

// Release gives a pending reservation back (stock, the user's count and its
// idempotency key). An unknown, confirmed or released coupon changes nothing.
func (g *Guard) Release(ctx context.Context, batchID, couponID string) error {
	_, err := g.run(ctx, releaseScript, batchID, couponID)
	return err
}

// Pending lists unconfirmed reservations made strictly before olderThan,
// at most limit of them (limit <= 0: all), sorted by reservation time.
func (g *Guard) Pending(ctx context.Context, olderThan time.Time, limit int) ([]commands.PendingReservation, error) {
	upper := "(" + strconv.FormatInt(olderThan.UnixMilli(), 10)
	var out []commands.PendingReservation
	seen := make(map[string]bool) // SSCAN may return a member twice
	var cursor uint64
	for {
		page, next, err := g.rdb.SScan(ctx, g.BatchesKey(), cursor, "", 200).Result()
		if err != nil {
			return nil, g.fail("pending: scan batches", err)
		}
		ids := page[:0]
		for _, id := range page {
			if !seen[id] {
				seen[id] = true
				ids = append(ids, id)
			}
		}
		want := 0
		if limit > 0 {
			want = limit - len(out)
		}
		got, err := g.pendingOf(ctx, ids, upper, want)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
		if limit > 0 && len(out) >= limit {
			out = out[:limit]
			break
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReservedAt.Before(out[j].ReservedAt) })
	return out, nil
}

// PendingIn lists one batch's unconfirmed reservations made strictly before
// olderThan, sorted by reservation time.
func (g *Guard) PendingIn(ctx context.Context, batchID string, olderThan time.Time) ([]commands.PendingReservation, error) {
	out, err := g.pendingOf(ctx, []string{batchID}, "("+strconv.FormatInt(olderThan.UnixMilli(), 10), 0)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ReservedAt.Before(out[j].ReservedAt) })
	return out, nil
}

// pendingOf reads the pending reservations of some batches in two pipelines.
func (g *Guard) pendingOf(ctx context.Context, ids []string, upper string, limit int) ([]commands.PendingReservation, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	zr := &redis.ZRangeBy{Min: "-inf", Max: upper}
	if limit > 0 {
		zr.Count = int64(limit)
	}
	ranges := make([]*redis.ZSliceCmd, len(ids))
	if _, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			ranges[i] = p.ZRangeByScoreWithScores(ctx, g.Keys(id).Pending, zr)
		}
		return nil
	}); err != nil {
		return nil, g.fail("pending: list", err)
	}
	infos := make([]*redis.SliceCmd, len(ids))
	if _, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range ids {
			zs := ranges[i].Val()
			if len(zs) == 0 {
				continue
			}
			coupons := make([]string, len(zs))
			for j, z := range zs {
				coupons[j] = str(z.Member)
			}
			infos[i] = p.HMGet(ctx, g.Keys(id).PInfo, coupons...)
		}
		return nil
	}); err != nil {
		return nil, g.fail("pending: details", err)
	}
	var out []commands.PendingReservation
	for i, id := range ids {
		if infos[i] == nil {
			continue
		}
		zs, vals := ranges[i].Val(), infos[i].Val()
		for j, z := range zs {
			if j >= len(vals) || vals[j] == nil {
				continue // confirmed or released meanwhile
			}
			user, key, _ := strings.Cut(str(vals[j]), "\x00")
			out = append(out, commands.PendingReservation{
				BatchID:        id,
				CouponID:       str(z.Member),
				UserID:         user,
				IdempotencyKey: key,
				ReservedAt:     time.UnixMilli(int64(z.Score)).UTC(),
			})
		}
	}
	return out, nil
}

// Remaining is the batch's unreserved stock (ErrNotFound for an unknown batch).
func (g *Guard) Remaining(ctx context.Context, batchID string) (int64, error) {
	n, err := g.rdb.Get(ctx, g.Keys(batchID).Stock).Int64()
	if errors.Is(err, redis.Nil) {
		return 0, domain.Errorf(domain.ErrNotFound, "batch %s not found", batchID)
	}
	if err != nil {
		return 0, g.fail("remaining", err)
	}
	return max(n, 0), nil
}

// Initialized tells whether Rebuild has run against this Redis.
func (g *Guard) Initialized(ctx context.Context) (bool, error) {
	n, err := g.rdb.Exists(ctx, g.InitializedKey()).Result()
	if err != nil {
		return false, g.fail("initialized", err)
	}
	return n == 1, nil
}

// Rebuild replaces the guard's state: it clears the initialized marker,
// rewrites each given batch atomically (one MULTI per batch, hash fields in
// chunks), forgets batches not given, then sets the marker. Pending
// reservations are dropped: the event store is the truth.
func (g *Guard) Rebuild(ctx context.Context, batches []commands.GuardBatchState) error {
	if err := g.rdb.Del(ctx, g.InitializedKey()).Err(); err != nil {
		return g.fail("rebuild: clear marker", err)
	}
	old, err := g.rdb.SMembers(ctx, g.BatchesKey()).Result()
	if err != nil {
		return g.fail("rebuild: list batches", err)
	}
	keep := make(map[string]bool, len(batches))
	for _, st := range batches {
		if st.Batch.BatchID == "" {
			return domain.Invalid("batch_id", "is required")
		}
		if err := g.rebuildBatch(ctx, st); err != nil {
			return err
		}
		keep[st.Batch.BatchID] = true
		if err := g.rdb.SAdd(ctx, g.BatchesKey(), st.Batch.BatchID).Err(); err != nil {
			return g.fail("rebuild: register batch", err)
		}
	}
	for _, id := range old {
		if keep[id] {
			continue
		}
		if err := g.rdb.Del(ctx, g.Keys(id).All()...).Err(); err != nil {
			return g.fail("rebuild: drop batch", err)
		}
		if err := g.rdb.SRem(ctx, g.BatchesKey(), id).Err(); err != nil {
			return g.fail("rebuild: unregister batch", err)
		}
	}
	if err := g.rdb.Set(ctx, g.InitializedKey(), "1", 0).Err(); err != nil {
		return g.fail("rebuild: set marker", err)
	}
	return nil
}

func (g *Guard) rebuildBatch(ctx context.Context, st commands.GuardBatchState) error {
	b, k := st.Batch, g.Keys(st.Batch.BatchID)
	_, err := g.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, k.All()...)
		p.HSet(ctx, k.Meta,
			"version", b.Version, "rule_version", b.RuleVersion,
			"paused", flag(b.Paused), "stopped", flag(b.Stopped), "public", flag(b.Public),
			"limit", b.PerUserLimit, "start_ms", b.ClaimStartsAt.UnixMilli(),
			"end_ms", b.ClaimEndsAt.UnixMilli(), "total", b.TotalStock)
		p.Set(ctx, k.Stock, b.TotalStock-st.Consumed, 0)
		hsetChunks(ctx, p, k.Users, st.PerUser)
		hsetChunks(ctx, p, k.Idem, st.Idem)
		return nil
	})
	if err != nil {
		return g.fail("rebuild batch "+b.BatchID, err)
	}
	return nil
}

// hsetChunks writes a map with HSETs of at most rebuildChunk fields, in key
// order so the commands are deterministic.
func hsetChunks[V any](ctx context.Context, p redis.Pipeliner, key string, m map[string]V) {
	fields := make([]string, 0, len(m))
	for f := range m {
		fields = append(fields, f)
	}
	sort.Strings(fields)
	for len(fields) > 0 {
		n := min(len(fields), rebuildChunk)
		args := make([]any, 0, 2*n)
		for _, f := range fields[:n] {
			args = append(args, f, m[f])
		}
		p.HSet(ctx, key, args...)
		fields = fields[n:]
	}
}

// fail wraps a Redis error; connection failures also match domain.ErrUnavailable.
func (g *Guard) fail(op string, err error) error {
	if Unavailable(err) {
		return fmt.Errorf("%w: redisguard %s: %w", domain.ErrUnavailable, op, err)
	}
	return fmt.Errorf("redisguard %s: %w", op, err)
}

// Unavailable tells whether err means Redis could not be reached or cannot
// serve right now (connection refused, reset or timed out, closed client,
// exhausted pool, server loading, cluster down or failing over), as opposed
// to a command error such as WRONGTYPE or a script error.
func Unavailable(err error) bool {
	if err == nil {
		return false
	}
	var ne net.Error
	switch {
	case errors.As(err, &ne),
		errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF),
		errors.Is(err, redis.ErrClosed), errors.Is(err, redis.ErrPoolTimeout),
		errors.Is(err, redis.ErrPoolExhausted),
		errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET),
		errors.Is(err, syscall.EPIPE),
		redis.IsLoadingError(err), redis.IsClusterDownError(err),
		redis.IsTryAgainError(err), redis.IsMasterDownError(err),
		redis.IsMaxClientsError(err):
		return true
	}
	return false
}

func checkIDs(batchID, userID, couponID string) error {
	switch {
	case batchID == "":
		return domain.Invalid("batch_id", "is required")
	case userID == "":
		return domain.Invalid("user_id", "is required")
	case couponID == "":
		return domain.Invalid("coupon_id", "is required")
	}
	return nil
}

func flag(b bool) int {
	if b {
		return 1
	}
	return 0
}

func at(r []any, i int) any {
	if i < len(r) {
		return r[i]
	}
	return nil
}

func str(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}

func atoi(v any) int {
	switch v := v.(type) {
	case int64:
		return int(v)
	case string:
		n, _ := strconv.Atoi(v)
		return n
	}
	return 0
}

// UserCounts returns how many coupons of each batch userID holds (claims and
// grants, including reservations not yet confirmed).
func (g *Guard) UserCounts(ctx context.Context, batchIDs []string, userID string) (map[string]int64, error) {
	cmds := make([]*redis.StringCmd, len(batchIDs))
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range batchIDs {
			cmds[i] = p.HGet(ctx, g.Keys(id).Users, userID)
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, g.fail("user counts", err)
	}
	out := make(map[string]int64, len(batchIDs))
	for i, c := range cmds {
		if n, err := c.Int64(); err == nil {
			out[batchIDs[i]] = n
		}
	}
	return out, nil
}

// ---- inspection (couponsd verify) ----

var _ readapi.GuardInspector = (*Guard)(nil)

// inspectHashMax: a per-batch hash of up to this many fields is read with
// one HGETALL in a pipeline; a bigger one with HSCAN pages of this size, so a
// huge batch never blocks Redis for long.
const inspectHashMax = 1000

// BatchIDs lists the batches registered in the guard, sorted.
func (g *Guard) BatchIDs(ctx context.Context) ([]string, error) {
	ids, err := g.rdb.SMembers(ctx, g.BatchesKey()).Result()
	if err != nil {
		return nil, g.fail("batch ids", err)
	}
	sort.Strings(ids)
	return ids, nil
}

// InspectBatches reads the stored state of batches, as it is, for
// verification: policy, remaining stock, per-user counts, idempotency records
// and unconfirmed reservations. Two pipelines for the chunk, plus HSCANs for
// hashes above inspectHashMax fields.
func (g *Guard) InspectBatches(ctx context.Context, batchIDs []string) ([]readapi.GuardSnapshot, error) {
	type reads struct {
		meta, pinfo *redis.MapStringStringCmd
		stock       *redis.StringCmd
		users, idem *redis.IntCmd
		pending     *redis.ZSliceCmd
	}
	rs := make([]reads, len(batchIDs))
	_, err := g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range batchIDs {
			k := g.Keys(id)
			rs[i] = reads{meta: p.HGetAll(ctx, k.Meta), stock: p.Get(ctx, k.Stock), users: p.HLen(ctx, k.Users),
				idem: p.HLen(ctx, k.Idem), pending: p.ZRangeWithScores(ctx, k.Pending, 0, -1), pinfo: p.HGetAll(ctx, k.PInfo)}
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, g.fail("inspect batches", err)
	}
	small := make([][2]*redis.MapStringStringCmd, len(batchIDs))
	_, err = g.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range batchIDs {
			k := g.Keys(id)
			if rs[i].users.Val() <= inspectHashMax {
				small[i][0] = p.HGetAll(ctx, k.Users)
			}
			if rs[i].idem.Val() <= inspectHashMax {
				small[i][1] = p.HGetAll(ctx, k.Idem)
			}
		}
		return nil
	})
	if err != nil {
		return nil, g.fail("inspect batches: hashes", err)
	}
	out := make([]readapi.GuardSnapshot, len(batchIDs))
	for i, id := range batchIDs {
		k := g.Keys(id)
		s := readapi.GuardSnapshot{BatchID: id}
		if meta := rs[i].meta.Val(); len(meta) > 0 {
			s.Found = true
			s.Policy, s.Unreadable = parsePolicy(id, meta)
		}
		if v, err := rs[i].stock.Result(); err == nil {
			s.Remaining = v
		}
		for j, key := range []string{k.Users, k.Idem} {
			var m map[string]string
			if small[i][j] != nil {
				m = small[i][j].Val()
			} else if m, err = g.hscanAll(ctx, key); err != nil {
				return nil, err
			}
			if j == 0 {
				s.PerUser = m
			} else {
				s.Idem = m
			}
		}
		info := rs[i].pinfo.Val()
		for _, z := range rs[i].pending.Val() {
			coupon := str(z.Member)
			user, key, _ := strings.Cut(info[coupon], "\x00")
			s.Pending = append(s.Pending, commands.PendingReservation{BatchID: id, CouponID: coupon, UserID: user,
				IdempotencyKey: key, ReservedAt: time.UnixMilli(int64(z.Score)).UTC()})
		}
		out[i] = s
	}
	return out, nil
}

// hscanAll reads a whole hash in HSCAN pages.
func (g *Guard) hscanAll(ctx context.Context, key string) (map[string]string, error) {
	out := map[string]string{}
	var cursor uint64
	for {
		kv, next, err := g.rdb.HScan(ctx, key, cursor, "", inspectHashMax).Result()
		if err != nil {
			return nil, g.fail("inspect: scan "+key, err)
		}
		for i := 0; i+1 < len(kv); i += 2 {
			out[kv[i]] = kv[i+1]
		}
		if cursor = next; cursor == 0 {
			return out, nil
		}
	}
}

// parsePolicy reads a batch's meta hash; fields missing or unreadable are
// returned by their readapi.GuardField* name with the raw value.
func parsePolicy(batchID string, m map[string]string) (commands.GuardBatch, map[string]string) {
	b := commands.GuardBatch{BatchID: batchID}
	bad := map[string]string{}
	num := func(field, name string) int64 {
		raw, ok := m[field]
		n, err := strconv.ParseInt(raw, 10, 64)
		if !ok || err != nil {
			bad[name] = raw
		}
		return n
	}
	flagOf := func(field, name string) bool {
		switch raw := m[field]; raw {
		case "1":
			return true
		case "0":
			return false
		default:
			bad[name] = raw
			return false
		}
	}
	b.Version = num("version", readapi.GuardFieldVersion)
	b.RuleVersion = int(num("rule_version", readapi.GuardFieldRuleVersion))
	b.Paused = flagOf("paused", readapi.GuardFieldPaused)
	b.Stopped = flagOf("stopped", readapi.GuardFieldStopped)
	b.Public = flagOf("public", readapi.GuardFieldPublic)
	b.PerUserLimit = int(num("limit", readapi.GuardFieldPerUserLimit))
	b.ClaimStartsAt = time.UnixMilli(num("start_ms", readapi.GuardFieldClaimStartsAt)).UTC()
	b.ClaimEndsAt = time.UnixMilli(num("end_ms", readapi.GuardFieldClaimEndsAt)).UTC()
	b.TotalStock = num("total", readapi.GuardFieldTotalStock)
	return b, bad
}
