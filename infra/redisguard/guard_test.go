package redisguard

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

func TestNew(t *testing.T) {
	if _, err := New(nil, ""); err == nil {
		t.Error("New(nil) succeeded")
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"})
	defer rdb.Close()
	if _, err := New(rdb, "bad{prefix"); err == nil {
		t.Error("New with a '{' in the prefix succeeded")
	}
	g, err := New(rdb, "")
	if err != nil {
		t.Fatal(err)
	}
	if k := g.Keys("B1"); k.Meta != "couponsd:{b:B1}:meta" || k.PInfo != "couponsd:{b:B1}:pinfo" {
		t.Errorf("keys = %+v", k)
	}
	if g.BatchesKey() != "couponsd:batches" || g.InitializedKey() != "couponsd:guard:initialized" {
		t.Errorf("global keys = %s, %s", g.BatchesKey(), g.InitializedKey())
	}
}

func TestReserveRefusals(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		reserve := func(b, u, key, c string, now time.Time) error {
			_, err := e.g.Reserve(ctx, b, u, key, c, now)
			return err
		}
		expect := func(err, kind error, words string) {
			t.Helper()
			if !errors.Is(err, kind) {
				t.Fatalf("err = %v, want %v", err, kind)
			}
			if errors.Is(err, domain.ErrUnavailable) {
				t.Fatalf("refusal %v also matches ErrUnavailable", err)
			}
			var de *domain.Error
			if !errors.As(err, &de) || !strings.Contains(de.Message, words) {
				t.Fatalf("err = %v, want a *domain.Error saying %q", err, words)
			}
		}

		expect(reserve("nope", "u1", "", "c0", t0), domain.ErrNotFound, "not found")

		b := batch("B", 0, 3, 2)
		mustSync(t, e, b)

		// Claim window is [start, end).
		expect(reserve("B", "u1", "k", "c1", b.ClaimStartsAt.Add(-time.Millisecond)), domain.ErrNotClaimable, "not started")
		expect(reserve("B", "u1", "k", "c1", b.ClaimEndsAt), domain.ErrNotClaimable, "ended")
		if _, err := e.g.Reserve(ctx, "B", "u1", "", "c1", b.ClaimStartsAt); err != nil {
			t.Fatalf("reserve at start: %v", err)
		}
		if res, err := e.g.Reserve(ctx, "B", "u1", "", "c2", b.ClaimEndsAt.Add(-time.Millisecond)); err != nil || res.Duplicate || res.RuleVersion != 1 {
			t.Fatalf("reserve just before end = %+v, %v", res, err)
		}
		expect(reserve("B", "u1", "", "c3", t0), domain.ErrAlreadyClaimed, "limit 2")
		if err := reserve("B", "u2", "", "c3", t0); err != nil {
			t.Fatal(err)
		}
		expect(reserve("B", "u3", "", "c4", t0), domain.ErrSoldOut, "sold out")
		if n := remaining(t, e, "B"); n != 0 {
			t.Fatalf("remaining = %d, want 0", n)
		}

		// Policy refusals, each on a fresh batch with stock left.
		cases := []struct {
			name  string
			edit  func(*commands.GuardBatch)
			words string
		}{
			{"paused", func(b *commands.GuardBatch) { b.Paused = true }, "paused"},
			{"stopped", func(b *commands.GuardBatch) { b.Stopped = true }, "stopped"},
			{"targeted", func(b *commands.GuardBatch) { b.Public = false }, "targeted"},
			{"stopped wins over paused", func(b *commands.GuardBatch) { b.Stopped, b.Paused = true, true }, "stopped"},
		}
		for i, c := range cases {
			b := batch(fmt.Sprintf("P%d", i), 0, 5, 1)
			c.edit(&b)
			mustSync(t, e, b)
			expect(reserve(b.BatchID, "u1", "k1", "c1", t0), domain.ErrNotClaimable, c.words)
			if n := remaining(t, e, b.BatchID); n != 5 {
				t.Errorf("%s: a refusal took stock: remaining %d", c.name, n)
			}
		}

		// Invalid input.
		if err := reserve("B", "", "", "c", t0); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("empty user: %v", err)
		}
		if err := reserve("B", "u", "", "", t0); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("empty coupon: %v", err)
		}
		// A coupon id reused while pending is a conflict, not a second unit.
		mustSync(t, e, batch("R", 0, 5, 5))
		if err := reserve("R", "u1", "", "same", t0); err != nil {
			t.Fatal(err)
		}
		if err := reserve("R", "u2", "", "same", t0); !errors.Is(err, domain.ErrConflict) {
			t.Errorf("reused coupon id: %v", err)
		}
		if n := remaining(t, e, "R"); n != 4 {
			t.Errorf("remaining = %d, want 4", n)
		}
		if _, err := e.g.Remaining(ctx, "nope"); !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("Remaining(unknown) = %v", err)
		}
	})
}

