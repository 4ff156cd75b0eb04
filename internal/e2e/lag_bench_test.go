package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/history/boltindex"
	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/projections"
)

// BenchmarkClaimToVisible measures, during a burst of claims from 64
// concurrent shoppers, the time from a claim's acknowledgement to the moment
// the usable view (and the history index) has applied its event: the lag a
// read with min_position waits for. Reports p50/p99 per projection.
func BenchmarkClaimToVisible(b *testing.B) {
	for _, o := range []struct {
		name string
		open func(testing.TB) redistest.Backend
	}{{"redis", redistest.Real}, {"miniredis", redistest.Embedded}} {
		b.Run(o.name, func(b *testing.B) {
			be := o.open(b)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			bs, err := boltstore.Open(b.TempDir(), boltstore.Options{})
			if err != nil {
				b.Fatal(err)
			}
			defer bs.Close()
			reg := domain.NewRegistry()
			repo, _ := commands.NewRepository(bs, reg)
			g, _ := redisguard.New(be.Client, be.Prefix)
			h, err := commands.NewHandlers(commands.Deps{Repo: repo, Guard: g, Clock: domain.SystemClock{}}, time.Minute)
			if err != nil {
				b.Fatal(err)
			}
			now := time.Now().UTC()
			r := domain.Rules{Name: "lag", Kind: domain.KindDirect, Issuer: domain.IssuerPlatform, AmountOff: 100,
				Scope: domain.Scope{Kind: domain.ScopeAll}, PerUserLimit: 1, ClaimStartsAt: now.Add(-time.Minute),
				ClaimEndsAt: now.Add(time.Hour), ValidDays: 1, Audience: domain.AudiencePublic}
			if _, err := h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: "lag", Rules: r, TotalStock: domain.MaxStock, By: "b"}); err != nil {
				b.Fatal(err)
			}
			view, _ := redisview.OpenLive(ctx, be.Client, be.Prefix)
			hist, _ := boltindex.Open(b.TempDir(), boltindex.Options{})
			defer hist.Close()
			viewP, _ := projections.NewViewProjector(view, repo, reg)
			histP, _ := projections.NewHistoryProjector(hist, reg, 0)
			progress := projections.NewProgress("view", "history")
			log := slog.New(slog.DiscardHandler)
			for _, p := range []projections.BatchProjector{viewP, histP} {
				lp := projections.NewBatching(p, nil, progress, projections.BatchConfig{})
				go func() { _ = pipeline.RunEmbedded(ctx, bs, lp, log) }()
			}
			var (
				mu          sync.Mutex
				lags        = map[string][]time.Duration{}
				seq         atomic.Int64
				workers     = 64
				perWorker   = max(b.N/workers, 1)
				claimsTotal = workers * perWorker
			)
			b.ResetTimer()
			start := time.Now()
			var wg sync.WaitGroup
			for range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for range perWorker {
						n := seq.Add(1)
						res, err := h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: "lag", UserID: fmt.Sprintf("u%d", n), CouponID: fmt.Sprintf("c%d", n)})
						if err != nil {
							b.Error(err)
							return
						}
						acked := time.Now()
						for _, name := range []string{"view", "history"} {
							if err := progress.WaitFor(ctx, res.Position, name); err != nil {
								b.Error(err)
								return
							}
							mu.Lock()
							lags[name] = append(lags[name], time.Since(acked))
							mu.Unlock()
						}
					}
				}()
			}
			wg.Wait()
			el := time.Since(start)
			b.StopTimer()
			b.ReportMetric(float64(claimsTotal)/el.Seconds(), "claims/s")
			for _, name := range []string{"view", "history"} {
				l := lags[name]
				slices.Sort(l)
				if len(l) == 0 {
					continue
				}
				b.ReportMetric(float64(l[len(l)/2].Microseconds())/1000, name+"-p50-ms")
				b.ReportMetric(float64(l[len(l)*99/100].Microseconds())/1000, name+"-p99-ms")
			}
		})
	}
}
