// Package boltstore is an embedded, durable event store (es.Store) on
// go.etcd.io/bbolt, kept in one file (events.db) of a directory.
//
// # Writes: group commit
//
// All appends go through one committer goroutine. A caller encodes its events,
// then hands the append to the committer over an unbuffered channel. The
// committer takes one append, then every other append that is waiting at
// that moment (those that arrived while the previous commit was syncing), up
// to Options.MaxBatch, optionally waiting Options.MaxBatchDelay for more. It
// checks each append's expected version in order against the stream heads
// (an in-memory cache backed by the heads bucket, updated as the batch
// progresses, so two appends to one stream in one batch are checked in
// order), answers the mismatches at once with a domain.ErrConcurrency error,
// writes all accepted appends in one bolt transaction (one fsync), and then
// answers their callers. A rejected append never fails the others.
//
// # Layout
//
//	events   big-endian position            -> record (see codec.go)
//	streams  uvarint len + id + BE revision -> big-endian position
//	heads    stream id                      -> big-endian last revision
//	meta     "format"                       -> 1
//
// Positions start at 1 and are contiguous; revisions start at 0.
//
// # Cancellation and ambiguous appends
//
// An Append whose context is done before the committer takes it returns
// ctx.Err() and was not written. Once taken, the append is committed or not
// regardless of the context; if the caller's context ends while the commit is
// under way, Append returns an error matching both ErrOutcomeUnknown and
// ctx.Err(), and the events may or may not be durable. The same holds for
// an error from the commit itself (ErrOutcomeUnknown and
// domain.ErrUnavailable). Callers reconcile by reading the stream and looking
// for their event IDs.
package boltstore

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// FileName is the name of the database file inside the store directory.
const FileName = "events.db"

// MaxStreamIDLen is the longest stream id accepted, in bytes.
const MaxStreamIDLen = 1024

const dbFormat = 1

var (
	bucketEvents  = []byte("events")
	bucketStreams = []byte("streams")
	bucketHeads   = []byte("heads")
	bucketMeta    = []byte("meta")
	keyFormat     = []byte("format")
)

var (
	// ErrClosed is returned by calls on a closed store. It matches
	// domain.ErrUnavailable.
	ErrClosed = domain.Errorf(domain.ErrUnavailable, "boltstore: store closed")
	// ErrOutcomeUnknown marks an append that may or may not have been
	// written: its caller gave up while it was being committed, or the
	// commit failed.
	ErrOutcomeUnknown = errors.New("boltstore: append outcome unknown")
)

// Store is a bbolt event store. It is safe for concurrent use.
type Store struct {
	db   *bolt.DB
	opts Options

	reqs    chan *appendReq // unbuffered: a send succeeds when the committer takes it
	closing chan struct{}   // closed by Close
	stopped chan struct{}   // closed when the committer has exited

	mu        sync.Mutex // guards closed and subs.Add
	closed    bool
	subs      sync.WaitGroup
	closeOnce sync.Once
	closeErr  error

	committed atomic.Uint64 // position of the newest committed event
	notifyMu  sync.Mutex
	notify    chan struct{} // closed and replaced after every commit

	received atomic.Int64 // appends taken by the committer (for tests)

	// Owned by the committer goroutine.
	lastPos  uint64
	heads    map[string]int64 // stream -> last revision, -1 for none
	overlay  map[string]int64 // heads changed by the batch being written
	accepted []*appendReq
	arena    []byte // keys and small values of the open write tx
	keyBuf   []byte
}

type appendReq struct {
	ctx      context.Context
	stream   string
	expected es.ExpectedVersion
	buf      []byte // encoded records back to back
	ends     []int  // ends[i] is where record i ends in buf
	res      es.AppendResult
	done     chan appendResp // buffered 1; the committer replies once
}

type appendResp struct {
	res es.AppendResult
	err error
}

const maxPooledBuf = 64 << 10

var reqPool = sync.Pool{New: func() any { return &appendReq{done: make(chan appendResp, 1)} }}

func putReq(r *appendReq) {
	r.ctx, r.stream, r.res = nil, "", es.AppendResult{}
	if cap(r.buf) > maxPooledBuf {
		r.buf = nil
	}
	r.buf, r.ends = r.buf[:0], r.ends[:0]
	reqPool.Put(r)
}

var _ es.Store = (*Store)(nil)

