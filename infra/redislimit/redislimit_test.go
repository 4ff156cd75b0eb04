package redislimit

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/redistest"
)

func TestLimiter(t *testing.T) {
	redistest.ForEach(t, func(t *testing.T, b redistest.Backend) {
		now := time.Date(2026, 11, 11, 0, 0, 30, 0, time.UTC)
		l, err := New(b.Client, b.Prefix, 3, time.Minute, func() time.Time { return now })
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 3 {
			if _, err := l.Allow(ctx, "u1"); err != nil {
				t.Fatalf("hit %d: %v", i, err)
			}
		}
		ra, err := l.Allow(ctx, "u1")
		if !errors.Is(err, domain.ErrRateLimited) || ra <= 0 || ra > time.Minute {
			t.Fatalf("4th hit: %v retry after %v", err, ra)
		}
		if _, err := l.Allow(ctx, "u2"); err != nil {
			t.Fatalf("another subject is limited too: %v", err)
		}
		now = now.Add(time.Minute) // next window
		if _, err := l.Allow(ctx, "u1"); err != nil {
			t.Fatalf("next window: %v", err)
		}
	})
}
