// Package redisview is the Redis adapter of the usable-coupons view: per
// user, the coupons usable now and those locked by an order, with the terms
// the checkout quote needs; and the batch catalog. Keys of one user share
// the hash tag {u:<id>}, so each script touches one cluster slot.
package redisview

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
	"github.com/redis/go-redis/v9"
)

// Store implements projections.ViewStore and the view queries.
type Store struct {
	rdb    redis.UniversalClient
	prefix string
	apply  *redis.Script
	batch  *redis.Script
}

var (
	_ projections.ViewStore = (*Store)(nil)
	_ readapi.UsableView    = (*Store)(nil)
)

// New fails fast on a nil client. prefix is the service's key prefix.
func New(rdb redis.UniversalClient, prefix string) (*Store, error) {
	if rdb == nil {
		return nil, errors.New("redisview: nil redis client")
	}
	return &Store{rdb: rdb, prefix: prefix + "view:", apply: redis.NewScript(applyLua), batch: redis.NewScript(batchLua)}, nil
}

// KEYS: r (terms), l (locks), v (revisions), i (index by obtained time)
// ARGV: coupon, version, op, terms, order, hold ms, score
const applyLua = `
local cur = redis.call('HGET', KEYS[3], ARGV[1])
if cur and tonumber(cur) >= tonumber(ARGV[2]) then return 0 end
local op = ARGV[3]
if op == '1' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[4], ARGV[7], ARGV[1])
elseif op == '2' then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[5] .. '|' .. ARGV[6])
elseif op == '3' then
  redis.call('HDEL', KEYS[2], ARGV[1])
elseif op == '4' then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[4], ARGV[1])
end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[2])
return 1`

// KEYS: catalog hash; ARGV: batch id, version, json
const batchLua = `
local cur = redis.call('HGET', KEYS[1], ARGV[1])
if cur then
  local v = tonumber(string.match(cur, '^(-?%d+)|'))
  if v and v >= tonumber(ARGV[2]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2] .. '|' .. ARGV[3])
return 1`

// UserKeys lists a user's view keys: terms, locks, revisions, index.
func (s *Store) UserKeys(userID string) []string {
	t := s.prefix + "{u:" + userID + "}:"
	return []string{t + "r", t + "l", t + "v", t + "i"}
}

// CatalogKey is the batch catalog hash.
func (s *Store) CatalogKey() string { return s.prefix + "batches" }

func unavailable(err error) error { return redisx.Unavailable(err) }

// ApplyView applies ops in one pipeline; each op is skipped when stale.
func (s *Store) ApplyView(ctx context.Context, ops []projections.ViewOp) error {
	if len(ops) == 0 {
		return nil
	}
	if len(ops) == 1 {
		return unavailable(s.runOp(ctx, s.rdb, ops[0]))
	}
	err := redisx.Pipelined(ctx, s.rdb, []*redis.Script{s.apply}, func(p redis.Pipeliner) error {
		for _, op := range ops {
			if err := s.runOp(ctx, p, op); err != nil {
				return err
			}
		}
		return nil
	})
	return unavailable(err)
}

func (s *Store) runOp(ctx context.Context, c redis.Scripter, op projections.ViewOp) error {
	var terms []byte
	if op.Kind == projections.ViewPut {
		var err error
		if terms, err = json.Marshal(op.Terms); err != nil {
			return err
		}
	}
	hold := ""
	if !op.Hold.IsZero() {
		hold = strconv.FormatInt(op.Hold.UnixMilli(), 10)
	}
	return s.apply.Run(ctx, c, s.UserKeys(op.UserID), op.CouponID, op.Version, int(op.Kind), terms,
		op.OrderID, hold, op.Terms.ObtainedAt).Err()
}

// PutBatch stores a batch in the catalog unless a newer version is there.
func (s *Store) PutBatch(ctx context.Context, b projections.BatchEntry) error {
	raw, err := json.Marshal(b)
	if err != nil {
		return err
	}
	return unavailable(s.batch.Run(ctx, s.rdb, []string{s.CatalogKey()}, b.BatchID, b.Version, raw).Err())
}