// Open opens (creating it if needed) the store kept in dir and starts its
// committer. Close it when done.
func Open(dir string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	if dir == "" {
		return nil, domain.Invalid("dir", "required")
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("boltstore: %w", err)
	}
	path := filepath.Join(dir, FileName)
	_, statErr := os.Stat(path)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:      opts.OpenTimeout,
		FreelistType: bolt.FreelistMapType,
		NoSync:       false,
	})
	if err != nil {
		return nil, fmt.Errorf("boltstore: open %s: %w", path, err)
	}
	db.NoSync = false // every commit is fsync'd
	var last uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketEvents, bucketStreams, bucketHeads, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyFormat); v == nil {
			if err := meta.Put(keyFormat, []byte{dbFormat}); err != nil {
				return err
			}
		} else if len(v) != 1 || v[0] != dbFormat {
			return fmt.Errorf("unsupported format %v", v)
		}
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	if err == nil && errors.Is(statErr, os.ErrNotExist) {
		err = syncDir(dir) // make the new file's directory entry durable
	}
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("boltstore: init %s: %w", path, err)
	}
	s := &Store{
		db:      db,
		opts:    opts,
		reqs:    make(chan *appendReq),
		closing: make(chan struct{}),
		stopped: make(chan struct{}),
		notify:  make(chan struct{}),
		lastPos: last,
		heads:   make(map[string]int64),
		overlay: make(map[string]int64),
	}
	s.committed.Store(last)
	go s.run()
	return s, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// Append implements es.Store. It needs at least one event, each with a
// Type; an empty event ID is replaced by a random UUID. The caller's slices
// are copied before Append returns. See the package doc for how a cancelled
// context is handled.
func (s *Store) Append(ctx context.Context, stream string, expected es.ExpectedVersion, events ...es.EventData) (es.AppendResult, error) {
	if err := validateAppend(stream, expected, events); err != nil {
		return es.AppendResult{}, err
	}
	if err := ctx.Err(); err != nil {
		return es.AppendResult{}, err
	}
	select {
	case <-s.closing:
		return es.AppendResult{}, ErrClosed
	default:
	}

	r := reqPool.Get().(*appendReq)
	r.ctx, r.stream, r.expected = ctx, stream, expected
	size := 0
	for i := range events {
		size += recordSize(stream, &events[i])
	}
	if cap(r.buf) < size {
		r.buf = make([]byte, 0, size)
	}
	for i := range events {
		ev := &events[i]
		if ev.ID == "" {
			cp := *ev
			cp.ID = uuid.NewString()
			ev = &cp
		}
		r.buf = appendRecord(r.buf, stream, ev)
		r.ends = append(r.ends, len(r.buf))
	}

	select {
	case s.reqs <- r:
	case <-ctx.Done():
		putReq(r)
		return es.AppendResult{}, ctx.Err()
	case <-s.closing:
		putReq(r)
		return es.AppendResult{}, ErrClosed
	}
	select {
	case resp := <-r.done:
		putReq(r)
		return resp.res, resp.err
	case <-ctx.Done():
		// The committer still owns r: leave it to the garbage collector.
		return es.AppendResult{}, fmt.Errorf("%w: %w", ErrOutcomeUnknown, ctx.Err())
	}
}

func validateAppend(stream string, expected es.ExpectedVersion, events []es.EventData) error {
	if err := validateStream(stream); err != nil {
		return err
	}
	if expected < 0 && expected != es.Any && expected != es.NoStream && expected != es.StreamExists {
		return domain.Invalid("expected", "unknown expected version %d", expected)
	}
	if len(events) == 0 {
		return domain.Invalid("events", "at least one event required")
	}
	for i := range events {
		if events[i].Type == "" {
			return domain.Invalid("events", "event %d: type required", i)
		}
	}
	return nil
}

func validateStream(stream string) error {
	if stream == "" {
		return domain.Invalid("stream", "required")
	}
	if len(stream) > MaxStreamIDLen {
		return domain.Invalid("stream", "longer than %d bytes", MaxStreamIDLen)
	}
	return nil
}

// ---- committer ----

func (s *Store) run() {
	defer close(s.stopped)
	batch := make([]*appendReq, 0, s.opts.MaxBatch)
	for {
		select {
		case r := <-s.reqs:
			s.received.Add(1)
			batch = s.collect(append(batch[:0], r))
			s.commit(batch)
			clear(batch)
		case <-s.closing:
			// Take the appends that raced with Close, then stop.
			for {
				batch = s.drain(batch[:0])
				if len(batch) == 0 {
					return
				}
				s.commit(batch)
				clear(batch)
			}
		}
	}
}

