package redisidem

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency/storetest"
)

const realRedisAddr = "127.0.0.1:6379"

func randomPrefix(t *testing.T) string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "couponsd-test:" + strings.ReplaceAll(t.Name(), "/", "_") + ":" + hex.EncodeToString(b[:]) + ":"
}

// realClient connects to the local Redis (DB 12) or skips the test, unless
// COUPONS_TEST_REQUIRE_REDIS=1 makes a missing server a failure.
func realClient(t *testing.T) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: realRedisAddr, DB: 12, DialTimeout: time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Ping(ctx).Err(); err != nil {
		_ = c.Close()
		if os.Getenv("COUPONS_TEST_REQUIRE_REDIS") == "1" {
			t.Fatalf("redis at %s unreachable: %v", realRedisAddr, err)
		}
		t.Skipf("redis at %s unreachable: %v", realRedisAddr, err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// cleanup deletes only the keys under prefix (never FLUSHDB/FLUSHALL).
func cleanup(t *testing.T, c *redis.Client, prefix string) {
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		iter := c.Scan(ctx, 0, prefix+"*", 200).Iterator()
		var keys []string
		for iter.Next(ctx) {
			keys = append(keys, iter.Val())
		}
		if err := iter.Err(); err != nil {
			t.Errorf("scan %s*: %v", prefix, err)
			return
		}
		if len(keys) > 0 {
			if err := c.Del(ctx, keys...).Err(); err != nil {
				t.Errorf("del: %v", err)
			}
		}
	})
}

func TestConformanceRealRedis(t *testing.T) {
	c := realClient(t)
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) idempotency.Store {
			p := randomPrefix(t)
			cleanup(t, c, p)
			s, err := New(c, p)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Advance: func(t *testing.T, d time.Duration) { time.Sleep(d) },
		Lease:   150 * time.Millisecond,
	})
}

func TestConformanceMiniredis(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) idempotency.Store {
			s, err := New(c, randomPrefix(t))
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
		Advance: func(t *testing.T, d time.Duration) { m.FastForward(d) },
	})
}

func TestKeysLiveUnderPrefixWithTTL(t *testing.T) {
	c := realClient(t)
	p := randomPrefix(t)
	cleanup(t, c, p)
	s, err := New(c, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	e, err := s.Begin(ctx, "abc", "fp", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	ttl, err := c.PTTL(ctx, p+"idem:abc").Result()
	if err != nil || ttl <= 0 || ttl > 30*time.Second {
		t.Fatalf("in-flight marker TTL = %v, %v; want (0, 30s]", ttl, err)
	}
	if err := s.Complete(ctx, "abc", e.Token, idempotency.Response{Status: 201, Body: []byte(`{}`)}, 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	ttl, err = c.PTTL(ctx, p+"idem:abc").Result()
	if err != nil || ttl < 23*time.Hour || ttl > 24*time.Hour {
		t.Fatalf("stored outcome TTL = %v, %v; want about 24h", ttl, err)
	}
}

func TestCorruptValue(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	s, err := New(c, "p:")
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Set("p:idem:k", "garbage"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Begin(context.Background(), "k", "fp", time.Minute); err == nil {
		t.Fatal("Begin on a corrupt value succeeded")
	}
}

func TestUnavailable(t *testing.T) {
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr(), MaxRetries: -1, DialTimeout: 200 * time.Millisecond})
	t.Cleanup(func() { _ = c.Close() })
	s, err := New(c, "p:")
	if err != nil {
		t.Fatal(err)
	}
	m.Close()
	_, err = s.Begin(context.Background(), "k", "fp", time.Minute)
	if !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("Begin with Redis down = %v, want ErrUnavailable", err)
	}
}

func TestNewValidates(t *testing.T) {
	if _, err := New(nil, "p:"); err == nil {
		t.Error("New(nil) succeeded")
	}
	m := miniredis.RunT(t)
	c := redis.NewClient(&redis.Options{Addr: m.Addr()})
	t.Cleanup(func() { _ = c.Close() })
	if _, err := New(c, "p{x}:"); err == nil {
		t.Error("New with braces in the prefix succeeded")
	}
}
