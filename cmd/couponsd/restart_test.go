package main

import (
	"fmt"
	"testing"
	"time"
)

// TestRestartKeepsState: with embedded back ends only, a stop and a start
// keep every batch, coupon and remaining unit of stock.
func TestRestartKeepsState(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	addr := freeAddr(t)
	svc := &service{t: t, bin: buildBinary(t), addr: addr, env: []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
	}}
	svc.start()
	base := "http://" + addr
	admin := tok(t, "ops", "admin")
	now := time.Now().UTC()
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "restart", "kind": "percent", "issuer": "m-1", "percent_off": 10, "max_discount": 3000,
		"scope": map[string]any{"kind": "category", "ids": []string{"shoes"}}, "total_stock": 50, "per_user_limit": 3,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour),
		"valid_from": now.Add(-time.Minute), "valid_until": now.Add(48 * time.Hour), "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	id := body["id"].(string)
	var coupons []string
	for i := range 7 {
		code, body, err := call("POST", base+"/v1/batches/"+id+"/claim", tok(t, fmt.Sprintf("u%d", i%3), "user"), fmt.Sprintf("k%d", i), nil)
		if err != nil || code != 201 {
			t.Fatalf("claim %d: %d %v %v", i, code, body, err)
		}
		coupons = append(coupons, body["id"].(string))
	}
	if code, _, _ := call("POST", base+"/v1/batches/"+id+"/pause", admin, "", nil); code != 200 {
		t.Fatalf("pause: %d", code)
	}
	svc.stop()
	svc.start()
	defer svc.stop()
	code, body, err = call("GET", base+"/v1/batches/"+id, admin, "", nil)
	if err != nil || code != 200 {
		t.Fatalf("get: %d %v %v", code, body, err)
	}
	if body["remaining"].(float64) != 43 || body["status"] != "paused" {
		t.Fatalf("after restart: remaining %v status %v, want 43 paused", body["remaining"], body["status"])
	}
	for _, c := range coupons {
		if code, _, _ := call("GET", base+"/v1/coupons/"+c+"/events", admin, "", nil); code != 200 {
			t.Fatalf("coupon %s lost: %d", c, code)
		}
	}
	// Per-user limits survived too: u0 holds 3 (claims 0, 3, 6).
	if code, body, _ := call("POST", base+"/v1/batches/"+id+"/resume", admin, "", nil); code != 200 {
		t.Fatalf("resume: %d %v", code, body)
	}
	if code, body, _ := call("POST", base+"/v1/batches/"+id+"/claim", tok(t, "u0", "user"), "k-new", nil); code != 409 {
		t.Fatalf("u0 over the limit: %d %v, want 409", code, body)
	}
	// And the idempotency records: a retry returns the first coupon.
	if code, body, _ := call("POST", base+"/v1/batches/"+id+"/claim", tok(t, "u0", "user"), "k0", nil); code != 201 || body["id"] != coupons[0] {
		t.Fatalf("retry k0: %d %v, want 201 %s", code, body, coupons[0])
	}
}
