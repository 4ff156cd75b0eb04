package redisguard

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// TestConcurrentReserve is the flash sale: 500 units, 2 per user, 1,000
// users firing 2,000 claims (two each) plus 500 extra attempts (a third
// claim for half of them) and 250 retries of an earlier key, from 64
// workers. Exactly 500 units go out, nobody gets more than 2.
func TestConcurrentReserve(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		const (
			stock   = 500
			limit   = 2
			users   = 1000
			workers = 64
		)
		ctx := context.Background()
		mustSync(t, e, batch("FLASH", 0, stock, limit))

		type call struct{ user, key string }
		var calls []call
		for u := range users {
			for k := range 2 {
				calls = append(calls, call{fmt.Sprint("user-", u), fmt.Sprint("k", k)})
			}
		}
		for u := 0; u < users; u += 2 {
			calls = append(calls, call{fmt.Sprint("user-", u), "k2"}) // a third claim
		}
		for u := 1; u < users; u += 4 {
			calls = append(calls, call{fmt.Sprint("user-", u), "k0"}) // a retry
		}
		// Interleave deterministically but not in user order.
		for i := range calls {
			j := (i * 7919) % len(calls)
			calls[i], calls[j] = calls[j], calls[i]
		}

		var (
			accepted, dups, soldOut, already atomic.Int64
			mu                               sync.Mutex
			perUser                          = map[string]int{}
			next                             atomic.Int64
			wg                               sync.WaitGroup
		)
		start := make(chan struct{})
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for {
					i := int(next.Add(1) - 1)
					if i >= len(calls) {
						return
					}
					c := calls[i]
					r, err := e.g.Reserve(ctx, "FLASH", c.user, c.key, "coupon-"+strconv.Itoa(i), t0)
					switch {
					case err == nil && r.Duplicate:
						dups.Add(1)
					case err == nil:
						accepted.Add(1)
						mu.Lock()
						perUser[c.user]++
						mu.Unlock()
					case errors.Is(err, domain.ErrSoldOut):
						soldOut.Add(1)
					case errors.Is(err, domain.ErrAlreadyClaimed):
						already.Add(1)
					default:
						t.Errorf("unexpected error: %v", err)
					}
				}
			}()
		}
		began := time.Now()
		close(start)
		wg.Wait()
		t.Logf("%s: %d calls in %v: %d accepted, %d duplicates, %d sold out, %d already claimed",
			e.name, len(calls), time.Since(began).Round(time.Millisecond), accepted.Load(), dups.Load(), soldOut.Load(), already.Load())

		if got := accepted.Load(); got != stock {
			t.Fatalf("accepted = %d, want exactly %d", got, stock)
		}
		if sum := accepted.Load() + dups.Load() + soldOut.Load() + already.Load(); sum != int64(len(calls)) {
			t.Errorf("outcomes add up to %d, want %d", sum, len(calls))
		}
		for u, n := range perUser {
			if n > limit {
				t.Errorf("%s got %d coupons (limit %d)", u, n, limit)
			}
		}
		if n := remaining(t, e, "FLASH"); n != 0 {
			t.Errorf("remaining = %d, want 0", n)
		}
		k := e.g.Keys("FLASH")
		held, err := e.rdb.HGetAll(ctx, k.Users).Result()
		if err != nil {
			t.Fatal(err)
		}
		var sum int
		for u, v := range held {
			n, _ := strconv.Atoi(v)
			if n > limit || n != perUser[u] {
				t.Errorf("redis says %s holds %d, callers saw %d", u, n, perUser[u])
			}
			sum += n
		}
		if sum != stock {
			t.Errorf("sum of per-user counts = %d, want %d", sum, stock)
		}
		if n, _ := e.rdb.ZCard(ctx, k.Pending).Result(); n != stock {
			t.Errorf("pending = %d, want %d", n, stock)
		}
	})
}

// TestConcurrentPerUserLimit hammers few users with plenty of stock: the
// per-user limit, not the stock, must stop them.
func TestConcurrentPerUserLimit(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		mustSync(t, e, batch("LIM", 0, 10_000, 2))
		var wg sync.WaitGroup
		var ok atomic.Int64
		for w := range 64 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 10 {
					user := fmt.Sprint("u", (w+i)%20)
					_, err := e.g.Reserve(ctx, "LIM", user, "", fmt.Sprintf("c-%d-%d", w, i), t0)
					if err == nil {
						ok.Add(1)
					} else if !errors.Is(err, domain.ErrAlreadyClaimed) {
						t.Errorf("unexpected: %v", err)
					}
				}
			}()
		}
		wg.Wait()
		if ok.Load() != 40 {
			t.Errorf("accepted = %d, want 40 (20 users x 2)", ok.Load())
		}
		if n := remaining(t, e, "LIM"); n != 10_000-40 {
			t.Errorf("remaining = %d", n)
		}
	})
}

// BenchmarkReserve measures parallel reservations (with an idempotency key)
// against real Redis and the embedded miniredis.
func BenchmarkReserve(b *testing.B) {
	for _, be := range backends() {
		b.Run(be.name, func(b *testing.B) {
			e := be.open(b)
			ctx := context.Background()
			mustSync(b, e, batch("BENCH", 0, 1<<40, 1000))
			var seq atomic.Int64
			b.ReportAllocs()
			b.SetParallelism(16) // many requests in flight, as in a flash sale
			b.ResetTimer()
			began := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := seq.Add(1)
					id := strconv.FormatInt(i, 10)
					user := "u" + strconv.FormatInt(i%100_000, 10)
					if _, err := e.g.Reserve(ctx, "BENCH", user, "k"+id, "c"+id, t0); err != nil {
						b.Error(err)
						return
					}
				}
			})
			b.ReportMetric(float64(b.N)/time.Since(began).Seconds(), "reservations/s")
		})
	}
}
