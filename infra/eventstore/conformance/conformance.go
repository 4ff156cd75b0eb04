// Package conformance is the shared test suite of the event store port
// (es.Store). Every adapter runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		conformance.Run(t, func(t *testing.T) es.Store { ... })
//	}
//
// Adapters that keep their data in a directory and can be closed and opened
// again also run RunReopen, which checks durability across a restart.
package conformance

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// waitTimeout bounds every wait of the suite so a broken adapter fails
// instead of hanging.
const waitTimeout = 10 * time.Second

type testCase struct {
	name string
	fn   func(t *testing.T, s es.Store)
	// closes tells that the case closes the store itself.
	closes bool
}

// Run runs the conformance suite. open must return a new, empty store on
// every call; Run closes it when the subtest ends. Subtests run in parallel.
// Recorded times must be after the year 2000 (an injected test clock must
// not start at the Unix epoch).
func Run(t *testing.T, open func(t *testing.T) es.Store) {
	t.Helper()
	cases := []testCase{
		{name: "AppendNoStreamCreatesStream", fn: testAppendNoStream},
		{name: "RevisionsStartAtZeroAndIncrease", fn: testRevisions},
		{name: "ExactVersion", fn: testExact},
		{name: "NoStreamOnExistingStreamConflicts", fn: testNoStreamExisting},
		{name: "StreamExists", fn: testStreamExists},
		{name: "AnyAlwaysAppends", fn: testAny},
		{name: "MultiEventAppendIsAtomicAndContiguous", fn: testMultiEvent},
		{name: "ConcurrentMultiEventAppendsStayContiguous", fn: testConcurrentMultiEvent},
		{name: "ReadStreamMissingIsEmpty", fn: testReadStreamMissing},
		{name: "ReadStreamFrom", fn: testReadStreamFrom},
		{name: "ReadAll", fn: testReadAll},
		{name: "LastPosition", fn: testLastPosition},
		{name: "SubscribeCatchUpThenLive", fn: testSubscribeCatchUpLive},
		{name: "SubscribeFromMiddle", fn: testSubscribeFromMiddle},
		{name: "SubscribeHandlerErrorStops", fn: testSubscribeHandlerError},
		{name: "SubscribeContextCancel", fn: testSubscribeCancel},
		{name: "ConcurrentAppendsOneStream", fn: testConcurrentOneStream},
		{name: "ConcurrentOptimisticRetriesOneStream", fn: testOptimisticRetries},
		{name: "ConcurrentAppendsManyStreams", fn: testConcurrentManyStreams},
		{name: "AppendCancelledContextDoesNotHang", fn: testAppendCancelled},
		{name: "EventRoundTrip", fn: testRoundTrip},
		{name: "AppendAfterCloseFails", fn: testAppendAfterClose, closes: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := open(t)
			if s == nil {
				t.Fatal("open returned a nil store")
			}
			t.Cleanup(func() {
				if err := s.Close(); err != nil && !tc.closes {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
}

// RunReopen checks durability: what was appended is still there, with the
// same positions, revisions and contents, after the store is closed and
// opened again on the same directory, and appends continue where they left
// off. open must open (creating if needed) the store kept in dir; RunReopen
// closes every store it opens.
func RunReopen(t *testing.T, open func(t *testing.T, dir string) es.Store) {
	t.Helper()
	t.Run("PersistsAcrossReopen", func(t *testing.T) {
		t.Parallel()
		testReopenPersists(t, open)
	})
	t.Run("ReopenEmpty", func(t *testing.T) {
		t.Parallel()
		dir := t.TempDir()
		s := open(t, dir)
		mustClose(t, s)
		s = open(t, dir)
		defer mustClose(t, s)
		if p := mustLastPosition(t, s); p != 0 {
			t.Fatalf("LastPosition of a reopened empty store = %d, want 0", p)
		}
		res := mustAppend(t, s, "s-1", es.NoStream, newEvent("t.v1", 0))
		if res.NextExpected != 0 || res.Position == 0 {
			t.Fatalf("append after reopen = %+v, want revision 0 and position > 0", res)
		}
	})
}

// ---- helpers ----

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), waitTimeout)
	t.Cleanup(cancel)
	return ctx
}

func newEvent(typ string, i int) es.EventData {
	return es.EventData{
		ID:       uuid.NewString(),
		Type:     typ,
		Data:     fmt.Appendf(nil, `{"i":%d}`, i),
		Metadata: []byte(`{"correlation_id":"c"}`),
	}
}

func newEvents(typ string, n int) []es.EventData {
	evs := make([]es.EventData, n)
	for i := range evs {
		evs[i] = newEvent(typ, i)
	}
	return evs
}

func mustAppend(t *testing.T, s es.Store, stream string, exp es.ExpectedVersion, evs ...es.EventData) es.AppendResult {
	t.Helper()
	res, err := s.Append(testCtx(t), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%s, %d, %d events): %v", stream, exp, len(evs), err)
	}
	return res
}

func mustConflict(t *testing.T, s es.Store, stream string, exp es.ExpectedVersion, evs ...es.EventData) {
	t.Helper()
	res, err := s.Append(testCtx(t), stream, exp, evs...)
	if err == nil {
		t.Fatalf("Append(%s, %d) = %+v, want a concurrency error", stream, exp, res)
	}
	if !errors.Is(err, domain.ErrConcurrency) {
		t.Fatalf("Append(%s, %d) error = %v, want one matching domain.ErrConcurrency", stream, exp, err)
	}
}

func mustReadStream(t *testing.T, s es.Store, stream string, from uint64) []es.RecordedEvent {
	t.Helper()
	evs, err := s.ReadStream(testCtx(t), stream, from)
	if err != nil {
		t.Fatalf("ReadStream(%s, %d): %v", stream, from, err)
	}
	return evs
}

func mustReadAll(t *testing.T, s es.Store, after uint64, limit int) []es.RecordedEvent {
	t.Helper()
	evs, err := s.ReadAll(testCtx(t), after, limit)
	if err != nil {
		t.Fatalf("ReadAll(%d, %d): %v", after, limit, err)
	}
	return evs
}

// readEverything pages through the whole log.
func readEverything(t *testing.T, s es.Store, page int) []es.RecordedEvent {
	t.Helper()
	var all []es.RecordedEvent
	var after uint64
	for {
		evs := mustReadAll(t, s, after, page)
		if len(evs) > page {
			t.Fatalf("ReadAll(%d, %d) returned %d events", after, page, len(evs))
		}
		if len(evs) == 0 {
			return all
		}
		all = append(all, evs...)
		after = evs[len(evs)-1].Position
	}
}

func mustLastPosition(t *testing.T, s es.Store) uint64 {
	t.Helper()
	p, err := s.LastPosition(testCtx(t))
	if err != nil {
		t.Fatalf("LastPosition: %v", err)
	}
	return p
}

func mustClose(t *testing.T, s es.Store) {
	t.Helper()
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
}

// checkStream checks that evs are revisions from, from+1, ... of stream with
// strictly increasing positions.
func checkStream(t *testing.T, evs []es.RecordedEvent, stream string, from uint64, n int) {
	t.Helper()
	if len(evs) != n {
		t.Fatalf("stream %s: got %d events, want %d", stream, len(evs), n)
	}
	for i, ev := range evs {
		if ev.StreamID != stream {
			t.Errorf("event %d: stream %q, want %q", i, ev.StreamID, stream)
		}
		if want := from + uint64(i); ev.Revision != want {
			t.Errorf("event %d: revision %d, want %d", i, ev.Revision, want)
		}
		if ev.Position == 0 {
			t.Errorf("event %d: position 0", i)
		}
		if i > 0 && ev.Position <= evs[i-1].Position {
			t.Errorf("event %d: position %d not above previous %d", i, ev.Position, evs[i-1].Position)
		}
	}
}

// checkIncreasing checks that positions are strictly increasing and > 0.
func checkIncreasing(t *testing.T, evs []es.RecordedEvent) {
	t.Helper()
	var prev uint64
	for i, ev := range evs {
		if ev.Position <= prev {
			t.Fatalf("event %d (%s@%d): position %d not above previous %d", i, ev.StreamID, ev.Revision, ev.Position, prev)
		}
		prev = ev.Position
	}
}

// sameEvent reports how a differs from b ("" when equal). Nil and empty
// payloads are equal.
func sameEvent(a, b es.RecordedEvent) string {
	var d []string
	if a.StreamID != b.StreamID {
		d = append(d, fmt.Sprintf("stream %q != %q", a.StreamID, b.StreamID))
	}
	if a.Revision != b.Revision {
		d = append(d, fmt.Sprintf("revision %d != %d", a.Revision, b.Revision))
	}
	if a.Position != b.Position {
		d = append(d, fmt.Sprintf("position %d != %d", a.Position, b.Position))
	}
	if a.ID != b.ID {
		d = append(d, fmt.Sprintf("id %q != %q", a.ID, b.ID))
	}
	if a.Type != b.Type {
		d = append(d, fmt.Sprintf("type %q != %q", a.Type, b.Type))
	}
	if !bytes.Equal(a.Data, b.Data) {
		d = append(d, fmt.Sprintf("data %q != %q", a.Data, b.Data))
	}
	if !bytes.Equal(a.Metadata, b.Metadata) {
		d = append(d, fmt.Sprintf("metadata %q != %q", a.Metadata, b.Metadata))
	}
	if !a.RecordedAt.Equal(b.RecordedAt) {
		d = append(d, fmt.Sprintf("recorded at %v != %v", a.RecordedAt, b.RecordedAt))
	}
	return strings.Join(d, "; ")
}

func checkSameEvents(t *testing.T, what string, got, want []es.RecordedEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d events, want %d", what, len(got), len(want))
	}
	for i := range got {
		if diff := sameEvent(got[i], want[i]); diff != "" {
			t.Fatalf("%s: event %d differs: %s", what, i, diff)
		}
	}
}

