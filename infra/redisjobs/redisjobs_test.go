package redisjobs_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
)

// backend is a Redis plus a way to let time pass on it.
type backend struct {
	redistest.Backend
	advance func(d time.Duration)
}

// forEach runs fn against the real Redis and an embedded miniredis (whose
// clock only moves when told to).
func forEach(t *testing.T, fn func(t *testing.T, b backend)) {
	t.Run("redis", func(t *testing.T) {
		fn(t, backend{Backend: redistest.Real(t), advance: time.Sleep})
	})
	t.Run("miniredis", func(t *testing.T) {
		conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = conn.Close() })
		fn(t, backend{
			Backend: redistest.Backend{Name: "miniredis", Client: conn.Client, Prefix: conn.Prefix, Embedded: true},
			advance: conn.Mini().FastForward,
		})
	})
}

func newStore(t *testing.T, b backend) *redisjobs.Store {
	t.Helper()
	s, err := redisjobs.New(b.Client, b.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestLeaseIsExclusive(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		const ttl = 200 * time.Millisecond
		steps := []struct {
			name string
			do   func() (bool, error)
			want bool
		}{
			{"A takes the free lease", func() (bool, error) { return s.TryLease(ctx, "j1", "A", ttl) }, true},
			{"B cannot take it", func() (bool, error) { return s.TryLease(ctx, "j1", "B", ttl) }, false},
			{"A cannot take it twice", func() (bool, error) { return s.TryLease(ctx, "j1", "A", ttl) }, false},
			{"B cannot renew it", func() (bool, error) { return s.RenewLease(ctx, "j1", "B", ttl) }, false},
			{"B's release leaves it", func() (bool, error) { return true, s.ReleaseLease(ctx, "j1", "B") }, true},
			{"still A's", func() (bool, error) { o, err := s.LeaseOwner(ctx, "j1"); return o == "A", err }, true},
			{"A renews it", func() (bool, error) { return s.RenewLease(ctx, "j1", "A", ttl) }, true},
			{"another job is free", func() (bool, error) { return s.TryLease(ctx, "j2", "B", ttl) }, true},
			{"A releases it", func() (bool, error) { return true, s.ReleaseLease(ctx, "j1", "A") }, true},
			{"A cannot renew a released lease", func() (bool, error) { return s.RenewLease(ctx, "j1", "A", ttl) }, false},
			{"B takes it now", func() (bool, error) { return s.TryLease(ctx, "j1", "B", ttl) }, true},
		}
		for _, st := range steps {
			got, err := st.do()
			if err != nil || got != st.want {
				t.Fatalf("%s: %v %v, want %v", st.name, got, err, st.want)
			}
		}
	})
}

func TestLeaseExpiresUnlessRenewed(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		const ttl = 300 * time.Millisecond
		if ok, err := s.TryLease(ctx, "j1", "A", ttl); !ok || err != nil {
			t.Fatalf("take: %v %v", ok, err)
		}
		// Renewed before the end: still A's after more than one TTL in all.
		b.advance(200 * time.Millisecond)
		if ok, err := s.RenewLease(ctx, "j1", "A", ttl); !ok || err != nil {
			t.Fatalf("renew: %v %v", ok, err)
		}
		b.advance(150 * time.Millisecond)
		if ok, _ := s.TryLease(ctx, "j1", "B", ttl); ok {
			t.Fatal("B took a renewed lease")
		}
		// Not renewed: it lapses, B takes it, and A's renewal fails.
		b.advance(400 * time.Millisecond)
		if ok, err := s.TryLease(ctx, "j1", "B", ttl); !ok || err != nil {
			t.Fatalf("B after expiry: %v %v", ok, err)
		}
		if ok, _ := s.RenewLease(ctx, "j1", "A", ttl); ok {
			t.Fatal("A renewed B's lease")
		}
		if err := s.ReleaseLease(ctx, "j1", "A"); err != nil {
			t.Fatal(err)
		}
		if o, _ := s.LeaseOwner(ctx, "j1"); o != "B" {
			t.Fatalf("owner %q, want B (A's late release must not end B's lease)", o)
		}
	})
}

// Many contenders at once: exactly one wins each round.
func TestLeaseRace(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		for round := range 20 {
			job := fmt.Sprintf("j%d", round)
			var wins atomic.Int64
			var wg sync.WaitGroup
			for c := range 16 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					ok, err := s.TryLease(ctx, job, fmt.Sprintf("o%d", c), time.Minute)
					if err != nil {
						t.Error(err)
					}
					if ok {
						wins.Add(1)
					}
				}()
			}
			wg.Wait()
			if wins.Load() != 1 {
				t.Fatalf("round %d: %d winners", round, wins.Load())
			}
		}
	})
}

func TestLeaseRefusesBadArguments(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		for _, err := range []error{
			func() error { _, err := s.TryLease(ctx, "", "A", time.Second); return err }(),
			func() error { _, err := s.TryLease(ctx, "j", "", time.Second); return err }(),
			func() error { _, err := s.TryLease(ctx, "j", "A", 0); return err }(),
			func() error { _, err := s.RenewLease(ctx, "j", "A", time.Microsecond); return err }(),
			s.ReleaseLease(ctx, "j", ""),
		} {
			if !errors.Is(err, domain.ErrInvalidArgument) {
				t.Errorf("got %v, want invalid_argument", err)
			}
		}
	})
}

