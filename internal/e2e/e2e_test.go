package e2e

import (
	"context"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/history/boltindex"
	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/internal/fixture"
	"github.com/couponsd/couponsd/projections"
)

type world struct {
	store  es.Store
	repo   *commands.Repository
	events []es.RecordedEvent
	stats  fixture.Stats
}

func newWorld(t testing.TB, coupons int) *world {
	t.Helper()
	bs, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bs.Close() })
	repo, _ := commands.NewRepository(bs, domain.NewRegistry())
	st, err := fixture.Populate(context.Background(), repo, fixture.Options{Coupons: coupons, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	w := &world{store: bs, repo: repo, stats: st}
	w.events = readAll(t, bs)
	return w
}

func readAll(t testing.TB, s es.Store) []es.RecordedEvent {
	var out []es.RecordedEvent
	var after uint64
	for {
		recs, err := s.ReadAll(context.Background(), after, 5000)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, recs...)
		if len(recs) < 5000 {
			return out
		}
		after = recs[len(recs)-1].Position
	}
}

// target is one set of projections on its own Redis prefix and index dir.
type target struct {
	prefix     string
	history    *boltindex.Index
	view       *redisview.Live
	projectors []projections.Projector
}

func newTarget(t testing.TB, b redistest.Backend, w *world, name string) *target {
	t.Helper()
	ctx := context.Background()
	tg := &target{prefix: b.Prefix + name + ":"}
	var err error
	if tg.history, err = boltindex.Open(t.TempDir(), boltindex.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = tg.history.Close() })
	ops, _ := redisops.New(b.Client, tg.prefix)
	if tg.view, err = redisview.OpenLive(ctx, b.Client, tg.prefix); err != nil {
		t.Fatal(err)
	}
	reg := w.repo.Registry()
	opsP, _ := projections.NewOpsProjector(ops, reg)
	viewP, _ := projections.NewViewProjector(tg.view, w.repo, reg)
	histP, _ := projections.NewHistoryProjector(tg.history, reg, 64) // a small cache: exercise the index reads
	tg.projectors = []projections.Projector{opsP, viewP, histP}
	return tg
}

func (tg *target) deliver(t testing.TB, rec es.RecordedEvent) {
	for _, p := range tg.projectors {
		if err := p.Handle(context.Background(), rec); err != nil {
			t.Fatalf("%s: %v", p.Name(), err)
		}
	}
}

func notCheckpoint(k string) bool {
	return strings.HasSuffix(k, "checkpoint") || strings.HasSuffix(k, "generation")
}

func (tg *target) snapshot(t testing.TB, b redistest.Backend, w *world) (map[string]string, map[string]projections.CouponRecord) {
	t.Helper()
	ctx := context.Background()
	redisSnap, err := Snapshot(ctx, b.Client, tg.prefix, notCheckpoint)
	if err != nil {
		t.Fatal(err)
	}
	// Generations differ between a live view and a rebuilt one: compare
	// the contents, not the generation number in the key.
	norm := map[string]string{}
	for k, v := range redisSnap {
		if i := strings.Index(k, "view:g"); i >= 0 {
			rest := k[i+len("view:g"):]
			if j := strings.IndexByte(rest, ':'); j >= 0 {
				k = k[:i] + "view:g*" + rest[j:]
			}
		}
		norm[k] = v
	}
	ids := make([]string, 0, w.stats.Coupons)
	for n := range w.stats.Coupons {
		ids = append(ids, "c-"+itoa(n))
	}
	recs, err := tg.history.Get(ctx, ids)
	if err != nil {
		t.Fatal(err)
	}
	return norm, recs
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		n /= 10
		if n == 0 {
			return string(b[i:])
		}
	}
}

func compare(t testing.TB, what string, aRedis, bRedis map[string]string, aHist, bHist map[string]projections.CouponRecord) {
	t.Helper()
	if d := Diff(aRedis, bRedis, 10); len(d) > 0 {
		t.Fatalf("%s: Redis views differ:\n%s", what, strings.Join(d, "\n"))
	}
	if len(aHist) != len(bHist) {
		t.Fatalf("%s: history holds %d vs %d records", what, len(aHist), len(bHist))
	}
	for id, r := range aHist {
		if s := bHist[id]; !recordsEqual(r, s) {
			t.Fatalf("%s: history record %s differs:\n%+v\n%+v", what, id, r, s)
		}
	}
}