// drain adds the appends waiting right now.
func (s *Store) drain(batch []*appendReq) []*appendReq {
	for len(batch) < s.opts.MaxBatch {
		select {
		case r := <-s.reqs:
			s.received.Add(1)
			batch = append(batch, r)
		default:
			return batch
		}
	}
	return batch
}

// collect completes a batch.
func (s *Store) collect(batch []*appendReq) []*appendReq {
	if s.opts.MaxBatchDelay <= 0 || len(batch) >= s.opts.MaxBatch {
		return s.drain(batch)
	}
	timer := time.NewTimer(s.opts.MaxBatchDelay)
	defer timer.Stop()
	for len(batch) < s.opts.MaxBatch {
		select {
		case r := <-s.reqs:
			s.received.Add(1)
			batch = append(batch, r)
		case <-timer.C:
			return s.drain(batch)
		case <-s.closing:
			return s.drain(batch)
		}
	}
	return batch
}

func (r *appendReq) reply(res es.AppendResult, err error) {
	r.done <- appendResp{res: res, err: err}
}

// commit checks, writes and answers one batch.
func (s *Store) commit(batch []*appendReq) {
	tx, err := s.db.Begin(true)
	if err != nil {
		err = s.commitFailed("begin", err)
		for _, r := range batch {
			r.reply(es.AppendResult{}, err)
		}
		return
	}
	evb := tx.Bucket(bucketEvents)
	evb.FillPercent = 1 // keys only ever grow: pack pages full
	stb := tx.Bucket(bucketStreams)
	hdb := tx.Bucket(bucketHeads)
	nanos := s.opts.Now().UnixNano()

	clear(s.overlay)
	if cap(s.arena) > 4<<20 {
		s.arena = nil
	}
	s.arena = s.arena[:0]
	accepted := s.accepted[:0]
	pos := s.lastPos

	// Rejections are answered only after the commit: a caller refused
	// because another append of this batch took its revision must be able
	// to read that append when it reloads.
	type rejection struct {
		r   *appendReq
		err error
	}
	var rejected []rejection
	abort := func(i int, what string, err error) {
		_ = tx.Rollback()
		err = s.commitFailed(what, err)
		for _, r := range accepted {
			r.reply(es.AppendResult{}, err)
		}
		for _, rj := range rejected {
			rj.r.reply(es.AppendResult{}, err)
		}
		for _, r := range batch[i:] {
			r.reply(es.AppendResult{}, err)
		}
		clear(accepted)
	}

	for i, r := range batch {
		if err := r.ctx.Err(); err != nil {
			r.reply(es.AppendResult{}, err) // not written: the caller gave up first
			continue
		}
		cur, ok := s.overlay[r.stream]
		if !ok {
			if cur, err = s.head(hdb, r.stream); err != nil {
				abort(i, "read head", err)
				return
			}
		}
		if err := checkExpected(r.stream, r.expected, cur); err != nil {
			rejected = append(rejected, rejection{r, err})
			continue
		}
		start := 0
		for k, end := range r.ends {
			rec := r.buf[start:end:end]
			start = end
			rev := uint64(cur + 1 + int64(k))
			pos++
			patchRecord(rec, rev, nanos)
			a := len(s.arena)
			s.arena = binary.BigEndian.AppendUint64(s.arena, pos)
			posKey := s.arena[a:len(s.arena):len(s.arena)]
			if err := evb.Put(posKey, rec); err != nil {
				abort(i, "put event", err)
				return
			}
			b := len(s.arena)
			s.arena = appendStreamPrefix(s.arena, r.stream)
			s.arena = binary.BigEndian.AppendUint64(s.arena, rev)
			if err := stb.Put(s.arena[b:len(s.arena):len(s.arena)], posKey); err != nil {
				abort(i, "put stream index", err)
				return
			}
		}
		cur += int64(len(r.ends))
		s.overlay[r.stream] = cur
		r.res = es.AppendResult{NextExpected: uint64(cur), Position: pos}
		accepted = append(accepted, r)
	}
	s.accepted = accepted
	if len(accepted) == 0 {
		_ = tx.Rollback()
		for _, rj := range rejected {
			rj.r.reply(es.AppendResult{}, rj.err)
		}
		return
	}
	for stream, rev := range s.overlay {
		a := len(s.arena)
		s.arena = append(s.arena, stream...)
		b := len(s.arena)
		s.arena = binary.BigEndian.AppendUint64(s.arena, uint64(rev))
		if err := hdb.Put(s.arena[a:b:b], s.arena[b:len(s.arena):len(s.arena)]); err != nil {
			abort(len(batch), "put head", err)
			return
		}
	}
	if err := tx.Commit(); err != nil {
		err = s.commitFailed("commit", err)
		for _, r := range accepted {
			r.reply(es.AppendResult{}, err)
		}
		for _, rj := range rejected {
			rj.r.reply(es.AppendResult{}, err)
		}
		clear(accepted)
		return
	}

	for stream, rev := range s.overlay {
		s.setHead(stream, rev)
	}
	s.lastPos = pos
	s.committed.Store(pos)
	s.broadcast()
	if s.opts.OnCommit != nil {
		s.opts.OnCommit(len(accepted))
	}
	for _, r := range accepted {
		r.reply(r.res, nil) // r belongs to its caller from here on
	}
	for _, rj := range rejected {
		rj.r.reply(es.AppendResult{}, rj.err)
	}
	clear(accepted)
}

