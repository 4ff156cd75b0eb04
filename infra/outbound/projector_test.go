package outbound

import (
	"context"
	"errors"
	"fmt"
	"github.com/couponsd/couponsd/internal/testkit"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/projections"
)

// The Redis checkpoint of the other projectors fits the port.
var _ Checkpoints = (*redisops.KeyCheckpoint)(nil)

func openStore(t testing.TB) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// appendEvents appends n claim+lock pairs on fresh coupon streams, one
// reminder notification, and one event of a type no registry knows.
func appendEvents(t *testing.T, s es.Store, reg *domain.Registry, prefix string, n int) {
	t.Helper()
	ctx := context.Background()
	at := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	data := func(e domain.Event) es.EventData {
		name, b, err := reg.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return es.EventData{Type: name, Data: b}
	}
	for i := range n {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if _, err := s.Append(ctx, "coupon-"+id, es.NoStream,
			data(&domain.CouponClaimed{CouponID: id, UserID: "alice", Terms: domain.CouponTerms{BatchID: "b-1"}, At: at}),
			data(&domain.CouponLocked{CouponID: id, BatchID: "b-1", UserID: "alice", OrderID: "o-" + id, At: at})); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Append(ctx, "reminder-"+prefix, es.NoStream, data(&testReminder{CouponID: prefix + "-0", UserID: "alice", DueAt: at})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Append(ctx, "legacy-"+prefix, es.NoStream, es.EventData{Type: "legacy.unknown.v1", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
}

// expectedIDs are the envelope ids the store's events map to, in order.
func expectedIDs(t *testing.T, s es.Store, m *Mapper) []string {
	t.Helper()
	var out []string
	err := es.Scan(context.Background(), s, 0, 100, func(rec es.RecordedEvent) error {
		msgs, err := m.Map(rec)
		for _, msg := range msgs {
			out = append(out, msg.Envelope.ID)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// runProjector runs projections.Run with a fresh webhook sink (empty dedup
// memory, like a restarted process) until stop.
func runProjector(t *testing.T, s es.Store, m *Mapper, cp Checkpoints, url string) (stop func()) {
	t.Helper()
	sink, err := NewWebhookSink(fastWebhookConfig(url), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewProjector(m, sink, cp)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		projections.Run(ctx, s, p, testLog(t))
	}()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Error("projections.Run did not stop")
			}
			_ = sink.Close()
		})
	}
	t.Cleanup(stop)
	return stop
}

// TestProjectorResumesFromCheckpoint: a restarted projector (new process:
// fresh sink) continues from the checkpoint, and the receiver gets every
// envelope exactly once, in order, without having to deduplicate.
func TestProjectorResumesFromCheckpoint(t *testing.T) {
	reg := testRegistry()
	m := mustMapper(t, reg)
	s := openStore(t)
	rc := newReceiver(testSecret)
	srv := startServer(t, rc)
	cp := &testkit.MemCheckpoint{}

	appendEvents(t, s, reg, "first", 5)
	want := expectedIDs(t, s, m)
	last, _ := s.LastPosition(context.Background())
	stop := runProjector(t, s, m, cp, srv.URL())
	waitFor(t, 5*time.Second, "the first events delivered", func() bool { return cp.Get() == last })
	stop()
	if order, _, _, _ := rc.snapshot(); !slices.Equal(order, want) {
		t.Fatalf("first run delivered %v, want %v", order, want)
	}

	appendEvents(t, s, reg, "second", 4)
	want = expectedIDs(t, s, m)
	last, _ = s.LastPosition(context.Background())
	stop = runProjector(t, s, m, cp, srv.URL())
	waitFor(t, 5*time.Second, "the new events delivered", func() bool { return cp.Get() == last })
	stop()

	order, accepted, _, errs := rc.snapshot()
	for _, e := range errs {
		t.Error(e)
	}
	if !slices.Equal(order, want) {
		t.Errorf("delivered %v, want %v", order, want)
	}
	for id, n := range accepted {
		if n != 1 {
			t.Errorf("%s delivered %d times after a restart from the checkpoint", id, n)
		}
	}
	// 9 coupons × (claimed, locked) + 2 × (reminder, its notification); the unknown events are skipped.
	if len(want) != 9*2+2*2 {
		t.Errorf("%d envelopes expected: events or notifications missing from the mapping", len(want))
	}
}

// TestProjectorCheckpointNeverPassesUndelivered: while the receiver fails
// and the checkpoint store fails once, the checkpoint stays behind the
// undelivered events; once both recover everything arrives, each id once
// (the sink skips what it delivered before the failed save).
func TestProjectorCheckpointNeverPassesUndelivered(t *testing.T) {
	reg := testRegistry()
	m := mustMapper(t, reg)
	s := openStore(t)
	var (
		mu      sync.Mutex
		failing = true
	)
	rc := newReceiver(testSecret)
	rc.status = func(string) int {
		mu.Lock()
		defer mu.Unlock()
		if failing {
			return 503
		}
		return 200
	}
	srv := startServer(t, rc)
	cp := &testkit.MemCheckpoint{FailSaves: 1}
	appendEvents(t, s, reg, "a", 3)
	want := expectedIDs(t, s, m)
	last, _ := s.LastPosition(context.Background())
	stop := runProjector(t, s, m, cp, srv.URL())
	defer stop()
	waitFor(t, 3*time.Second, "failed attempts", func() bool { _, _, n, _ := rc.snapshot(); return n >= 5 })
	if got := cp.Get(); got != 0 {
		t.Fatalf("checkpoint moved to %d while nothing was delivered", got)
	}
	mu.Lock()
	failing = false
	mu.Unlock()
	waitFor(t, 5*time.Second, "everything delivered", func() bool { return cp.Get() == last })
	order, accepted, _, _ := rc.snapshot()
	if !slices.Equal(order, want) {
		t.Errorf("delivered %v, want %v", order, want)
	}
	for id, n := range accepted {
		if n != 1 {
			t.Errorf("%s delivered %d times", id, n)
		}
	}
}

// flakySink fails the first fail publishes, and records what it got.
type flakySink struct {
	mu    sync.Mutex
	fail  int
	calls int
	got   [][]Message
}

func (f *flakySink) Publish(_ context.Context, msgs []Message) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.fail > 0 {
		f.fail--
		return errors.New("sink down")
	}
	f.got = append(f.got, msgs)
	return nil
}
func (f *flakySink) Close() error { return nil }

func TestProjectorHandleBatch(t *testing.T) {
	reg := testRegistry()
	m := mustMapper(t, reg)
	at := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	recs := []es.RecordedEvent{
		recorded(t, reg, "coupon-c-1", 0, 4, &domain.CouponExpired{CouponID: "c-1", BatchID: "b", UserID: "u", At: at}),
		recorded(t, reg, "reminder-r", 0, 5, &testReminder{CouponID: "c-1", UserID: "u", DueAt: at}),
		{StreamID: "x-1", Position: 6, ID: "unknown", Type: "nobody.knows.v1", Data: []byte(`{}`)},
	}
	sink := &flakySink{fail: 1}
	cp := &testkit.MemCheckpoint{Pos: 3}
	p, err := NewProjector(m, sink, cp)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "outbound" {
		t.Fatalf("Name() = %q: the projector's name must never change", p.Name())
	}
	ctx := context.Background()
	if err := p.HandleBatch(ctx, recs); err == nil {
		t.Fatal("a failed publish was not reported")
	}
	if cp.Get() != 3 {
		t.Fatalf("checkpoint moved to %d past a failed publish", cp.Get())
	}
	if err := p.HandleBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if cp.Get() != 6 {
		t.Errorf("checkpoint %d, want 6 (the last event, unknown types included)", cp.Get())
	}
	if len(sink.got) != 1 || len(sink.got[0]) != 3 {
		t.Fatalf("published %v, want one call of 3 messages (event, reminder, its notification)", sink.got)
	}
	// A replay of what the checkpoint covers publishes nothing.
	if err := p.Handle(ctx, recs[0]); err != nil {
		t.Fatal(err)
	}
	if err := p.HandleBatch(ctx, recs); err != nil {
		t.Fatal(err)
	}
	if sink.calls != 2 {
		t.Errorf("replayed events were published again (%d calls)", sink.calls)
	}
	// A checkpoint save failure is reported, after the publish.
	cp.FailNextSaves(1)
	err = p.Handle(ctx, recorded(t, reg, "coupon-c-2", 0, 7, &domain.CouponExpired{CouponID: "c-2", At: at}))
	if err == nil || cp.Get() != 6 {
		t.Errorf("failed checkpoint save: err %v, checkpoint %d", err, cp.Get())
	}
}

func TestNewProjectorFailsOnNil(t *testing.T) {
	m := mustMapper(t, domain.NewRegistry())
	for name, c := range map[string]struct {
		m  *Mapper
		s  Sink
		cp Checkpoints
	}{
		"mapper": {nil, &flakySink{}, &testkit.MemCheckpoint{}},
		"sink":   {m, nil, &testkit.MemCheckpoint{}},
		"cp":     {m, &flakySink{}, nil},
	} {
		if _, err := NewProjector(c.m, c.s, c.cp); err == nil {
			t.Errorf("nil %s accepted", name)
		}
	}
}
