package domain_test

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

func percentRules() domain.Rules {
	r := baseRules()
	r.Kind, r.Threshold, r.AmountOff, r.PercentOff, r.MaxDiscount = domain.KindPercent, 0, 0, 15, 3000
	return r
}

func directRules() domain.Rules {
	r := baseRules()
	r.Kind, r.Threshold, r.AmountOff = domain.KindDirect, 0, 500
	return r
}

func shippingRules() domain.Rules {
	r := baseRules()
	r.Kind, r.Threshold, r.AmountOff = domain.KindShipping, 0, 1000
	return r
}

func ids(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("id-%d", i)
	}
	return out
}

func TestRulesValidateRejects(t *testing.T) {
	cases := []struct {
		name  string
		base  func() domain.Rules
		edit  func(*domain.Rules)
		field string
	}{
		// name
		{"name empty", baseRules, func(r *domain.Rules) { r.Name = "" }, "name"},
		{"name too long", baseRules, func(r *domain.Rules) { r.Name = strings.Repeat("券", domain.MaxNameLen+1) }, "name"},
		{"name invalid utf8", baseRules, func(r *domain.Rules) { r.Name = "ok\xff" }, "name"},
		// issuer
		{"issuer empty", baseRules, func(r *domain.Rules) { r.Issuer = "" }, "issuer"},
		{"issuer too long", baseRules, func(r *domain.Rules) { r.Issuer = strings.Repeat("m", domain.MaxIDLen+1) }, "issuer"},
		{"issuer control char", baseRules, func(r *domain.Rules) { r.Issuer = "m\n1" }, "issuer"},
		{"issuer DEL", baseRules, func(r *domain.Rules) { r.Issuer = "m\x7f" }, "issuer"},
		{"issuer invalid utf8", baseRules, func(r *domain.Rules) { r.Issuer = "m\xc3" }, "issuer"},
		// money
		{"threshold negative", baseRules, func(r *domain.Rules) { r.Threshold = -1 }, "threshold"},
		{"threshold over max", baseRules, func(r *domain.Rules) { r.Threshold = domain.MaxMoney + 1 }, "threshold"},
		{"amount_off negative", directRules, func(r *domain.Rules) { r.AmountOff = -1 }, "amount_off"},
		{"amount_off over max", directRules, func(r *domain.Rules) { r.AmountOff = domain.MaxMoney + 1 }, "amount_off"},
		{"max_discount negative", percentRules, func(r *domain.Rules) { r.MaxDiscount = -1 }, "max_discount"},
		{"max_discount over max", percentRules, func(r *domain.Rules) { r.MaxDiscount = domain.MaxMoney + 1 }, "max_discount"},
		{"percent_off negative", percentRules, func(r *domain.Rules) { r.PercentOff = -1 }, "percent_off"},
		{"percent_off 100", percentRules, func(r *domain.Rules) { r.PercentOff = 100 }, "percent_off"},
		// kind
		{"kind empty", baseRules, func(r *domain.Rules) { r.Kind = "" }, "kind"},
		{"kind unknown", baseRules, func(r *domain.Rules) { r.Kind = "bogo" }, "kind"},
		{"kind wrong case", baseRules, func(r *domain.Rules) { r.Kind = "Threshold" }, "kind"},
		// threshold kind
		{"threshold kind, threshold 0", baseRules, func(r *domain.Rules) { r.Threshold = 0 }, "threshold"},
		{"threshold kind, amount_off 0", baseRules, func(r *domain.Rules) { r.AmountOff = 0 }, "amount_off"},
		{"threshold kind, percent_off", baseRules, func(r *domain.Rules) { r.PercentOff = 10 }, "percent_off"},
		{"threshold kind, max_discount", baseRules, func(r *domain.Rules) { r.MaxDiscount = 10 }, "max_discount"},
		// direct kind
		{"direct, amount_off 0", directRules, func(r *domain.Rules) { r.AmountOff = 0 }, "amount_off"},
		{"direct, percent_off", directRules, func(r *domain.Rules) { r.PercentOff = 10 }, "percent_off"},
		{"direct, max_discount", directRules, func(r *domain.Rules) { r.MaxDiscount = 10 }, "max_discount"},
		// shipping kind
		{"shipping, amount_off 0", shippingRules, func(r *domain.Rules) { r.AmountOff = 0 }, "amount_off"},
		{"shipping, percent_off", shippingRules, func(r *domain.Rules) { r.PercentOff = 10 }, "percent_off"},
		{"shipping, max_discount", shippingRules, func(r *domain.Rules) { r.MaxDiscount = 10 }, "max_discount"},
		{"shipping, merchant scope", shippingRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeMerchant, IDs: []string{"m1"}}
		}, "scope.kind"},
		{"shipping, product scope", shippingRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{"p1"}}
		}, "scope.kind"},
		// percent kind
		{"percent, percent_off 0", percentRules, func(r *domain.Rules) { r.PercentOff = 0 }, "percent_off"},
		{"percent, amount_off", percentRules, func(r *domain.Rules) { r.AmountOff = 100 }, "amount_off"},
		// scope
		{"scope kind empty", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{} }, "scope.kind"},
		{"scope kind unknown", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: "shop", IDs: []string{"s"}} }, "scope.kind"},
		{"scope all with ids", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeAll, IDs: []string{"x"}} }, "scope.ids"},
		{"scope merchant without ids", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeMerchant} }, "scope.ids"},
		{"scope category empty ids", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{}} }, "scope.ids"},
		{"scope product without ids", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeProduct} }, "scope.ids"},
		{"scope too many ids", baseRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: ids(domain.MaxScopeIDs + 1)}
		}, "scope.ids"},
		{"scope duplicate ids", baseRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c1", "c2", "c1"}}
		}, "scope.ids"},
		{"scope empty id", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeMerchant, IDs: []string{"m1", ""}} }, "scope.ids"},
		{"scope id control char", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{"p\t1"}} }, "scope.ids"},
		{"scope id too long", baseRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: []string{strings.Repeat("p", domain.MaxIDLen+1)}}
		}, "scope.ids"},
		// per-user limit
		{"per_user_limit 0", baseRules, func(r *domain.Rules) { r.PerUserLimit = 0 }, "per_user_limit"},
		{"per_user_limit negative", baseRules, func(r *domain.Rules) { r.PerUserLimit = -1 }, "per_user_limit"},
		{"per_user_limit over max", baseRules, func(r *domain.Rules) { r.PerUserLimit = domain.MaxPerUserLimit + 1 }, "per_user_limit"},
		// claim window
		{"claim_starts_at missing", baseRules, func(r *domain.Rules) { r.ClaimStartsAt = time.Time{} }, "claim_starts_at"},
		{"claim_ends_at missing", baseRules, func(r *domain.Rules) { r.ClaimEndsAt = time.Time{} }, "claim_ends_at"},
		{"claim_ends_at equal to start", baseRules, func(r *domain.Rules) { r.ClaimEndsAt = r.ClaimStartsAt }, "claim_ends_at"},
		{"claim_ends_at before start", baseRules, func(r *domain.Rules) { r.ClaimEndsAt = r.ClaimStartsAt.Add(-time.Second) }, "claim_ends_at"},
		// validity
		{"window and valid_days", windowRules, func(r *domain.Rules) { r.ValidDays = 7 }, "valid_days"},
		{"window and negative valid_days", windowRules, func(r *domain.Rules) { r.ValidDays = -1 }, "valid_days"},
		{"valid_from without valid_until", windowRules, func(r *domain.Rules) { r.ValidUntil = time.Time{} }, "valid_until"},
		{"valid_until without valid_from", windowRules, func(r *domain.Rules) { r.ValidFrom = time.Time{} }, "valid_until"},
		{"valid_until equal to valid_from", windowRules, func(r *domain.Rules) { r.ValidUntil = r.ValidFrom }, "valid_until"},
		{"valid_until before valid_from", windowRules, func(r *domain.Rules) { r.ValidUntil = r.ValidFrom.Add(-time.Hour) }, "valid_until"},
		{"valid_until at claim start", windowRules, func(r *domain.Rules) {
			r.ValidFrom, r.ValidUntil = r.ClaimStartsAt.Add(-day), r.ClaimStartsAt
		}, "valid_until"},
		{"valid_until before claim start", windowRules, func(r *domain.Rules) {
			r.ValidFrom, r.ValidUntil = r.ClaimStartsAt.Add(-2*day), r.ClaimStartsAt.Add(-day)
		}, "valid_until"},
		{"no validity at all", baseRules, func(r *domain.Rules) { r.ValidDays = 0 }, "valid_days"},
		{"valid_days negative", baseRules, func(r *domain.Rules) { r.ValidDays = -3 }, "valid_days"},
		{"valid_days over max", baseRules, func(r *domain.Rules) { r.ValidDays = domain.MaxValidDays + 1 }, "valid_days"},
		// audience
		{"audience empty", baseRules, func(r *domain.Rules) { r.Audience = "" }, "audience"},
		{"audience unknown", baseRules, func(r *domain.Rules) { r.Audience = "private" }, "audience"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.base()
			if err := r.Validate(); err != nil {
				t.Fatalf("fixture is invalid before the edit: %v", err)
			}
			tc.edit(&r)
			err := r.Validate()
			wantErr(t, err, domain.ErrInvalidArgument)
			var de *domain.Error
			if !errors.As(err, &de) {
				t.Fatalf("error %T is not a *domain.Error", err)
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("message %q does not name field %q", err.Error(), tc.field)
			}
		})
	}
}

