// Package storetest is the conformance suite every idempotency.Store adapter
// runs in its tests.
package storetest

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
)

// Harness builds stores for the suite.
type Harness struct {
	// New returns an empty store (its keys must not collide with other tests').
	New func(t *testing.T) idempotency.Store
	// Advance moves the store's notion of time forward by d (sleep for a real
	// server, FastForward for miniredis, a fake clock for Memory).
	Advance func(t *testing.T, d time.Duration)
	// Lease is a lease short enough to wait for with Advance (default 1s).
	Lease time.Duration
}

// Run runs the suite.
func Run(t *testing.T, h Harness) {
	if h.Lease == 0 {
		h.Lease = time.Second
	}
	ctx := context.Background()
	const ttl = time.Hour

	t.Run("acquire_then_in_flight", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k1", "fp-a", time.Minute)
		must(t, err)
		if e.State != idempotency.Acquired || e.Token == "" || e.Fingerprint != "fp-a" {
			t.Fatalf("first Begin = %+v, want Acquired with a token", e)
		}
		e2, err := s.Begin(ctx, "k1", "fp-b", time.Minute)
		must(t, err)
		if e2.State != idempotency.InFlight || e2.Fingerprint != "fp-a" || e2.Response != nil {
			t.Fatalf("second Begin = %+v, want InFlight with the first fingerprint", e2)
		}
		other, err := s.Begin(ctx, "k2", "fp-a", time.Minute)
		must(t, err)
		if other.State != idempotency.Acquired {
			t.Fatalf("another key = %+v, want Acquired", other)
		}
	})

	t.Run("complete_then_replay", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		body := []byte("{\"id\":\"x\"}\n\x00\xff")
		must(t, s.Complete(ctx, "k", e.Token, idempotency.Response{Status: 201, ContentType: "application/json", Body: body}, ttl))
		got, err := s.Begin(ctx, "k", "other", time.Minute)
		must(t, err)
		if got.State != idempotency.Completed || got.Fingerprint != "fp" || got.Response == nil {
			t.Fatalf("Begin after Complete = %+v, want Completed", got)
		}
		if got.Response.Status != 201 || got.Response.ContentType != "application/json" || !bytes.Equal(got.Response.Body, body) {
			t.Fatalf("stored response = %+v", got.Response)
		}
		// A second Complete (even with the right token) changes nothing.
		if err := s.Complete(ctx, "k", e.Token, idempotency.Response{Status: 500}, ttl); !errors.Is(err, idempotency.ErrNotHeld) {
			t.Fatalf("second Complete = %v, want ErrNotHeld", err)
		}
		// Abandon of a completed key changes nothing.
		must(t, s.Abandon(ctx, "k", e.Token))
		again, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if again.State != idempotency.Completed || again.Response.Status != 201 {
			t.Fatalf("after Abandon of a completed key: %+v", again)
		}
	})

	t.Run("empty_body", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		must(t, s.Complete(ctx, "k", e.Token, idempotency.Response{Status: 204}, ttl))
		got, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if got.State != idempotency.Completed || got.Response.Status != 204 || len(got.Response.Body) != 0 {
			t.Fatalf("got %+v", got)
		}
	})

	t.Run("wrong_token", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if err := s.Complete(ctx, "k", "not-the-token", idempotency.Response{Status: 200}, ttl); !errors.Is(err, idempotency.ErrNotHeld) {
			t.Fatalf("Complete with a wrong token = %v, want ErrNotHeld", err)
		}
		must(t, s.Abandon(ctx, "k", "not-the-token"))
		got, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if got.State != idempotency.InFlight {
			t.Fatalf("after a foreign Abandon: %+v, want still InFlight", got)
		}
		if err := s.Complete(ctx, "missing", e.Token, idempotency.Response{Status: 200}, ttl); !errors.Is(err, idempotency.ErrNotHeld) {
			t.Fatalf("Complete of a missing key = %v, want ErrNotHeld", err)
		}
	})

	t.Run("abandon_frees_key", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		must(t, s.Abandon(ctx, "k", e.Token))
		got, err := s.Begin(ctx, "k", "fp2", time.Minute)
		must(t, err)
		if got.State != idempotency.Acquired || got.Token == e.Token {
			t.Fatalf("after Abandon: %+v, want Acquired with a new token", got)
		}
		must(t, s.Abandon(ctx, "never-begun", "tok"))
	})

	t.Run("lease_expires", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", h.Lease)
		must(t, err)
		h.Advance(t, h.Lease+h.Lease/2)
		e2, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if e2.State != idempotency.Acquired {
			t.Fatalf("after the lease: %+v, want Acquired", e2)
		}
		if err := s.Complete(ctx, "k", e.Token, idempotency.Response{Status: 200}, ttl); !errors.Is(err, idempotency.ErrNotHeld) {
			t.Fatalf("late Complete by the first holder = %v, want ErrNotHeld", err)
		}
		must(t, s.Complete(ctx, "k", e2.Token, idempotency.Response{Status: 201}, ttl))
	})

	t.Run("ttl_expires", func(t *testing.T) {
		s := h.New(t)
		e, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		must(t, s.Complete(ctx, "k", e.Token, idempotency.Response{Status: 200}, h.Lease))
		h.Advance(t, h.Lease+h.Lease/2)
		got, err := s.Begin(ctx, "k", "fp", time.Minute)
		must(t, err)
		if got.State != idempotency.Acquired {
			t.Fatalf("after the TTL: %+v, want Acquired", got)
		}
	})

	t.Run("one_winner", func(t *testing.T) {
		s := h.New(t)
		const n = 16
		var (
			wg       sync.WaitGroup
			mu       sync.Mutex
			acquired int
		)
		for range n {
			wg.Go(func() {
				e, err := s.Begin(ctx, "race", "fp", time.Minute)
				if err != nil {
					t.Error(err)
					return
				}
				if e.State == idempotency.Acquired {
					mu.Lock()
					acquired++
					mu.Unlock()
				}
			})
		}
		wg.Wait()
		if acquired != 1 {
			t.Fatalf("%d of %d concurrent Begins acquired the key, want 1", acquired, n)
		}
	})

	t.Run("cancelled_context", func(t *testing.T) {
		s := h.New(t)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := s.Begin(cctx, "k", "fp", time.Minute); err == nil {
			t.Fatal("Begin with a cancelled context succeeded")
		}
	})
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
