package esdbstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/esdbtest"
)

const wait = 10 * time.Second

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), wait)
	t.Cleanup(cancel)
	return ctx
}

func open(t *testing.T, url string, opts Options) *Store {
	t.Helper()
	s, err := Open(testCtx(t), url, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func newEvent(i int) es.EventData {
	return es.EventData{ID: uuid.NewString(), Type: "coupon.claimed.v1", Data: fmt.Appendf(nil, `{"i":%d}`, i)}
}

func mustAppend(t *testing.T, s *Store, stream string, exp es.ExpectedVersion, evs ...es.EventData) es.AppendResult {
	t.Helper()
	res, err := s.Append(testCtx(t), stream, exp, evs...)
	if err != nil {
		t.Fatalf("Append(%s): %v", stream, err)
	}
	return res
}

func mustReadAll(t *testing.T, s *Store) []es.RecordedEvent {
	t.Helper()
	evs, err := s.ReadAll(testCtx(t), 0, 100000)
	if err != nil {
		t.Fatalf("ReadAll: %v", err)
	}
	return evs
}

func rawClient(t *testing.T, url string) *esdb.Client {
	t.Helper()
	conf, err := esdb.ParseConnectionString(url)
	if err != nil {
		t.Fatal(err)
	}
	conf.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// collector subscribes and gathers events.
type collector struct {
	mu     sync.Mutex
	events []es.RecordedEvent
	more   chan struct{}
	done   chan error
	cancel context.CancelFunc
}

func collect(t *testing.T, s *Store, after uint64) *collector {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	c := &collector{more: make(chan struct{}, 1), done: make(chan error, 1), cancel: cancel}
	go func() {
		c.done <- s.Subscribe(ctx, after, func(_ context.Context, ev es.RecordedEvent) error {
			c.mu.Lock()
			c.events = append(c.events, ev)
			c.mu.Unlock()
			select {
			case c.more <- struct{}{}:
			default:
			}
			return nil
		})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-c.done:
		case <-time.After(wait):
			t.Error("Subscribe did not return after cancel")
		}
	})
	return c
}

// waitFor waits until n events were collected and returns them.
func (c *collector) waitFor(t *testing.T, n int) []es.RecordedEvent {
	t.Helper()
	deadline := time.After(wait)
	for {
		c.mu.Lock()
		got := append([]es.RecordedEvent(nil), c.events...)
		c.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-c.more:
		case err := <-c.done:
			t.Fatalf("Subscribe returned after %d of %d events: %v", len(got), n, err)
		case <-deadline:
			t.Fatalf("timed out after %d of %d events", len(got), n)
		}
	}
}

