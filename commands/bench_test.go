package commands_test

import (
	"context"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redistest"
)

// BenchmarkClaim measures the full claim path below HTTP: guard reservation,
// durable (fsync'd, group-committed) append, confirmation. Run with
// -cpu to vary parallelism; b.RunParallel uses 4 goroutines per CPU.
func BenchmarkClaim(b *testing.B) {
	for _, o := range []struct {
		name string
		open func(testing.TB) redistest.Backend
	}{{"redis", redistest.Real}, {"miniredis", redistest.Embedded}} {
		b.Run(o.name, func(b *testing.B) {
			be := o.open(b)
			bs, err := boltstore.Open(b.TempDir(), boltstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			g, _ := redisguard.New(be.Client, be.Prefix)
			repo, _ := commands.NewRepository(bs, domain.NewRegistry())
			h, err := commands.NewHandlers(commands.Deps{Repo: repo, Guard: g, Clock: domain.ClockFunc(func() time.Time { return t0 })}, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := h.IssueBatch.Handle(context.Background(), commands.IssueBatch{BatchID: "b1", Rules: rules(1), TotalStock: domain.MaxStock, By: "bench"}); err != nil {
				b.Fatal(err)
			}
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16)
			b.ResetTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					n := seq.Add(1)
					_, err := h.Claim.Handle(context.Background(), commands.ClaimCoupon{BatchID: "b1",
						UserID: fmt.Sprintf("u%d", n), IdempotencyKey: fmt.Sprintf("k%d", n), CouponID: fmt.Sprintf("c%d", n)})
					if err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "claims/s")
		})
	}
}
