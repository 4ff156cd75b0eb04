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

// TestRedisBytesPerUsableCoupon measures what coupons cost in Redis, for the
// sizing guidance of the README's "Production" section: coupons claimed by
// shoppers through the real claim handler (stock guard, event store), then
// projected through the live view and ops projectors one event at a time, as
// in production; MEMORY USAGE (SAMPLES 0: exact) is summed over the keys of
// each part and divided by the coupons. Then every coupon is locked and
// redeemed, projected, and measured again: what a coupon leaves behind once
// it is out of the usable view.
//
// The README's figures come from
//
//	COUPONS_TEST_MEMORY_COUPONS=10000 COUPONS_TEST_MEMORY_USERS=1000 \
//	  go test -count=1 -v -run TestRedisBytesPerUsableCoupon ./infra/redisview/
//
// (the default, 2,000 coupons of 200 shoppers, keeps the suite quick: 10
// coupons per shopper either way). It runs against the real Redis
// (COUPONS_TEST_REDIS_URL, default 127.0.0.1:6379) in database 14, under a
// random key prefix whose keys are deleted at the end; it skips when no
// Redis answers (fails under COUPONS_TEST_REQUIRE_REDIS=1), and in -short mode.
func TestRedisBytesPerUsableCoupon(t *testing.T) {
	if testing.Short() {
		t.Skip("claims, redeems and projects thousands of coupons")
	}
	coupons, users := envInt(t, "COUPONS_TEST_MEMORY_COUPONS", 2_000), envInt(t, "COUPONS_TEST_MEMORY_USERS", 200)
	if users <= 0 || coupons < users {
		t.Fatalf("want coupons >= users > 0, got %d coupons, %d users", coupons, users)
	}
	m := newMeasurement(t, coupons, users)
	ctx := context.Background()

	// The README's walkthrough batch, with room for every claim.
	batchID := uuid.Must(uuid.NewV7()).String()
	if _, err := m.h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: batchID, By: "ops", TotalStock: int64(coupons), Rules: domain.Rules{
		Name: "Double 11", Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform, Threshold: 1000, AmountOff: 100,
		Scope: domain.Scope{Kind: domain.ScopeAll}, PerUserLimit: m.perUser, ValidDays: 7, Audience: domain.AudiencePublic,
		ClaimStartsAt: m.now.Add(-time.Hour), ClaimEndsAt: m.now.Add(30 * 24 * time.Hour),
	}}); err != nil {
		t.Fatalf("issue batch: %v", err)
	}

	// Claims as the HTTP layer makes them: a UUIDv7 coupon id, an
	// Idempotency-Key.
	ids := make([]string, coupons)
	m.parallel("claims", func(n int) error {
		ids[n] = uuid.Must(uuid.NewV7()).String()
		_, err := m.h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: batchID, UserID: m.user(n),
			IdempotencyKey: fmt.Sprintf("claim-%d", n), CouponID: ids[n]})
		return err
	})
	if got := m.project(); got != coupons+1 {
		t.Fatalf("projected %d events, want %d (one batch, %d claims)", got, coupons+1, coupons)
	}
	if usable := m.usable(); usable != coupons {
		t.Fatalf("usable coupons in the view = %d, want %d", usable, coupons)
	}
	for i, k := range m.view.Current().UserKeys(m.user(0)) {
		enc, _ := m.rdb.ObjectEncoding(ctx, k).Result()
		n, _ := m.rdb.MemoryUsage(ctx, k, 0).Result()
		t.Logf("one shopper's view key %q (%s): %s, %d bytes", strings.TrimPrefix(k, m.prefix), []string{"terms", "locks", "revisions", "index"}[i], enc, n)
	}
	usable := m.measure("usable")
	if per := float64(usable["view"]) / float64(coupons); per > 1024 {
		t.Errorf("the usable view takes %.0f bytes per coupon, more than 1 KiB: update the README's sizing guidance", per)
	}

	// Every coupon locked by an order, then redeemed.
	m.parallel("locks and redemptions", func(n int) error {
		order := fmt.Sprintf("order-%d", n)
		if _, err := m.h.Lock.Handle(ctx, commands.LockCoupon{CouponID: ids[n], OrderID: order, UserID: m.user(n)}); err != nil {
			return err
		}
		_, err := m.h.Redeem.Handle(ctx, commands.RedeemCoupon{CouponID: ids[n], OrderID: order, PaymentID: "pay-" + order, Discount: 100})
		return err
	})
	if got := m.project(); got != 2*coupons {
		t.Fatalf("projected %d events, want %d", got, 2*coupons)
	}
	if n := m.usable(); n != 0 {
		t.Fatalf("usable coupons after redeeming all = %d", n)
	}
	m.measure("used")
}

// measurement is the fixture of TestRedisBytesPerUsableCoupon.
type measurement struct {
	t               *testing.T
	coupons, users  int
	perUser         int
	now             time.Time
	rdb             *redis.Client
	prefix          string
	store           *boltstore.Store
	h               *commands.Handlers
	view            *redisview.Live
	viewProj        projections.Projector
	opsProj         projections.Projector
	after           uint64
	payload, events int
}

