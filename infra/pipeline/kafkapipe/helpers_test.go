package kafkapipe

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
)

// testLog is quiet unless KAFKAPIPE_TEST_LOG=debug|info.
func testLog(t testing.TB) *slog.Logger {
	var lvl slog.Level
	switch os.Getenv("KAFKAPIPE_TEST_LOG") {
	case "debug":
		lvl = slog.LevelDebug
	case "info":
		lvl = slog.LevelInfo
	default:
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: lvl}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// newCluster starts a one-broker kfake cluster, closed when the test ends.
// Sessions as short as 1s are allowed so a crashed member is noticed fast.
func newCluster(t testing.TB, opts ...kfake.Opt) *kfake.Cluster {
	t.Helper()
	opts = append([]kfake.Opt{kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second)}, opts...)
	c, err := kfake.NewCluster(opts...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Close)
	return c
}

// testConfig is a Config with timeouts fit for tests on kfake.
func testConfig(addrs []string) Config {
	return Config{
		Brokers: addrs, Partitions: 12,
		DialTimeout: time.Second, RequestTimeout: 3 * time.Second, ProduceTimeout: 3 * time.Second, AdminTimeout: 3 * time.Second,
		ProduceRetries: 5, RetryBackoff: 20 * time.Millisecond,
		CheckpointInterval: 20 * time.Millisecond, CheckpointEvery: 200,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond,
		CommitInterval: 50 * time.Millisecond,
		SessionTimeout: 3 * time.Second, HeartbeatInterval: 200 * time.Millisecond, RebalanceTimeout: 5 * time.Second,
		CloseTimeout: 2 * time.Second,
	}
}

func mustEnsureTopic(t testing.TB, cfg Config) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := EnsureTopic(ctx, cfg); err != nil {
		t.Fatal(err)
	}
}