// checkExactly checks that got is want: same events, same order, no gap,
// no duplicate.
func checkExactly(t *testing.T, got, want []es.RecordedEvent) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d events, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i].Position != want[i].Position || got[i].ID != want[i].ID {
			t.Fatalf("event %d: got %s@%d pos %d, want %s@%d pos %d",
				i, got[i].StreamID, got[i].Revision, got[i].Position, want[i].StreamID, want[i].Revision, want[i].Position)
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// ---- idempotency ----

func TestRetriedAppendIsIdempotent(t *testing.T) {
	for _, old := range []bool{false, true} {
		t.Run(fmt.Sprintf("without_position=%v", old), func(t *testing.T) {
			srv := esdbtest.StartWithOptions(t, esdbtest.Options{IdempotentWithoutPosition: old})
			s := open(t, srv.URL(), Options{})

			batch := []es.EventData{newEvent(0), newEvent(1)}
			first := mustAppend(t, s, "coupon-1", es.NoStream, batch...)
			again := mustAppend(t, s, "coupon-1", es.NoStream, batch...)
			if again != first {
				t.Fatalf("retried NoStream append = %+v, want the original %+v", again, first)
			}

			next := []es.EventData{newEvent(2)}
			res := mustAppend(t, s, "coupon-1", es.Exact(first.NextExpected), next...)
			if again := mustAppend(t, s, "coupon-1", es.Exact(first.NextExpected), next...); again != res {
				t.Fatalf("retried Exact append = %+v, want %+v", again, res)
			}
			anyEv := newEvent(3)
			res = mustAppend(t, s, "coupon-1", es.Any, anyEv)
			if again := mustAppend(t, s, "coupon-1", es.Any, anyEv); again != res {
				t.Fatalf("retried Any append = %+v, want %+v", again, res)
			}
			// An older retry still answers with its own revision.
			if again := mustAppend(t, s, "coupon-1", es.NoStream, batch...); again != first {
				t.Fatalf("late retry = %+v, want %+v", again, first)
			}

			evs, err := s.ReadStream(testCtx(t), "coupon-1", 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 4 {
				t.Fatalf("stream holds %d events, want 4 (no duplicates)", len(evs))
			}
			if n := srv.EventCount(); n != 4 {
				t.Fatalf("server holds %d events, want 4", n)
			}

			// A retry that only partly matches is a conflict, not a write.
			_, err = s.Append(testCtx(t), "coupon-1", es.NoStream, batch[0], newEvent(9))
			if !errors.Is(err, domain.ErrConcurrency) {
				t.Fatalf("partial retry error = %v, want ErrConcurrency", err)
			}
		})
	}
}

// ---- subscriptions ----

func TestSubscriptionResubscribesAfterDrop(t *testing.T) {
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), Options{ResubscribeMin: time.Millisecond, ResubscribeMax: 20 * time.Millisecond})
	for i := range 10 {
		mustAppend(t, s, fmt.Sprintf("coupon-%d", i%3), es.Any, newEvent(i))
	}
	c := collect(t, s, 0)
	c.waitFor(t, 10)

	// Drop the subscription repeatedly while events keep coming.
	const rounds, perRound = 8, 15
	done := make(chan struct{})
	go func() {
		defer close(done)
		for r := range rounds {
			for i := range perRound {
				if _, err := s.Append(t.Context(), fmt.Sprintf("batch-%d", i%4), es.Any, newEvent(r*perRound+i)); err != nil {
					t.Errorf("Append: %v", err)
					return
				}
			}
			waitUntil(t, "a subscription", func() bool { return srv.Subscriptions() > 0 })
			srv.DropSubscriptions()
		}
	}()
	<-done
	got := c.waitFor(t, 10+rounds*perRound)
	checkExactly(t, got, mustReadAll(t, s))
	reads := srv.Calls("/event_store.client.streams.Streams/Read")
	if reads < rounds {
		t.Fatalf("%d Read calls, want a resubscription per drop", reads)
	}
	// Still live.
	res := mustAppend(t, s, "coupon-x", es.NoStream, newEvent(0))
	if last := c.waitFor(t, 11+rounds*perRound); last[len(last)-1].Position != res.Position {
		t.Fatalf("live event at %d, want %d", last[len(last)-1].Position, res.Position)
	}
}

func TestSubscriptionResubscribesAfterConnectionLoss(t *testing.T) {
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), Options{ResubscribeMin: time.Millisecond, ResubscribeMax: 20 * time.Millisecond})
	c := collect(t, s, 0)
	// An append cut by the connection loss has an unknown outcome: retry it
	// with the same event and expected version (the server deduplicates).
	appendRetry := func(exp es.ExpectedVersion, ev es.EventData) es.AppendResult {
		t.Helper()
		for {
			res, err := s.Append(t.Context(), "coupon-1", exp, ev)
			if err == nil {
				return res
			}
			if !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("Append: %v", err)
			}
			time.Sleep(time.Millisecond)
		}
	}
	exp := es.NoStream
	for r := range 5 {
		for i := range 10 {
			res := appendRetry(exp, newEvent(r*10+i))
			exp = es.Exact(res.NextExpected)
		}
		c.waitFor(t, (r+1)*10)
		if n := srv.DropConnections(); n == 0 {
			t.Fatal("no connection to drop")
		}
	}
	appendRetry(exp, newEvent(50))
	checkExactly(t, c.waitFor(t, 51), mustReadAll(t, s))
}

