package boltstore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/conformance"
)

func openT(t *testing.T, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	conformance.Run(t, func(t *testing.T) es.Store {
		return openT(t, t.TempDir(), Options{})
	})
}

func TestConformanceReopen(t *testing.T) {
	conformance.RunReopen(t, func(t *testing.T, dir string) es.Store {
		return openT(t, dir, Options{})
	})
}

func ev(i int) es.EventData {
	return es.EventData{ID: fmt.Sprintf("id-%d", i), Type: "t.v1", Data: fmt.Appendf(nil, `{"i":%d}`, i)}
}

// waitReceived waits until the committer has taken n appends in total.
func waitReceived(t *testing.T, s *Store, n int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for s.received.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("committer took %d appends, want %d", s.received.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

type result struct {
	res es.AppendResult
	err error
}

func appendAsync(s *Store, ctx context.Context, stream string, exp es.ExpectedVersion, evs ...es.EventData) <-chan result {
	ch := make(chan result, 1)
	go func() {
		res, err := s.Append(ctx, stream, exp, evs...)
		ch <- result{res, err}
	}()
	return ch
}

func TestDurableAcrossReopen(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	ctx := t.Context()
	var pos uint64
	for i := range 30 {
		stream := fmt.Sprintf("s-%d", i%3)
		res, err := s.Append(ctx, stream, es.Any, ev(i), ev(100+i))
		if err != nil {
			t.Fatal(err)
		}
		if res.Position != pos+2 {
			t.Fatalf("position %d, want %d (contiguous)", res.Position, pos+2)
		}
		pos = res.Position
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, FileName)); err != nil {
		t.Fatalf("database file: %v", err)
	}

	s = openT(t, dir, Options{})
	defer s.Close()
	if p, _ := s.LastPosition(ctx); p != 60 {
		t.Fatalf("LastPosition after reopen = %d, want 60", p)
	}
	for k := range 3 {
		stream := fmt.Sprintf("s-%d", k)
		evs, err := s.ReadStream(ctx, stream, 0)
		if err != nil || len(evs) != 20 {
			t.Fatalf("ReadStream(%s) = %d events, %v; want 20", stream, len(evs), err)
		}
		// Heads survived: only the exact last revision is accepted.
		if _, err := s.Append(ctx, stream, es.Exact(18), ev(0)); !errors.Is(err, domain.ErrConcurrency) {
			t.Fatalf("stale Exact after reopen: %v, want concurrency error", err)
		}
		res, err := s.Append(ctx, stream, es.Exact(19), ev(0))
		if err != nil {
			t.Fatal(err)
		}
		if res.NextExpected != 20 || res.Position != 61+uint64(k) {
			t.Fatalf("append after reopen = %+v, want revision 20 at position %d", res, 61+k)
		}
	}
}

func TestGroupCommitBatches(t *testing.T) {
	const appenders, each = 64, 16
	var commits, committed atomic.Int64
	var largest atomic.Int64
	s := openT(t, t.TempDir(), Options{OnCommit: func(n int) {
		commits.Add(1)
		committed.Add(int64(n))
		if int64(n) > largest.Load() {
			largest.Store(int64(n))
		}
	}})
	defer s.Close()
	ctx := t.Context()
	var wg sync.WaitGroup
	for g := range appenders {
		wg.Go(func() {
			exp := es.NoStream
			for i := range each {
				res, err := s.Append(ctx, fmt.Sprintf("g-%d", g), exp, ev(i))
				if err != nil {
					t.Error(err)
					return
				}
				exp = es.Exact(res.NextExpected)
			}
		})
	}
	wg.Wait()
	const total = appenders * each
	t.Logf("%d appends in %d commits (largest batch %d)", total, commits.Load(), largest.Load())
	if committed.Load() != total {
		t.Fatalf("OnCommit counted %d appends, want %d", committed.Load(), total)
	}
	if c := commits.Load(); c > total/4 {
		t.Fatalf("%d commits for %d concurrent appends: group commit is not batching", c, total)
	}
}

func TestBatchChecksInOrderAndRejectsIndividually(t *testing.T) {
	var sizes []int
	var mu sync.Mutex
	s := openT(t, t.TempDir(), Options{MaxBatch: 3, MaxBatchDelay: time.Minute, OnCommit: func(n int) {
		mu.Lock()
		sizes = append(sizes, n)
		mu.Unlock()
	}})
	defer s.Close()
	ctx := t.Context()

	// One batch: s created, s appended against the revision just created in
	// the same batch, then a stale append to s.
	a := appendAsync(s, ctx, "s", es.NoStream, ev(1))
	waitReceived(t, s, 1)
	b := appendAsync(s, ctx, "s", es.Exact(0), ev(2), ev(3))
	waitReceived(t, s, 2)
	c := appendAsync(s, ctx, "s", es.Exact(0), ev(4))
	ra, rb, rc := <-a, <-b, <-c
	if ra.err != nil || ra.res.NextExpected != 0 {
		t.Fatalf("first = %+v", ra)
	}
	if rb.err != nil || rb.res.NextExpected != 2 || rb.res.Position != ra.res.Position+2 {
		t.Fatalf("second = %+v, want revision 2 right after the first", rb)
	}
	if !errors.Is(rc.err, domain.ErrConcurrency) {
		t.Fatalf("third = %+v, want a concurrency error", rc)
	}

	// One batch with a rejected append in the middle.
	x := appendAsync(s, ctx, "x", es.NoStream, ev(5))
	waitReceived(t, s, 4)
	bad := appendAsync(s, ctx, "s", es.NoStream, ev(6))
	waitReceived(t, s, 5)
	y := appendAsync(s, ctx, "y", es.StreamExists, ev(7))
	waitReceived(t, s, 6)
	z := appendAsync(s, ctx, "y", es.Any, ev(8)) // next batch
	waitReceived(t, s, 7)
	rx, rbad, ry := <-x, <-bad, <-y
	if rx.err != nil || !errors.Is(rbad.err, domain.ErrConcurrency) || !errors.Is(ry.err, domain.ErrConcurrency) {
		t.Fatalf("x=%v bad=%v y=%v; want ok, conflict, conflict", rx.err, rbad.err, ry.err)
	}
	if err := s.Close(); err != nil { // flushes the last, partial batch
		t.Fatal(err)
	}
	if rz := <-z; rz.err != nil || rz.res.NextExpected != 0 {
		t.Fatalf("append drained by Close = %+v", rz)
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(sizes) != "[2 1 1]" {
		t.Fatalf("commit sizes %v, want [2 1 1]", sizes)
	}
}

func TestCancelWhileQueuedIsSkipped(t *testing.T) {
	s := openT(t, t.TempDir(), Options{MaxBatch: 2, MaxBatchDelay: time.Minute})
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	a := appendAsync(s, ctx, "a", es.NoStream, ev(1))
	waitReceived(t, s, 1)
	cancel()
	ra := <-a
	if !errors.Is(ra.err, ErrOutcomeUnknown) || !errors.Is(ra.err, context.Canceled) {
		t.Fatalf("cancelled queued append: %v, want ErrOutcomeUnknown and context.Canceled", ra.err)
	}
	if rb := <-appendAsync(s, t.Context(), "b", es.NoStream, ev(2)); rb.err != nil {
		t.Fatal(rb.err)
	}
	// The committer saw the cancellation before writing: nothing landed.
	if evs, _ := s.ReadStream(t.Context(), "a", 0); len(evs) != 0 {
		t.Fatalf("cancelled append was written")
	}
}

func TestAppendWithCancelledContextWritesNothing(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := s.Append(ctx, "a", es.Any, ev(1)); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if p, _ := s.LastPosition(t.Context()); p != 0 {
		t.Fatalf("LastPosition = %d, want 0", p)
	}
}

func TestCloseWhileAppending(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	ctx := t.Context()
	subDone := make(chan error, 1)
	go func() {
		subDone <- s.Subscribe(ctx, 0, func(context.Context, es.RecordedEvent) error { return nil })
	}()

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok       = map[string]bool{}
		rejected = map[string]bool{}
	)
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				e := ev(g*1000 + i)
				_, err := s.Append(ctx, fmt.Sprintf("g-%d", g), es.Any, e)
				mu.Lock()
				if err == nil {
					ok[e.ID] = true
				} else {
					rejected[e.ID] = true
				}
				mu.Unlock()
				if err != nil {
					if !errors.Is(err, ErrClosed) || !errors.Is(err, domain.ErrUnavailable) {
						t.Errorf("append during Close: %v, want ErrClosed", err)
					}
					return
				}
			}
		})
	}
	time.Sleep(30 * time.Millisecond)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	select {
	case err := <-subDone:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Subscribe on Close returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Subscribe did not return on Close")
	}
	if _, err := s.Append(ctx, "a", es.Any, ev(1)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close: %v", err)
	}
	if _, err := s.ReadStream(ctx, "a", 0); !errors.Is(err, ErrClosed) {
		t.Fatalf("ReadStream after Close: %v", err)
	}
	if err := s.Subscribe(ctx, 0, func(context.Context, es.RecordedEvent) error { return nil }); !errors.Is(err, ErrClosed) {
		t.Fatalf("Subscribe after Close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openT(t, dir, Options{})
	defer s.Close()
	evs, err := s.ReadAll(ctx, 0, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, e := range evs {
		seen[e.ID] = true
		if rejected[e.ID] {
			t.Fatalf("append rejected with ErrClosed was written: %s", e.ID)
		}
	}
	for id := range ok {
		if !seen[id] {
			t.Fatalf("acknowledged append %s lost", id)
		}
	}
	if len(evs) != len(ok) {
		t.Fatalf("%d events stored, %d acknowledged", len(evs), len(ok))
	}
	t.Logf("%d appends acknowledged before Close", len(ok))
}

func TestRecordedAtUsesClock(t *testing.T) {
	at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
	s := openT(t, t.TempDir(), Options{Now: func() time.Time { return at }})
	defer s.Close()
	if _, err := s.Append(t.Context(), "a", es.NoStream, ev(1), ev(2)); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.ReadStream(t.Context(), "a", 0)
	for _, e := range evs {
		if !e.RecordedAt.Equal(at) {
			t.Fatalf("RecordedAt = %v, want %v", e.RecordedAt, at)
		}
	}
}

func TestDefaultClockRecordedAt(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	before := time.Now()
	if _, err := s.Append(t.Context(), "a", es.NoStream, ev(1)); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	evs, _ := s.ReadStream(t.Context(), "a", 0)
	if at := evs[0].RecordedAt; at.Before(before.Truncate(time.Microsecond)) || at.After(after) {
		t.Fatalf("RecordedAt %v not within [%v, %v]", at, before, after)
	}
}

func TestEmptyIDIsGenerated(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	in := es.EventData{Type: "t.v1", Data: []byte(`{}`)}
	if _, err := s.Append(t.Context(), "a", es.NoStream, in, in); err != nil {
		t.Fatal(err)
	}
	evs, _ := s.ReadStream(t.Context(), "a", 0)
	if len(evs) != 2 || evs[0].ID == "" || evs[0].ID == evs[1].ID {
		t.Fatalf("generated ids %q %q", evs[0].ID, evs[1].ID)
	}
}

func TestHeadCacheEviction(t *testing.T) {
	s := openT(t, t.TempDir(), Options{HeadCacheSize: 4})
	defer s.Close()
	ctx := t.Context()
	for round := range 3 {
		for k := range 20 {
			exp := es.NoStream
			if round > 0 {
				exp = es.Exact(uint64(round - 1))
			}
			stream := fmt.Sprintf("s-%d", k)
			if _, err := s.Append(ctx, stream, exp, ev(k)); err != nil {
				t.Fatalf("round %d %s: %v", round, stream, err)
			}
			if _, err := s.Append(ctx, stream, exp, ev(k)); !errors.Is(err, domain.ErrConcurrency) {
				t.Fatalf("round %d %s: repeated append: %v", round, stream, err)
			}
		}
	}
	if n := len(s.heads); n > 4 {
		t.Fatalf("head cache holds %d entries, limit 4", n)
	}
}

func TestInvalidArguments(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	defer s.Close()
	ctx := t.Context()
	long := string(make([]byte, MaxStreamIDLen+1))
	cases := map[string]error{}
	_, cases["empty stream"] = s.Append(ctx, "", es.Any, ev(1))
	_, cases["long stream"] = s.Append(ctx, long, es.Any, ev(1))
	_, cases["no events"] = s.Append(ctx, "a", es.Any)
	_, cases["no type"] = s.Append(ctx, "a", es.Any, es.EventData{ID: "x"})
	_, cases["bad expected"] = s.Append(ctx, "a", es.ExpectedVersion(-3), ev(1))
	_, cases["read empty stream"] = s.ReadStream(ctx, "", 0)
	_, cases["limit 0"] = s.ReadAll(ctx, 0, 0)
	cases["nil handler"] = s.Subscribe(ctx, 0, nil)
	for name, err := range cases {
		if !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("%s: %v, want ErrInvalidArgument", name, err)
		}
	}
	if p, _ := s.LastPosition(ctx); p != 0 {
		t.Fatalf("invalid appends wrote events")
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	bad := []Options{
		{MaxBatch: -1}, {MaxBatchDelay: -time.Second}, {OpenTimeout: -1},
		{HeadCacheSize: -1}, {SubscribePageSize: -1},
	}
	for _, o := range bad {
		if err := o.Validate(); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("%+v: Validate = %v", o, err)
		}
		if _, err := Open(t.TempDir(), o); err == nil {
			t.Errorf("%+v: Open accepted invalid options", o)
		}
	}
	d := Options{}.withDefaults()
	if d.MaxBatch != DefaultMaxBatch || d.MaxBatchDelay != 0 || d.Now == nil || d.Logger == nil {
		t.Fatalf("defaults: %+v", d)
	}
}

func TestOpenLockedFails(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	defer s.Close()
	if s2, err := Open(dir, Options{OpenTimeout: 50 * time.Millisecond}); err == nil {
		s2.Close()
		t.Fatal("second Open of a locked store succeeded")
	}
}

func TestSubscribePagesThroughLargeBacklog(t *testing.T) {
	s := openT(t, t.TempDir(), Options{SubscribePageSize: 7})
	defer s.Close()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var evs []es.EventData
	for i := range 100 {
		evs = append(evs, ev(i))
	}
	if _, err := s.Append(ctx, "a", es.NoStream, evs...); err != nil {
		t.Fatal(err)
	}
	var next uint64 = 1
	err := s.Subscribe(ctx, 0, func(_ context.Context, e es.RecordedEvent) error {
		if e.Position != next {
			return fmt.Errorf("got position %d, want %d", e.Position, next)
		}
		if next++; next > 100 {
			cancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || next != 101 {
		t.Fatalf("Subscribe = %v after %d events", err, next-1)
	}
}

func TestCorruptRecordDetected(t *testing.T) {
	if _, err := decodeRecord(1, []byte{9, 9}); !errors.Is(err, errCorrupt) {
		t.Fatalf("decode garbage: %v", err)
	}
	e := ev(1)
	rec := appendRecord(nil, "s", &e)
	if _, err := decodeRecord(1, rec[:len(rec)-1]); !errors.Is(err, errCorrupt) {
		t.Fatalf("decode truncated: %v", err)
	}
	patchRecord(rec, 7, 42)
	got, err := decodeRecord(3, rec)
	if err != nil || got.Revision != 7 || got.Position != 3 || got.RecordedAt.UnixNano() != 42 || got.StreamID != "s" ||
		got.ID != e.ID || string(got.Data) != string(e.Data) || got.Metadata != nil {
		t.Fatalf("decode = %+v, %v", got, err)
	}
}

// A caller refused because another append of the same group commit took
// its revision must see that append when it reads the stream right away.
func TestRejectedAppendSeesTheWinnerAfterReply(t *testing.T) {
	s, err := Open(t.TempDir(), Options{MaxBatchDelay: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	for round := range 20 {
		stream := fmt.Sprintf("race-%d", round)
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := s.Append(ctx, stream, es.NoStream, es.EventData{Type: "t", Data: []byte(`{}`)})
				if errors.Is(err, domain.ErrConcurrency) {
					recs, rerr := s.ReadStream(ctx, stream, 0)
					if rerr != nil || len(recs) != 1 {
						t.Errorf("refused append reads %d events (%v), want the winner's 1", len(recs), rerr)
					}
				} else if err != nil {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
	}
}