func TestRulesValidateAccepts(t *testing.T) {
	cases := []struct {
		name string
		base func() domain.Rules
		edit func(*domain.Rules)
	}{
		{"threshold, valid_days", baseRules, nil},
		{"threshold, window", windowRules, nil},
		{"threshold, money at max", baseRules, func(r *domain.Rules) { r.Threshold, r.AmountOff = domain.MaxMoney, domain.MaxMoney }},
		{"threshold, amount_off above threshold", baseRules, func(r *domain.Rules) { r.Threshold, r.AmountOff = 100, 500 }},
		{"direct, no threshold", directRules, nil},
		{"direct, with threshold", directRules, func(r *domain.Rules) { r.Threshold = 9900 }},
		{"percent, capped", percentRules, nil},
		{"percent, uncapped", percentRules, func(r *domain.Rules) { r.MaxDiscount = 0 }},
		{"percent, 1%", percentRules, func(r *domain.Rules) { r.PercentOff = 1 }},
		{"percent, 99%", percentRules, func(r *domain.Rules) { r.PercentOff = 99 }},
		{"percent, with threshold", percentRules, func(r *domain.Rules) { r.Threshold = 10000 }},
		{"percent, max_discount at max", percentRules, func(r *domain.Rules) { r.MaxDiscount = domain.MaxMoney }},
		{"shipping, scope all", shippingRules, nil},
		{"shipping, with threshold", shippingRules, func(r *domain.Rules) { r.Threshold = 8800 }},
		{"merchant issuer and scope", baseRules, func(r *domain.Rules) {
			r.Issuer, r.Scope = "m-42", domain.Scope{Kind: domain.ScopeMerchant, IDs: []string{"m-42"}}
		}},
		{"category scope", baseRules, func(r *domain.Rules) { r.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c1", "c2"}} }},
		{"product scope, max ids", baseRules, func(r *domain.Rules) {
			r.Scope = domain.Scope{Kind: domain.ScopeProduct, IDs: ids(domain.MaxScopeIDs)}
		}},
		{"targeted audience", baseRules, func(r *domain.Rules) { r.Audience = domain.AudienceTargeted }},
		{"exclusive", baseRules, func(r *domain.Rules) { r.Exclusive = true }},
		{"per_user_limit max", baseRules, func(r *domain.Rules) { r.PerUserLimit = domain.MaxPerUserLimit }},
		{"valid_days 1", baseRules, func(r *domain.Rules) { r.ValidDays = 1 }},
		{"valid_days max", baseRules, func(r *domain.Rules) { r.ValidDays = domain.MaxValidDays }},
		{"name of max runes (multi-byte)", baseRules, func(r *domain.Rules) { r.Name = strings.Repeat("券", domain.MaxNameLen) }},
		{"issuer of max bytes", baseRules, func(r *domain.Rules) { r.Issuer = strings.Repeat("m", domain.MaxIDLen) }},
		{"window ending just after claim start", windowRules, func(r *domain.Rules) {
			r.ValidFrom, r.ValidUntil = r.ClaimStartsAt.Add(-day), r.ClaimStartsAt.Add(time.Second)
		}},
		{"window in a non-UTC zone", windowRules, func(r *domain.Rules) {
			shanghai := time.FixedZone("CST", 8*3600)
			r.ValidFrom, r.ValidUntil = r.ValidFrom.In(shanghai), r.ValidUntil.In(shanghai)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.base()
			if tc.edit != nil {
				tc.edit(&r)
			}
			if err := r.Validate(); err != nil {
				t.Fatalf("Validate: %v", err)
			}
		})
	}
}

func TestValidateID(t *testing.T) {
	cases := []struct {
		id string
		ok bool
	}{
		{"u-1", true},
		{"用户-1", true},
		{strings.Repeat("x", domain.MaxIDLen), true},
		{"", false},
		{strings.Repeat("x", domain.MaxIDLen+1), false},
		{strings.Repeat("用", 43), false}, // 129 bytes
		{"a\x00b", false},
		{"a\x1fb", false},
		{"a\x7fb", false},
		{"a\xffb", false},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("%q", tc.id), func(t *testing.T) {
			err := domain.ValidateID("user_id", tc.id)
			if tc.ok {
				wantErr(t, err, nil)
				return
			}
			wantErr(t, err, domain.ErrInvalidArgument)
			if !strings.HasPrefix(err.Error(), "user_id: ") {
				t.Fatalf("message %q does not name the field", err)
			}
		})
	}
}

func TestTermsAt(t *testing.T) {
	claim := at(3*day + 5*time.Hour + 7*time.Minute)

	t.Run("valid_days counts from the claim time", func(t *testing.T) {
		r := baseRules()
		r.Exclusive = true
		r.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c1"}}
		got := r.TermsAt("b-1", 3, claim)
		want := domain.CouponTerms{
			BatchID: "b-1", RuleVersion: 3, Kind: domain.KindThreshold, Issuer: domain.IssuerPlatform,
			Threshold: 20000, AmountOff: 5000, Scope: r.Scope, Exclusive: true,
			ValidFrom: claim, ValidUntil: claim.Add(7 * day),
		}
		if !termsEqual(got, want) {
			t.Fatalf("TermsAt = %+v, want %+v", got, want)
		}
	})
	t.Run("a window is copied as is", func(t *testing.T) {
		r := windowRules()
		got := r.TermsAt("b-1", 0, claim)
		if !got.ValidFrom.Equal(r.ValidFrom) || !got.ValidUntil.Equal(r.ValidUntil) {
			t.Fatalf("validity = [%v, %v), want [%v, %v)", got.ValidFrom, got.ValidUntil, r.ValidFrom, r.ValidUntil)
		}
	})
	t.Run("percent fields are carried", func(t *testing.T) {
		got := percentRules().TermsAt("b-1", 0, claim)
		if got.Kind != domain.KindPercent || got.PercentOff != 15 || got.MaxDiscount != 3000 {
			t.Fatalf("TermsAt = %+v", got)
		}
	})
}

func termsEqual(a, b domain.CouponTerms) bool {
	ta, tb := a, b
	ta.ValidFrom, ta.ValidUntil = time.Time{}, time.Time{}
	tb.ValidFrom, tb.ValidUntil = time.Time{}, time.Time{}
	return reflect.DeepEqual(ta, tb) && a.ValidFrom.Equal(b.ValidFrom) && a.ValidUntil.Equal(b.ValidUntil)
}

func TestRulesNormalizedAndEqual(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	utc := windowRules()
	local := utc
	local.ClaimStartsAt, local.ClaimEndsAt = utc.ClaimStartsAt.In(shanghai), utc.ClaimEndsAt.In(shanghai)
	local.ValidFrom, local.ValidUntil = utc.ValidFrom.In(shanghai), utc.ValidUntil.In(shanghai)

	n := local.Normalized()
	for _, tt := range []time.Time{n.ClaimStartsAt, n.ClaimEndsAt, n.ValidFrom, n.ValidUntil} {
		if tt.Location() != time.UTC {
			t.Fatalf("Normalized left %v in %v", tt, tt.Location())
		}
	}
	if local.ClaimStartsAt.Location() != shanghai {
		t.Fatal("Normalized changed its receiver")
	}
	if !utc.Equal(local) || !local.Equal(utc) {
		t.Fatal("the same instants in another zone must be Equal")
	}
	other := utc
	other.AmountOff++
	if utc.Equal(other) {
		t.Fatal("different amount_off compared Equal")
	}
	later := utc
	later.ValidUntil = later.ValidUntil.Add(time.Nanosecond)
	if utc.Equal(later) {
		t.Fatal("different valid_until compared Equal")
	}
}

func TestErrors(t *testing.T) {
	err := domain.Errorf(domain.ErrConflict, "coupon %s is locked", "c-1")
	if !errors.Is(err, domain.ErrConflict) || errors.Is(err, domain.ErrNotFound) {
		t.Fatalf("Errorf kind: %v", err)
	}
	if err.Error() != "coupon c-1 is locked" {
		t.Fatalf("Error() = %q", err.Error())
	}
	wrapped := fmt.Errorf("handler: %w", domain.Invalid("add", "must be between %d and %d", 1, 9))
	if !errors.Is(wrapped, domain.ErrInvalidArgument) {
		t.Fatal("a wrapped Invalid must still match ErrInvalidArgument")
	}
	if got := errors.Unwrap(wrapped).Error(); got != "add: must be between 1 and 9" {
		t.Fatalf("Invalid message = %q", got)
	}
}

func TestClocks(t *testing.T) {
	c := domain.ClockFunc(func() time.Time { return t0 })
	if !c.Now().Equal(t0) {
		t.Fatalf("ClockFunc.Now = %v", c.Now())
	}
	var _ domain.Clock = domain.SystemClock{}
	if loc := (domain.SystemClock{}).Now().Location(); loc != time.UTC {
		t.Fatalf("SystemClock gives %v, want UTC", loc)
	}
}