func TestSubscriptionSurvivesServerRestart(t *testing.T) {
	srv := esdbtest.Start(t)
	url := srv.URL() + fastDiscovery
	s := open(t, url, Options{ResubscribeMin: 5 * time.Millisecond, ResubscribeMax: 50 * time.Millisecond})
	mustAppend(t, s, "coupon-1", es.NoStream, newEvent(0))
	c := collect(t, s, 0)
	c.waitFor(t, 1)

	srv.Stop()
	// Down: calls fail fast with ErrUnavailable, the subscription keeps
	// retrying (and the client gives up rediscovering and is replaced).
	_, err := s.Append(testCtx(t), "coupon-1", es.Exact(0), newEvent(1))
	if !errors.Is(err, domain.ErrUnavailable) || !errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("Append while down = %v, want ErrUnavailable and ErrOutcomeUnknown", err)
	}
	if _, err := s.ReadStream(testCtx(t), "coupon-1", 0); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("ReadStream while down = %v, want ErrUnavailable", err)
	}
	time.Sleep(300 * time.Millisecond) // several failed resubscriptions

	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	var res es.AppendResult
	waitUntil(t, "appends to work again", func() bool {
		var err error
		res, err = s.Append(t.Context(), "coupon-1", es.Exact(0), newEvent(1))
		if err != nil && !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Append after restart: %v", err)
		}
		return err == nil
	})
	got := c.waitFor(t, 2)
	if len(got) != 2 || got[1].Position != res.Position || got[1].Revision != 1 {
		t.Fatalf("after restart got %+v, want coupon-1@1 at %d", got, res.Position)
	}
	checkExactly(t, got, mustReadAll(t, s))
}

// TestLoneSubscriberSurvivesServerRestart: a store that only subscribes
// (so no other call notices the outage) gets going again after a restart.
func TestLoneSubscriberSurvivesServerRestart(t *testing.T) {
	srv := esdbtest.Start(t)
	url := srv.URL() + fastDiscovery
	sub := open(t, url, Options{ResubscribeMin: 5 * time.Millisecond, ResubscribeMax: 50 * time.Millisecond})
	c := collect(t, sub, 0)
	waitUntil(t, "the subscription", func() bool { return srv.Subscriptions() == 1 })
	srv.Stop()
	time.Sleep(300 * time.Millisecond)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	writer := open(t, url, Options{})
	var want []es.RecordedEvent
	for i := range 3 {
		res := mustAppend(t, writer, "coupon-1", es.Any, newEvent(i))
		want = append(want, es.RecordedEvent{Position: res.Position})
	}
	got := c.waitFor(t, 3)
	for i := range want {
		if got[i].Position != want[i].Position {
			t.Fatalf("event %d at %d, want %d", i, got[i].Position, want[i].Position)
		}
	}
	checkExactly(t, got, mustReadAll(t, writer))
}

// TestOutageFailsFastAndRecovers: with the server down, concurrent calls
// fail fast with ErrUnavailable instead of piling up inside the client,
// and the store recovers when the server is back.
func TestOutageFailsFastAndRecovers(t *testing.T) {
	srv := esdbtest.Start(t)
	s := open(t, srv.URL()+fastDiscovery, Options{})
	mustAppend(t, s, "coupon-1", es.NoStream, newEvent(0))
	base := runtime.NumGoroutine()
	srv.Stop()
	start := time.Now()
	var wg sync.WaitGroup
	for g := range 40 {
		wg.Go(func() {
			for i := range 5 {
				_, err := s.Append(t.Context(), "coupon-1", es.Any, newEvent(g*10+i))
				if !errors.Is(err, domain.ErrUnavailable) {
					t.Errorf("Append while down = %v, want ErrUnavailable", err)
					return
				}
				if errors.Is(err, errNotAdmitted) && errors.Is(err, ErrOutcomeUnknown) {
					t.Errorf("a call that was not sent has an unknown outcome: %v", err)
				}
			}
		})
	}
	wg.Wait()
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("200 failing appends took %v", d)
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "appends to work again", func() bool {
		_, err := s.Append(t.Context(), "coupon-1", es.Any, newEvent(0))
		return err == nil
	})
	// Goroutines stuck inside a dead client cannot be freed, but only the
	// calls that were inside when the server went away can be stuck: at
	// most the 40 callers, not the 200 calls.
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > base+50 {
		if time.Now().After(deadline) {
			t.Fatalf("%d goroutines after the outage, %d before", runtime.NumGoroutine(), base)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSubscribeFromAPositionInsideARecord(t *testing.T) {
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), Options{})
	for i := range 5 {
		mustAppend(t, s, "coupon-1", es.Any, newEvent(i))
	}
	all := mustReadAll(t, s)
	// Positions are record offsets: all[2].Position-1 is inside all[1].
	c := collect(t, s, all[2].Position-1)
	checkExactly(t, c.waitFor(t, 3), all[2:])
	evs, err := s.ReadAll(testCtx(t), all[2].Position-1, 10)
	if err != nil {
		t.Fatal(err)
	}
	checkExactly(t, evs, all[2:])
}