func TestReserveGrant(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		b := batch("G", 0, 3, 2)
		b.Paused, b.Public = true, false
		mustSync(t, e, b)
		before := b.ClaimStartsAt.Add(-24 * time.Hour)
		// Window, pause and audience do not apply to grants.
		if err := e.g.ReserveGrant(ctx, "G", "u1", "g1", before); err != nil {
			t.Fatal(err)
		}
		if err := e.g.ReserveGrant(ctx, "G", "u1", "g2", b.ClaimEndsAt.Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if err := e.g.ReserveGrant(ctx, "G", "u1", "g3", t0); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("third grant to u1: %v", err)
		}
		if err := e.g.ReserveGrant(ctx, "G", "u2", "g3", t0); err != nil {
			t.Fatal(err)
		}
		if err := e.g.ReserveGrant(ctx, "G", "u3", "g4", t0); !errors.Is(err, domain.ErrSoldOut) {
			t.Fatalf("grant past stock: %v", err)
		}
		if err := e.g.ReserveGrant(ctx, "nope", "u3", "g4", t0); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("grant on unknown batch: %v", err)
		}
		s := batch("S", 0, 3, 2)
		s.Stopped = true
		mustSync(t, e, s)
		if err := e.g.ReserveGrant(ctx, "S", "u1", "g5", t0); !errors.Is(err, domain.ErrNotClaimable) || !strings.Contains(err.Error(), "stopped") {
			t.Fatalf("grant on stopped batch: %v", err)
		}
	})
}

func TestIdempotency(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		mustSync(t, e, batch("B", 0, 10, 5))
		first, err := e.g.Reserve(ctx, "B", "u1", "key-1", "c1", t0)
		if err != nil || first.Duplicate {
			t.Fatalf("first = %+v, %v", first, err)
		}
		dup, err := e.g.Reserve(ctx, "B", "u1", "key-1", "c2", t0.Add(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if want := (commands.Reservation{CouponID: "c1", Duplicate: true, Pending: true, RuleVersion: 1}); dup != want {
			t.Fatalf("duplicate while pending = %+v, want %+v", dup, want)
		}
		if err := e.g.Confirm(ctx, "B", "c1"); err != nil {
			t.Fatal(err)
		}
		if err := e.g.Confirm(ctx, "B", "c1"); err != nil { // idempotent
			t.Fatal(err)
		}
		dup, err = e.g.Reserve(ctx, "B", "u1", "key-1", "c3", t0)
		if err != nil {
			t.Fatal(err)
		}
		if want := (commands.Reservation{CouponID: "c1", Duplicate: true, Pending: false, RuleVersion: 1}); dup != want {
			t.Fatalf("duplicate after confirm = %+v, want %+v", dup, want)
		}
		// A duplicate is answered even when the batch no longer admits claims.
		p := batch("B", 1, 10, 5)
		p.Paused = true
		mustSync(t, e, p)
		if dup, err := e.g.Reserve(ctx, "B", "u1", "key-1", "c4", t0); err != nil || dup.CouponID != "c1" {
			t.Fatalf("duplicate on paused batch = %+v, %v", dup, err)
		}
		mustSync(t, e, batch("B", 2, 10, 5))
		// The key is per user; no key means no deduplication.
		if r, err := e.g.Reserve(ctx, "B", "u2", "key-1", "c5", t0); err != nil || r.Duplicate {
			t.Fatalf("same key, other user = %+v, %v", r, err)
		}
		for _, c := range []string{"c6", "c7"} {
			if r, err := e.g.Reserve(ctx, "B", "u3", "", c, t0); err != nil || r.Duplicate {
				t.Fatalf("no key = %+v, %v", r, err)
			}
		}
		if n := remaining(t, e, "B"); n != 6 {
			t.Fatalf("remaining = %d, want 6 (duplicates take nothing)", n)
		}
	})
}

