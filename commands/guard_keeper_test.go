package commands_test

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redistest"
	"github.com/couponsd/couponsd/infra/redisx"
)

// Redis loses its data in the middle of a sale: claims are refused (503)
// instead of the batch coming back with full stock, the keeper rebuilds the
// guard from the event store, the sale goes on, and nothing is oversold.
func TestGuardRecoversFromRedisDataLoss(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		w := newWorld(t, b, nil)
		ctx := context.Background()
		strict, _ := redisguard.New(b.Client, b.Prefix, redisguard.RequireInitialized())
		w.deps.Guard = strict
		h, err := commands.NewHandlers(w.deps, 30*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		rb, _ := commands.NewRebuildGuardHandler(w.deps)
		if _, err := rb.Handle(ctx, commands.RebuildGuard{}); err != nil { // start-up: empty store, marks the guard initialized
			t.Fatal(err)
		}
		jobs, _ := redisjobs.New(b.Client, b.Prefix)
		keeper, err := commands.NewGuardKeeper(strict, rb, jobs, "test", 0, discardLogger())
		if err != nil {
			t.Fatal(err)
		}
		h.Claim.SetKeeper(keeper)
		if _, err := h.IssueBatch.Handle(ctx, commands.IssueBatch{BatchID: "b1", Rules: rules(1), TotalStock: 300, By: "admin"}); err != nil {
			t.Fatal(err)
		}
		var accepted, refused atomic.Int64
		claim := func(u int) {
			_, err := h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: "b1", UserID: fmt.Sprintf("u%04d", u), CouponID: newID()})
			switch {
			case err == nil:
				accepted.Add(1)
			case errors.Is(err, domain.ErrUnavailable), errors.Is(err, domain.ErrSoldOut), errors.Is(err, domain.ErrAlreadyClaimed):
				refused.Add(1)
			default:
				t.Errorf("claim: %v", err)
			}
		}
		for u := range 100 {
			claim(u)
		}
		// Redis restarts with its data gone.
		if err := redisx.DeletePrefix(ctx, b.Client, b.Prefix); err != nil {
			t.Fatal(err)
		}
		_, err = h.Claim.Handle(ctx, commands.ClaimCoupon{BatchID: "b1", UserID: "late", CouponID: newID()})
		if !errors.Is(err, commands.ErrGuardEmpty) {
			t.Fatalf("claim on a wiped guard: %v, want ErrGuardEmpty (never fresh full stock)", err)
		}
		<-keeper.Kick()
		var wg sync.WaitGroup
		for u := range 400 { // the sale goes on: 100 of them retry, 300 are new
			wg.Add(1)
			go func() { defer wg.Done(); claim(u) }()
		}
		wg.Wait()
		if accepted.Load() != 300 {
			t.Fatalf("accepted %d claims on stock 300", accepted.Load())
		}
		if n := w.countEvents(t, domain.EvCouponClaimed); n != 300 {
			t.Fatalf("%d claimed events, want 300", n)
		}
		if rem, _ := strict.Remaining(ctx, "b1"); rem != 0 {
			t.Fatalf("remaining %d, want 0", rem)
		}
	})
}
