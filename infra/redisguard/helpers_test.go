package redisguard

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"github.com/couponsd/couponsd/infra/redistest"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/redisx"
)

// testDB is the database the real-Redis tests use, away from DB 0.
const testDB = 11

// env is one backend a test runs against.
type env struct {
	name     string
	rdb      redis.UniversalClient
	g        *Guard
	embedded bool
	conn     *redisx.Conn // embedded only
}

// realRedisOptions reads COUPONS_TEST_REDIS_URL (a redis:// URL or a bare
// host:port; default 127.0.0.1:6379). A URL without a database uses testDB.
func realRedisOptions(tb testing.TB) *redis.Options {
	raw := strings.TrimSpace(os.Getenv("COUPONS_TEST_REDIS_URL"))
	if raw == "" {
		raw = "127.0.0.1:6379"
	}
	if !strings.Contains(raw, "://") {
		return &redis.Options{Addr: raw, DB: testDB, DialTimeout: 500 * time.Millisecond}
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		tb.Fatalf("COUPONS_TEST_REDIS_URL: %v", err)
	}
	_, rest, _ := strings.Cut(raw, "://")
	if _, path, ok := strings.Cut(strings.SplitN(rest, "?", 2)[0], "/"); !ok || path == "" {
		opt.DB = testDB
	}
	if opt.DialTimeout == 0 {
		opt.DialTimeout = 500 * time.Millisecond
	}
	return opt
}

func randomHex(tb testing.TB, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		tb.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// probeOnce checks once per run whether the real Redis answers.
var (
	probeOnce sync.Once
	probeErr  error
)

// openReal connects to the real Redis with a unique prefix and registers the
// cleanup of that prefix's keys. It skips when Redis is unreachable, unless
// COUPONS_TEST_REQUIRE_REDIS=1.
func openReal(tb testing.TB) *env {
	tb.Helper()
	opt := realRedisOptions(tb)
	probeOnce.Do(func() {
		p := *opt
		p.DialerRetries, p.MaxRetries = 1, -1
		c := redis.NewClient(&p)
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		probeErr = c.Ping(ctx).Err()
	})
	if err := probeErr; err != nil {
		if os.Getenv("COUPONS_TEST_REQUIRE_REDIS") == "1" {
			tb.Fatalf("real Redis at %s unreachable and COUPONS_TEST_REQUIRE_REDIS=1: %v", opt.Addr, err)
		}
		tb.Skipf("real Redis at %s unreachable: %v", opt.Addr, err)
	}
	rdb := redis.NewClient(opt)
	prefix := "test:" + randomHex(tb, 6) + ":"
	tb.Cleanup(func() {
		defer rdb.Close()
		ctx := context.Background()
		var cursor uint64
		for {
			keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
			if err != nil {
				tb.Errorf("cleanup scan: %v", err)
				return
			}
			if len(keys) > 0 {
				// Keys of different batches may sit in different slots:
				// delete one by one (pipelined) to stay cluster-safe.
				_, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
					for _, k := range keys {
						p.Del(ctx, k)
					}
					return nil
				})
				if err != nil {
					tb.Errorf("cleanup del: %v", err)
				}
			}
			if cursor = next; cursor == 0 {
				return
			}
		}
	})
	g, err := New(rdb, prefix)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{name: "redis", rdb: rdb, g: g}
}

// openEmbedded starts an in-process miniredis through redisx.Open.
func openEmbedded(tb testing.TB) *env {
	tb.Helper()
	conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = conn.Close() })
	g, err := New(conn.Client, conn.Prefix)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{name: "miniredis", rdb: conn.Client, g: g, embedded: true, conn: conn}
}

// openCluster connects through redisx to the Redis Cluster named by
// COUPONS_TEST_REDIS_CLUSTER ("h1:p1,h2:p2,..." or a redis-cluster:// URL),
// with a unique prefix whose keys are removed from every master at the end.
func openCluster(tb testing.TB) *env {
	tb.Helper()
	raw := strings.TrimSpace(os.Getenv("COUPONS_TEST_REDIS_CLUSTER"))
	if raw == "" {
		tb.Skip("COUPONS_TEST_REDIS_CLUSTER not set")
	}
	if !strings.Contains(raw, "://") {
		raw = "redis-cluster://" + raw
	}
	prefix := "test:" + randomHex(tb, 6) + ":"
	conn, err := redisx.Open(context.Background(), redisx.Config{URL: raw, Prefix: prefix}, nil)
	if err != nil {
		tb.Fatalf("COUPONS_TEST_REDIS_CLUSTER: %v", err)
	}
	cc, ok := conn.Client.(*redis.ClusterClient)
	if !ok {
		tb.Fatalf("COUPONS_TEST_REDIS_CLUSTER opened a %T", conn.Client)
	}
	tb.Cleanup(func() {
		defer conn.Close()
		err := cc.ForEachMaster(context.Background(), func(ctx context.Context, c *redis.Client) error {
			iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
			for iter.Next(ctx) {
				if err := c.Del(ctx, iter.Val()).Err(); err != nil {
					return err
				}
			}
			return iter.Err()
		})
		if err != nil {
			tb.Errorf("cleanup: %v", err)
		}
	})
	g, err := New(conn.Client, prefix)
	if err != nil {
		tb.Fatal(err)
	}
	return &env{name: "cluster", rdb: conn.Client, g: g, conn: conn}
}

