// Package boltindex is the embedded history index (projections.HistoryIndex)
// on go.etcd.io/bbolt, kept in one file (history.db) of a directory. Every
// write is one fsync'd bolt transaction.
//
// # Layout
//
//	meta   "format"  -> 1
//	       "current" -> big-endian id of the generation reads use
//	       "next"    -> big-endian id the next rebuild gets
//	gens   big-endian generation id -> bucket of
//	       recs     coupon id                                  -> record (codec.go)
//	       byuser   lp(user) lp(status) tk(EndedAt) coupon id  -> empty
//	       bybatch  lp(batch) coupon id                        -> batch summary
//	       redeemed tk(RedeemedAt) coupon id                   -> lp(batch) lp(user) discount
//	       info     "checkpoint"                               -> big-endian uint64
//
// lp is a uvarint length prefix, tk an order-preserving 12-byte time key.
// byuser holds every record; redeemed only those whose status is redeemed
// with a RedeemedAt. An upsert that replaces a record deletes its old index
// entries and writes the new ones in the same transaction.
//
// # Complexity (n records in the generation)
//
//   - Upsert: O(k log n) for k records (a record put, up to three index
//     puts and as many deletes of the previous entries).
//   - Get: O(log n) per id.
//   - ListByUser: O(s log n + s·limit) for s statuses in the filter (a
//     merge of one backwards cursor per status); no record outside the page
//     is read.
//   - BatchReport: O(b) for the b records of the batch (their summaries in
//     bybatch; no record is decoded).
//   - TopBatches: O(r + g log g + Σb) for the r redemptions in the range,
//     the g batches they belong to, and the sizes b of the reported
//     batches (their BatchReport). TopUsers: O(r + u log u).
//   - Rebuild: O(1); Commit: O(size of the old generation) to free its
//     pages, in the transaction that flips the pointer; Abort: O(size of
//     the new generation).
//
// # Generations
//
// Rebuild creates a generation bucket under gens and returns a handle that
// writes to it while reads and live upserts keep using "current". Commit
// points "current" at the new generation and deletes the old one in one
// transaction; Abort deletes the new one. Open deletes every generation
// that is not current: a rebuild interrupted by a crash leaves nothing
// behind. If two rebuilds run at once, the last to commit wins.
package boltindex

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/history/internal/histkit"
	"github.com/couponsd/couponsd/projections"
)

// FileName is the name of the database file inside the index directory.
const FileName = "history.db"

const dbFormat = 1

var (
	bucketMeta     = []byte("meta")
	bucketGens     = []byte("gens")
	keyFormat      = []byte("format")
	keyCurrent     = []byte("current")
	keyNext        = []byte("next")
	bucketRecs     = []byte("recs")
	bucketByUser   = []byte("byuser")
	bucketByBatch  = []byte("bybatch")
	bucketRedeemed = []byte("redeemed")
	bucketInfo     = []byte("info")
	keyCheckpoint  = []byte("checkpoint")
)

var (
	statusRedeemed = histkit.StatusRedeemed
	statusExpired  = histkit.StatusExpired
)

var (
	// ErrClosed is returned by calls on a closed index. It matches
	// domain.ErrUnavailable.
	ErrClosed = domain.Errorf(domain.ErrUnavailable, "boltindex: index closed")
	// ErrRebuildFinished is returned by calls on a rebuild that was
	// committed or aborted (or whose generation no longer exists). It
	// matches domain.ErrConflict.
	ErrRebuildFinished = domain.Errorf(domain.ErrConflict, "boltindex: rebuild already committed or aborted")
)

var (
	_ projections.HistoryIndex   = (*Index)(nil)
	_ projections.HistoryRebuild = (*Rebuild)(nil)
)

// Index is a bbolt history index. It is safe for concurrent use.
type Index struct {
	db *bolt.DB
}

// Open opens (creating it if needed) the index kept in dir. Close it when
// done.
func Open(dir string, opts Options) (*Index, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if dir == "" {
		return nil, domain.Invalid("dir", "required")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("boltindex: %w", err)
	}
	path := filepath.Join(dir, FileName)
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.OpenTimeout, FreelistType: bolt.FreelistMapType, NoSync: opts.NoSync})
	if err != nil {
		return nil, fmt.Errorf("boltindex: open %s: %w", path, err)
	}
	db.NoSync = opts.NoSync // set after bolt.Open: opening itself always syncs
	err = db.Update(initDB)
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = syncDir(dir) // make the new file's directory entry durable
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltindex: init %s: %w", path, err)
	}
	return &Index{db: db}, nil
}

