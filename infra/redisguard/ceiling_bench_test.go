package redisguard

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
)

// TestCeilingSetup prepares the "physical ceiling" measurement of
// scripts/bench.sh: redis-benchmark calling the real reserve script by SHA.
// It is skipped unless REDISGUARD_CEILING_OUT names a file. With it, it
// connects to REDISGUARD_CEILING_URL (a redis:// URL), issues the batch
// REDISGUARD_CEILING_BATCH under the key prefix REDISGUARD_CEILING_PREFIX
// through SyncBatch (public, window open for years, huge stock and per-user
// limit, so every reservation succeeds), SCRIPT LOADs the scripts from this
// package's source, checks that the SHA Redis answers is the one the guard
// calls, makes one reservation through Guard.Reserve, and writes a file that
// a shell can source:
//
//	RESERVE_SHA=...       the SHA of reserveSrc (what Guard.Reserve EVALSHAs)
//	RESERVE_NKEYS=6
//	RESERVE_KEYS='k1 k2 ...' the batch's keys in the script's KEYS order
//	RESERVE_NOW_MS=...    a "now" inside the claim window
//
// The ARGV order is user, idempotency key, coupon id, now_ms, "claim".
// The caller deletes the prefix's keys afterwards (it only creates keys under
// the prefix).
func TestCeilingSetup(t *testing.T) {
	out := os.Getenv("REDISGUARD_CEILING_OUT")
	if out == "" {
		t.Skip("REDISGUARD_CEILING_OUT not set (used by scripts/bench.sh)")
	}
	raw, prefix, batchID := os.Getenv("REDISGUARD_CEILING_URL"), os.Getenv("REDISGUARD_CEILING_PREFIX"), os.Getenv("REDISGUARD_CEILING_BATCH")
	if raw == "" || prefix == "" || batchID == "" {
		t.Fatal("REDISGUARD_CEILING_URL, REDISGUARD_CEILING_PREFIX and REDISGUARD_CEILING_BATCH are required")
	}
	opt, err := redis.ParseURL(raw)
	if err != nil {
		t.Fatalf("REDISGUARD_CEILING_URL: %v", err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	g, err := New(rdb, prefix)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	now := time.Now()
	if err := g.SyncBatch(ctx, commands.GuardBatch{
		BatchID: batchID, Version: 1, RuleVersion: 1, Public: true,
		PerUserLimit:  1 << 30,
		ClaimStartsAt: now.Add(-time.Hour), ClaimEndsAt: now.AddDate(10, 0, 0),
		TotalStock: 1 << 50,
	}); err != nil {
		t.Fatalf("sync batch: %v", err)
	}
	for _, s := range scripts {
		sha, err := rdb.ScriptLoad(ctx, scriptSource(s)).Result()
		if err != nil {
			t.Fatalf("script load %s: %v", s.name, err)
		}
		if sha != s.Hash() {
			t.Fatalf("script %s: Redis answered SHA %s, the guard calls %s", s.name, sha, s.Hash())
		}
	}
	// One reservation through the guard: the batch admits claims.
	if _, err := g.Reserve(ctx, batchID, "ceiling-probe", "probe-key", "ceiling-probe-coupon", now); err != nil {
		t.Fatalf("probe reservation: %v", err)
	}
	keys := reserveScript.keys(g.Keys(batchID))
	body := fmt.Sprintf("RESERVE_SHA=%s\nRESERVE_NKEYS=%d\nRESERVE_KEYS='%s'\nRESERVE_NOW_MS=%d\n",
		reserveScript.Hash(), len(keys), strings.Join(keys, " "), now.UnixMilli())
	if err := os.WriteFile(out, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
}

// scriptSource is the Lua source of a script, from this package's constants.
func scriptSource(s *script) string {
	switch s {
	case syncScript:
		return syncSrc
	case reserveScript:
		return reserveSrc
	case confirmScript:
		return confirmSrc
	case releaseScript:
		return releaseSrc
	}
	panic("unknown script " + s.name)
}
