package redisview_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/projections"
)

// memoryDB is the database of the memory measurement (away from the other
// real-Redis tests' databases).
const memoryDB = 14

type fixedClock struct{ t time.Time }

func (c fixedClock) Now() time.Time { return c.t }

// TestRedisBytesPerUsableCoupon measures what usable coupons cost in Redis,
// for the sizing guidance of the README's "Production" section: 10,000
// coupons claimed by 1,000 shoppers through the real claim handler (stock
// guard, event store), then projected through the live view and ops
// projectors one event at a time, as in production. MEMORY USAGE (SAMPLES 0,
// exact) is summed over the keys of each part and divided by the coupons.
// The README's figure comes from
//
//	COUPONS_TEST_MEMORY_COUPONS=10000 COUPONS_TEST_MEMORY_USERS=1000 \
//	  go test -count=1 -v -run TestRedisBytesPerUsableCoupon ./infra/redisview/
//
// (the default, 2,000 coupons of 200 shoppers, keeps the test suite quick:
// 10 coupons per shopper either way).
//
// It runs against the real Redis (COUPONS_TEST_REDIS_URL, default
// 127.0.0.1:6379) in database 14, under a random key prefix deleted at the
// end; it skips when no Redis answers (fails under COUPONS_TEST_REQUIRE_REDIS=1),
// and in -short mode.
func TestRedisBytesPerUsableCoupon(t *testing.T) {
	if testing.Short() {
		t.Skip("claims and projects 10,000 coupons")
	}
	coupons, users := envInt(t, "COUPONS_TEST_MEMORY_COUPONS", 2_000), envInt(t, "COUPONS_TEST_MEMORY_USERS", 200)
	if users <= 0 || coupons < users {
		t.Fatalf("want coupons >= users > 0, got %d coupons, %d users", coupons, users)
	}
	perUser := (coupons + users - 1) / users
	ctx := context.Background()

	opt := redistest.Options(t)
	opt.DB = memoryDB
	rdb := redis.NewClient(opt)
	pctx, cancel := context.WithTimeout(ctx, time.Second)
	err := rdb.Ping(pctx).Err()
	cancel()
	if err != nil {
		_ = rdb.Close()
		if os.Getenv("COUPONS_TEST_REQUIRE_REDIS") == "1" {
			t.Fatalf("real Redis at %s unreachable and COUPONS_TEST_REQUIRE_REDIS=1: %v", opt.Addr, err)
		}
		t.Skipf("real Redis at %s unreachable: %v", opt.Addr, err)
	}
	prefix := redistest.RandomPrefix(t)
	t.Cleanup(func() {
		defer rdb.Close()
		if err := redistest.DeletePrefix(context.Background(), rdb, prefix); err != nil {
			t.Errorf("cleanup of %s*: %v", prefix, err)
		}
	})

	store, err := boltstore.Open(t.TempDir(), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	repo, err := commands.NewRepository(store, domain.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := redisguard.New(rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	h, err := commands.NewHandlers(commands.Deps{Repo: repo, Guard: guard, Clock: fixedClock{now}}, 30*time.Minute)
	if err != nil {
		t.Fatal(err)
	}

	// The README's walkthrough batch, with room for every claim.
	batchID := uuid.Must(uuid.NewV7()).String()
	if _, err := h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: batchID, By: "ops", TotalStock: int64(coupons), Rules: domain.Rules{
		Name: "Double 11", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: 1000, AmountOff: 100,
		Scope: domain.Scope{Kind: domain.ScopeAll}, PerUserLimit: perUser, ValidDays: 7, Audience: domain.AudiencePublic,
		ClaimStartsAt: now.Add(-time.Hour), ClaimEndsAt: now.Add(30 * 24 * time.Hour),
	}}); err != nil {
		t.Fatalf("issue batch: %v", err)
	}

	// Claims as the HTTP layer makes them: a UUIDv7 coupon id, an
	// Idempotency-Key, 32 at a time.
	claimStart := time.Now()
	jobs := make(chan int)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
	)
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range jobs {
				_, err := h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: batchID, UserID: fmt.Sprintf("user-%06d", n%users),
					IdempotencyKey: fmt.Sprintf("claim-%d", n), CouponID: uuid.Must(uuid.NewV7()).String()})
				if err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for n := range coupons {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		t.Fatalf("%d claims failed, first: %v", len(errs), errs[0])
	}

	t.Logf("%d claims in %v", coupons, time.Since(claimStart).Round(time.Millisecond))
	projStart := time.Now()

	// Project every event, one by one, as the live projectors do.
	reg := repo.Registry()
	view, err := redisview.OpenLive(ctx, rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	viewProj, err := projections.NewViewProjector(view, repo, reg)
	if err != nil {
		t.Fatal(err)
	}
	ops, err := redisops.New(rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	opsProj, err := projections.NewOpsProjector(ops, reg)
	if err != nil {
		t.Fatal(err)
	}
	var after uint64
	events := 0
	for {
		recs, err := store.ReadAll(ctx, after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			for _, p := range []projections.Projector{viewProj, opsProj} {
				if err := p.Handle(ctx, rec); err != nil {
					t.Fatalf("%s: %v", p.Name(), err)
				}
			}
			after = rec.Position
			events++
		}
	}
	if events != coupons+1 {
		t.Fatalf("projected %d events, want %d (one batch, %d claims)", events, coupons+1, coupons)
	}
	t.Logf("%d events projected in %v", events, time.Since(projStart).Round(time.Millisecond))
	usable := 0
	for u := range users {
		page, err := view.Current().List(ctx, fmt.Sprintf("user-%06d", u), "usable", "", 200)
		if err != nil {
			t.Fatal(err)
		}
		usable += len(page.Coupons)
	}
	if usable != coupons {
		t.Fatalf("usable coupons in the view = %d, want %d", usable, coupons)
	}

	// Sum MEMORY USAGE per part.
	type part struct {
		keys  int
		bytes int64
	}
	parts := map[string]*part{"view": {}, "ops": {}, "guard": {}, "other": {}}
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range keys {
			n, err := rdb.MemoryUsage(ctx, k, 0).Result()
			if err != nil {
				t.Fatalf("MEMORY USAGE %s: %v", k, err)
			}
			rest := strings.TrimPrefix(k, prefix)
			name := "other"
			switch {
			case strings.HasPrefix(rest, "view:"):
				name = "view"
			case strings.HasPrefix(rest, "ops:"):
				name = "ops"
			case strings.HasPrefix(rest, "{b:"), rest == "batches", rest == "guard:initialized":
				name = "guard"
			}
			parts[name].keys++
			parts[name].bytes += n
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	for i, k := range view.Current().UserKeys("user-000000") {
		enc, _ := rdb.ObjectEncoding(ctx, k).Result()
		n, _ := rdb.MemoryUsage(ctx, k, 0).Result()
		t.Logf("one shopper's view key %q (%s): %s, %d bytes", k[len(prefix):], []string{"terms", "locks", "revisions", "index"}[i], enc, n)
	}
	info, _ := rdb.Info(ctx, "server").Result()
	version := "?"
	for _, line := range strings.Split(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			version = v
		}
	}
	var total int64
	for _, name := range []string{"view", "ops", "guard", "other"} {
		p := parts[name]
		total += p.bytes
		t.Logf("%-5s %5d keys %10d bytes = %6.1f bytes per usable coupon", name, p.keys, p.bytes, float64(p.bytes)/float64(coupons))
	}
	t.Logf("Redis %s, %d usable coupons of %d shoppers (%d each): %.1f bytes per usable coupon in all, %.1f in the usable view",
		version, coupons, users, perUser, float64(total)/float64(coupons), float64(parts["view"].bytes)/float64(coupons))

	// A loose ceiling, so that a change multiplying the footprint shows.
	if per := float64(parts["view"].bytes) / float64(coupons); per > 1024 {
		t.Errorf("the usable view takes %.0f bytes per coupon, more than 1 KiB: update the README's sizing guidance", per)
	}
}

func envInt(t *testing.T, name string, def int) int {
	v := strings.TrimSpace(os.Getenv(name))
	if v == "" {
		return def
	}
	var n int
	if _, err := fmt.Sscan(v, &n); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return n
}
