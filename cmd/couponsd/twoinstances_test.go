package main

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/eventstore/esdbtest"
	"github.com/couponsd/couponsd/infra/redistest"
)

// TestTwoInstancesNoOversellNoDoubleRedemption: two couponsd processes
// share one Redis and one event store (the in-process EventStoreDB server).
// Claims spread over both never oversell or exceed the per-user limit, and
// a payment callback delivered 8 times at once, to both, redeems once.
func TestTwoInstancesNoOversellNoDoubleRedemption(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	be := redistest.Real(t)
	opt := redistest.Options(t)
	esdb, err := esdbtest.New()
	if err != nil {
		t.Fatal(err)
	}
	defer esdb.Close()
	bin := buildBinary(t)
	var bases []string
	for i := range 2 {
		addr := freeAddr(t)
		svc := &service{t: t, bin: bin, addr: addr, env: []string{
			"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
			"COUPONS_EVENTSTORE_URL=" + esdb.URL(), "COUPONS_CLAIMS_PER_MINUTE=0",
			fmt.Sprintf("COUPONS_REDIS_URL=redis://%s/%d", opt.Addr, opt.DB), "COUPONS_REDIS_PREFIX=" + be.Prefix,
		}}
		svc.start()
		defer svc.stop()
		bases = append(bases, "http://"+addr)
		_ = i
	}
	admin, orders := tok(t, "ops", "admin"), tok(t, "orders", "service")
	now := time.Now().UTC()
	const stock = 200
	code, body, err := call("POST", bases[0]+"/v1/batches", admin, "", map[string]any{
		"name": "two", "kind": "direct", "issuer": "platform", "amount_off": 100,
		"scope": map[string]any{"kind": "all"}, "total_stock": stock, "per_user_limit": 2,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 3, "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	batch := body["id"].(string)
	var accepted atomic.Int64
	var mu sync.Mutex
	perUser := map[string]int{}
	coupons := map[string]string{}
	var wg sync.WaitGroup
	jobs := make(chan int)
	for w := range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range jobs {
				u := fmt.Sprintf("p-%03d", i%150) // 150 shoppers, 3 tries each, limit 2
				code, body, err := call("POST", bases[(i+w)%2]+"/v1/batches/"+batch+"/claim", tok(t, u, "user"), "", nil)
				if err == nil && code == 201 {
					accepted.Add(1)
					mu.Lock()
					perUser[u]++
					coupons[body["id"].(string)] = u
					mu.Unlock()
				}
			}
		}()
	}
	for i := range 450 {
		jobs <- i
	}
	close(jobs)
	wg.Wait()
	if accepted.Load() != stock {
		t.Fatalf("accepted %d on stock %d over two instances", accepted.Load(), stock)
	}
	for u, n := range perUser {
		if n > 2 {
			t.Fatalf("%s got %d coupons (limit 2)", u, n)
		}
	}
	// One coupon, locked then redeemed by 8 concurrent callbacks on both instances.
	var id, owner string
	for c, u := range coupons {
		id, owner = c, u
		break
	}
	if code, body, _ := call("POST", bases[1]+"/v1/coupons/"+id+"/lock", orders, "", map[string]any{"order_id": "o-9", "user_id": owner}); code != 200 {
		t.Fatalf("lock: %d %v", code, body)
	}
	var ok atomic.Int64
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, _, err := call("POST", bases[i%2]+"/v1/coupons/"+id+"/redeem", orders, "", map[string]any{"order_id": "o-9", "payment_id": "pay-9", "discount": 100})
			if err == nil && code == 200 {
				ok.Add(1)
			}
		}()
	}
	wg.Wait()
	code, body, _ = call("GET", bases[0]+"/v1/coupons/"+id+"/events", admin, "", nil)
	redeemed := 0
	for _, e := range body["events"].([]any) {
		if e.(map[string]any)["type"] == "coupon.redeemed.v1" {
			redeemed++
		}
	}
	if ok.Load() != 8 || redeemed != 1 {
		t.Fatalf("8 callbacks: %d answered 200, %d redeemed events; want 8 and 1", ok.Load(), redeemed)
	}
	code, body, _ = call("GET", bases[1]+"/v1/batches/"+batch, admin, "", nil)
	if code != 200 || body["remaining"].(float64) != 0 {
		t.Fatalf("batch: %d %v", code, body)
	}
}
