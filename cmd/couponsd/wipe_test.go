package main

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisx"
)

// TestRedisDataLossMidSale: Redis loses every key of the service in the
// middle of a sale. Claims are refused for a moment (503), the guard is
// rebuilt from the event store, the sale goes on, nothing is oversold, and
// the Redis projections are replayed (verify finds no drift).
func TestRedisDataLossMidSale(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	be := redistest.Real(t)
	opt := redistest.Options(t)
	addr := freeAddr(t)
	svc := &service{t: t, bin: buildBinary(t), addr: addr, env: []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
		fmt.Sprintf("COUPONS_REDIS_URL=redis://%s/%d", opt.Addr, opt.DB), "COUPONS_REDIS_PREFIX=" + be.Prefix,
		"COUPONS_GUARD_SETTLE=1s", "COUPONS_RECONCILE_INTERVAL=200ms", "COUPONS_CLAIMS_PER_MINUTE=0",
	}}
	svc.start()
	defer svc.stop()
	base := "http://" + addr
	admin := tok(t, "ops", "admin")
	now := time.Now().UTC()
	const stock = 300
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "wipe", "kind": "direct", "issuer": "platform", "amount_off": 100,
		"scope": map[string]any{"kind": "all"}, "total_stock": stock, "per_user_limit": 1,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 3, "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	batch := body["id"].(string)
	var accepted, unavailable atomic.Int64
	var mu sync.Mutex
	perUser := map[string]int{}
	burst := func(from, to int) {
		var wg sync.WaitGroup
		users := make(chan int)
		for range 16 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range users {
					u := fmt.Sprintf("s-%04d", i)
					code, _, err := call("POST", base+"/v1/batches/"+batch+"/claim", tok(t, u, "user"), fmt.Sprintf("k-%d", i), nil)
					switch {
					case err != nil:
					case code == 201:
						accepted.Add(1)
						mu.Lock()
						perUser[u]++
						mu.Unlock()
					case code == 503:
						unavailable.Add(1)
					}
				}
			}()
		}
		for i := from; i < to; i++ {
			users <- i
		}
		close(users)
		wg.Wait()
	}
	burst(0, 150)
	if err := redisx.DeletePrefix(context.Background(), be.Client, be.Prefix); err != nil {
		t.Fatal(err)
	}
	// Shoppers keep claiming: first refused, then served once the guard is back.
	deadline := time.Now().Add(30 * time.Second)
	next := 150
	for accepted.Load() < stock && time.Now().Before(deadline) {
		burst(next, next+20)
		next += 20
		time.Sleep(100 * time.Millisecond)
	}
	if accepted.Load() != stock {
		t.Fatalf("accepted %d claims, want exactly the stock %d (%d refused 503)", accepted.Load(), stock, unavailable.Load())
	}
	burst(next, next+50) // sold out now
	if accepted.Load() != stock {
		t.Fatalf("oversold: %d accepted on stock %d", accepted.Load(), stock)
	}
	for u, n := range perUser {
		if n > 1 {
			t.Fatalf("%s got %d coupons", u, n)
		}
	}
	t.Logf("accepted %d, refused 503 during the recovery: %d", accepted.Load(), unavailable.Load())
	// The projections were replayed: verify finds no drift once caught up.
	deadline = time.Now().Add(30 * time.Second)
	for {
		code, body, err = call("POST", base+"/v1/admin/verify", admin, "", map[string]any{})
		drifts, _ := body["drifts"].([]any)
		if err == nil && code == 200 && len(drifts) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("verify after the recovery: %d %d drifts, e.g. %v", code, len(drifts), first(drifts))
		}
		time.Sleep(500 * time.Millisecond)
	}
	code, body, _ = call("GET", base+"/v1/batches/"+batch, admin, "", nil)
	if code != 200 || body["remaining"].(float64) != 0 || body["claimed"].(float64) != stock {
		t.Fatalf("batch after the sale: %d %v", code, body)
	}
}

func first(xs []any) any {
	if len(xs) == 0 {
		return nil
	}
	return xs[0]
}