func openStore(t testing.TB) *boltstore.Store {
	t.Helper()
	s, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// workload appends events to coupon streams: streams × perStream events,
// chunk events per append, all streams concurrently (bolt group commit), a
// pause after each append. It returns the revision count per stream.
type workload struct {
	streams, perStream, chunk int
	pause                     time.Duration
	prefix                    string
}

func (w workload) total() int { return w.streams * w.perStream }

func (w workload) streamName(i int) string { return fmt.Sprintf("coupon-%s%03d", w.prefix, i) }

// appendRange appends revisions [from, to) of every stream.
func (w workload) appendRange(t testing.TB, ctx context.Context, s es.Store, from, to int) {
	t.Helper()
	chunk := max(w.chunk, 1)
	var wg sync.WaitGroup
	errs := make(chan error, w.streams)
	for i := range w.streams {
		wg.Go(func() {
			stream := w.streamName(i)
			for rev := from; rev < to; rev += chunk {
				n := min(chunk, to-rev)
				evs := make([]es.EventData, n)
				for k := range evs {
					evs[k] = es.EventData{Type: "coupon.test.v1", Data: []byte(`{"n":` + strconv.Itoa(rev+k) + `}`)}
				}
				exp := es.NoStream
				if rev > 0 {
					exp = es.Exact(uint64(rev - 1))
				}
				if _, err := s.Append(ctx, stream, exp, evs...); err != nil {
					errs <- fmt.Errorf("append %s@%d: %w", stream, rev, err)
					return
				}
				if w.pause > 0 {
					select {
					case <-ctx.Done():
						return
					case <-time.After(w.pause):
					}
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func (w workload) want() map[string]int {
	m := make(map[string]int, w.streams)
	for i := range w.streams {
		m[w.streamName(i)] = w.perStream
	}
	return m
}

// recorder is a test projector, idempotent by per-stream revision like the
// real ones: it applies an event whose revision is the stream's next one
// and skips (counts as a duplicate) any revision it already applied. An
// event past the next revision (a gap) is applied and recorded, so a lost
// or reordered event shows in applied as a hole or a swap.
type recorder struct {
	name  string
	delay time.Duration // per event, outside the lock: a slow projector

	mu      sync.Mutex
	next    map[string]uint64
	applied map[string][]uint64
	total   int // events applied
	seen    int // deliveries, duplicates included
	dups    int
	gaps    []string
	posMax  uint64
}

func newRecorder(name string) *recorder {
	return &recorder{name: name, next: map[string]uint64{}, applied: map[string][]uint64{}}
}

func (r *recorder) Name() string                               { return r.name }
func (r *recorder) Checkpoint(context.Context) (uint64, error) { return 0, nil }

func (r *recorder) Handle(_ context.Context, rec es.RecordedEvent) error {
	if r.delay > 0 {
		time.Sleep(r.delay)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen++
	next := r.next[rec.StreamID]
	switch {
	case rec.Revision < next:
		r.dups++
		return nil
	case rec.Revision > next:
		r.gaps = append(r.gaps, fmt.Sprintf("%s: got revision %d, expected %d", rec.StreamID, rec.Revision, next))
	}
	r.applied[rec.StreamID] = append(r.applied[rec.StreamID], rec.Revision)
	r.next[rec.StreamID] = rec.Revision + 1
	r.total++
	r.posMax = max(r.posMax, rec.Position)
	return nil
}

func (r *recorder) counts() (total, seen, dups int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total, r.seen, r.dups
}

// waitTotal waits until r applied n events.
func (r *recorder) waitTotal(t testing.TB, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		total, seen, dups := r.counts()
		if total >= n {
			return
		}
		if time.Now().After(deadline) {
			r.mu.Lock()
			for stream, revs := range r.applied { // streams with a hole
				if int(revs[len(revs)-1])+1 != len(revs) {
					t.Logf("%s: %s applied %v", r.name, stream, revs)
				}
			}
			r.mu.Unlock()
			t.Fatalf("%s: applied %d of %d events after %v (%d deliveries, %d duplicates)", r.name, total, n, timeout, seen, dups)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// verify: every stream got exactly revisions 0..n-1, each once, in order.
func (r *recorder) verify(t testing.TB, want map[string]int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.gaps {
		t.Errorf("%s: gap: %s", r.name, g)
	}
	if len(r.applied) != len(want) {
		t.Errorf("%s: %d streams applied, want %d", r.name, len(r.applied), len(want))
	}
	for stream, n := range want {
		got := r.applied[stream]
		exp := make([]uint64, n)
		for i := range exp {
			exp[i] = uint64(i)
		}
		if !slices.Equal(got, exp) {
			t.Errorf("%s: %s applied %v, want 0..%d in order", r.name, stream, got, n-1)
		}
	}
}

// instance wraps a shared recorder and counts what one consumer instance
// handled.
type instance struct {
	*recorder
	handled atomic.Int64
}

func (i *instance) Handle(ctx context.Context, rec es.RecordedEvent) error {
	i.handled.Add(1)
	return i.recorder.Handle(ctx, rec)
}

// startConsumer runs RunConsumer until the returned stop is called (also
// at cleanup); stop waits for it to return.
func startConsumer(t testing.TB, cfg Config, p interface {
	Name() string
	Checkpoint(context.Context) (uint64, error)
	Handle(context.Context, es.RecordedEvent) error
}, log *slog.Logger) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- RunConsumer(ctx, cfg, p, log) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			began := time.Now()
			defer func() { t.Logf("consumer %s stopped in %v", p.Name(), time.Since(began)) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("RunConsumer(%s): %v", p.Name(), err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("RunConsumer(%s) did not stop", p.Name())
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// startForwarder runs a forwarder until stop (also at cleanup).
func startForwarder(t testing.TB, cfg Config, s es.Store, cp CheckpointStore, log *slog.Logger) (*Forwarder, func()) {
	t.Helper()
	f, err := NewForwarder(cfg, s, cp, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			began := time.Now()
			defer func() { t.Logf("forwarder stopped in %v", time.Since(began)) }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("Forwarder.Run: %v", err)
				}
			case <-time.After(15 * time.Second):
				t.Errorf("Forwarder.Run did not stop")
			}
		})
	}
	t.Cleanup(stop)
	return f, stop
}

// waitForwarded waits until the forwarder had Kafka acknowledge pos.
func waitForwarded(t testing.TB, f *Forwarder, pos uint64, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for f.Stats().Position < pos {
		if time.Now().After(deadline) {
			t.Fatalf("forwarder at %+v after %v, want position %d", f.Stats(), timeout, pos)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// freePort finds a port nothing listens on.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}
