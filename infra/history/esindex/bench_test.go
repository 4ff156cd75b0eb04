package esindex

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/history/esfake"
	"github.com/couponsd/couponsd/projections"
)

// BenchmarkUpsertBulk upserts new records in calls of 500 (one _bulk each,
// refresh=wait_for) against esfake, and against the cluster named by
// COUPONS_TEST_ELASTICSEARCH_URL when set.
func BenchmarkUpsertBulk(b *testing.B) {
	b.Run("esfake", func(b *testing.B) {
		srv := esfake.NewServer()
		defer srv.Close()
		benchUpsert(b, newIndex(b, newClient(b, srv.URL, 0), Options{Prefix: uniquePrefix()}))
	})
	if url := os.Getenv(EnvURL); url != "" {
		b.Run("cluster", func(b *testing.B) {
			c := newClient(b, url, 3)
			prefix := uniquePrefix()
			defer deletePrefix(b, c, prefix)
			benchUpsert(b, newIndex(b, c, Options{Prefix: prefix}))
		})
	}
}

func benchUpsert(b *testing.B, ix *Index) {
	const bulk = 500
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
