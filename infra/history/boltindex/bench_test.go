package boltindex

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/couponsd/couponsd/projections"
)

// BenchmarkUpsertBulk upserts new records in calls of 500 (one fsync'd
// transaction each), the shape of a projector catching up.
func BenchmarkUpsertBulk(b *testing.B) {
	const bulk = 500
	ix, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	ctx := context.Background()
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	recs := make([]projections.CouponRecord, bulk)
	n := 0
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		for i := range recs {
			n++
			r := rec(fmt.Sprintf("c-%09d", n), 2)
			r.UserID = fmt.Sprintf("u-%d", n%1000)
			r.BatchID = fmt.Sprintf("b-%d", n%50)
			r.RedeemedAt = t0.Add(time.Duration(n) * time.Millisecond)
			r.EndedAt = r.RedeemedAt
			recs[i] = r
		}
		if err := ix.Upsert(ctx, recs); err != nil {
			b.Fatal(err)
		}
	}
	if el := time.Since(start).Seconds(); el > 0 {
		b.ReportMetric(float64(n)/el, "records/s")
	}
}
