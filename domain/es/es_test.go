package es

import (
	"context"
	"errors"
	"testing"
)

// pages is a Store whose ReadAll serves positions 1..n (other methods unused).
type pages struct {
	Store
	n     uint64
	reads int
}

func (p *pages) ReadAll(_ context.Context, after uint64, limit int) ([]RecordedEvent, error) {
	p.reads++
	var out []RecordedEvent
	for pos := after + 1; pos <= p.n && len(out) < limit; pos++ {
		out = append(out, RecordedEvent{Position: pos})
	}
	return out, nil
}

func TestScanPagesStopsAndFails(t *testing.T) {
	ctx := context.Background()
	p := &pages{n: 10}
	var seen []uint64
	if err := Scan(ctx, p, 2, 3, func(r RecordedEvent) error { seen = append(seen, r.Position); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(seen) != 8 || seen[0] != 3 || seen[7] != 10 {
		t.Fatalf("seen %v, want 3..10", seen)
	}
	seen = nil
	if err := Scan(ctx, p, 0, 4, func(r RecordedEvent) error {
		if r.Position > 5 {
			return ErrStopScan
		}
		seen = append(seen, r.Position)
		return nil
	}); err != nil || len(seen) != 5 {
		t.Fatalf("stop: %v %v", seen, err)
	}
	boom := errors.New("boom")
	if err := Scan(ctx, p, 0, 4, func(RecordedEvent) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("callback error: %v", err)
	}
}
