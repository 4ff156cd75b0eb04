package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponsd/couponsd/infra/eventstore/esdbtest"
	"github.com/couponsd/couponsd/infra/history/esfake"
	"github.com/couponsd/couponsd/infra/redistest"
)

// TestServiceOnProductionAdapters runs the built binary on the production
// adapters, each against a server speaking its real wire protocol: the
// in-process EventStoreDB gRPC server, a kfake Kafka broker, the in-process
// Elasticsearch REST server, and the real Redis. The walkthrough works, the
// read side is fed through Kafka, and a restart keeps everything.
func TestServiceOnProductionAdapters(t *testing.T) {
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
	kafka, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer kafka.Close()
	es := esfake.NewServer()
	defer es.Close()
	addr := freeAddr(t)
	svc := &service{t: t, bin: buildBinary(t), addr: addr, env: []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
		"COUPONS_EVENTSTORE_URL=" + esdb.URL(), "COUPONS_KAFKA_BROKERS=" + strings.Join(kafka.ListenAddrs(), ","),
		"COUPONS_ELASTICSEARCH_URL=" + es.URL,
		fmt.Sprintf("COUPONS_REDIS_URL=redis://%s/%d", opt.Addr, opt.DB), "COUPONS_REDIS_PREFIX=" + be.Prefix,
	}}
	svc.start()
	base := "http://" + addr
	admin, orders, shopper := tok(t, "ops", "admin"), tok(t, "orders", "service"), tok(t, "kim", "user")
	now := time.Now().UTC()
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "prod", "kind": "threshold", "issuer": "platform", "threshold": 5000, "amount_off": 700,
		"scope": map[string]any{"kind": "all"}, "total_stock": 3, "per_user_limit": 2,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 3, "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	batch := body["id"].(string)
	var ids []string
	for i := range 2 {
		code, body, err = call("POST", base+"/v1/batches/"+batch+"/claim", shopper, fmt.Sprintf("k%d", i), nil)
		if err != nil || code != 201 {
			t.Fatalf("claim: %d %v %v", code, body, err)
		}
		ids = append(ids, body["id"].(string))
	}
	if code, body, _ = call("POST", base+"/v1/coupons/"+ids[0]+"/lock", orders, "", map[string]any{"order_id": "o1", "user_id": "kim"}); code != 200 {
		t.Fatalf("lock: %d %v", code, body)
	}
	code, body, _ = call("POST", base+"/v1/coupons/"+ids[0]+"/redeem", orders, "", map[string]any{"order_id": "o1", "payment_id": "p1", "discount": 700})
	if code != 200 {
		t.Fatalf("redeem: %d %v", code, body)
	}
	pos := int64(body["position"].(float64))
	// The read side is fed through Kafka: wait for it with min_position.
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err = call("GET", fmt.Sprintf("%s/v1/me/coupons?status=used&min_position=%d", base, pos), shopper, "", nil)
		if err == nil && code == 200 && len(body["coupons"].([]any)) == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("used listing never showed the redemption: %d %v %v", code, body, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	code, body, _ = call("GET", base+"/v1/me/coupons?status=usable", shopper, "", nil)
	if code != 200 || len(body["coupons"].([]any)) != 1 || body["coupons"].([]any)[0].(map[string]any)["id"] != ids[1] {
		t.Fatalf("usable listing: %d %v, want only %s", code, body, ids[1])
	}
	svc.stop()
	svc.start()
	defer svc.stop()
	code, body, _ = call("GET", base+"/v1/batches/"+batch, admin, "", nil)
	if code != 200 || body["remaining"].(float64) != 1 {
		t.Fatalf("after restart: %d %v, want remaining 1", code, body)
	}
	code, body, _ = call("GET", base+"/v1/coupons/"+ids[0]+"/events", admin, "", nil)
	if code != 200 || len(body["events"].([]any)) != 3 {
		t.Fatalf("audit after restart: %d %v, want 3 events", code, body)
	}
	productionGrantsAndOutbound(t, base, admin, kafka.ListenAddrs())
}

// productionGrantsAndOutbound: a grant job's shards travel over Kafka
// (topic couponsd.grant-shards.v1, keyed job/shard) and every granted
// coupon is published on couponsd.coupon-events.v1, keyed by coupon id.
func productionGrantsAndOutbound(t *testing.T, base, admin string, brokers []string) {
	t.Helper()
	now := time.Now().UTC()
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "vip", "kind": "direct", "issuer": "platform", "amount_off": 300,
		"scope": map[string]any{"kind": "all"}, "total_stock": 1500, "per_user_limit": 1,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 3, "audience": "targeted",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	batch := body["id"].(string)
	users := make([]string, 2000)
	for i := range users {
		users[i] = fmt.Sprintf("vip-%04d", i)
	}
	code, body, err = call("POST", base+"/v1/batches/"+batch+"/grants", admin, "", map[string]any{"user_ids": users})
	if err != nil || code != 202 {
		t.Fatalf("grant: %d %v %v", code, body, err)
	}
	job := body["job_id"].(string)
	deadline := time.Now().Add(time.Minute)
	for {
		code, body, err = call("GET", base+"/v1/grant-jobs/"+job, admin, "", nil)
		if err == nil && code == 200 && body["state"] == "finished" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("grant job did not finish: %d %v %v", code, body, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if body["granted"].(float64) != 1500 || body["not_granted"].(float64) != 500 || body["outcome"] != "sold_out" {
		t.Fatalf("grant job: %v", body)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(brokers...), kgo.ConsumeTopics("couponsd.coupon-events.v1", "couponsd.grant-shards.v1"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	granted := map[string]bool{}
	shardKeys := map[string]bool{}
	deadline = time.Now().Add(time.Minute)
	for len(granted) < 1500 || len(shardKeys) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("Kafka: %d granted coupons on couponsd.coupon-events.v1, %d shard keys", len(granted), len(shardKeys))
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		fs := cl.PollFetches(ctx)
		cancel()
		fs.EachRecord(func(r *kgo.Record) {
			if r.Topic == "couponsd.grant-shards.v1" {
				shardKeys[string(r.Key)] = true
				return
			}
			var env struct {
				ID, Type, Key string
				Data          struct {
					CouponID string `json:"coupon_id"`
				}
			}
			if err := json.Unmarshal(r.Value, &env); err != nil {
				t.Fatalf("outbound record: %v: %s", err, r.Value)
			}
			if env.Type == "coupon.granted.v1" {
				if string(r.Key) != env.Data.CouponID || env.Key != env.Data.CouponID || env.ID == "" {
					t.Fatalf("granted record keyed %q, envelope %+v", r.Key, env)
				}
				granted[env.Data.CouponID] = true
			}
		})
	}
}