// subscription runs Subscribe in a goroutine and forwards events.
type subscription struct {
	events chan es.RecordedEvent
	done   chan error
	cancel context.CancelFunc
}

func subscribe(t *testing.T, s es.Store, after uint64) *subscription {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	sub := &subscription{events: make(chan es.RecordedEvent, 1024), done: make(chan error, 1), cancel: cancel}
	go func() {
		sub.done <- s.Subscribe(ctx, after, func(ctx context.Context, ev es.RecordedEvent) error {
			select {
			case sub.events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-sub.done:
		case <-time.After(waitTimeout):
			t.Errorf("Subscribe did not return after its context was cancelled")
		}
	})
	return sub
}

// next waits for n events.
func (sub *subscription) next(t *testing.T, n int) []es.RecordedEvent {
	t.Helper()
	out := make([]es.RecordedEvent, 0, n)
	timer := time.NewTimer(waitTimeout)
	defer timer.Stop()
	for len(out) < n {
		select {
		case ev := <-sub.events:
			out = append(out, ev)
		case err := <-sub.done:
			t.Fatalf("Subscribe returned early after %d of %d events: %v", len(out), n, err)
		case <-timer.C:
			t.Fatalf("timed out after %d of %d subscribed events", len(out), n)
		}
	}
	return out
}

// quiet checks that nothing more is delivered for a short while.
func (sub *subscription) quiet(t *testing.T) {
	t.Helper()
	select {
	case ev := <-sub.events:
		t.Fatalf("unexpected extra event %s@%d position %d", ev.StreamID, ev.Revision, ev.Position)
	case err := <-sub.done:
		t.Fatalf("Subscribe returned early: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
}

// stop cancels the subscription and checks it returns context.Canceled.
func (sub *subscription) stop(t *testing.T) {
	t.Helper()
	sub.cancel()
	select {
	case err := <-sub.done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe after cancel returned %v, want context.Canceled", err)
		}
		sub.done <- err // for the cleanup
	case <-time.After(waitTimeout):
		t.Fatal("Subscribe did not return after cancel")
	}
}

// ---- cases ----

func testAppendNoStream(t *testing.T, s es.Store) {
	ev := newEvent("coupon.claimed.v1", 1)
	res := mustAppend(t, s, "coupon-1", es.NoStream, ev)
	if res.NextExpected != 0 {
		t.Errorf("NextExpected = %d, want 0", res.NextExpected)
	}
	if res.Position == 0 {
		t.Errorf("Position = 0, want > 0")
	}
	evs := mustReadStream(t, s, "coupon-1", 0)
	checkStream(t, evs, "coupon-1", 0, 1)
	if evs[0].Position != res.Position {
		t.Errorf("stored position %d, append returned %d", evs[0].Position, res.Position)
	}
	if evs[0].ID != ev.ID {
		t.Errorf("stored id %q, want %q", evs[0].ID, ev.ID)
	}
}

func testRevisions(t *testing.T, s es.Store) {
	const n = 5
	var prev uint64
	exp := es.NoStream
	for i := range n {
		res := mustAppend(t, s, "s", exp, newEvent("t.v1", i))
		if res.NextExpected != uint64(i) {
			t.Fatalf("append %d: NextExpected = %d, want %d", i, res.NextExpected, i)
		}
		if res.Position <= prev {
			t.Fatalf("append %d: position %d not above previous %d", i, res.Position, prev)
		}
		prev = res.Position
		exp = es.Exact(res.NextExpected)
	}
	evs := mustReadStream(t, s, "s", 0)
	checkStream(t, evs, "s", 0, n)
	if evs[n-1].Position != prev {
		t.Errorf("last stored position %d, append returned %d", evs[n-1].Position, prev)
	}
}

func testExact(t *testing.T, s es.Store) {
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	mustAppend(t, s, "s", es.Exact(0), newEvent("t.v1", 1))
	res := mustAppend(t, s, "s", es.Exact(1), newEvent("t.v1", 2))
	if res.NextExpected != 2 {
		t.Fatalf("NextExpected = %d, want 2", res.NextExpected)
	}
	last := mustLastPosition(t, s)
	mustConflict(t, s, "s", es.Exact(1), newEvent("t.v1", 3)) // stale
	mustConflict(t, s, "s", es.Exact(0), newEvent("t.v1", 3)) // older
	mustConflict(t, s, "s", es.Exact(3), newEvent("t.v1", 3)) // ahead
	mustConflict(t, s, "missing", es.Exact(0), newEvent("t.v1", 0))
	checkStream(t, mustReadStream(t, s, "s", 0), "s", 0, 3)
	if evs := mustReadStream(t, s, "missing", 0); len(evs) != 0 {
		t.Fatalf("rejected append created stream: %d events", len(evs))
	}
	if p := mustLastPosition(t, s); p != last {
		t.Fatalf("LastPosition moved from %d to %d after rejected appends", last, p)
	}
	res = mustAppend(t, s, "s", es.Exact(2), newEvent("t.v1", 3))
	if res.NextExpected != 3 {
		t.Fatalf("NextExpected = %d, want 3", res.NextExpected)
	}
}

func testNoStreamExisting(t *testing.T, s es.Store) {
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	mustConflict(t, s, "s", es.NoStream, newEvent("t.v1", 1))
	mustConflict(t, s, "s", es.NoStream, newEvents("t.v1", 3)...)
	checkStream(t, mustReadStream(t, s, "s", 0), "s", 0, 1)
}

func testStreamExists(t *testing.T, s es.Store) {
	mustConflict(t, s, "s", es.StreamExists, newEvent("t.v1", 0))
	if evs := mustReadStream(t, s, "s", 0); len(evs) != 0 {
		t.Fatalf("rejected StreamExists append created the stream: %d events", len(evs))
	}
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	res := mustAppend(t, s, "s", es.StreamExists, newEvent("t.v1", 1))
	if res.NextExpected != 1 {
		t.Fatalf("NextExpected = %d, want 1", res.NextExpected)
	}
	res = mustAppend(t, s, "s", es.StreamExists, newEvents("t.v1", 2)...)
	if res.NextExpected != 3 {
		t.Fatalf("NextExpected = %d, want 3", res.NextExpected)
	}
}

func testAny(t *testing.T, s es.Store) {
	for i := range 4 {
		res := mustAppend(t, s, "s", es.Any, newEvent("t.v1", i))
		if res.NextExpected != uint64(i) {
			t.Fatalf("append %d with Any: NextExpected = %d, want %d", i, res.NextExpected, i)
		}
	}
	res := mustAppend(t, s, "s", es.Any, newEvents("t.v1", 2)...)
	if res.NextExpected != 5 {
		t.Fatalf("NextExpected = %d, want 5", res.NextExpected)
	}
	checkStream(t, mustReadStream(t, s, "s", 0), "s", 0, 6)
}

func testMultiEvent(t *testing.T, s es.Store) {
	mustAppend(t, s, "other", es.NoStream, newEvent("t.v1", 0))
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	batch := newEvents("t.v1", 3)
	res := mustAppend(t, s, "s", es.Exact(0), batch...)
	if res.NextExpected != 3 {
		t.Fatalf("NextExpected = %d, want 3", res.NextExpected)
	}
	mustAppend(t, s, "other", es.Exact(0), newEvent("t.v1", 1))

	evs := mustReadStream(t, s, "s", 1)
	checkStream(t, evs, "s", 1, 3)
	for i, ev := range evs {
		if ev.ID != batch[i].ID {
			t.Errorf("event %d: id %q, want %q (order kept)", i, ev.ID, batch[i].ID)
		}
	}
	if evs[2].Position != res.Position {
		t.Errorf("last event position %d, append returned %d", evs[2].Position, res.Position)
	}
	// Contiguous in the global log: nothing in between.
	between := mustReadAll(t, s, evs[0].Position-1, 3)
	checkSameEvents(t, "ReadAll over the batch", between, evs)

	// A rejected multi-event append writes nothing.
	last := mustLastPosition(t, s)
	mustConflict(t, s, "s", es.Exact(0), newEvents("t.v1", 4)...)
	mustConflict(t, s, "new", es.StreamExists, newEvents("t.v1", 4)...)
	checkStream(t, mustReadStream(t, s, "s", 0), "s", 0, 4)
	if p := mustLastPosition(t, s); p != last {
		t.Fatalf("LastPosition moved from %d to %d after rejected appends", last, p)
	}
	if all := readEverything(t, s, 100); len(all) != 6 {
		t.Fatalf("log has %d events, want 6", len(all))
	}
}

func testConcurrentMultiEvent(t *testing.T, s es.Store) {
	const goroutines, appends, size = 8, 5, 4
	type landed struct {
		stream string
		res    es.AppendResult
	}
	var (
		mu   sync.Mutex
		all  []landed
		wg   sync.WaitGroup
		ctx  = testCtx(t)
		gate = make(chan struct{})
	)
	for g := range goroutines {
		wg.Go(func() {
			<-gate
			stream := fmt.Sprintf("m-%d", g)
			exp := es.NoStream
			for i := range appends {
				res, err := s.Append(ctx, stream, exp, newEvents("t.v1", size)...)
				if err != nil {
					t.Errorf("Append(%s) #%d: %v", stream, i, err)
					return
				}
				exp = es.Exact(res.NextExpected)
				mu.Lock()
				all = append(all, landed{stream, res})
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		return
	}
	log := readEverything(t, s, 7)
	if len(log) != goroutines*appends*size {
		t.Fatalf("log has %d events, want %d", len(log), goroutines*appends*size)
	}
	checkIncreasing(t, log)
	index := make(map[uint64]int, len(log))
	for i, ev := range log {
		index[ev.Position] = i
	}
	for _, l := range all {
		end, ok := index[l.res.Position]
		if !ok {
			t.Fatalf("append result position %d not in the log", l.res.Position)
		}
		if end < size-1 {
			t.Fatalf("batch ending at index %d cannot hold %d events", end, size)
		}
		for k := range size {
			ev := log[end-size+1+k]
			wantRev := l.res.NextExpected - uint64(size-1) + uint64(k)
			if ev.StreamID != l.stream || ev.Revision != wantRev {
				t.Fatalf("batch of %s ending at revision %d is not contiguous: index %d holds %s@%d",
					l.stream, l.res.NextExpected, end-size+1+k, ev.StreamID, ev.Revision)
			}
		}
	}
}

func testReadStreamMissing(t *testing.T, s es.Store) {
	for _, from := range []uint64{0, 5} {
		evs, err := s.ReadStream(testCtx(t), "missing", from)
		if err != nil {
			t.Fatalf("ReadStream(missing, %d) error = %v, want nil", from, err)
		}
		if len(evs) != 0 {
			t.Fatalf("ReadStream(missing, %d) = %d events, want none", from, len(evs))
		}
	}
	// A stream whose name is a prefix of another one is still missing.
	mustAppend(t, s, "coupon-12", es.NoStream, newEvent("t.v1", 0))
	if evs := mustReadStream(t, s, "coupon-1", 0); len(evs) != 0 {
		t.Fatalf("ReadStream(coupon-1) = %d events of %s, want none", len(evs), evs[0].StreamID)
	}
	mustAppend(t, s, "coupon-1", es.NoStream, newEvent("t.v1", 0))
	checkStream(t, mustReadStream(t, s, "coupon-1", 0), "coupon-1", 0, 1)
	checkStream(t, mustReadStream(t, s, "coupon-12", 0), "coupon-12", 0, 1)
}

func testReadStreamFrom(t *testing.T, s es.Store) {
	mustAppend(t, s, "s", es.NoStream, newEvents("t.v1", 2)...)
	mustAppend(t, s, "x", es.NoStream, newEvent("t.v1", 0))
	mustAppend(t, s, "s", es.Exact(1), newEvents("t.v1", 3)...)
	all := mustReadStream(t, s, "s", 0)
	checkStream(t, all, "s", 0, 5)
	for _, from := range []uint64{1, 2, 4} {
		evs := mustReadStream(t, s, "s", from)
		checkStream(t, evs, "s", from, 5-int(from))
		checkSameEvents(t, fmt.Sprintf("ReadStream from %d", from), evs, all[from:])
	}
	for _, from := range []uint64{5, 100} {
		if evs := mustReadStream(t, s, "s", from); len(evs) != 0 {
			t.Fatalf("ReadStream(s, %d) past the end = %d events, want none", from, len(evs))
		}
	}
}

func testReadAll(t *testing.T, s es.Store) {
	if evs := mustReadAll(t, s, 0, 10); len(evs) != 0 {
		t.Fatalf("ReadAll on an empty store = %d events", len(evs))
	}
	type key struct {
		stream string
		rev    uint64
	}
	var order []key
	var lastRes es.AppendResult
	for round := range 3 {
		for _, stream := range []string{"a", "b", "c"} {
			exp := es.NoStream
			if round > 0 {
				exp = es.Exact(uint64(round - 1))
			}
			lastRes = mustAppend(t, s, stream, exp, newEvent("t.v1", round))
			order = append(order, key{stream, uint64(round)})
		}
	}
	all := mustReadAll(t, s, 0, 100)
	if len(all) != len(order) {
		t.Fatalf("ReadAll = %d events, want %d", len(all), len(order))
	}
	checkIncreasing(t, all)
	for i, ev := range all {
		if (key{ev.StreamID, ev.Revision}) != order[i] {
			t.Fatalf("ReadAll[%d] = %s@%d, want %s@%d", i, ev.StreamID, ev.Revision, order[i].stream, order[i].rev)
		}
	}
	if all[len(all)-1].Position != lastRes.Position {
		t.Fatalf("last position %d, append returned %d", all[len(all)-1].Position, lastRes.Position)
	}
	if first := mustReadAll(t, s, 0, 4); len(first) != 4 {
		t.Fatalf("ReadAll(0, 4) = %d events, want 4", len(first))
	} else {
		checkSameEvents(t, "ReadAll(0, 4)", first, all[:4])
	}
	// after is exclusive.
	rest := mustReadAll(t, s, all[3].Position, 100)
	checkSameEvents(t, "ReadAll after the 4th", rest, all[4:])
	// Paging covers everything exactly once.
	for _, page := range []int{1, 2, 4} {
		checkSameEvents(t, fmt.Sprintf("pages of %d", page), readEverything(t, s, page), all)
	}
	if evs := mustReadAll(t, s, lastRes.Position, 10); len(evs) != 0 {
		t.Fatalf("ReadAll after the last position = %d events", len(evs))
	}
	// ReadAll agrees with ReadStream.
	for _, stream := range []string{"a", "b", "c"} {
		var want []es.RecordedEvent
		for _, ev := range all {
			if ev.StreamID == stream {
				want = append(want, ev)
			}
		}
		checkSameEvents(t, "ReadStream vs ReadAll", mustReadStream(t, s, stream, 0), want)
	}
}

func testLastPosition(t *testing.T, s es.Store) {
	if p := mustLastPosition(t, s); p != 0 {
		t.Fatalf("LastPosition of an empty store = %d, want 0", p)
	}
	res := mustAppend(t, s, "a", es.NoStream, newEvent("t.v1", 0))
	if p := mustLastPosition(t, s); p != res.Position {
		t.Fatalf("LastPosition = %d, want %d", p, res.Position)
	}
	res = mustAppend(t, s, "b", es.NoStream, newEvents("t.v1", 3)...)
	if p := mustLastPosition(t, s); p != res.Position {
		t.Fatalf("LastPosition = %d, want %d", p, res.Position)
	}
	mustConflict(t, s, "b", es.NoStream, newEvent("t.v1", 0))
	if p := mustLastPosition(t, s); p != res.Position {
		t.Fatalf("LastPosition after a rejected append = %d, want %d", p, res.Position)
	}
}

func testSubscribeCatchUpLive(t *testing.T, s es.Store) {
	const stored, live = 20, 80
	for i := range stored {
		mustAppend(t, s, fmt.Sprintf("s-%d", i%4), es.Any, newEvent("t.v1", i))
	}
	ctx := testCtx(t)
	appended := make(chan error, 1)
	sub := subscribe(t, s, 0)
	// Race live appends with the switch from catch-up to live.
	go func() {
		for i := range live {
			if _, err := s.Append(ctx, fmt.Sprintf("s-%d", i%5), es.Any, newEvent("t.v1", i)); err != nil {
				appended <- err
				return
			}
		}
		appended <- nil
	}()
	got := sub.next(t, stored+live)
	if err := <-appended; err != nil {
		t.Fatalf("live append: %v", err)
	}
	checkIncreasing(t, got)
	checkSameEvents(t, "subscribed vs ReadAll", got, readEverything(t, s, 1000))
	sub.quiet(t)

	// Still live after being idle.
	res := mustAppend(t, s, "late", es.NoStream, newEvents("t.v1", 2)...)
	more := sub.next(t, 2)
	if more[0].Position <= got[len(got)-1].Position || more[1].Position != res.Position {
		t.Fatalf("live events at positions %d, %d; want after %d and ending at %d",
			more[0].Position, more[1].Position, got[len(got)-1].Position, res.Position)
	}
	sub.quiet(t)
	sub.stop(t)
}

func testSubscribeFromMiddle(t *testing.T, s es.Store) {
	for i := range 10 {
		mustAppend(t, s, "s", es.Any, newEvent("t.v1", i))
	}
	all := mustReadAll(t, s, 0, 100)
	sub := subscribe(t, s, all[4].Position)
	got := sub.next(t, 5)
	checkSameEvents(t, "subscribed from the 5th position", got, all[5:])
	res := mustAppend(t, s, "s", es.Exact(9), newEvent("t.v1", 10))
	if ev := sub.next(t, 1)[0]; ev.Position != res.Position || ev.Revision != 10 {
		t.Fatalf("live event = %s@%d pos %d, want s@10 pos %d", ev.StreamID, ev.Revision, ev.Position, res.Position)
	}
	sub.quiet(t)
	sub.stop(t)

	// Subscribing at the end delivers only new events.
	last := mustLastPosition(t, s)
	sub = subscribe(t, s, last)
	sub.quiet(t)
	res = mustAppend(t, s, "t", es.NoStream, newEvent("t.v1", 0))
	if ev := sub.next(t, 1)[0]; ev.Position != res.Position {
		t.Fatalf("live event position %d, want %d", ev.Position, res.Position)
	}
	sub.stop(t)
}

func testSubscribeHandlerError(t *testing.T, s es.Store) {
	for i := range 5 {
		mustAppend(t, s, "s", es.Any, newEvent("t.v1", i))
	}
	errStop := errors.New("handler stop")
	ctx := testCtx(t)

	// Failing on a stored event.
	var calls int
	err := s.Subscribe(ctx, 0, func(_ context.Context, ev es.RecordedEvent) error {
		calls++
		if calls == 3 {
			return fmt.Errorf("at %d: %w", ev.Position, errStop)
		}
		return nil
	})
	if !errors.Is(err, errStop) {
		t.Fatalf("Subscribe returned %v, want the handler's error", err)
	}
	if calls != 3 {
		t.Fatalf("handler called %d times, want 3 (it must stop at the error)", calls)
	}

	// Failing on a live event.
	last := mustLastPosition(t, s)
	done := make(chan error, 1)
	var liveCalls int
	go func() {
		done <- s.Subscribe(ctx, last, func(context.Context, es.RecordedEvent) error {
			liveCalls++
			return errStop
		})
	}()
	time.Sleep(20 * time.Millisecond)
	mustAppend(t, s, "s", es.Any, newEvents("t.v1", 2)...)
	select {
	case err := <-done:
		if !errors.Is(err, errStop) {
			t.Fatalf("Subscribe returned %v, want the handler's error", err)
		}
		if liveCalls != 1 {
			t.Fatalf("handler called %d times, want 1", liveCalls)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Subscribe did not stop on a handler error")
	}
}

func testSubscribeCancel(t *testing.T, s es.Store) {
	noop := func(context.Context, es.RecordedEvent) error { return nil }

	// Cancel while waiting for live events.
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- s.Subscribe(ctx, 0, noop) }()
	time.Sleep(20 * time.Millisecond)
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Subscribe returned %v, want context.Canceled", err)
		}
	case <-time.After(waitTimeout):
		t.Fatal("Subscribe did not return after cancel")
	}

	// Deadline.
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	dctx, dcancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
	defer dcancel()
	if err := s.Subscribe(dctx, 0, noop); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Subscribe returned %v, want context.DeadlineExceeded", err)
	}

	// Cancelled by the handler during catch-up.
	for i := range 10 {
		mustAppend(t, s, "s", es.Any, newEvent("t.v1", i))
	}
	cctx, ccancel := context.WithCancel(t.Context())
	var calls int
	err := s.Subscribe(cctx, 0, func(context.Context, es.RecordedEvent) error {
		calls++
		if calls == 2 {
			ccancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Subscribe returned %v, want context.Canceled", err)
	}
	if calls != 2 {
		t.Fatalf("handler called %d times after the context was cancelled at call 2", calls)
	}
}

func testConcurrentOneStream(t *testing.T, s es.Store) {
	const goroutines, rounds = 50, 6
	ctx := testCtx(t)
	winners := make([]string, rounds)
	for round := range rounds {
		exp := es.NoStream
		if round > 0 {
			exp = es.Exact(uint64(round - 1))
		}
		var (
			wg        sync.WaitGroup
			mu        sync.Mutex
			wins      int
			conflicts int
			gate      = make(chan struct{})
		)
		for g := range goroutines {
			wg.Go(func() {
				ev := newEvent("t.v1", g)
				<-gate
				res, err := s.Append(ctx, "hot", exp, ev)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins++
					winners[round] = ev.ID
					if res.NextExpected != uint64(round) {
						t.Errorf("round %d: winner got revision %d", round, res.NextExpected)
					}
				case errors.Is(err, domain.ErrConcurrency):
					conflicts++
				default:
					t.Errorf("round %d: unexpected error %v", round, err)
				}
			})
		}
		close(gate)
		wg.Wait()
		if wins != 1 || conflicts != goroutines-1 {
			t.Fatalf("round %d (expected %d): %d wins, %d conflicts; want 1 and %d",
				round, exp, wins, conflicts, goroutines-1)
		}
	}
	evs := mustReadStream(t, s, "hot", 0)
	checkStream(t, evs, "hot", 0, rounds)
	for i, ev := range evs {
		if ev.ID != winners[i] {
			t.Fatalf("revision %d holds %s, the winner was %s", i, ev.ID, winners[i])
		}
	}
	if n := len(readEverything(t, s, 100)); n != rounds {
		t.Fatalf("log has %d events, want %d", n, rounds)
	}
}

// testOptimisticRetries runs the usual load-decide-append loop from many
// goroutines on one stream: every acknowledged append must hold its own
// revision.
func testOptimisticRetries(t *testing.T, s es.Store) {
	const goroutines, winsEach = 16, 4
	ctx := testCtx(t)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		revs = make(map[uint64]string)
		gate = make(chan struct{})
	)
	for g := range goroutines {
		wg.Go(func() {
			<-gate
			for wins := 0; wins < winsEach; {
				cur, err := s.ReadStream(ctx, "hot", 0)
				if err != nil {
					t.Errorf("ReadStream: %v", err)
					return
				}
				exp := es.NoStream
				if len(cur) > 0 {
					exp = es.Exact(cur[len(cur)-1].Revision)
				}
				ev := newEvent("t.v1", g)
				res, err := s.Append(ctx, "hot", exp, ev)
				if errors.Is(err, domain.ErrConcurrency) {
					continue
				}
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				wins++
				mu.Lock()
				if other, dup := revs[res.NextExpected]; dup {
					t.Errorf("revision %d acknowledged twice (%s and %s)", res.NextExpected, other, ev.ID)
				}
				revs[res.NextExpected] = ev.ID
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		return
	}
	evs := mustReadStream(t, s, "hot", 0)
	checkStream(t, evs, "hot", 0, goroutines*winsEach)
	for _, ev := range evs {
		if revs[ev.Revision] != ev.ID {
			t.Fatalf("revision %d holds %s, acknowledged to %s", ev.Revision, ev.ID, revs[ev.Revision])
		}
	}
	if n := len(readEverything(t, s, 1000)); n != goroutines*winsEach {
		t.Fatalf("log has %d events, want %d", n, goroutines*winsEach)
	}
}

func testConcurrentManyStreams(t *testing.T, s es.Store) {
	const goroutines, streamsEach, appendsEach = 16, 4, 10
	ctx := testCtx(t)
	var (
		wg        sync.WaitGroup
		mu        sync.Mutex
		positions = make(map[uint64]bool)
		gate      = make(chan struct{})
	)
	for g := range goroutines {
		wg.Go(func() {
			<-gate
			next := make([]es.ExpectedVersion, streamsEach)
			for i := range next {
				next[i] = es.NoStream
			}
			for i := range streamsEach * appendsEach {
				k := i % streamsEach
				stream := fmt.Sprintf("g%d-s%d", g, k)
				res, err := s.Append(ctx, stream, next[k], newEvent("t.v1", i))
				if err != nil {
					t.Errorf("Append(%s): %v", stream, err)
					return
				}
				next[k] = es.Exact(res.NextExpected)
				mu.Lock()
				if positions[res.Position] {
					t.Errorf("position %d returned twice", res.Position)
				}
				positions[res.Position] = true
				mu.Unlock()
			}
		})
	}
	close(gate)
	wg.Wait()
	if t.Failed() {
		return
	}
	const total = goroutines * streamsEach * appendsEach
	log := readEverything(t, s, 128)
	if len(log) != total {
		t.Fatalf("log has %d events, want %d", len(log), total)
	}
	checkIncreasing(t, log)
	for _, ev := range log {
		if !positions[ev.Position] {
			t.Fatalf("position %d in the log was never returned by Append", ev.Position)
		}
	}
	if p := mustLastPosition(t, s); p != log[len(log)-1].Position {
		t.Fatalf("LastPosition = %d, want %d", p, log[len(log)-1].Position)
	}
	for g := range goroutines {
		for k := range streamsEach {
			stream := fmt.Sprintf("g%d-s%d", g, k)
			checkStream(t, mustReadStream(t, s, stream, 0), stream, 0, appendsEach)
		}
	}
}

func testAppendCancelled(t *testing.T, s es.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(ctx, "s", es.NoStream, newEvent("t.v1", 0))
		done <- err
	}()
	var err error
	select {
	case err = <-done:
	case <-time.After(waitTimeout):
		t.Fatal("Append with a cancelled context hangs")
	}
	evs := mustReadStream(t, s, "s", 0)
	if err == nil && len(evs) != 1 {
		t.Fatalf("Append succeeded but the stream holds %d events", len(evs))
	}
	if len(evs) > 1 {
		t.Fatalf("stream holds %d events after one append", len(evs))
	}
	// The store still works.
	res := mustAppend(t, s, "s", es.Any, newEvent("t.v1", 1))
	if res.NextExpected != uint64(len(evs)) {
		t.Fatalf("NextExpected = %d, want %d", res.NextExpected, len(evs))
	}
}

func testRoundTrip(t *testing.T, s es.Store) {
	big := make([]byte, 0, 64<<10)
	big = append(big, `{"blob":"`...)
	for i := 0; len(big) < 64<<10-2; i++ {
		big = append(big, "abcdefghijklmnopqrstuvwxyz0123456789"[i%36])
	}
	big = append(big, `"}`...)
	in := []es.EventData{
		{ID: uuid.NewString(), Type: "coupon.claimed.v1", Data: []byte(`{"coupon_id":"c-1","user_id":"u-ü"}`),
			Metadata: []byte(`{"correlation_id":"r-1","causation_id":"cmd-1"}`)},
		{ID: uuid.NewString(), Type: "coupon.redeemed.v1", Data: []byte(`{}`)},
		{ID: uuid.NewString(), Type: "batch.issued.v1", Data: big, Metadata: []byte(`{}`)},
	}
	stream := "coupon-3f6c1e2a-7c1b-4f7e-9d2a-0c1d2e3f4a5b"
	start := time.Now()
	res := mustAppend(t, s, stream, es.NoStream, in...)
	if res.NextExpected != 2 {
		t.Fatalf("NextExpected = %d, want 2", res.NextExpected)
	}
	// The caller's buffers may be reused after Append returns.
	for i := range in[0].Data {
		in[0].Data[i] = 'x'
	}
	in[0].Data = []byte(`{"coupon_id":"c-1","user_id":"u-ü"}`)

	evs := mustReadStream(t, s, stream, 0)
	checkStream(t, evs, stream, 0, len(in))
	for i, ev := range evs {
		want := in[i]
		if ev.ID != want.ID || ev.Type != want.Type || !bytes.Equal(ev.Data, want.Data) || !bytes.Equal(ev.Metadata, want.Metadata) {
			t.Errorf("event %d round trip: got id=%q type=%q data=%.60q meta=%q; want id=%q type=%q data=%.60q meta=%q",
				i, ev.ID, ev.Type, ev.Data, ev.Metadata, want.ID, want.Type, want.Data, want.Metadata)
		}
		if ev.RecordedAt.IsZero() || ev.RecordedAt.Year() < 2000 {
			t.Errorf("event %d: RecordedAt %v is unset", i, ev.RecordedAt)
		}
	}
	if evs[len(evs)-1].Position != res.Position {
		t.Errorf("last position %d, append returned %d", evs[len(evs)-1].Position, res.Position)
	}
	if d := evs[0].RecordedAt.Sub(start); d < -24*time.Hour || d > 24*time.Hour {
		t.Logf("note: RecordedAt %v is far from the wall clock %v (injected clock?)", evs[0].RecordedAt, start)
	}
	// Reads never share memory with each other.
	evs[0].Data[0] = '!'
	again := mustReadStream(t, s, stream, 0)
	if !bytes.Equal(again[0].Data, in[0].Data) {
		t.Fatalf("mutating a read event changed the store: %q", again[0].Data)
	}
	evs = again
	checkSameEvents(t, "ReadAll vs ReadStream", mustReadAll(t, s, 0, 10), evs)
	sub := subscribe(t, s, 0)
	checkSameEvents(t, "Subscribe vs ReadStream", sub.next(t, len(evs)), evs)
	sub.stop(t)
}

func testAppendAfterClose(t *testing.T, s es.Store) {
	mustAppend(t, s, "s", es.NoStream, newEvent("t.v1", 0))
	mustClose(t, s)
	done := make(chan error, 1)
	go func() {
		_, err := s.Append(t.Context(), "s", es.Any, newEvent("t.v1", 1))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("Append after Close succeeded")
		}
	case <-time.After(waitTimeout):
		t.Fatal("Append after Close hangs")
	}
}

func testReopenPersists(t *testing.T, open func(t *testing.T, dir string) es.Store) {
	dir := t.TempDir()
	s := open(t, dir)
	mustAppend(t, s, "a", es.NoStream, newEvent("t.v1", 0))
	mustAppend(t, s, "b", es.NoStream, newEvents("t.v1", 3)...)
	mustAppend(t, s, "a", es.Exact(0), newEvents("t.v1", 2)...)
	last := mustAppend(t, s, "c", es.Any, newEvent("t.v1", 0))
	before := readEverything(t, s, 100)
	mustClose(t, s)

	s = open(t, dir)
	checkSameEvents(t, "log after reopen", readEverything(t, s, 100), before)
	if p := mustLastPosition(t, s); p != last.Position {
		t.Fatalf("LastPosition after reopen = %d, want %d", p, last.Position)
	}
	checkStream(t, mustReadStream(t, s, "a", 0), "a", 0, 3)
	checkStream(t, mustReadStream(t, s, "b", 0), "b", 0, 3)
	// Heads survive: expected versions still work.
	mustConflict(t, s, "a", es.NoStream, newEvent("t.v1", 9))
	mustConflict(t, s, "b", es.Exact(1), newEvent("t.v1", 9))
	mustConflict(t, s, "missing", es.StreamExists, newEvent("t.v1", 9))
	res := mustAppend(t, s, "a", es.Exact(2), newEvent("t.v1", 3))
	if res.NextExpected != 3 || res.Position <= last.Position {
		t.Fatalf("append after reopen = %+v, want revision 3 and position > %d", res, last.Position)
	}
	res2 := mustAppend(t, s, "b", es.Any, newEvent("t.v1", 3))
	if res2.NextExpected != 3 || res2.Position <= res.Position {
		t.Fatalf("append after reopen = %+v, want revision 3 and position > %d", res2, res.Position)
	}
	sub := subscribe(t, s, 0)
	got := sub.next(t, len(before)+2)
	checkSameEvents(t, "subscribed after reopen", got[:len(before)], before)
	sub.stop(t)
	after := readEverything(t, s, 100)
	mustClose(t, s)

	s = open(t, dir)
	defer mustClose(t, s)
	checkSameEvents(t, "log after second reopen", readEverything(t, s, 100), after)
	checkStream(t, mustReadStream(t, s, "a", 0), "a", 0, 4)
}
