package httpapi

import (
	"context"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// countingLimiter allows n claims per subject.
type countingLimiter struct {
	mu   sync.Mutex
	n    int
	seen map[string]int
}

func (l *countingLimiter) Allow(_ context.Context, subject string) (time.Duration, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.seen[subject]++
	if l.seen[subject] > l.n {
		return 42 * time.Second, domain.Errorf(domain.ErrRateLimited, "slow down")
	}
	return 0, nil
}

func TestClaimRateLimitPerShopper(t *testing.T) {
	e := newEnv(t, withLimiter(&countingLimiter{n: 2, seen: map[string]int{}}))
	b := e.issue(map[string]any{"per_user_limit": 5})
	alice, bob := e.token("alice", RoleUser), e.token("bob", RoleUser)
	e.claim(b.ID, alice)
	e.claim(b.ID, alice)
	r := e.post("/v1/batches/"+b.ID+"/claim", alice, nil)
	expectError(t, r, http.StatusTooManyRequests, CodeRateLimited)
	if got := r.Header.Get("Retry-After"); got != "42" {
		t.Fatalf("Retry-After %q, want 42", got)
	}
	e.claim(b.ID, bob) // others are not affected
	if v := e.get("/v1/batches/"+b.ID, e.admin); v.Status != 200 {
		t.Fatal(v.Status)
	}
}

// blockingLimiter holds every claim until released, to fill the in-flight slots.
type blockingLimiter struct{ release chan struct{} }

func (l blockingLimiter) Allow(ctx context.Context, _ string) (time.Duration, error) {
	select {
	case <-l.release:
	case <-ctx.Done():
	}
	return 0, nil
}

func TestClaimShedsOverload(t *testing.T) {
	lim := blockingLimiter{release: make(chan struct{})}
	e := newEnv(t, withLimiter(lim), withConfig(func(c *Config) { c.MaxInflightClaims = 2 }))
	b := e.issue(map[string]any{"per_user_limit": 5})
	var wg sync.WaitGroup
	for _, u := range []string{"a", "b"} {
		wg.Add(1)
		tok := e.token(u, RoleUser)
		go func() { defer wg.Done(); e.post("/v1/batches/"+b.ID+"/claim", tok, nil) }()
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(e.srv.inflight) < 2 {
		if time.Now().After(deadline) {
			t.Fatal("claims never filled the in-flight slots")
		}
		time.Sleep(time.Millisecond)
	}
	start := time.Now()
	r := e.post("/v1/batches/"+b.ID+"/claim", e.token("c", RoleUser), nil)
	expectError(t, r, http.StatusTooManyRequests, CodeRateLimited)
	if r.Header.Get("Retry-After") == "" || time.Since(start) > time.Second {
		t.Fatalf("shed answer: Retry-After %q after %v", r.Header.Get("Retry-After"), time.Since(start))
	}
	close(lim.release)
	wg.Wait()
}
