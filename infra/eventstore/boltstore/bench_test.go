package boltstore

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

func benchEvent() es.EventData {
	return es.EventData{
		ID:       "8f14e45f-ceea-467f-a0e6-3b2b1c6b9a10",
		Type:     "coupon.claimed.v1",
		Data:     []byte(`{"coupon_id":"c-8f14e45f","batch_id":"b-1","user_id":"u-42","at":"2026-01-02T03:04:05Z"}`),
		Metadata: []byte(`{"correlation_id":"r-1"}`),
	}
}

func openBench(b *testing.B, commits *atomic.Int64) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{OnCommit: func(int) { commits.Add(1) }})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

func report(b *testing.B, n int, start time.Time, commits int64) {
	if el := time.Since(start).Seconds(); el > 0 {
		b.ReportMetric(float64(n)/el, "appends/s")
	}
	if commits > 0 {
		b.ReportMetric(float64(n)/float64(commits), "appends/commit")
	}
}

// BenchmarkAppendSerial: one goroutine, one event per append, so one fsync
// per append.
func BenchmarkAppendSerial(b *testing.B) {
	var commits atomic.Int64
	s := openBench(b, &commits)
	ctx := context.Background()
	e := benchEvent()
	b.ReportAllocs()
	start := time.Now()
	exp := es.NoStream
	n := 0
	for b.Loop() {
		n++
		res, err := s.Append(ctx, "coupon-1", exp, e)
		if err != nil {
			b.Fatal(err)
		}
		exp = es.Exact(res.NextExpected)
	}
	report(b, n, start, commits.Load())
}

// BenchmarkAppendParallel: 16 goroutines per CPU, each appending to its own
// stream; group commit batches them.
func BenchmarkAppendParallel(b *testing.B) {
	var commits atomic.Int64
	s := openBench(b, &commits)
	ctx := context.Background()
	var ids atomic.Int64
	b.ReportAllocs()
	b.SetParallelism(16)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		stream := fmt.Sprintf("coupon-%d", ids.Add(1))
		e := benchEvent()
		exp := es.NoStream
		for pb.Next() {
			res, err := s.Append(ctx, stream, exp, e)
			if err != nil {
				b.Error(err)
				return
			}
			exp = es.Exact(res.NextExpected)
		}
	})
	report(b, b.N, start, commits.Load())
}
