package domain_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// t0 is the fixed time base of every test: nothing here reads the wall clock.
var t0 = time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// at is t0 + d.
func at(d time.Duration) time.Time { return t0.Add(d) }

// Claim window of baseRules: [t0+1d, t0+11d).
var (
	claimStart = at(1 * day)
	claimEnd   = at(11 * day)
)

// baseRules is a valid public threshold coupon, valid 7 days from its claim.
func baseRules() domain.Rules {
	return domain.Rules{
		Name:          "Double 11",
		Kind:          domain.KindThreshold,
		Issuer:        domain.IssuerPlatform,
		Threshold:     20000,
		AmountOff:     5000,
		Scope:         domain.Scope{Kind: domain.ScopeAll},
		PerUserLimit:  1,
		ClaimStartsAt: claimStart,
		ClaimEndsAt:   claimEnd,
		ValidDays:     7,
		Audience:      domain.AudiencePublic,
	}
}

// windowRules is baseRules with a fixed validity window [t0+2d, t0+20d).
func windowRules() domain.Rules {
	r := baseRules()
	r.ValidDays = 0
	r.ValidFrom, r.ValidUntil = at(2*day), at(20*day)
	return r
}

// issued returns a stored (no pending changes) batch issued at t0.
func issued(t *testing.T, id string, r domain.Rules, stock int64) *domain.Batch {
	t.Helper()
	b, err := domain.IssueBatch(id, r, stock, "admin-1", t0)
	if err != nil {
		t.Fatalf("IssueBatch: %v", err)
	}
	return domain.NewBatchFromHistory(id, b.Changes())
}

// stored rebuilds a batch from its history plus its pending changes, as a
// repository would after saving.
func storedBatch(history []domain.Event, b *domain.Batch) *domain.Batch {
	return domain.NewBatchFromHistory(b.ID, append(slices.Clone(history), b.Changes()...))
}

func names(evs []domain.Event) []string {
	out := make([]string, len(evs))
	for i, e := range evs {
		out[i] = e.EventName()
	}
	return out
}

// wantErr fails unless err matches kind (nil kind: no error expected).
func wantErr(t *testing.T, err, kind error) {
	t.Helper()
	switch {
	case kind == nil && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case kind != nil && err == nil:
		t.Fatalf("got no error, want %v", kind)
	case kind != nil && !errors.Is(err, kind):
		t.Fatalf("got error %v, want kind %v", err, kind)
	}
}

func wantNames(t *testing.T, got []domain.Event, want ...string) {
	t.Helper()
	if g := names(got); !slices.Equal(g, want) {
		t.Fatalf("events = %v, want %v", g, want)
	}
}