// ---- what the store sees ----

func TestOnlyServiceStreamsAreVisible(t *testing.T) {
	srv := esdbtest.Start(t)
	raw := rawClient(t, srv.URL())
	s := open(t, srv.URL(), Options{})
	foreign := func(stream, typ string) {
		t.Helper()
		_, err := raw.AppendToStream(testCtx(t), stream, esdb.AppendToStreamOptions{}, esdb.EventData{EventType: typ, Data: []byte(`{}`)})
		if err != nil {
			t.Fatal(err)
		}
	}
	foreign("$stats-1", "$statsCollected")
	foreign("other-1", "x.v1")
	c := collect(t, s, 0)
	mine := mustAppend(t, s, "coupon-1", es.NoStream, newEvent(0))
	foreign("$$coupon-1", "$metadata")
	foreign("coupon-2", "$streamDeleted")
	foreign("orders-1", "x.v1")
	mustAppend(t, s, "grantjob-1", es.NoStream, newEvent(1))
	last := mustAppend(t, s, "batch-1", es.NoStream, newEvent(2))
	foreign("zzz-1", "x.v1")

	all := mustReadAll(t, s)
	if len(all) != 3 || all[0].Position != mine.Position || all[2].Position != last.Position {
		t.Fatalf("ReadAll = %+v, want the 3 service events", all)
	}
	checkExactly(t, c.waitFor(t, 3), all)
	if p, err := s.LastPosition(testCtx(t)); err != nil || p != last.Position {
		t.Fatalf("LastPosition = %d, %v; want %d", p, err, last.Position)
	}
	if _, err := s.Append(testCtx(t), "orders-1", es.Any, newEvent(0)); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Fatalf("Append outside the prefixes = %v, want ErrInvalidArgument", err)
	}
}

func TestNamespacesAreIsolated(t *testing.T) {
	srv := esdbtest.Start(t)
	a := open(t, srv.URL(), Options{Namespace: "a-"})
	b := open(t, srv.URL(), Options{Namespace: "b-"})
	mustAppend(t, a, "coupon-1", es.NoStream, newEvent(0))
	mustAppend(t, b, "coupon-1", es.NoStream, newEvent(1))
	mustAppend(t, b, "coupon-1", es.Exact(0), newEvent(2))
	if evs := mustReadAll(t, a); len(evs) != 1 || evs[0].StreamID != "coupon-1" {
		t.Fatalf("namespace a sees %+v", evs)
	}
	evs, err := b.ReadStream(testCtx(t), "coupon-1", 0)
	if err != nil || len(evs) != 2 || evs[1].StreamID != "coupon-1" {
		t.Fatalf("namespace b stream = %+v, %v", evs, err)
	}
}

// ---- errors ----