func newMeasurement(t *testing.T, coupons, users int) *measurement {
	t.Helper()
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
	m := &measurement{t: t, coupons: coupons, users: users, perUser: (coupons + users - 1) / users,
		now: time.Now().UTC().Truncate(time.Millisecond), rdb: rdb, prefix: redistest.RandomPrefix(t)}
	t.Cleanup(func() {
		defer rdb.Close()
		if err := redistest.DeletePrefix(context.Background(), rdb, m.prefix); err != nil {
			t.Errorf("cleanup of %s*: %v", m.prefix, err)
		}
	})
	if m.store, err = boltstore.Open(t.TempDir(), boltstore.Options{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.store.Close() })
	repo, err := commands.NewRepository(m.store, domain.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	guard, err := redisguard.New(rdb, m.prefix)
	if err != nil {
		t.Fatal(err)
	}
	if m.h, err = commands.NewHandlers(commands.Deps{Repo: repo, Guard: guard, Clock: fixedClock{m.now}}, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if m.view, err = redisview.OpenLive(ctx, rdb, m.prefix); err != nil {
		t.Fatal(err)
	}
	if m.viewProj, err = projections.NewViewProjector(m.view, repo, repo.Registry()); err != nil {
		t.Fatal(err)
	}
	ops, err := redisops.New(rdb, m.prefix)
	if err != nil {
		t.Fatal(err)
	}
	if m.opsProj, err = projections.NewOpsProjector(ops, repo.Registry()); err != nil {
		t.Fatal(err)
	}
	return m
}

func (m *measurement) user(n int) string { return fmt.Sprintf("user-%06d", n%m.users) }

// parallel runs f for 0..coupons-1, 32 at a time, and fails on any error.
func (m *measurement) parallel(what string, f func(n int) error) {
	m.t.Helper()
	start := time.Now()
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
				if err := f(n); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
				}
			}
		}()
	}
	for n := range m.coupons {
		jobs <- n
	}
	close(jobs)
	wg.Wait()
	if len(errs) > 0 {
		m.t.Fatalf("%s: %d failed, first: %v", what, len(errs), errs[0])
	}
	m.t.Logf("%d %s in %v", m.coupons, what, time.Since(start).Round(time.Millisecond))
}

// project feeds the events stored since the last call through the view and
// ops projectors, one by one as the live projectors apply them, and
// returns how many there were.
func (m *measurement) project() int {
	m.t.Helper()
	ctx := context.Background()
	start := time.Now()
	n := 0
	for {
		recs, err := m.store.ReadAll(ctx, m.after, 1000)
		if err != nil {
			m.t.Fatal(err)
		}
		if len(recs) == 0 {
			break
		}
		for _, rec := range recs {
			for _, p := range []projections.Projector{m.viewProj, m.opsProj} {
				if err := p.Handle(ctx, rec); err != nil {
					m.t.Fatalf("%s: %v", p.Name(), err)
				}
			}
			m.after = rec.Position
			m.payload += len(rec.Data)
			m.events++
			n++
		}
	}
	m.t.Logf("%d events projected in %v; %d events so far, %.0f bytes of event data each on average",
		n, time.Since(start).Round(time.Millisecond), m.events, float64(m.payload)/float64(m.events))
	return n
}

// usable counts the coupons the shoppers' usable listings show.
func (m *measurement) usable() int {
	m.t.Helper()
	n := 0
	for u := range m.users {
		page, err := m.view.Current().List(context.Background(), m.user(u), "usable", "", 200)
		if err != nil {
			m.t.Fatal(err)
		}
		n += len(page.Coupons)
	}
	return n
}

// measure sums MEMORY USAGE per part (view, ops, guard) and logs it per coupon.
func (m *measurement) measure(state string) map[string]int64 {
	m.t.Helper()
	ctx := context.Background()
	bytes, keys := map[string]int64{}, map[string]int{}
	var cursor uint64
	for {
		page, next, err := m.rdb.Scan(ctx, cursor, m.prefix+"*", 1000).Result()
		if err != nil {
			m.t.Fatal(err)
		}
		for _, k := range page {
			n, err := m.rdb.MemoryUsage(ctx, k, 0).Result()
			if err != nil {
				m.t.Fatalf("MEMORY USAGE %s: %v", k, err)
			}
			rest := strings.TrimPrefix(k, m.prefix)
			part := "other"
			switch {
			case strings.HasPrefix(rest, "view:"):
				part = "view"
			case strings.HasPrefix(rest, "ops:"):
				part = "ops"
			case strings.HasPrefix(rest, "{b:"), rest == "batches", rest == "guard:initialized":
				part = "guard"
			}
			keys[part]++
			bytes[part] += n
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	version := "?"
	if info, err := m.rdb.Info(ctx, "server").Result(); err == nil {
		for _, line := range strings.Split(info, "\n") {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
				version = v
			}
		}
	}
	var total int64
	for _, part := range []string{"view", "ops", "guard", "other"} {
		total += bytes[part]
		m.t.Logf("%s: %-5s %5d keys %10d bytes = %6.1f bytes per coupon", state, part, keys[part], bytes[part], float64(bytes[part])/float64(m.coupons))
	}
	m.t.Logf("%s: Redis %s, %d coupons of %d shoppers (%d each): %.1f bytes per coupon in all, %.1f in the usable view",
		state, version, m.coupons, m.users, m.perUser, float64(total)/float64(m.coupons), float64(bytes["view"])/float64(m.coupons))
	return bytes
}

func envInt(t *testing.T, name string, def int) int {
	t.Helper()
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
