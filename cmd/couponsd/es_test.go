package main

import (
	"fmt"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/history/esfake"
)

// TestServiceOnElasticsearch runs the built binary with its history index on
// Elasticsearch (the in-process server speaking the REST subset the adapter
// uses): a redeemed coupon shows up in the used listing.
func TestServiceOnElasticsearch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	es := esfake.NewServer()
	defer es.Close()
	addr := freeAddr(t)
	svc := &service{t: t, bin: buildBinary(t), addr: addr, env: []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret,
		"COUPONS_LOG_LEVEL=warn", "COUPONS_ELASTICSEARCH_URL=" + es.URL,
	}}
	svc.start()
	defer svc.stop()
	base := "http://" + addr
	admin, orders, shopper := tok(t, "ops", "admin"), tok(t, "orders", "service"), tok(t, "ann", "user")
	now := time.Now().UTC()
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "es", "kind": "direct", "issuer": "platform", "amount_off": 300,
		"scope": map[string]any{"kind": "all"}, "total_stock": 5, "per_user_limit": 1,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 3, "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	code, body, err = call("POST", base+"/v1/batches/"+body["id"].(string)+"/claim", shopper, "k", nil)
	if err != nil || code != 201 {
		t.Fatalf("claim: %d %v %v", code, body, err)
	}
	id := body["id"].(string)
	if code, body, _ = call("POST", base+"/v1/coupons/"+id+"/lock", orders, "", map[string]any{"order_id": "o1", "user_id": "ann"}); code != 200 {
		t.Fatalf("lock: %d %v", code, body)
	}
	code, body, _ = call("POST", base+"/v1/coupons/"+id+"/redeem", orders, "", map[string]any{"order_id": "o1", "payment_id": "p1", "discount": 300})
	if code != 200 {
		t.Fatalf("redeem: %d %v", code, body)
	}
	pos := int64(body["position"].(float64))
	code, body, err = call("GET", fmt.Sprintf("%s/v1/me/coupons?status=used&min_position=%d", base, pos), shopper, "", nil)
	if err != nil || code != 200 {
		t.Fatalf("used listing: %d %v %v", code, body, err)
	}
	list, _ := body["coupons"].([]any)
	if len(list) != 1 || list[0].(map[string]any)["id"] != id {
		t.Fatalf("used listing %v, want coupon %s", body, id)
	}
	if len(es.Handler.Indices()) == 0 {
		t.Fatal("nothing was written to Elasticsearch")
	}
}