type backend struct {
	name string
	open func(testing.TB) *env
}

// backends are real Redis and miniredis, plus a Redis Cluster when
// COUPONS_TEST_REDIS_CLUSTER is set.
func backends() []backend {
	bs := []backend{{"redis", openReal}, {"miniredis", openEmbedded}}
	if os.Getenv("COUPONS_TEST_REDIS_CLUSTER") != "" {
		bs = append(bs, backend{"cluster", openCluster})
	}
	return bs
}

// forEachBackend runs fn against every backend, with a hook failing the test
// when a script call or a MULTI block spans several slots.
func forEachBackend(t *testing.T, fn func(t *testing.T, e *env)) {
	t.Helper()
	for _, b := range backends() {
		t.Run(b.name, func(t *testing.T) {
			e := b.open(t)
			e.rdb.AddHook(slotHook{t, new(atomic.Int32)})
			fn(t, e)
		})
	}
}

// slotHook checks that every script call and MULTI block addresses keys of
// a single cluster slot.
type slotHook struct {
	t        *testing.T
	reported *atomic.Int32 // report a few violations, not thousands
}

func (h slotHook) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		return next(ctx, network, addr)
	}
}

func (h slotHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		h.check(cmdKeys(cmd), cmd.Name())
		return next(ctx, cmd)
	}
}

func (h slotHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			var keys []string
			for _, c := range cmds {
				keys = append(keys, cmdKeys(c)...)
			}
			h.check(keys, "multi")
		} else {
			for _, c := range cmds {
				h.check(cmdKeys(c), c.Name())
			}
		}
		return next(ctx, cmds)
	}
}

func (h slotHook) check(keys []string, what string) {
	for _, k := range keys[min(1, len(keys)):] {
		if redistest.KeySlot(k) != redistest.KeySlot(keys[0]) && h.reported.Add(1) <= 3 {
			h.t.Errorf("%s spans slots: %q (slot %d) and %q (slot %d)", what, keys[0], redistest.KeySlot(keys[0]), k, redistest.KeySlot(k))
			return
		}
	}
}

// cmdKeys extracts the keys of the commands the guard sends.
func cmdKeys(c redis.Cmder) []string {
	args := c.Args()
	s := func(i int) string { return fmt.Sprint(args[i]) }
	switch c.Name() {
	case "eval", "evalsha", "eval_ro", "evalsha_ro":
		n, _ := strconv.Atoi(s(2))
		keys := make([]string, 0, n)
		for i := 3; i < 3+n && i < len(args); i++ {
			keys = append(keys, s(i))
		}
		return keys
	case "del", "exists", "unlink":
		keys := make([]string, 0, len(args)-1)
		for i := 1; i < len(args); i++ {
			keys = append(keys, s(i))
		}
		return keys
	case "multi", "exec", "ping", "script", "hello", "client", "scan", "select", "auth":
		return nil
	}
	if len(args) > 1 {
		return []string{s(1)}
	}
	return nil
}

// Test clock: a batch running in [t0-1h, t0+1h).
var t0 = time.Date(2030, 1, 1, 12, 0, 0, 0, time.UTC)

func batch(id string, version int64, stock int64, limit int) commands.GuardBatch {
	return commands.GuardBatch{
		BatchID:       id,
		Version:       version,
		RuleVersion:   1,
		Public:        true,
		PerUserLimit:  limit,
		ClaimStartsAt: t0.Add(-time.Hour),
		ClaimEndsAt:   t0.Add(time.Hour),
		TotalStock:    stock,
	}
}

func mustSync(t testing.TB, e *env, b commands.GuardBatch) {
	t.Helper()
	if err := e.g.SyncBatch(context.Background(), b); err != nil {
		t.Fatalf("SyncBatch(%+v): %v", b, err)
	}
}

func remaining(t testing.TB, e *env, batchID string) int64 {
	t.Helper()
	n, err := e.g.Remaining(context.Background(), batchID)
	if err != nil {
		t.Fatalf("Remaining(%s): %v", batchID, err)
	}
	return n
}