func initDB(tx *bolt.Tx) error {
	meta, err := tx.CreateBucketIfNotExists(bucketMeta)
	if err != nil {
		return err
	}
	gens, err := tx.CreateBucketIfNotExists(bucketGens)
	if err != nil {
		return err
	}
	if v := meta.Get(keyFormat); v == nil {
		if err := meta.Put(keyFormat, []byte{dbFormat}); err != nil {
			return err
		}
	} else if len(v) != 1 || v[0] != dbFormat {
		return fmt.Errorf("unsupported format %v", v)
	}
	cur := getUint(meta, keyCurrent)
	if cur == 0 {
		cur = 1
		if _, err := createGen(gens, cur); err != nil {
			return err
		}
		if err := putUint(meta, keyCurrent, cur); err != nil {
			return err
		}
		if err := putUint(meta, keyNext, cur+1); err != nil {
			return err
		}
	}
	// Drop generations of rebuilds that never finished.
	var stale [][]byte
	err = gens.ForEach(func(k, _ []byte) error {
		if len(k) != 8 || binary.BigEndian.Uint64(k) != cur {
			stale = append(stale, bytes.Clone(k))
		}
		return nil
	})
	if err != nil {
		return err
	}
	for _, k := range stale {
		if err := gens.DeleteBucket(k); err != nil {
			return err
		}
	}
	if openGen(gens, cur) == nil {
		return fmt.Errorf("current generation %d is missing", cur)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Close closes the database, waiting for running calls.
func (ix *Index) Close() error { return ix.db.Close() }

func getUint(b *bolt.Bucket, k []byte) uint64 {
	if v := b.Get(k); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func putUint(b *bolt.Bucket, k []byte, v uint64) error {
	return b.Put(k, binary.BigEndian.AppendUint64(nil, v))
}

func genKey(id uint64) []byte { return binary.BigEndian.AppendUint64(nil, id) }

// gen is a generation's buckets within one transaction.
type gen struct {
	recs, byUser, byBatch, redeemed, info *bolt.Bucket
}

func openGen(gens *bolt.Bucket, id uint64) *gen {
	b := gens.Bucket(genKey(id))
	if b == nil {
		return nil
	}
	return &gen{
		recs: b.Bucket(bucketRecs), byUser: b.Bucket(bucketByUser), byBatch: b.Bucket(bucketByBatch),
		redeemed: b.Bucket(bucketRedeemed), info: b.Bucket(bucketInfo),
	}
}

func createGen(gens *bolt.Bucket, id uint64) (*gen, error) {
	b, err := gens.CreateBucket(genKey(id))
	if err != nil {
		return nil, err
	}
	for _, name := range [][]byte{bucketRecs, bucketByUser, bucketByBatch, bucketRedeemed, bucketInfo} {
		if _, err := b.CreateBucket(name); err != nil {
			return nil, err
		}
	}
	return openGen(gens, id), nil
}

func currentID(tx *bolt.Tx) uint64 { return getUint(tx.Bucket(bucketMeta), keyCurrent) }

// genOf opens generation id in tx, or the current one when id is 0.
func genOf(tx *bolt.Tx, id uint64) (*gen, error) {
	if id == 0 {
		id = currentID(tx)
		if g := openGen(tx.Bucket(bucketGens), id); g != nil {
			return g, nil
		}
		return nil, fmt.Errorf("boltindex: current generation %d is missing", id)
	}
	if g := openGen(tx.Bucket(bucketGens), id); g != nil {
		return g, nil
	}
	return nil, ErrRebuildFinished
}

func mapErr(err error) error {
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// view runs fn on generation id (0: current) in a read transaction.
func (ix *Index) view(ctx context.Context, id uint64, fn func(g *gen) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(ix.db.View(func(tx *bolt.Tx) error {
		g, err := genOf(tx, id)
		if err != nil {
			return err
		}
		return fn(g)
	}))
}

// update runs fn on generation id (0: current) in a write transaction.
func (ix *Index) update(ctx context.Context, id uint64, fn func(g *gen) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return mapErr(ix.db.Update(func(tx *bolt.Tx) error {
		g, err := genOf(tx, id)
		if err != nil {
			return err
		}
		return fn(g)
	}))
}

// ---- writes ----

// Upsert implements projections.HistoryIndex.
func (ix *Index) Upsert(ctx context.Context, recs []projections.CouponRecord) error {
	return ix.upsert(ctx, 0, recs)
}

func (ix *Index) upsert(ctx context.Context, id uint64, recs []projections.CouponRecord) error {
	if err := histkit.CheckRecords(recs); err != nil {
		return err
	}
	if len(recs) == 0 {
		return ctx.Err()
	}
	norm := make([]projections.CouponRecord, len(recs))
	for i := range recs {
		norm[i] = histkit.Normalize(recs[i])
	}
	return ix.update(ctx, id, func(g *gen) error {
		for i := range norm {
			if err := g.put(&norm[i]); err != nil {
				return err
			}
		}
		return nil
	})
}

// put writes r unless the stored version is at or above r's, and keeps the
// secondary indexes in step.
func (g *gen) put(r *projections.CouponRecord) error {
	id := []byte(r.CouponID)
	if old := g.recs.Get(id); old != nil {
		v, err := storedVersion(old)
		if err != nil {
			return fmt.Errorf("%w %s", err, r.CouponID)
		}
		if r.Version <= v {
			return nil
		}
		prev, err := decodeRecord(old)
		if err != nil {
			return fmt.Errorf("%w %s", err, r.CouponID)
		}
		if err := g.unindex(&prev); err != nil {
			return err
		}
	}
	if err := g.recs.Put(id, encodeRecord(r)); err != nil {
		return err
	}
	if err := g.byUser.Put(userKey(r), nil); err != nil {
		return err
	}
	if err := g.byBatch.Put(batchKey(r), batchSummary(r)); err != nil {
		return err
	}
	if indexedRedemption(r) {
		return g.redeemed.Put(redeemedKey(r), redeemedValue(r))
	}
	return nil
}

func (g *gen) unindex(r *projections.CouponRecord) error {
	if err := g.byUser.Delete(userKey(r)); err != nil {
		return err
	}
	if err := g.byBatch.Delete(batchKey(r)); err != nil {
		return err
	}
	if indexedRedemption(r) {
		return g.redeemed.Delete(redeemedKey(r))
	}
	return nil
}

func indexedRedemption(r *projections.CouponRecord) bool {
	return r.Status == statusRedeemed && !r.RedeemedAt.IsZero()
}

// SaveCheckpoint implements projections.HistoryIndex.
func (ix *Index) SaveCheckpoint(ctx context.Context, pos uint64) error {
	return ix.update(ctx, 0, func(g *gen) error { return putUint(g.info, keyCheckpoint, pos) })
}

// ---- reads ----

// Checkpoint implements projections.HistoryIndex.
func (ix *Index) Checkpoint(ctx context.Context) (uint64, error) {
	var cp uint64
	err := ix.view(ctx, 0, func(g *gen) error {
		cp = getUint(g.info, keyCheckpoint)
		return nil
	})
	return cp, err
}

// Get implements projections.HistoryIndex.
func (ix *Index) Get(ctx context.Context, couponIDs []string) (map[string]projections.CouponRecord, error) {
	return ix.get(ctx, 0, couponIDs)
}

func (ix *Index) get(ctx context.Context, id uint64, couponIDs []string) (map[string]projections.CouponRecord, error) {
	out := make(map[string]projections.CouponRecord, len(couponIDs))
	err := ix.view(ctx, id, func(g *gen) error {
		for _, cid := range couponIDs {
			if _, done := out[cid]; done || cid == "" {
				continue
			}
			v := g.recs.Get([]byte(cid))
			if v == nil {
				continue
			}
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("%w %s", err, cid)
			}
			out[cid] = r
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ListByUser implements projections.HistoryIndex.
func (ix *Index) ListByUser(ctx context.Context, userID string, statuses []string, cursor string, limit int) (projections.HistoryPage, error) {
	if err := histkit.CheckID("user_id", userID); err != nil {
		return projections.HistoryPage{}, err
	}
	sts, err := histkit.Statuses(statuses)
	if err != nil {
		return projections.HistoryPage{}, err
	}
	if limit, err = histkit.ListLimit(limit); err != nil {
		return projections.HistoryPage{}, err
	}
	var after *histkit.Key
	if cursor != "" {
		k, err := histkit.DecodeCursor(cursor)
		if err != nil {
			return projections.HistoryPage{}, err
		}
		after = &k
	}
	var page projections.HistoryPage
	err = ix.view(ctx, 0, func(g *gen) error {
		ids := g.listIDs(userID, sts, after, limit+1)
		more := len(ids) > limit
		if more {
			ids = ids[:limit]
		}
		page.Records = make([]projections.CouponRecord, 0, len(ids))
		for _, id := range ids {
			v := g.recs.Get([]byte(id))
			if v == nil {
				return fmt.Errorf("%w: index entry without record %s", errCorrupt, id)
			}
			r, err := decodeRecord(v)
			if err != nil {
				return fmt.Errorf("%w %s", err, id)
			}
			page.Records = append(page.Records, r)
		}
		if more {
			page.Next = histkit.EncodeCursor(histkit.KeyOf(&page.Records[len(page.Records)-1]))
		}
		return nil
	})
	if err != nil {
		return projections.HistoryPage{}, err
	}
	return page, nil
}

// listStream walks one status's byuser entries of a user backwards.
type listStream struct {
	c      *bolt.Cursor
	prefix []byte
	key    []byte // current key, nil when exhausted
}

func (s *listStream) suffix() []byte { return s.key[len(s.prefix):] }

func (s *listStream) keep(k []byte) {
	if k != nil && !bytes.HasPrefix(k, s.prefix) {
		k = nil
	}
	s.key = k
}

// listIDs returns up to n coupon ids of the user's records with one of the
// statuses, in listing order, strictly after the key after (if any).
func (g *gen) listIDs(user string, statuses []string, after *histkit.Key, n int) []string {
	streams := make([]*listStream, 0, len(statuses))
	for _, st := range statuses {
		s := &listStream{c: g.byUser.Cursor(), prefix: userPrefix(user, st)}
		var bound []byte // the first key not to list; nil: past the prefix
		if after != nil {
			bound = append(appendTimeKey(bytes.Clone(s.prefix), after.Ended), after.ID...)
		} else {
			bound = prefixSuccessor(s.prefix)
		}
		// The last key below bound.
		var k []byte
		if bound != nil {
			k, _ = s.c.Seek(bound)
		}
		if k == nil {
			k, _ = s.c.Last()
		} else {
			k, _ = s.c.Prev()
		}
		s.keep(k)
		if s.key != nil {
			streams = append(streams, s)
		}
	}
	ids := make([]string, 0, n)
	for len(ids) < n && len(streams) > 0 {
		best := 0
		for i := 1; i < len(streams); i++ {
			if bytes.Compare(streams[i].suffix(), streams[best].suffix()) > 0 {
				best = i
			}
		}
		s := streams[best]
		ids = append(ids, string(s.suffix()[timeKeyLen:]))
		k, _ := s.c.Prev()
		s.keep(k)
		if s.key == nil {
			streams = slices.Delete(streams, best, best+1)
		}
	}
	return ids
}

// prefixSuccessor is the smallest key above every key starting with p, or
// nil if there is none.
func prefixSuccessor(p []byte) []byte {
	s := bytes.Clone(p)
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] < 0xff {
			s[i]++
			return s[:i+1]
		}
	}
	return nil
}

// rangeKeys is a TimeRange as time keys; nil bounds are open.
type rangeKeys struct{ from, to []byte }

func keysOf(r projections.TimeRange) rangeKeys {
	var rk rangeKeys
	if !r.From.IsZero() {
		rk.from = timeKey(r.From)
	}
	if !r.To.IsZero() {
		rk.to = timeKey(r.To)
	}
	return rk
}

// in tells whether the time with key k is set and in range.
func (rk rangeKeys) in(k []byte) bool {
	if bytes.Equal(k, zeroTimeKey) {
		return false
	}
	if rk.from != nil && bytes.Compare(k, rk.from) < 0 {
		return false
	}
	return rk.to == nil || bytes.Compare(k, rk.to) < 0
}

// BatchReport implements projections.HistoryIndex.
func (ix *Index) BatchReport(ctx context.Context, batchID string, r projections.TimeRange) (projections.BatchReport, error) {
	if err := histkit.CheckID("batch_id", batchID); err != nil {
		return projections.BatchReport{}, err
	}
	if err := histkit.CheckRange(r); err != nil {
		return projections.BatchReport{}, err
	}
	var rep projections.BatchReport
	err := ix.view(ctx, 0, func(g *gen) error {
		var err error
		rep, err = g.batchReport(batchID, keysOf(r))
		return err
	})
	return rep, err
}

func (g *gen) batchReport(batch string, rk rangeKeys) (projections.BatchReport, error) {
	rep := projections.BatchReport{BatchID: batch}
	prefix := batchPrefix(batch)
	c := g.byBatch.Cursor()
	for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
		if len(v) != summaryLen {
			return projections.BatchReport{}, fmt.Errorf("%w: batch summary %q", errCorrupt, k)
		}
		if rk.in(v[1:13]) {
			rep.Claimed++
		}
		switch v[0] {
		case sumRedeemed:
			if rk.in(v[13:25]) {
				rep.Redeemed++
				rep.TotalDiscount += int64(binary.BigEndian.Uint64(v[37:45]))
			}
		case sumExpired:
			if rk.in(v[25:37]) {
				rep.Expired++
			}
		}
	}
	return rep, nil
}

type tally struct {
	id       string
	count    int64
	discount int64
}

// redemptions tallies the redemptions in range by batch (byUser false) or
// by user, ranked.
func (g *gen) redemptions(rk rangeKeys, byUser bool) ([]tally, error) {
	m := map[string]*tally{}
	c := g.redeemed.Cursor()
	var k, v []byte
	if rk.from != nil {
		k, v = c.Seek(rk.from)
	} else {
		k, v = c.First()
	}
	for ; k != nil; k, v = c.Next() {
		if len(k) < timeKeyLen {
			return nil, fmt.Errorf("%w: redemption key %q", errCorrupt, k)
		}
		if rk.to != nil && bytes.Compare(k[:timeKeyLen], rk.to) >= 0 {
			break
		}
		batch, user, discount, err := decodeRedeemedValue(v)
		if err != nil {
			return nil, err
		}
		id := batch
		if byUser {
			id = user
		}
		t := m[id]
		if t == nil {
			t = &tally{id: id}
			m[id] = t
		}
		t.count++
		t.discount += discount
	}
	out := make([]tally, 0, len(m))
	for _, t := range m {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b tally) int {
		if c := cmp.Compare(b.count, a.count); c != 0 {
			return c
		}
		if c := cmp.Compare(b.discount, a.discount); c != 0 {
			return c
		}
		return cmp.Compare(a.id, b.id)
	})
	return out, nil
}

func checkTop(r projections.TimeRange, limit int) (int, error) {
	if err := histkit.CheckRange(r); err != nil {
		return 0, err
	}
	return histkit.TopLimit(limit)
}

// TopBatches implements projections.HistoryIndex.
func (ix *Index) TopBatches(ctx context.Context, r projections.TimeRange, limit int) ([]projections.BatchReport, error) {
	limit, err := checkTop(r, limit)
	if err != nil {
		return nil, err
	}
	rk := keysOf(r)
	var out []projections.BatchReport
	err = ix.view(ctx, 0, func(g *gen) error {
		ts, err := g.redemptions(rk, false)
		if err != nil {
			return err
		}
		ts = ts[:min(limit, len(ts))]
		out = make([]projections.BatchReport, 0, len(ts))
		for _, t := range ts {
			rep, err := g.batchReport(t.id, rk)
			if err != nil {
				return err
			}
			out = append(out, rep)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// TopUsers implements projections.HistoryIndex.
func (ix *Index) TopUsers(ctx context.Context, r projections.TimeRange, limit int) ([]projections.UserReport, error) {
	limit, err := checkTop(r, limit)
	if err != nil {
		return nil, err
	}
	var out []projections.UserReport
	err = ix.view(ctx, 0, func(g *gen) error {
		ts, err := g.redemptions(keysOf(r), true)
		if err != nil {
			return err
		}
		ts = ts[:min(limit, len(ts))]
		out = make([]projections.UserReport, 0, len(ts))
		for _, t := range ts {
			out = append(out, projections.UserReport{UserID: t.id, Redeemed: t.count, TotalDiscount: t.discount})
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ---- rebuilds ----

// Rebuild implements projections.HistoryIndex: it creates an empty
// generation (checkpoint 0) for the returned handle.
func (ix *Index) Rebuild(ctx context.Context) (projections.HistoryRebuild, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var id uint64
	err := ix.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		id = getUint(meta, keyNext)
		if id == 0 {
			return fmt.Errorf("%w: no next generation id", errCorrupt)
		}
		if err := putUint(meta, keyNext, id+1); err != nil {
			return err
		}
		_, err := createGen(tx.Bucket(bucketGens), id)
		return err
	})
	if err != nil {
		return nil, mapErr(err)
	}
	return &Rebuild{ix: ix, id: id}, nil
}

// Rebuild writes a fresh generation; see the package doc.
type Rebuild struct {
	ix   *Index
	id   uint64
	mu   sync.RWMutex // held exclusively by Commit and Abort
	done bool
}

func (rb *Rebuild) use() error {
	if rb.done {
		return ErrRebuildFinished
	}
	return nil
}

// Upsert writes to the new generation.
func (rb *Rebuild) Upsert(ctx context.Context, recs []projections.CouponRecord) error {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return err
	}
	return rb.ix.upsert(ctx, rb.id, recs)
}

// Get reads from the new generation.
func (rb *Rebuild) Get(ctx context.Context, couponIDs []string) (map[string]projections.CouponRecord, error) {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return nil, err
	}
	return rb.ix.get(ctx, rb.id, couponIDs)
}

// SaveCheckpoint sets the new generation's checkpoint.
func (rb *Rebuild) SaveCheckpoint(ctx context.Context, pos uint64) error {
	rb.mu.RLock()
	defer rb.mu.RUnlock()
	if err := rb.use(); err != nil {
		return err
	}
	return rb.ix.update(ctx, rb.id, func(g *gen) error { return putUint(g.info, keyCheckpoint, pos) })
}

// Commit points reads at the new generation and deletes the old one, in
// one transaction.
func (rb *Rebuild) Commit(ctx context.Context) error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err := rb.use(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := rb.ix.db.Update(func(tx *bolt.Tx) error {
		gens := tx.Bucket(bucketGens)
		if openGen(gens, rb.id) == nil {
			return ErrRebuildFinished
		}
		meta := tx.Bucket(bucketMeta)
		old := getUint(meta, keyCurrent)
		if err := putUint(meta, keyCurrent, rb.id); err != nil {
			return err
		}
		if old == rb.id {
			return nil
		}
		if err := gens.DeleteBucket(genKey(old)); err != nil && !errors.Is(err, berrors.ErrBucketNotFound) {
			return err
		}
		return nil
	})
	if err != nil {
		return mapErr(err)
	}
	rb.done = true
	return nil
}

// Abort deletes the new generation.
func (rb *Rebuild) Abort(ctx context.Context) error {
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if err := rb.use(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	err := rb.ix.db.Update(func(tx *bolt.Tx) error {
		if currentID(tx) == rb.id {
			return ErrRebuildFinished
		}
		err := tx.Bucket(bucketGens).DeleteBucket(genKey(rb.id))
		if errors.Is(err, berrors.ErrBucketNotFound) {
			return ErrRebuildFinished
		}
		return err
	})
	if err != nil {
		return mapErr(err)
	}
	rb.done = true
	return nil
}

// generations lists the generation ids in the file and the current one
// (for tests).
func (ix *Index) generations() (ids []uint64, current uint64, err error) {
	err = ix.db.View(func(tx *bolt.Tx) error {
		current = currentID(tx)
		return tx.Bucket(bucketGens).ForEach(func(k, _ []byte) error {
			ids = append(ids, binary.BigEndian.Uint64(k))
			return nil
		})
	})
	return ids, current, err
}