func TestRelease(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		mustSync(t, e, batch("B", 0, 2, 1))
		if _, err := e.g.Reserve(ctx, "B", "u1", "k1", "c1", t0); err != nil {
			t.Fatal(err)
		}
		if n := remaining(t, e, "B"); n != 1 {
			t.Fatalf("remaining = %d", n)
		}
		if err := e.g.Release(ctx, "B", "c1"); err != nil {
			t.Fatal(err)
		}
		if n := remaining(t, e, "B"); n != 2 {
			t.Fatalf("remaining after release = %d, want 2", n)
		}
		k := e.g.Keys("B")
		if n, _ := e.rdb.HLen(ctx, k.Users).Result(); n != 0 {
			t.Errorf("users after release: %d fields, want 0 (field deleted at 0)", n)
		}
		if n, _ := e.rdb.HLen(ctx, k.Idem).Result(); n != 0 {
			t.Errorf("idem after release: %d fields, want 0", n)
		}
		// Double release is a no-op.
		if err := e.g.Release(ctx, "B", "c1"); err != nil {
			t.Fatal(err)
		}
		if n := remaining(t, e, "B"); n != 2 {
			t.Fatalf("remaining after double release = %d, want 2", n)
		}
		// The key is forgotten: a retry reserves again (and the per-user count was given back).
		r, err := e.g.Reserve(ctx, "B", "u1", "k1", "c2", t0)
		if err != nil || r.Duplicate {
			t.Fatalf("retry after release = %+v, %v", r, err)
		}
		if err := e.g.Confirm(ctx, "B", "c2"); err != nil {
			t.Fatal(err)
		}
		// Release after confirm is a no-op.
		if err := e.g.Release(ctx, "B", "c2"); err != nil {
			t.Fatal(err)
		}
		if n := remaining(t, e, "B"); n != 1 {
			t.Fatalf("remaining after release of a confirmed coupon = %d, want 1", n)
		}
		if r, err := e.g.Reserve(ctx, "B", "u1", "k1", "c3", t0); err != nil || !r.Duplicate || r.CouponID != "c2" || r.Pending {
			t.Fatalf("replay after confirm = %+v, %v", r, err)
		}
		if _, err := e.g.Reserve(ctx, "B", "u1", "k2", "c3", t0); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("u1 over limit: %v", err)
		}
		// Unknown coupons and batches: nothing happens.
		for _, c := range [][2]string{{"B", "zzz"}, {"nope", "c1"}} {
			if err := e.g.Release(ctx, c[0], c[1]); err != nil {
				t.Fatal(err)
			}
			if err := e.g.Confirm(ctx, c[0], c[1]); err != nil {
				t.Fatal(err)
			}
		}
		if n := remaining(t, e, "B"); n != 1 {
			t.Fatalf("remaining = %d, want 1", n)
		}
		// A grant released gives its unit back too.
		if err := e.g.ReserveGrant(ctx, "B", "u9", "g1", t0); err != nil {
			t.Fatal(err)
		}
		if err := e.g.Release(ctx, "B", "g1"); err != nil {
			t.Fatal(err)
		}
		if n := remaining(t, e, "B"); n != 1 {
			t.Fatalf("remaining after grant release = %d, want 1", n)
		}
	})
}

