// Package redistest gives tests a Redis to run against: the real server
// (COUPONS_TEST_REDIS_URL, default 127.0.0.1:6379, database 13) under a unique
// key prefix that is deleted afterwards (never FLUSHALL), or an embedded
// miniredis. Real-Redis tests skip when no server answers, unless
// COUPONS_TEST_REQUIRE_REDIS=1 (as in CI), where they fail.
package redistest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/redis/go-redis/v9"
)

// DB is the database real-Redis tests use.
const DB = 13

// Backend is one Redis a test runs against.
type Backend struct {
	Name     string
	Client   redis.UniversalClient
	Prefix   string
	Embedded bool
}

// Options reads COUPONS_TEST_REDIS_URL (redis:// URL or host:port).
func Options(tb testing.TB) *redis.Options {
	raw := strings.TrimSpace(os.Getenv("COUPONS_TEST_REDIS_URL"))
	if raw == "" {
		raw = "127.0.0.1:6379"
	}
	if !strings.Contains(raw, "://") {
		return &redis.Options{Addr: raw, DB: DB, DialTimeout: 500 * time.Millisecond, PoolSize: 64}
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		tb.Fatalf("COUPONS_TEST_REDIS_URL: %v", err)
	}
	if opt.DB == 0 {
		opt.DB = DB
	}
	return opt
}

// RandomPrefix returns "test:<hex>:".
func RandomPrefix(tb testing.TB) string {
	b := make([]byte, 6)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return "test:" + hex.EncodeToString(b) + ":"
}

// Real connects to the real Redis under a fresh prefix and deletes that
// prefix's keys when the test ends.
func Real(tb testing.TB) Backend {
	tb.Helper()
	opt := Options(tb)
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		if os.Getenv("COUPONS_TEST_REQUIRE_REDIS") == "1" {
			tb.Fatalf("real Redis at %s unreachable and COUPONS_TEST_REQUIRE_REDIS=1: %v", opt.Addr, err)
		}
		tb.Skipf("real Redis at %s unreachable: %v", opt.Addr, err)
	}
	prefix := RandomPrefix(tb)
	tb.Cleanup(func() {
		defer rdb.Close()
		if err := DeletePrefix(context.Background(), rdb, prefix); err != nil {
			tb.Errorf("redis cleanup: %v", err)
		}
	})
	return Backend{Name: "redis", Client: rdb, Prefix: prefix}
}

// DeletePrefix deletes every key starting with prefix (see redisx.DeletePrefix).
func DeletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	return redisx.DeletePrefix(ctx, rdb, prefix)
}

// Embedded starts an in-process miniredis through redisx.Open.
func Embedded(tb testing.TB) Backend {
	tb.Helper()
	conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	return Backend{Name: "miniredis", Client: conn.Client, Prefix: conn.Prefix, Embedded: true}
}

// ForEach runs fn as a subtest against the real Redis and against miniredis.
func ForEach(t *testing.T, fn func(t *testing.T, b Backend)) {
	t.Helper()
	for _, o := range []struct {
		name string
		open func(testing.TB) Backend
	}{{"redis", Real}, {"miniredis", Embedded}} {
		t.Run(o.name, func(t *testing.T) { fn(t, o.open(t)) })
	}
}