func recordsEqual(a, b projections.CouponRecord) bool {
	return a.CouponID == b.CouponID && a.Status == b.Status && a.Version == b.Version && a.Discount == b.Discount &&
		a.OrderID == b.OrderID && a.UserID == b.UserID && a.RedeemedAt.Equal(b.RedeemedAt) && a.ExpiredAt.Equal(b.ExpiredAt) &&
		a.EndedAt.Equal(b.EndedAt) && a.ObtainedAt.Equal(b.ObtainedAt)
}

// Every event delivered twice, coupons interleaved, redeliveries arriving
// after newer events of the same coupon: the views equal a clean replay.
func TestDuplicatedInterleavedDeliveryEqualsCleanReplay(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, 150)
		clean := newTarget(t, b, w, "clean")
		for _, rec := range w.events {
			clean.deliver(t, rec)
		}
		messy := newTarget(t, b, w, "messy")
		rng := rand.New(rand.NewPCG(1, 2))
		byStream := map[string][]es.RecordedEvent{}
		var streams []string
		for _, rec := range w.events {
			if strings.HasPrefix(rec.StreamID, "batch-") {
				messy.deliver(t, rec) // batches first, as issued
				continue
			}
			if _, ok := byStream[rec.StreamID]; !ok {
				streams = append(streams, rec.StreamID)
			}
			byStream[rec.StreamID] = append(byStream[rec.StreamID], rec)
		}
		var delivered []es.RecordedEvent
		for len(streams) > 0 {
			i := rng.IntN(len(streams))
			s := streams[i]
			rec := byStream[s][0]
			messy.deliver(t, rec)
			delivered = append(delivered, rec)
			if byStream[s] = byStream[s][1:]; len(byStream[s]) == 0 {
				streams = append(streams[:i], streams[i+1:]...)
			}
			if rng.IntN(3) == 0 { // an early redelivery of something already seen
				messy.deliver(t, delivered[rng.IntN(len(delivered))])
			}
		}
		rng.Shuffle(len(delivered), func(i, j int) { delivered[i], delivered[j] = delivered[j], delivered[i] })
		for _, rec := range delivered { // and every event once more, in any order
			messy.deliver(t, rec)
		}
		ar, ah := clean.snapshot(t, b, w)
		br, bh := messy.snapshot(t, b, w)
		if len(ar) == 0 || len(ah) != w.stats.Coupons {
			t.Fatalf("clean replay is empty: %d keys, %d records", len(ar), len(ah))
		}
		compare(t, "duplicated delivery", ar, br, ah, bh)
	})
}

// stopAfter cancels the run after n events have been handled.
type stopAfter struct {
	projections.Projector
	n      int64
	seen   *atomic.Int64
	cancel context.CancelFunc
}

func (s stopAfter) Handle(ctx context.Context, rec es.RecordedEvent) error {
	if s.seen.Add(1) > s.n {
		s.cancel()
		return context.Canceled
	}
	return s.Projector.Handle(ctx, rec)
}

// A projector killed mid-stream resumes from its checkpoint through the
// Watermill pipeline: no gap, no double count.
func TestProjectorResumesFromCheckpoint(t *testing.T) {
	b := redistest.Real(t)
	w := newWorld(t, 400)
	clean := newTarget(t, b, w, "clean")
	for _, rec := range w.events {
		clean.deliver(t, rec)
	}
	resumed := newTarget(t, b, w, "resumed")
	log := slog.New(slog.DiscardHandler)
	head := w.events[len(w.events)-1].Position
	for i, p := range resumed.projectors {
		// First run: killed after a third of the events.
		ctx, cancel := context.WithCancel(context.Background())
		var seen atomic.Int64
		_ = pipeline.RunEmbedded(ctx, w.store, stopAfter{p, int64(len(w.events) / 3), &seen, cancel}, log)
		cancel()
		cp, _ := p.Checkpoint(context.Background())
		if cp == 0 || cp >= head {
			t.Fatalf("%s: checkpoint %d after the kill, want mid-stream", p.Name(), cp)
		}
		// Second run: from the checkpoint to the end.
		ctx, cancel = context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- pipeline.RunEmbedded(ctx, w.store, p, log) }()
		deadline := time.Now().Add(30 * time.Second)
		for {
			if cp, _ := p.Checkpoint(context.Background()); cp >= head {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s did not catch up", p.Name())
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
		<-done
		_ = i
	}
	ar, ah := clean.snapshot(t, b, w)
	br, bh := resumed.snapshot(t, b, w)
	compare(t, "resumed", ar, br, ah, bh)
}