func TestSyncBatch(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		mustSync(t, e, batch("B", 0, 10, 5))
		for i := range 3 {
			if _, err := e.g.Reserve(ctx, "B", "u1", "", fmt.Sprint("c", i), t0); err != nil {
				t.Fatal(err)
			}
		}
		if n := remaining(t, e, "B"); n != 7 {
			t.Fatalf("remaining = %d, want 7", n)
		}
		// Same version: nothing changes, not even the total.
		mustSync(t, e, batch("B", 0, 20, 5))
		if n := remaining(t, e, "B"); n != 7 {
			t.Fatalf("remaining after same-version sync = %d, want 7", n)
		}
		// Stock added: remaining grows by the difference.
		mustSync(t, e, batch("B", 3, 15, 5))
		if n := remaining(t, e, "B"); n != 12 {
			t.Fatalf("remaining after adding 5 = %d, want 12", n)
		}
		// Paused at v4; an older version arriving late does not resume it.
		p := batch("B", 4, 15, 5)
		p.Paused = true
		p.RuleVersion = 2
		mustSync(t, e, p)
		mustSync(t, e, batch("B", 3, 15, 5))
		if _, err := e.g.Reserve(ctx, "B", "u2", "", "x", t0); !errors.Is(err, domain.ErrNotClaimable) {
			t.Fatalf("reserve on paused batch: %v", err)
		}
		r := batch("B", 5, 15, 5)
		r.RuleVersion = 2
		mustSync(t, e, r)
		res, err := e.g.Reserve(ctx, "B", "u2", "", "x", t0)
		if err != nil || res.RuleVersion != 2 {
			t.Fatalf("reserve after resume = %+v, %v", res, err)
		}
		if n := remaining(t, e, "B"); n != 11 {
			t.Fatalf("remaining = %d, want 11", n)
		}
		if ok, _ := e.rdb.SIsMember(ctx, e.g.BatchesKey(), "B").Result(); !ok {
			t.Error("batch not in the batches set")
		}
		if err := e.g.SyncBatch(ctx, commands.GuardBatch{}); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Errorf("empty batch id: %v", err)
		}
		// Large numbers survive Lua (no %.14g formatting).
		big := batch("BIG", 1<<40, 1<<50+1, 1)
		mustSync(t, e, big)
		big.Version++
		big.TotalStock += 1 << 49
		mustSync(t, e, big)
		if n := remaining(t, e, "BIG"); n != 1<<50+1<<49+1 {
			t.Fatalf("big remaining = %d, want %d", n, int64(1<<50+1<<49+1))
		}
	})
}

func TestPending(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		mustSync(t, e, batch("A", 0, 10, 5))
		mustSync(t, e, batch("B", 0, 10, 5))
		must := func(err error) {
			t.Helper()
			if err != nil {
				t.Fatal(err)
			}
		}
		_, err := e.g.Reserve(ctx, "A", "u1", "", "a1", t0)
		must(err)
		_, err = e.g.Reserve(ctx, "A", "u2", "k2", "a2", t0.Add(time.Second))
		must(err)
		_, err = e.g.Reserve(ctx, "B", "u3", "k3", "b1", t0.Add(2*time.Second))
		must(err)
		must(e.g.ReserveGrant(ctx, "B", "u4", "b2", t0.Add(3*time.Second)))
		must(e.g.Confirm(ctx, "A", "a1"))

		got, err := e.g.Pending(ctx, t0.Add(1500*time.Millisecond), 100)
		must(err)
		want := []commands.PendingReservation{{BatchID: "A", CouponID: "a2", UserID: "u2", IdempotencyKey: "k2", ReservedAt: t0.Add(time.Second)}}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("pending before t0+1.5s = %+v, want %+v", got, want)
		}
		// olderThan is exclusive.
		got, err = e.g.Pending(ctx, t0.Add(time.Second), 100)
		must(err)
		if len(got) != 0 {
			t.Fatalf("pending before t0+1s = %+v, want none", got)
		}
		got, err = e.g.Pending(ctx, t0.Add(time.Hour), 0)
		must(err)
		var ids []string
		for _, p := range got {
			ids = append(ids, p.BatchID+"/"+p.CouponID+"/"+p.UserID+"/"+p.IdempotencyKey)
		}
		if s := strings.Join(ids, " "); s != "A/a2/u2/k2 B/b1/u3/k3 B/b2/u4/" {
			t.Fatalf("all pending = %s", s)
		}
		got, err = e.g.Pending(ctx, t0.Add(time.Hour), 2)
		must(err)
		if len(got) != 2 {
			t.Fatalf("limit 2 gave %d", len(got))
		}
		// One batch only, olderThan exclusive.
		got, err = e.g.PendingIn(ctx, "B", t0.Add(3*time.Second))
		must(err)
		if len(got) != 1 || got[0].CouponID != "b1" || got[0].BatchID != "B" {
			t.Fatalf("pending in B before t0+3s = %+v, want b1", got)
		}
		got, err = e.g.PendingIn(ctx, "B", t0.Add(time.Hour))
		must(err)
		if len(got) != 2 || got[0].CouponID != "b1" || got[1].CouponID != "b2" {
			t.Fatalf("pending in B = %+v, want b1 b2", got)
		}
		must(e.g.Release(ctx, "A", "a2"))
		must(e.g.Confirm(ctx, "B", "b1"))
		must(e.g.Confirm(ctx, "B", "b2"))
		got, err = e.g.Pending(ctx, t0.Add(time.Hour), 0)
		must(err)
		if len(got) != 0 {
			t.Fatalf("pending after settling = %+v", got)
		}
	})
}

