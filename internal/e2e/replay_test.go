package e2e

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

// replayEvents is the size of the replay test's store: 200,000 events, or
// 20,000 under the race detector (the README's test command runs this test
// a second time without it, at full size); COUPONS_TEST_REPLAY_EVENTS overrides.
func replayEvents() int {
	if v, err := strconv.Atoi(os.Getenv("COUPONS_TEST_REPLAY_EVENTS")); err == nil && v > 0 {
		return v
	}
	if raceEnabled {
		return 20_000
	}
	return 200_000
}

// TestReplayEqualsLiveAndVerify: a store of 200,000 events is projected
// live through the embedded pipeline; a replay into fresh generations
// produces exactly the live views; verify reports no drift; then one
// corrupted Redis entry is named by verify.
func TestReplayEqualsLiveAndVerify(t *testing.T) {
	if testing.Short() {
		t.Skip("200,000 events")
	}
	b := redistest.Real(t)
	ctx := context.Background()
	want := replayEvents()
	w := newWorld(t, want/3+want/30)
	if len(w.events) < want {
		t.Fatalf("fixture wrote %d events, want >= %d", len(w.events), want)
	}
	live := newTarget(t, b, w, "live")
	progress := projections.NewProgress()
	log := slog.New(slog.DiscardHandler)
	head := w.events[len(w.events)-1].Position
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	gates := map[string]*projections.Gate{}
	start := time.Now()
	for _, p := range live.projectors {
		g := &projections.Gate{}
		gates[p.Name()] = g
		lp := projections.NewBatching(p.(projections.BatchProjector), g, progress, projections.BatchConfig{})
		go func() { _ = pipeline.RunEmbedded(runCtx, w.store, lp, log) }()
	}
	wctx, wcancel := context.WithTimeout(ctx, 5*time.Minute)
	for _, p := range live.projectors {
		if err := progress.WaitFor(wctx, head, p.Name()); err != nil {
			t.Fatalf("live projection %s did not reach %d: %v", p.Name(), head, err)
		}
	}
	wcancel()
	t.Logf("live pipeline: %d events through 3 projectors in %v", len(w.events), time.Since(start))
	liveRedis, liveHist := live.snapshot(t, b, w)

	// Replay the view and the history into fresh generations while the live
	// pipeline runs, then compare with what the live pipeline built.
	for _, p := range live.projectors {
		rb, ok := p.(projections.Rebuildable)
		if !ok {
			continue
		}
		start := time.Now()
		var last projections.ReplayProgress
		if err := projections.Rebuild(ctx, w.store, rb, gates[p.Name()], func(pr projections.ReplayProgress) { last = pr }); err != nil {
			t.Fatalf("rebuild %s: %v", p.Name(), err)
		}
		el := time.Since(start)
		t.Logf("replay %s: %d events in %v (%.0f events/s)", p.Name(), last.Done, el, float64(last.Done)/el.Seconds())
	}
	cancel()
	replayRedis, replayHist := live.snapshot(t, b, w)
	compare(t, "replay vs live", liveRedis, replayRedis, liveHist, replayHist)

	// The guard, rebuilt from the store, completes the picture for verify.
	g, _ := redisguard.New(b.Client, live.prefix)
	repo := w.repo
	rg, _ := commands.NewRebuildGuardHandler(commands.Deps{Repo: repo, Guard: g, Clock: domain.SystemClock{}})
	if _, err := rg.Handle(ctx, commands.RebuildGuard{}); err != nil {
		t.Fatal(err)
	}
	ops, _ := redisops.New(b.Client, live.prefix)
	deps := readapi.VerifyDeps{Repo: repo, Guard: g, View: live.view, Ops: ops, History: live.history}
	rep, err := readapi.Verify(ctx, deps, head)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drifts) != 0 {
		t.Fatalf("verify after replay: %d drifts, first: %v", len(rep.Drifts), rep.Drifts[0])
	}
	// Corrupt one view entry: verify must name it, and only it.
	var victimUser, victimCoupon string
	for _, rec := range w.events {
		if rec.Type == domain.EvCouponClaimed {
			e, _ := repo.Registry().Unmarshal(rec.Type, rec.Data)
			c := e.(*domain.CouponClaimed)
			cs, _ := live.view.All(ctx, c.UserID)
			for _, vc := range cs {
				if vc.CouponID == c.CouponID {
					victimUser, victimCoupon = c.UserID, c.CouponID
				}
			}
			if victimCoupon != "" {
				break
			}
		}
	}
	if victimCoupon == "" {
		t.Fatal("no usable coupon in the view to corrupt")
	}
	termsKey := live.view.Current().UserKeys(victimUser)[0]
	raw, _ := b.Client.HGet(ctx, termsKey, victimCoupon).Result()
	corrupted := strings.Replace(raw, `"k":"`, `"k":"x`, 1)
	if err := b.Client.HSet(ctx, termsKey, victimCoupon, corrupted).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err = readapi.Verify(ctx, deps, head)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Drifts) != 1 || !strings.Contains(fmt.Sprint(rep.Drifts[0]), victimCoupon) || rep.Drifts[0].Component != "view" {
		t.Fatalf("verify after corrupting %s/%s: %v", victimUser, victimCoupon, rep.Drifts)
	}
	t.Logf("verify names the corruption: %v", rep.Drifts[0])
}