// commitFailed logs a failed write, drops the caches that may no longer
// match the db and returns the error for the callers.
func (s *Store) commitFailed(what string, err error) error {
	s.opts.Logger.Error("boltstore: write failed", "step", what, "err", err)
	clear(s.heads)
	_ = s.db.View(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			s.lastPos = binary.BigEndian.Uint64(k)
		} else {
			s.lastPos = 0
		}
		return nil
	})
	return fmt.Errorf("%w: %w: %s: %w", ErrOutcomeUnknown, domain.ErrUnavailable, what, err)
}

// head is the last revision of stream (-1 when it does not exist), from the
// cache or else the db.
func (s *Store) head(hdb *bolt.Bucket, stream string) (int64, error) {
	if rev, ok := s.heads[stream]; ok {
		return rev, nil
	}
	s.keyBuf = append(s.keyBuf[:0], stream...)
	rev := int64(-1)
	if v := hdb.Get(s.keyBuf); v != nil {
		if len(v) != 8 {
			return 0, fmt.Errorf("%w: head of %q", errCorrupt, stream)
		}
		rev = int64(binary.BigEndian.Uint64(v))
	}
	s.setHead(stream, rev)
	return rev, nil
}

func (s *Store) setHead(stream string, rev int64) {
	if _, ok := s.heads[stream]; !ok {
		if len(s.heads) >= s.opts.HeadCacheSize {
			// Evict about an eighth, from a random point of the map.
			n := max(1, s.opts.HeadCacheSize/8)
			for k := range s.heads {
				delete(s.heads, k)
				if n--; n == 0 {
					break
				}
			}
		}
		stream = strings.Clone(stream) // do not pin the caller's memory
	}
	s.heads[stream] = rev
}

func checkExpected(stream string, exp es.ExpectedVersion, cur int64) error {
	switch {
	case exp == es.Any:
		return nil
	case exp == es.NoStream && cur < 0:
		return nil
	case exp == es.StreamExists && cur >= 0:
		return nil
	case exp >= 0 && int64(exp) == cur:
		return nil
	}
	return domain.Errorf(domain.ErrConcurrency, "stream %s: expected %s, actual %s", stream, fmtExpected(exp), fmtRevision(cur))
}

func fmtExpected(exp es.ExpectedVersion) string {
	switch exp {
	case es.NoStream:
		return "no stream"
	case es.StreamExists:
		return "stream exists"
	case es.Any:
		return "any"
	}
	return fmt.Sprint(int64(exp))
}

func fmtRevision(rev int64) string {
	if rev < 0 {
		return "no stream"
	}
	return fmt.Sprint(rev)
}

// broadcast wakes the subscriptions waiting for new events.
func (s *Store) broadcast() {
	s.notifyMu.Lock()
	ch := s.notify
	s.notify = make(chan struct{})
	s.notifyMu.Unlock()
	close(ch)
}

// wait returns the channel closed by the next commit.
func (s *Store) wait() <-chan struct{} {
	s.notifyMu.Lock()
	defer s.notifyMu.Unlock()
	return s.notify
}

// ---- reads ----