func TestRebuild(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		if ok, err := e.g.Initialized(ctx); err != nil || ok {
			t.Fatalf("Initialized on empty Redis = %v, %v", ok, err)
		}
		// State before the rebuild, partly stale.
		mustSync(t, e, batch("X", 0, 100, 2))
		mustSync(t, e, batch("STALE", 0, 100, 2))
		if _, err := e.g.Reserve(ctx, "X", "ghost", "gk", "ghost-coupon", t0); err != nil {
			t.Fatal(err)
		}

		perUser := map[string]int64{"u1": 2, "u2": 1}
		for i := range 2500 { // more than two HSET chunks
			perUser[fmt.Sprintf("bulk-%04d", i)] = 1
		}
		var consumed int64
		for _, n := range perUser {
			consumed += n
		}
		x := batch("X", 7, 3000, 2)
		x.RuleVersion = 3
		z := batch("Z", 1, 5, 1)
		z.Paused = true
		err := e.g.Rebuild(ctx, []commands.GuardBatchState{
			{Batch: x, Consumed: consumed, PerUser: perUser, Idem: map[string]string{"u1\x00k1": "old-1", "u2\x00k2": "old-2"}},
			{Batch: z},
		})
		if err != nil {
			t.Fatal(err)
		}
		if ok, err := e.g.Initialized(ctx); err != nil || !ok {
			t.Fatalf("Initialized after rebuild = %v, %v", ok, err)
		}
		k := e.g.Keys("X")
		if n, _ := e.rdb.HLen(ctx, k.Users).Result(); n != int64(len(perUser)) {
			t.Fatalf("users = %d, want %d", n, len(perUser))
		}
		if n := remaining(t, e, "X"); n != 3000-consumed {
			t.Fatalf("remaining = %d, want %d", n, 3000-consumed)
		}
		// Stale state is gone: the old batch, the ghost reservation and its key.
		if _, err := e.g.Reserve(ctx, "STALE", "u1", "", "s1", t0); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("reserve on dropped batch: %v", err)
		}
		if ok, _ := e.rdb.SIsMember(ctx, e.g.BatchesKey(), "STALE").Result(); ok {
			t.Error("dropped batch still in the batches set")
		}
		if p, _ := e.g.Pending(ctx, t0.Add(time.Hour), 0); len(p) != 0 {
			t.Fatalf("pending after rebuild = %+v", p)
		}
		// Reservations continue from the rebuilt counts.
		if _, err := e.g.Reserve(ctx, "X", "u1", "new", "n1", t0); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("u1 at limit: %v", err)
		}
		if r, err := e.g.Reserve(ctx, "X", "u1", "k1", "n1", t0); err != nil || !r.Duplicate || r.CouponID != "old-1" || r.Pending || r.RuleVersion != 3 {
			t.Fatalf("replay of a rebuilt key = %+v, %v", r, err)
		}
		if r, err := e.g.Reserve(ctx, "X", "u2", "k3", "n2", t0); err != nil || r.Duplicate {
			t.Fatalf("u2 second coupon = %+v, %v", r, err)
		}
		if _, err := e.g.Reserve(ctx, "X", "u2", "k4", "n3", t0); !errors.Is(err, domain.ErrAlreadyClaimed) {
			t.Fatalf("u2 at limit: %v", err)
		}
		if _, err := e.g.Reserve(ctx, "X", "ghost", "gk", "n4", t0); err != nil {
			t.Fatalf("ghost's key should be forgotten: %v", err)
		}
		if n := remaining(t, e, "X"); n != 3000-consumed-2 {
			t.Fatalf("remaining = %d, want %d", n, 3000-consumed-2)
		}
		if _, err := e.g.Reserve(ctx, "Z", "u1", "", "z1", t0); !errors.Is(err, domain.ErrNotClaimable) {
			t.Fatalf("Z is paused: %v", err)
		}
		// Syncs at or below the rebuilt version change nothing; later ones apply.
		mustSync(t, e, batch("X", 7, 9999, 2))
		if n := remaining(t, e, "X"); n != 3000-consumed-2 {
			t.Fatalf("remaining after stale sync = %d", n)
		}
		x.Version, x.TotalStock = 8, 3010
		mustSync(t, e, x)
		if n := remaining(t, e, "X"); n != 3010-consumed-2 {
			t.Fatalf("remaining after stock added = %d, want %d", n, 3010-consumed-2)
		}
	})
}

