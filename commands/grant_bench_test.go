package commands_test

import (
	"fmt"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/redistest"
)

// BenchmarkGrantJob times one grant job end to end (upload split into
// shards, shards over the in-process bus, grants, exact finish) on the
// embedded store, against real Redis and against miniredis (the embedded
// back ends). COUPONS_BENCH_GRANT_N sets the list size (default 100,000;
// docs/performance.md quotes 1,000,000). Run with -benchtime=1x.
func BenchmarkGrantJob(b *testing.B) {
	n := 100_000
	if v, err := strconv.Atoi(os.Getenv("COUPONS_BENCH_GRANT_N")); err == nil && v > 0 {
		n = v
	}
	users := make([]string, n)
	for i := range users {
		users[i] = fmt.Sprintf("user-%08d", i)
	}
	for _, be := range []struct {
		name string
		open func(testing.TB) redistest.Backend
	}{{"redis", redistest.Real}, {"miniredis", redistest.Embedded}} {
		b.Run(be.name, func(b *testing.B) {
			for range b.N {
				b.StopTimer()
				back := be.open(b)
				w := newWorld(b, back, nil)
				w.issue(b, "b1", int64(n), 1)
				r := startGrants(b, w, back, 1000)
				b.StartTimer()
				start := time.Now()
				res, err := r.grants.Create.Handle(b.Context(), commands.CreateGrantJob{JobID: "bench", BatchID: "b1", Users: usersOf(users), By: "admin"})
				if err != nil {
					b.Fatal(err)
				}
				uploaded := time.Since(start)
				st, err := r.grants.Run.Handle(b.Context(), commands.RunGrantJob{JobID: "bench"})
				if err != nil {
					b.Fatal(err)
				}
				el := time.Since(start)
				b.StopTimer()
				r.stop()
				if st.Granted != n {
					b.Fatalf("granted %d of %d: %+v", st.Granted, n, st)
				}
				b.ReportMetric(float64(st.Granted)/el.Seconds(), "grants/s")
				b.ReportMetric(el.Seconds(), "wall-s")
				b.Logf("%s: %d grants in %v (upload and split %v, %d shards): %.0f grants/s", back.Name, st.Granted,
					el.Round(time.Millisecond), uploaded.Round(time.Millisecond), res.Aggregate.Shards, float64(st.Granted)/el.Seconds())
			}
		})
	}
}
