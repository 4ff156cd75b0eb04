package domain_test

import (
	"bytes"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// unixOrZero maps a fuzzed unix time onto a rule time: 0 is "not given"
// (the zero time), anything else is that second plus nsec, in a fixed zone
// offset by zone seconds (Validate must not care about the zone).
func unixOrZero(sec, nsec int64, zone int) time.Time {
	if sec == 0 {
		return time.Time{}
	}
	return time.Unix(sec, nsec).In(time.FixedZone("fuzz", zone%(26*3600)))
}

// FuzzRulesValidate feeds arbitrary field values into domain.Rules. Validate
// never panics; when it accepts, the money fields are in [0, MaxMoney], a
// batch can be issued with those rules, and every event the batch can give
// rise to (batch.issued.v1, and coupon.claimed.v1 at either end of the claim
// window) is stored and read back through the registry unchanged.
func FuzzRulesValidate(f *testing.F) {
	start, end := claimStart.Unix(), claimEnd.Unix()
	// name, kind, issuer, threshold, amount_off, percent_off, max_discount,
	// scope kind, scope ids (comma separated), exclusive, per_user_limit,
	// claim start, claim end, valid from, valid until (unix s), nsec, zone,
	// valid_days, audience.
	f.Add("Double 11", "threshold", "platform", int64(20000), int64(5000), int64(0), int64(0), "all", "", false, 1, start, end, int64(0), int64(0), int64(0), 0, 7, "public")
	f.Add("10% off", "percent", "m-1", int64(0), int64(0), int64(10), int64(3000), "merchant", "m1,m2", true, 2, start, end, start, end+86400, int64(999_999_999), 3600, 0, "targeted")
	f.Add("free shipping 🚚", "shipping", "platform", int64(0), int64(800), int64(0), int64(0), "all", "", false, 1000, start, end, int64(0), int64(0), int64(1), -7200, 3650, "public")
	f.Add("direct", "direct", "platform", int64(0), domain.MaxMoney, int64(0), int64(0), "product", "p1", false, 1, start, end, int64(0), int64(0), int64(0), 0, 1, "public")
	f.Add("too much", "direct", "platform", int64(0), domain.MaxMoney+1, int64(0), int64(0), "all", "", false, 1, start, end, int64(0), int64(0), int64(0), 0, 1, "public")
	f.Add("negative", "threshold", "platform", int64(-1), int64(math.MinInt64), int64(-5), int64(math.MaxInt64), "all", "", false, 0, end, start, int64(0), int64(0), int64(0), 0, -1, "vip")
	f.Add("dup ids", "threshold", "platform", int64(100), int64(10), int64(0), int64(0), "category", "c1,c1", false, 1, start, end, int64(0), int64(0), int64(0), 0, 7, "public")
	f.Add("bad id", "threshold", "plat\x00form", int64(100), int64(10), int64(0), int64(0), "category", "c\x7f", false, 1, start, end, int64(0), int64(0), int64(0), 0, 7, "public")
	f.Add("\xff\xfe", "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, start, end, int64(0), int64(0), int64(0), 0, 7, "public")
	f.Add(strings.Repeat("é", 200), "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, start, end, int64(0), int64(0), int64(0), 0, 7, "public")
	// Times at the edges of what RFC 3339 (and so the stored JSON) can hold.
	y1 := time.Date(1, 1, 1, 0, 0, 1, 0, time.UTC).Unix()
	y9999 := time.Date(9999, 12, 31, 23, 0, 0, 0, time.UTC).Unix()
	f.Add("old", "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, y1-3600, end, int64(0), int64(0), int64(0), 7200, 7, "public")
	f.Add("late", "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, start, y9999, int64(0), int64(0), int64(0), 0, 3650, "public")
	f.Add("late window", "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, start, end, start, y9999+7200, int64(0), -7200, 0, "public")
	f.Add("extreme", "direct", "platform", int64(0), int64(1), int64(0), int64(0), "all", "", false, 1, int64(math.MinInt64), int64(math.MaxInt64), int64(math.MinInt64), int64(math.MaxInt64), int64(math.MaxInt64), math.MaxInt32, 7, "public")

	reg := domain.NewRegistry()
	f.Fuzz(func(t *testing.T, name, kind, issuer string, threshold, amountOff, percentOff, maxDiscount int64,
		scopeKind, scopeIDs string, exclusive bool, perUserLimit int,
		claimStarts, claimEnds, validFrom, validUntil, nsec int64, zone, validDays int, audience string) {
		r := domain.Rules{
			Name: name, Kind: domain.Kind(kind), Issuer: issuer,
			Threshold: threshold, AmountOff: amountOff, PercentOff: percentOff, MaxDiscount: maxDiscount,
			Scope:         domain.Scope{Kind: scopeKind},
			Exclusive:     exclusive,
			PerUserLimit:  perUserLimit,
			ClaimStartsAt: unixOrZero(claimStarts, nsec, zone), ClaimEndsAt: unixOrZero(claimEnds, nsec, zone),
			ValidFrom: unixOrZero(validFrom, 0, zone), ValidUntil: unixOrZero(validUntil, nsec, zone),
			ValidDays: validDays, Audience: audience,
		}
		if scopeIDs != "" {
			r.Scope.IDs = strings.Split(scopeIDs, ",")
		}
		err := r.Validate()
		if err != nil {
			if !errors.Is(err, domain.ErrInvalidArgument) {
				t.Fatalf("Validate: error of another kind: %v", err)
			}
			var de *domain.Error
			if !errors.As(err, &de) || !strings.Contains(de.Message, ": ") {
				t.Fatalf("Validate: error does not name a field: %v", err)
			}
			return
		}
		// Zones do not matter: the normalized rules are just as valid.
		if err := r.Normalized().Validate(); err != nil {
			t.Fatalf("valid rules are invalid once normalized: %v", err)
		}
		for _, m := range []int64{r.Threshold, r.AmountOff, r.MaxDiscount} {
			if m < 0 || m > domain.MaxMoney {
				t.Fatalf("accepted money %d outside [0, %d]: %+v", m, domain.MaxMoney, r)
			}
		}
		if r.PercentOff < 0 || r.PercentOff > 99 || r.PerUserLimit < 1 || r.PerUserLimit > domain.MaxPerUserLimit {
			t.Fatalf("accepted out-of-range percent or limit: %+v", r)
		}
		if !r.ClaimEndsAt.After(r.ClaimStartsAt) {
			t.Fatalf("accepted an empty claim window: %+v", r)
		}

		// Issue a batch with the rules; the claim window is open at its start.
		now := r.ClaimStartsAt.UTC() // clocks give UTC (domain.SystemClock)
		b, err := domain.IssueBatch("batch-1", r, 1, "admin-1", now)
		if err != nil {
			t.Fatalf("IssueBatch refused rules Validate accepts: %v", err)
		}
		evs := b.Changes()
		if len(evs) != 1 {
			t.Fatalf("IssueBatch recorded %d events", len(evs))
		}
		got := roundTrip(t, reg, evs[0]).(*domain.BatchIssued)
		if !got.Rules.Equal(r) || !got.Rules.Equal(b.Rules) {
			t.Fatalf("rules changed through the registry:\n got %+v\nwant %+v", got.Rules, b.Rules)
		}
		for _, p := range [][2]time.Time{
			{got.Rules.ClaimStartsAt, r.ClaimStartsAt}, {got.Rules.ClaimEndsAt, r.ClaimEndsAt},
			{got.Rules.ValidFrom, r.ValidFrom}, {got.Rules.ValidUntil, r.ValidUntil},
		} {
			if !p[0].Equal(p[1]) {
				t.Fatalf("a time changed through the registry: %v, want %v", p[0], p[1])
			}
		}
		if rebuilt := domain.NewBatchFromHistory("batch-1", []domain.Event{got}); !rebuilt.Rules.Equal(b.Rules) || rebuilt.TotalStock != 1 {
			t.Fatalf("batch rebuilt from the decoded event differs: %+v", rebuilt)
		}

		// A coupon claimed at either end of the window can be stored too.
		for _, at := range []time.Time{r.ClaimStartsAt.UTC(), r.ClaimEndsAt.UTC().Add(-time.Nanosecond)} {
			terms := b.Rules.TermsAt(b.ID, 0, at)
			roundTrip(t, reg, &domain.CouponClaimed{CouponID: "c-1", UserID: "u-1", Terms: terms, At: at})
		}
	})
}

// roundTrip stores e through the registry and reads it back; the re-encoded
// form must be byte for byte the stored one.
func roundTrip(t *testing.T, reg *domain.Registry, e domain.Event) domain.Event {
	t.Helper()
	name, data, err := reg.Marshal(e)
	if err != nil {
		t.Fatalf("Marshal %s: %v", e.EventName(), err)
	}
	back, err := reg.Unmarshal(name, data)
	if err != nil {
		t.Fatalf("Unmarshal %s: %v (%s)", name, err, data)
	}
	_, again, err := reg.Marshal(back)
	if err != nil {
		t.Fatalf("Marshal %s again: %v", name, err)
	}
	if !bytes.Equal(data, again) {
		t.Fatalf("%s does not round-trip:\n%s\n%s", name, data, again)
	}
	return back
}