func TestLoadAndNoScriptFallback(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		if err := e.g.Load(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range scripts {
			ok, err := s.Exists(ctx, e.rdb).Result()
			if err != nil || len(ok) != 1 || !ok[0] {
				t.Errorf("script %s not loaded: %v %v", s.name, ok, err)
			}
		}
		if !e.embedded {
			return // never flush the script cache of a shared server
		}
		if err := e.rdb.ScriptFlush(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		mustSync(t, e, batch("B", 0, 1, 1)) // EVALSHA fails with NOSCRIPT, EVAL runs
		if _, err := e.g.Reserve(ctx, "B", "u", "", "c", t0); err != nil {
			t.Fatal(err)
		}
	})
}

func TestUnavailable(t *testing.T) {
	ctx := context.Background()
	// Nothing listens on this port.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	rdb := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 200 * time.Millisecond, MaxRetries: -1, DialerRetries: 1})
	defer rdb.Close()
	g, _ := New(rdb, "t:")
	_, err = g.Reserve(ctx, "B", "u", "", "c", t0)
	if !errors.Is(err, domain.ErrUnavailable) {
		t.Fatalf("reserve against a dead server: %v, want ErrUnavailable", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("original network error lost: %v", err)
	}
	if errors.Is(err, domain.ErrNotFound) || errors.Is(err, domain.ErrSoldOut) {
		t.Errorf("unavailable error matches a refusal: %v", err)
	}
	for name, call := range map[string]func() error{
		"sync":        func() error { return g.SyncBatch(ctx, batch("B", 0, 1, 1)) },
		"grant":       func() error { return g.ReserveGrant(ctx, "B", "u", "c", t0) },
		"confirm":     func() error { return g.Confirm(ctx, "B", "c") },
		"release":     func() error { return g.Release(ctx, "B", "c") },
		"pending":     func() error { _, err := g.Pending(ctx, t0, 10); return err },
		"remaining":   func() error { _, err := g.Remaining(ctx, "B"); return err },
		"initialized": func() error { _, err := g.Initialized(ctx); return err },
		"rebuild":     func() error { return g.Rebuild(ctx, nil) },
		"load":        func() error { return g.Load(ctx) },
	} {
		if err := call(); !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", name, err)
		}
	}

	// A closed client is unavailable too.
	closed := redis.NewClient(&redis.Options{Addr: addr})
	_ = closed.Close()
	g2, _ := New(closed, "t:")
	if _, err := g2.Remaining(ctx, "B"); !errors.Is(err, domain.ErrUnavailable) || !errors.Is(err, redis.ErrClosed) {
		t.Errorf("closed client: %v", err)
	}
}