// Checkpoint is the last projected position.
func (s *Store) Checkpoint(ctx context.Context) (uint64, error) {
	v, err := s.rdb.Get(ctx, s.prefix+"checkpoint").Uint64()
	if errors.Is(err, redis.Nil) {
		return 0, nil
	}
	return v, unavailable(err)
}

// SaveCheckpoint records the last projected position.
func (s *Store) SaveCheckpoint(ctx context.Context, pos uint64) error {
	return unavailable(s.rdb.Set(ctx, s.prefix+"checkpoint", pos, 0).Err())
}

// Batches returns the whole catalog.
func (s *Store) Batches(ctx context.Context) ([]projections.BatchEntry, error) {
	m, err := s.rdb.HGetAll(ctx, s.CatalogKey()).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]projections.BatchEntry, 0, len(m))
	for id, v := range m {
		_, raw, ok := strings.Cut(v, "|")
		var b projections.BatchEntry
		if !ok || json.Unmarshal([]byte(raw), &b) != nil {
			return nil, fmt.Errorf("redisview: corrupt catalog entry for batch %s", id)
		}
		out = append(out, b)
	}
	return out, nil
}

// Page is one page of a user's view; Next is empty on the last page.
type Page = readapi.ViewPage

// List returns a user's coupons with the status (usable or locked, empty
// for both), newest obtained first, keyset-paged: the cursor holds the
// (obtained time, coupon id) of the last item, so concurrent writes never
// shift later pages.
func (s *Store) List(ctx context.Context, userID, status, cursor string, limit int) (Page, error) {
	if limit <= 0 || limit > 200 {
		limit = 50
	}
	maxScore, afterID, err := decodeCursor(cursor)
	if err != nil {
		return Page{}, err
	}
	key := s.UserKeys(userID)[3]
	fetch := int64(2*limit + 16)
	var page Page
	for offset := int64(0); ; offset += fetch {
		zs, err := s.rdb.ZRangeArgsWithScores(ctx, redis.ZRangeArgs{Key: key, Start: maxScore, Stop: "-inf",
			ByScore: true, Rev: true, Offset: offset, Count: fetch}).Result()
		if err != nil {
			return Page{}, unavailable(err)
		}
		ids := make([]string, 0, len(zs))
		scores := make([]string, 0, len(zs))
		for _, z := range zs {
			id, sc := z.Member.(string), strconv.FormatFloat(z.Score, 'f', 0, 64)
			if afterID != "" && sc == maxScore && id >= afterID {
				continue // at or before the cursor
			}
			ids, scores = append(ids, id), append(scores, sc)
		}
		cs, err := s.load(ctx, userID, ids)
		if err != nil {
			return Page{}, err
		}
		for i, c := range cs {
			if c == nil || (status != "" && c.Status() != status) {
				continue
			}
			page.Coupons = append(page.Coupons, *c)
			if len(page.Coupons) == limit {
				page.Next = encodeCursor(scores[i], ids[i])
				return page, nil
			}
		}
		if int64(len(zs)) < fetch {
			return page, nil
		}
	}
}

// Get returns the given coupons of a user (nil for those not in the view).
func (s *Store) load(ctx context.Context, userID string, ids []string) ([]*projections.ViewCoupon, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	k := s.UserKeys(userID)
	var terms, locks, vers *redis.SliceCmd
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		terms = p.HMGet(ctx, k[0], ids...)
		locks = p.HMGet(ctx, k[1], ids...)
		vers = p.HMGet(ctx, k[2], ids...)
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]*projections.ViewCoupon, len(ids))
	for i, id := range ids {
		raw, ok := terms.Val()[i].(string)
		if !ok {
			continue
		}
		c := &projections.ViewCoupon{CouponID: id, UserID: userID}
		if err := json.Unmarshal([]byte(raw), &c.Terms); err != nil {
			return nil, fmt.Errorf("redisview: corrupt view entry %s of user %s: %w", id, userID, err)
		}
		if l, ok := locks.Val()[i].(string); ok {
			// The hold is numeric: split on the last '|' (order ids may hold one).
			i := strings.LastIndexByte(l, '|')
			order, hold := l, ""
			if i >= 0 {
				order, hold = l[:i], l[i+1:]
			}
			c.Locked, c.OrderID = true, order
			if ms, err := strconv.ParseInt(hold, 10, 64); err == nil {
				c.HoldUntil = time.UnixMilli(ms).UTC()
			}
		}
		if v, ok := vers.Val()[i].(string); ok {
			c.Version, _ = strconv.ParseUint(v, 10, 64)
		}
		out[i] = c
	}
	return out, nil
}

