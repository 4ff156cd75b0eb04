package projections

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// recorder is a BatchProjector that records the batches it applied.
type recorder struct {
	mu      sync.Mutex
	batches [][]uint64
	cp      uint64
}

func (r *recorder) Name() string { return "rec" }
func (r *recorder) Checkpoint(context.Context) (uint64, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cp, nil
}
func (r *recorder) Handle(ctx context.Context, rec es.RecordedEvent) error {
	return r.HandleBatch(ctx, []es.RecordedEvent{rec})
}
func (r *recorder) HandleBatch(_ context.Context, recs []es.RecordedEvent) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	var b []uint64
	for _, x := range recs {
		b = append(b, x.Position)
	}
	r.batches = append(r.batches, b)
	r.cp = recs[len(recs)-1].Position
	return nil
}

func (r *recorder) applied() [][]uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]uint64(nil), r.batches...)
}

func TestBatchingFlushesBySizeAndDelayAndReportsProgress(t *testing.T) {
	rec := &recorder{}
	prog := NewProgress("rec")
	b := NewBatching(rec, nil, prog, BatchConfig{MaxEvents: 3, MaxDelay: 30 * time.Millisecond})
	ctx := context.Background()
	for p := uint64(1); p <= 4; p++ {
		if err := b.Handle(ctx, es.RecordedEvent{Position: p}); err != nil {
			t.Fatal(err)
		}
	}
	if got := rec.applied(); len(got) != 1 || len(got[0]) != 3 {
		t.Fatalf("after 4 events with MaxEvents 3: %v, want one batch of 3", got)
	}
	if pos, _ := prog.Position("rec"); pos != 3 {
		t.Fatalf("progress %d before the timed flush, want 3 (event 4 is not applied yet)", pos)
	}
	wctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := prog.WaitFor(wctx, 4, "rec"); err != nil {
		t.Fatalf("the delayed flush never came: %v", err)
	}
	if got := rec.applied(); len(got) != 2 || got[1][0] != 4 {
		t.Fatalf("batches %v, want [[1 2 3] [4]]", got)
	}
}

func TestBatchingDiscardDropsTheBuffer(t *testing.T) {
	rec := &recorder{}
	b := NewBatching(rec, nil, nil, BatchConfig{MaxEvents: 10, MaxDelay: 20 * time.Millisecond})
	_ = b.Handle(context.Background(), es.RecordedEvent{Position: 1})
	b.Discard()
	time.Sleep(50 * time.Millisecond)
	if got := rec.applied(); len(got) != 0 {
		t.Fatalf("discarded events were applied: %v", got)
	}
}

func TestProgressWaitForAndReset(t *testing.T) {
	p := NewProgress("a", "b")
	p.Observe("a", 5, time.Time{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if err := p.WaitFor(ctx, 5); err == nil {
		t.Fatal("WaitFor(5) returned while b is at 0")
	}
	go p.Observe("b", 7, time.Time{})
	if err := p.WaitFor(context.Background(), 5); err != nil {
		t.Fatal(err)
	}
	p.Observe("a", 3, time.Time{}) // positions never go back by Observe
	if pos, _ := p.Position("a"); pos != 5 {
		t.Fatalf("position %d, want 5", pos)
	}
	p.Reset("a")
	if p.Min() != 0 {
		t.Fatalf("min %d after reset, want 0", p.Min())
	}
}

func TestFoldRecordFollowsACouponsLife(t *testing.T) {
	at := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	terms := domain.CouponTerms{BatchID: "b", Kind: domain.KindDirect, Issuer: "platform", AmountOff: 300, ValidUntil: at.Add(time.Hour)}
	steps := []struct {
		e      domain.Event
		status string
	}{
		{&domain.CouponClaimed{CouponID: "c", UserID: "u", Terms: terms, At: at}, "usable"},
		{&domain.CouponLocked{CouponID: "c", OrderID: "o", At: at}, "locked"},
		{&domain.CouponRedeemed{CouponID: "c", OrderID: "o", PaymentID: "p", Discount: 300, At: at.Add(time.Minute)}, "redeemed"},
		{&domain.CouponReturned{CouponID: "c", OrderID: "o", UsableAgain: true, At: at.Add(2 * time.Minute)}, "usable"},
		{&domain.CouponExpired{CouponID: "c", At: at.Add(time.Hour)}, "expired"},
	}
	var r CouponRecord
	for i, s := range steps {
		var keep bool
		r, keep = FoldRecord(r, s.e, uint64(i))
		if !keep || r.Status != s.status || r.Version != uint64(i) {
			t.Fatalf("step %d: %+v keep %v, want status %s", i, r, keep, s.status)
		}
	}
	if r.Discount != 0 || !r.RedeemedAt.IsZero() || r.ReturnedAt.IsZero() || r.EndedAt != at.Add(time.Hour) {
		t.Fatalf("after return and expiry: %+v", r)
	}
	if _, keep := FoldRecord(r, &domain.CouponClaimVoided{}, 9); keep {
		t.Fatal("a voided claim must not be recorded")
	}
}