func TestCommandErrorIsNotUnavailable(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		// Corrupt the meta key's type: the script fails with WRONGTYPE.
		if err := e.rdb.Set(ctx, e.g.Keys("B").Meta, "oops", 0).Err(); err != nil {
			t.Fatal(err)
		}
		_, err := e.g.Reserve(ctx, "B", "u", "", "c", t0)
		if err == nil || errors.Is(err, domain.ErrUnavailable) {
			t.Fatalf("reserve on a corrupt key: %v, want a plain error", err)
		}
		var rerr redis.Error
		if !errors.As(err, &rerr) {
			t.Errorf("redis error lost from the chain: %v", err)
		}
	})
}

func TestConfirmerConfirmsInBulk(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		b := batch("CF", 0, 100, 1)
		if err := e.g.SyncBatch(ctx, b); err != nil {
			t.Fatal(err)
		}
		c := e.g.NewConfirmer(8, slog.New(slog.DiscardHandler))
		rctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() { c.Run(rctx); close(done) }()
		for i := range 50 { // more than the buffer: some confirm synchronously
			id := fmt.Sprintf("c%02d", i)
			if _, err := e.g.Reserve(ctx, "CF", "u"+id, "", id, b.ClaimStartsAt); err != nil {
				t.Fatal(err)
			}
			if err := c.Confirm(ctx, "CF", id); err != nil {
				t.Fatal(err)
			}
		}
		cancel()
		<-done // Run sends what is queued before it returns
		if p, err := e.g.Pending(ctx, b.ClaimEndsAt, 0); err != nil || len(p) != 0 {
			t.Fatalf("pending after the confirmer stopped: %d %v", len(p), err)
		}
	})
}

func TestReserveGrants(t *testing.T) {
	forEachBackend(t, func(t *testing.T, e *env) {
		ctx := context.Background()
		b := batch("GB", 0, 3, 1)
		b.Public = false
		mustSync(t, e, b)
		now := t0.UnixMilli()
		got, err := e.g.ReserveGrants(ctx, "GB", []string{"u1", "u2", "u1", "u3", "u4"}, []string{"c1", "c2", "c1b", "c3", "c4"}, now)
		if err != nil {
			t.Fatal(err)
		}
		want := []commands.GrantSlot{commands.GrantReserved, commands.GrantReserved, commands.GrantUserHoldsLimit, commands.GrantReserved, commands.GrantSoldOut}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("slots %v, want %v", got, want)
		}
		// A second run of the same shard meets its own reservation first:
		// the coupon is taken, not the user's limit reached.
		if got, err = e.g.ReserveGrants(ctx, "GB", []string{"u1"}, []string{"c1"}, now); err != nil || got[0] != commands.GrantCouponTaken {
			t.Fatalf("again: %v %v, want coupon taken", got, err)
		}
		if err := e.g.ConfirmMany(ctx, "GB", []string{"c1", "c2", "c3"}); err != nil {
			t.Fatal(err)
		}
		if p, _ := e.g.Pending(ctx, t0.Add(time.Hour), 0); len(p) != 0 {
			t.Fatalf("pending after ConfirmMany: %v", p)
		}
		if _, err := e.g.ReserveGrants(ctx, "nope", []string{"u"}, []string{"c"}, now); !errors.Is(err, domain.ErrNotFound) {
			t.Fatalf("unknown batch: %v", err)
		}
		if _, err := e.g.ReserveGrants(ctx, "GB", []string{"u"}, nil, now); err == nil {
			t.Fatal("mismatched lengths accepted")
		}
	})
}