// Get returns one user's view entries for the given coupon ids.
func (s *Store) Get(ctx context.Context, userID string, ids []string) ([]*projections.ViewCoupon, error) {
	return s.load(ctx, userID, ids)
}

// All returns every coupon in a user's view (for the checkout quote).
func (s *Store) All(ctx context.Context, userID string) ([]projections.ViewCoupon, error) {
	ids, err := s.rdb.ZRevRange(ctx, s.UserKeys(userID)[3], 0, -1).Result()
	if err != nil || len(ids) == 0 {
		return nil, unavailable(err)
	}
	cs, err := s.load(ctx, userID, ids)
	if err != nil {
		return nil, err
	}
	out := make([]projections.ViewCoupon, 0, len(cs))
	for _, c := range cs {
		if c != nil {
			out = append(out, *c)
		}
	}
	return out, nil
}

func encodeCursor(score, id string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(score + "|" + id))
}

func decodeCursor(c string) (maxScore, afterID string, err error) {
	if c == "" {
		return "+inf", "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(c)
	if err != nil {
		return "", "", domain.Invalid("cursor", "is not a cursor this service issued")
	}
	sc, id, ok := strings.Cut(string(raw), "|")
	if _, perr := strconv.ParseInt(sc, 10, 64); !ok || perr != nil || id == "" {
		return "", "", domain.Invalid("cursor", "is not a cursor this service issued")
	}
	return sc, id, nil
}

// ---- inspection (couponsd verify) ----

var _ readapi.ViewInspector = (*Store)(nil)

// globEscape escapes the glob metacharacters of a literal SCAN MATCH part.
func globEscape(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch r {
		case '*', '?', '[', ']', '\\':
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	return b.String()
}

// scanKeys calls fn with every page of keys matching match. SCAN (never
// KEYS) keeps Redis serving. On a Redis Cluster a SCAN only walks the node it
// is sent to, so every master is scanned, concurrently, and fn is serialized;
// a key that moves between nodes during a resharding may be seen twice or
// missed, so run verify outside of resharding.
func (s *Store) scanKeys(ctx context.Context, match string, fn func(keys []string)) error {
	type scanner interface {
		Scan(ctx context.Context, cursor uint64, match string, count int64) *redis.ScanCmd
	}
	scan := func(ctx context.Context, c scanner, fn func([]string)) error {
		var cursor uint64
		for {
			keys, next, err := c.Scan(ctx, cursor, match, 1000).Result()
			if err != nil {
				return unavailable(err)
			}
			fn(keys)
			if cursor = next; cursor == 0 {
				return nil
			}
		}
	}
	if cc, ok := s.rdb.(*redis.ClusterClient); ok {
		lock := make(chan struct{}, 1)
		return cc.ForEachMaster(ctx, func(ctx context.Context, node *redis.Client) error {
			return scan(ctx, node, func(keys []string) {
				lock <- struct{}{}
				defer func() { <-lock }()
				fn(keys)
			})
		})
	}
	return scan(ctx, s.rdb, fn)
}

// Users lists every user with view keys (terms, locks, revisions or index),
// by SCAN MATCH <prefix>{u:*}:? over the keyspace, each user once.
func (s *Store) Users(ctx context.Context) ([]string, error) {
	head := s.prefix + "{u:"
	seen := map[string]bool{}
	var out []string
	err := s.scanKeys(ctx, globEscape(head)+"*}:?", func(keys []string) {
		for _, k := range keys {
			rest, ok := strings.CutPrefix(k, head)
			if !ok || len(rest) < 3 {
				continue
			}
			switch rest[len(rest)-3:] {
			case "}:r", "}:l", "}:v", "}:i":
			default:
				continue
			}
			if u := rest[:len(rest)-3]; !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	})
	return out, err
}

// InspectUsers reads the view keys of users, as they are, in one pipeline:
// every coupon found in any of a user's keys gets one entry.
func (s *Store) InspectUsers(ctx context.Context, userIDs []string) (map[string][]readapi.ViewEntry, error) {
	type reads struct {
		r, l, v *redis.MapStringStringCmd
		i       *redis.ZSliceCmd
	}
	rs := make([]reads, len(userIDs))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for n, u := range userIDs {
			k := s.UserKeys(u)
			rs[n] = reads{r: p.HGetAll(ctx, k[0]), l: p.HGetAll(ctx, k[1]), v: p.HGetAll(ctx, k[2]),
				i: p.ZRangeWithScores(ctx, k[3], 0, -1)}
		}
		return nil
	})
	if err != nil {
		return nil, unavailable(err)
	}
	out := make(map[string][]readapi.ViewEntry, len(userIDs))
	for n, u := range userIDs {
		entries := map[string]*readapi.ViewEntry{}
		var order []string
		entry := func(id string) *readapi.ViewEntry {
			e := entries[id]
			if e == nil {
				e = &readapi.ViewEntry{CouponID: id}
				entries[id] = e
				order = append(order, id)
			}
			return e
		}
		for id, raw := range rs[n].r.Val() {
			e := entry(id)
			e.HasTerms = true
			if json.Unmarshal([]byte(raw), &e.Terms) != nil {
				e.TermsUnreadable, e.RawTerms = true, raw
			}
		}
		for id, raw := range rs[n].l.Val() {
			e := entry(id)
			e.Locked, e.OrderID = true, raw
			// order|hold ms: the hold is a number, so the last '|' splits.
			if i := strings.LastIndexByte(raw, '|'); i >= 0 {
				e.OrderID = raw[:i]
				e.HoldUntil, _ = strconv.ParseInt(raw[i+1:], 10, 64)
			}
		}
		for id, raw := range rs[n].v.Val() {
			e := entry(id)
			e.HasVersion = true
			v, err := strconv.ParseUint(raw, 10, 64)
			if err != nil {
				e.VersionUnreadable, e.RawVersion = true, raw
			}
			e.Version = v
		}
		for _, z := range rs[n].i.Val() {
			id, _ := z.Member.(string)
			e := entry(id)
			e.Indexed, e.IndexScore = true, int64(z.Score)
		}
		list := make([]readapi.ViewEntry, len(order))
		for j, id := range order {
			list[j] = *entries[id]
		}
		out[u] = list
	}
	return out, nil
}

// InspectCatalog reads the batch catalog as it is; an entry that does not
// decode is returned Unreadable rather than failing the read.
func (s *Store) InspectCatalog(ctx context.Context) ([]readapi.CatalogEntry, error) {
	m, err := s.rdb.HGetAll(ctx, s.CatalogKey()).Result()
	if err != nil {
		return nil, unavailable(err)
	}
	out := make([]readapi.CatalogEntry, 0, len(m))
	for id, v := range m {
		e := readapi.CatalogEntry{BatchID: id, Raw: v}
		ver, raw, ok := strings.Cut(v, "|")
		n, perr := strconv.ParseInt(ver, 10, 64)
		if !ok || perr != nil || json.Unmarshal([]byte(raw), &e.Entry) != nil {
			e.Unreadable = true
		}
		e.FiledVersion = n
		out = append(out, e)
	}
	return out, nil
}