func TestErrorMapping(t *testing.T) {
	srv := esdbtest.Start(t)
	s := open(t, srv.URL(), Options{})
	ctx := testCtx(t)
	mustAppend(t, s, "coupon-1", es.NoStream, newEvent(0))

	t.Run("concurrency", func(t *testing.T) {
		for _, exp := range []es.ExpectedVersion{es.NoStream, es.Exact(5)} {
			_, err := s.Append(ctx, "coupon-1", exp, newEvent(1))
			if !errors.Is(err, domain.ErrConcurrency) {
				t.Fatalf("error = %v, want ErrConcurrency", err)
			}
			var ee *esdb.Error
			if !errors.As(err, &ee) || ee.Code() != esdb.ErrorCodeWrongExpectedVersion {
				t.Fatalf("error %v does not carry the client's WrongExpectedVersion", err)
			}
			if !strings.Contains(err.Error(), "but got '0'") || errors.Is(err, ErrOutcomeUnknown) {
				t.Fatalf("error = %q, want the current revision and a known outcome", err)
			}
		}
		_, err := s.Append(ctx, "coupon-2", es.StreamExists, newEvent(1))
		if !errors.Is(err, domain.ErrConcurrency) || !strings.Contains(err.Error(), "no_stream") {
			t.Fatalf("StreamExists on a missing stream = %v", err)
		}
	})
	t.Run("invalid", func(t *testing.T) {
		cases := map[string]func() error{
			"no events": func() error { _, err := s.Append(ctx, "coupon-1", es.Any); return err },
			"bad id": func() error {
				_, err := s.Append(ctx, "coupon-1", es.Any, es.EventData{ID: "x", Type: "t.v1"})
				return err
			},
			"system type":   func() error { _, err := s.Append(ctx, "coupon-1", es.Any, es.EventData{Type: "$x"}); return err },
			"system stream": func() error { _, err := s.Append(ctx, "$coupon-1", es.Any, newEvent(0)); return err },
			"bad expected":  func() error { _, err := s.Append(ctx, "coupon-1", -3, newEvent(0)); return err },
			"bad limit":     func() error { _, err := s.ReadAll(ctx, 0, 0); return err },
			"nil handler":   func() error { return s.Subscribe(ctx, 0, nil) },
			"too big append": func() error {
				_, err := s.Append(ctx, "coupon-1", es.Any, es.EventData{Type: "t.v1", Data: make([]byte, 2<<20)})
				return err
			},
		}
		for name, f := range cases {
			if err := f(); !errors.Is(err, domain.ErrInvalidArgument) {
				t.Errorf("%s: error = %v, want ErrInvalidArgument", name, err)
			}
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.ReadStream(cctx, "coupon-1", 0); !errors.Is(err, context.Canceled) {
			t.Fatalf("ReadStream = %v, want context.Canceled", err)
		}
		if _, err := s.Append(cctx, "coupon-1", es.Any, newEvent(0)); !errors.Is(err, context.Canceled) {
			t.Fatalf("Append = %v, want context.Canceled", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s2 := open(t, srv.URL(), Options{})
		_ = s2.Close()
		if _, err := s2.Append(ctx, "coupon-1", es.Any, newEvent(0)); !errors.Is(err, ErrClosed) || !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Append after Close = %v", err)
		}
		if err := s2.Subscribe(ctx, 0, func(context.Context, es.RecordedEvent) error { return nil }); !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Subscribe after Close = %v", err)
		}
	})
	t.Run("server down", func(t *testing.T) {
		srv2 := esdbtest.Start(t)
		s2 := open(t, srv2.URL()+fastDiscovery, Options{})
		srv2.Stop()
		start := time.Now()
		for range 3 { // cached connection, failed rediscovery, replaced client
			if _, err := s2.Append(ctx, "coupon-1", es.Any, newEvent(0)); !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("Append with the server down = %v, want ErrUnavailable", err)
			}
			if _, err := s2.LastPosition(ctx); !errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("LastPosition with the server down = %v, want ErrUnavailable", err)
			}
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("failing took %v", d)
		}
	})
	t.Run("open unreachable", func(t *testing.T) {
		lis, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := lis.Addr().String()
		_ = lis.Close()
		_, err = Open(ctx, "esdb://"+addr+"?tls=false"+fastDiscovery, Options{})
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("Open of a closed port = %v, want ErrUnavailable", err)
		}
		if _, err := Open(ctx, "http://x", Options{}); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Fatalf("Open of a bad URL = %v, want ErrInvalidArgument", err)
		}
	})
}

func TestStreamReadsWithoutPositionAreRefused(t *testing.T) {
	srv := esdbtest.StartWithOptions(t, esdbtest.Options{StreamReadsWithoutPosition: true})
	s := open(t, srv.URL(), Options{})
	mustAppend(t, s, "coupon-1", es.NoStream, newEvent(0))
	if _, err := s.ReadStream(testCtx(t), "coupon-1", 0); !errors.Is(err, ErrPositionUnavailable) {
		t.Fatalf("ReadStream = %v, want ErrPositionUnavailable", err)
	}
}

func TestOptionsValidate(t *testing.T) {
	if err := (Options{}).Validate(); err != nil {
		t.Fatalf("zero Options: %v", err)
	}
	bad := []Options{
		{StreamPrefixes: []string{}},
		{StreamPrefixes: []string{"a-", "a-"}},
		{StreamPrefixes: []string{"$ce-"}},
		{Namespace: "$x"},
		{ResubscribeMin: -1},
		{ResubscribeMin: time.Second, ResubscribeMax: time.Millisecond},
		{RequestTimeout: -1},
		{CloseTimeout: -1},
	}
	for _, o := range bad {
		if err := o.Validate(); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("Validate(%+v) = %v, want ErrInvalidArgument", o, err)
		}
		if _, err := Open(t.Context(), "esdb://127.0.0.1:1?tls=false", o); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("Open with %+v = %v, want ErrInvalidArgument", o, err)
		}
	}
}