func (s *Store) view(fn func(tx *bolt.Tx) error) error {
	select {
	case <-s.closing:
		return ErrClosed
	default:
	}
	err := s.db.View(fn)
	if errors.Is(err, bolt.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}

// ReadStream implements es.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64) ([]es.RecordedEvent, error) {
	if err := validateStream(stream); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	prefix := appendStreamPrefix(make([]byte, 0, binary.MaxVarintLen64+len(stream)+8), stream)
	seek := binary.BigEndian.AppendUint64(prefix, from)
	prefix = prefix[:len(prefix):len(prefix)]
	out := []es.RecordedEvent{}
	err := s.view(func(tx *bolt.Tx) error {
		evb := tx.Bucket(bucketEvents)
		c := tx.Bucket(bucketStreams).Cursor()
		for k, v := c.Seek(seek); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(k) != len(prefix)+8 || len(v) != 8 {
				return fmt.Errorf("%w: stream index of %q", errCorrupt, stream)
			}
			pos := binary.BigEndian.Uint64(v)
			ev, err := decodeRecord(pos, evb.Get(v))
			if err != nil {
				return err
			}
			if ev.StreamID != stream || ev.Revision != binary.BigEndian.Uint64(k[len(prefix):]) {
				return fmt.Errorf("%w: stream index of %q points at %s@%d", errCorrupt, stream, ev.StreamID, ev.Revision)
			}
			out = append(out, ev)
			if len(out)%1024 == 0 {
				if err := ctx.Err(); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// ReadAll implements es.Store. limit must be positive.
func (s *Store) ReadAll(ctx context.Context, after uint64, limit int) ([]es.RecordedEvent, error) {
	if limit <= 0 {
		return nil, domain.Invalid("limit", "must be positive, got %d", limit)
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return s.readAll(after, limit, make([]es.RecordedEvent, 0, min(limit, 1024)))
}

// readAll appends up to limit events after position after to dst.
func (s *Store) readAll(after uint64, limit int, dst []es.RecordedEvent) ([]es.RecordedEvent, error) {
	if after == math.MaxUint64 {
		return dst, nil
	}
	var seek [8]byte
	binary.BigEndian.PutUint64(seek[:], after+1)
	err := s.view(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketEvents).Cursor()
		for k, v := c.Seek(seek[:]); k != nil && limit > 0; k, v = c.Next() {
			if len(k) != 8 {
				return fmt.Errorf("%w: event key %x", errCorrupt, k)
			}
			ev, err := decodeRecord(binary.BigEndian.Uint64(k), v)
			if err != nil {
				return err
			}
			dst = append(dst, ev)
			limit--
		}
		return nil
	})
	return dst, err
}

// LastPosition implements es.Store.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	var last uint64
	err := s.view(func(tx *bolt.Tx) error {
		if k, _ := tx.Bucket(bucketEvents).Cursor().Last(); k != nil {
			last = binary.BigEndian.Uint64(k)
		}
		return nil
	})
	return last, err
}

// Subscribe implements es.Store. It reads stored events in pages of
// Options.SubscribePageSize, then waits for commits and reads on from the
// last delivered position; the handler never runs inside a transaction. It
// returns ErrClosed when the store is closed.
func (s *Store) Subscribe(ctx context.Context, after uint64, h es.Handler) error {
	if h == nil {
		return domain.Invalid("handler", "required")
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.subs.Add(1)
	s.mu.Unlock()
	defer s.subs.Done()

	pos := after
	var page []es.RecordedEvent
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		// Take the wake-up channel before reading: a commit after this
		// point closes it, a commit before it is visible to the read.
		wake := s.wait()
		if s.committed.Load() > pos {
			var err error
			page, err = s.readAll(pos, s.opts.SubscribePageSize, page[:0])
			if err != nil {
				return err
			}
			for _, ev := range page {
				if err := ctx.Err(); err != nil {
					return err
				}
				if err := h(ctx, ev); err != nil {
					return err
				}
				pos = ev.Position
			}
			n := len(page)
			clear(page)
			if n > 0 {
				continue
			}
		}
		select {
		case <-wake:
		case <-ctx.Done():
			return ctx.Err()
		case <-s.closing:
			return ErrClosed
		}
	}
}

// Close stops accepting appends, lets the committer write the appends it
// already took, waits for the subscriptions to return (a handler that never
// returns blocks Close) and closes the db. Calls after Close fail with
// ErrClosed. Close is idempotent.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		close(s.closing)
		s.mu.Unlock()
		<-s.stopped
		s.subs.Wait()
		s.closeErr = s.db.Close()
	})
	return s.closeErr
}