func TestActiveSetAndCheckpoint(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		if cp, err := s.Checkpoint(ctx); cp != 0 || err != nil {
			t.Fatalf("empty checkpoint %d %v", cp, err)
		}
		steps := []struct {
			do     func() error
			active []string
			cp     uint64
		}{
			{func() error { return s.MarkGrantJobActive(ctx, "j2", 3) }, []string{"j2"}, 3},
			{func() error { return s.MarkGrantJobActive(ctx, "j1", 5) }, []string{"j1", "j2"}, 5},
			{func() error { return s.SaveCheckpoint(ctx, 8) }, []string{"j1", "j2"}, 8},
			{func() error { return s.MarkGrantJobFinished(ctx, "j2", 9) }, []string{"j1"}, 9},
			// Replays after a crash before the checkpoint: same set.
			{func() error { return s.MarkGrantJobActive(ctx, "j2", 3) }, []string{"j1", "j2"}, 3},
			{func() error { return s.MarkGrantJobFinished(ctx, "j2", 9) }, []string{"j1"}, 9},
			{func() error { return s.MarkGrantJobFinished(ctx, "j1", 12) }, nil, 12},
		}
		for i, st := range steps {
			if err := st.do(); err != nil {
				t.Fatalf("step %d: %v", i, err)
			}
			ids, err := s.ActiveGrantJobs(ctx)
			if err != nil || fmt.Sprint(ids) != fmt.Sprint(st.active) {
				t.Fatalf("step %d: active %v %v, want %v", i, ids, err, st.active)
			}
			if cp, err := s.Checkpoint(ctx); cp != st.cp || err != nil {
				t.Fatalf("step %d: checkpoint %d %v, want %d", i, cp, err, st.cp)
			}
		}
	})
}

func TestUnavailableRedis(t *testing.T) {
	conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := redisjobs.New(conn.Client, conn.Prefix)
	if err != nil {
		t.Fatal(err)
	}
	_ = conn.Close()
	ctx := context.Background()
	if _, err := s.TryLease(ctx, "j", "A", time.Second); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("TryLease on a closed client: %v", err)
	}
	if _, err := s.ActiveGrantJobs(ctx); !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("ActiveGrantJobs on a closed client: %v", err)
	}
	if _, err := redisjobs.New(nil, ""); err == nil {
		t.Fatal("New(nil) succeeded")
	}
}

// The grant-jobs projection on this store: jobs become active and finish,
// done shards add their counts once (a redelivered batch changes nothing),
// and a batch of unrelated events costs one checkpoint.
func TestGrantJobsProjection(t *testing.T) {
	forEach(t, func(t *testing.T, b backend) {
		s := newStore(t, b)
		ctx := context.Background()
		reg := domain.NewRegistry()
		p, err := projections.NewGrantJobsProjector(s, reg)
		if err != nil {
			t.Fatal(err)
		}
		rec := func(pos uint64, stream string, e domain.Event) es.RecordedEvent {
			name, data, err := reg.Marshal(e)
			if err != nil {
				t.Fatal(err)
			}
			return es.RecordedEvent{StreamID: stream, Position: pos, Type: name, Data: data}
		}
		done := func(pos uint64, shard int, c domain.GrantCounts) es.RecordedEvent {
			return rec(pos, commands.GrantShardStream("j1", shard), &domain.GrantShardDone{JobID: "j1", BatchID: "b1", Shard: shard, GrantCounts: c, Outcome: domain.GrantJobCompleted})
		}
		claim := func(pos uint64) es.RecordedEvent {
			return rec(pos, "coupon-c"+fmt.Sprint(pos), &domain.CouponClaimed{CouponID: "c" + fmt.Sprint(pos), UserID: "u"})
		}
		batch := []es.RecordedEvent{
			claim(1),
			rec(2, commands.GrantJobStream("j1"), &domain.GrantJobCreated{JobID: "j1", BatchID: "b1"}),
			claim(3),
			done(4, 0, domain.GrantCounts{Total: 3, Granted: 2, Skipped: 1}),
			done(5, 1, domain.GrantCounts{Total: 2, NotGranted: 2}),
			claim(6),
		}
		for range 2 { // the second time: redelivered
			if err := p.HandleBatch(ctx, batch); err != nil {
				t.Fatal(err)
			}
		}
		if ids, _ := s.ActiveGrantJobs(ctx); fmt.Sprint(ids) != "[j1]" {
			t.Fatalf("active %v", ids)
		}
		n, c, err := s.GrantJobProgress(ctx, "j1")
		if err != nil || n != 2 || c != (domain.GrantCounts{Total: 5, Granted: 2, Skipped: 1, NotGranted: 2}) {
			t.Fatalf("progress %d %+v %v", n, c, err)
		}
		if shards, _ := s.DoneShards(ctx, "j1"); fmt.Sprint(shards) != "[0 1]" {
			t.Fatalf("done shards %v", shards)
		}
		if cp, _ := s.Checkpoint(ctx); cp != 6 {
			t.Fatalf("checkpoint %d, want 6", cp)
		}
		fin := rec(7, commands.GrantJobStream("j1"), &domain.GrantJobFinished{JobID: "j1", BatchID: "b1"})
		if err := p.Handle(ctx, fin); err != nil {
			t.Fatal(err)
		}
		if ids, _ := s.ActiveGrantJobs(ctx); len(ids) != 0 {
			t.Fatalf("active after finish %v", ids)
		}
		if n, _, _ := s.GrantJobProgress(ctx, "j1"); n != 0 {
			t.Fatalf("progress kept after finish: %d shards", n)
		}
		if err := p.HandleBatch(ctx, []es.RecordedEvent{claim(8), claim(9)}); err != nil {
			t.Fatal(err)
		}
		if cp, _ := s.Checkpoint(ctx); cp != 9 {
			t.Fatalf("checkpoint %d, want 9", cp)
		}
	})
}
