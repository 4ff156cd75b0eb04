package domain

import (
	"encoding/json"
	"time"
	"unicode/utf8"
)

// Kind is a coupon kind.
type Kind string

// Coupon kinds (see spec/pricing.md).
const (
	KindThreshold Kind = "threshold" // spend >= threshold, get amount_off
	KindDirect    Kind = "direct"    // amount_off, no threshold needed
	KindPercent   Kind = "percent"   // percent_off of the eligible amount, capped by max_discount
	KindShipping  Kind = "shipping"  // amount_off of the shipping fee
)

// Scope kinds.
const (
	ScopeAll      = "all"
	ScopeMerchant = "merchant"
	ScopeCategory = "category"
	ScopeProduct  = "product"
)

// Audiences.
const (
	AudiencePublic   = "public"   // anyone may claim
	AudienceTargeted = "targeted" // only grants
)

// IssuerPlatform marks a platform-issued coupon; any other issuer is a merchant id.
const IssuerPlatform = "platform"

// Limits that keep money arithmetic far from int64 overflow and bound inputs.
const (
	MaxMoney        int64 = 1_000_000_000_000 // 10^12 minor units
	MaxStock        int64 = 1_000_000_000
	MaxPerUserLimit       = 1000
	MaxValidDays          = 3650
	MaxScopeIDs           = 1000
	MaxNameLen            = 200
	MaxIDLen              = 128
)

// maxRuleTime bounds every time of the rules. Events store times as RFC 3339
// strings, which hold years 0 to 9999 only (json.Marshal fails beyond), and
// a coupon's validity may end up to MaxValidDays after the claim window:
// this bound keeps every event derived from valid rules storable.
var maxRuleTime = time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC)

// Scope says which lines a goods coupon applies to.
type Scope struct {
	Kind string   `json:"kind"`
	IDs  []string `json:"ids,omitempty"`
}

// Rules are a batch's coupon template and claim policy.
type Rules struct {
	Name          string    `json:"name"`
	Kind          Kind      `json:"kind"`
	Issuer        string    `json:"issuer"`
	Threshold     int64     `json:"threshold"`
	AmountOff     int64     `json:"amount_off"`
	PercentOff    int64     `json:"percent_off"`
	MaxDiscount   int64     `json:"max_discount"`
	Scope         Scope     `json:"scope"`
	Exclusive     bool      `json:"exclusive"`
	PerUserLimit  int       `json:"per_user_limit"`
	ClaimStartsAt time.Time `json:"claim_starts_at"`
	ClaimEndsAt   time.Time `json:"claim_ends_at"`
	ValidFrom     time.Time `json:"valid_from,omitzero"`
	ValidUntil    time.Time `json:"valid_until,omitzero"`
	ValidDays     int       `json:"valid_days,omitempty"`
	Audience      string    `json:"audience"`
}

// ValidateID checks an identifier supplied by a caller (user, order, merchant).
func ValidateID(field, id string) error {
	if id == "" {
		return Invalid(field, "is required")
	}
	if len(id) > MaxIDLen {
		return Invalid(field, "is longer than %d bytes", MaxIDLen)
	}
	if !utf8.ValidString(id) {
		return Invalid(field, "is not valid UTF-8")
	}
	for _, r := range id {
		if r < 0x20 || r == 0x7f {
			return Invalid(field, "contains control characters")
		}
	}
	return nil
}

func validMoney(field string, v int64) error {
	if v < 0 {
		return Invalid(field, "must not be negative")
	}
	if v > MaxMoney {
		return Invalid(field, "must not exceed %d", MaxMoney)
	}
	return nil
}

// Validate checks every field; the first problem is returned, naming the field.
func (r Rules) Validate() error {
	if r.Name == "" || utf8.RuneCountInString(r.Name) > MaxNameLen || !utf8.ValidString(r.Name) {
		return Invalid("name", "is required, valid UTF-8, at most %d characters", MaxNameLen)
	}
	if err := ValidateID("issuer", r.Issuer); err != nil {
		return err
	}
	for _, m := range []struct {
		f string
		v int64
	}{{"threshold", r.Threshold}, {"amount_off", r.AmountOff}, {"max_discount", r.MaxDiscount}} {
		if err := validMoney(m.f, m.v); err != nil {
			return err
		}
	}
	if r.PercentOff < 0 || r.PercentOff > 99 {
		return Invalid("percent_off", "must be between 0 and 99")
	}
	switch r.Kind {
	case KindThreshold:
		if r.Threshold <= 0 {
			return Invalid("threshold", "must be > 0 for a threshold coupon")
		}
		if r.AmountOff <= 0 {
			return Invalid("amount_off", "must be > 0")
		}
		if err := r.noPercentFields(); err != nil {
			return err
		}
	case KindDirect, KindShipping:
		if r.AmountOff <= 0 {
			return Invalid("amount_off", "must be > 0")
		}
		if err := r.noPercentFields(); err != nil {
			return err
		}
	case KindPercent:
		if r.PercentOff < 1 {
			return Invalid("percent_off", "must be between 1 and 99 for a percent coupon")
		}
		if r.AmountOff != 0 {
			return Invalid("amount_off", "a percent coupon takes percent_off, not amount_off")
		}
	default:
		return Invalid("kind", "must be one of threshold, direct, percent, shipping")
	}
	if err := r.validateScope(); err != nil {
		return err
	}
	if r.PerUserLimit < 1 || r.PerUserLimit > MaxPerUserLimit {
		return Invalid("per_user_limit", "must be between 1 and %d", MaxPerUserLimit)
	}
	if r.ClaimStartsAt.IsZero() {
		return Invalid("claim_starts_at", "is required")
	}
	for _, f := range []struct {
		name string
		t    time.Time
	}{{"claim_starts_at", r.ClaimStartsAt}, {"claim_ends_at", r.ClaimEndsAt}, {"valid_from", r.ValidFrom}, {"valid_until", r.ValidUntil}} {
		if !f.t.IsZero() && (f.t.Before(time.Time{}) || f.t.After(maxRuleTime)) {
			return Invalid(f.name, "must be between 0001-01-01 and %s", maxRuleTime.Format(time.RFC3339))
		}
	}
	if r.ClaimEndsAt.IsZero() || !r.ClaimEndsAt.After(r.ClaimStartsAt) {
		return Invalid("claim_ends_at", "is required and must be after claim_starts_at")
	}
	window := !r.ValidFrom.IsZero() || !r.ValidUntil.IsZero()
	switch {
	case window && r.ValidDays != 0:
		return Invalid("valid_days", "give either valid_from+valid_until or valid_days, not both")
	case window:
		if r.ValidFrom.IsZero() || r.ValidUntil.IsZero() {
			return Invalid("valid_until", "valid_from and valid_until go together")
		}
		if !r.ValidUntil.After(r.ValidFrom) {
			return Invalid("valid_until", "must be after valid_from")
		}
		if !r.ValidUntil.After(r.ClaimStartsAt) {
			return Invalid("valid_until", "must be after claim_starts_at, or every coupon is born expired")
		}
	case r.ValidDays < 1 || r.ValidDays > MaxValidDays:
		return Invalid("valid_days", "is required (1..%d) when no valid_from/valid_until window is given", MaxValidDays)
	}
	if r.Audience != AudiencePublic && r.Audience != AudienceTargeted {
		return Invalid("audience", "must be public or targeted")
	}
	return nil
}

// noPercentFields refuses percent_off and max_discount on a non-percent coupon,
// naming the field actually set.
func (r Rules) noPercentFields() error {
	if r.PercentOff != 0 {
		return Invalid("percent_off", "only percent coupons take percent_off")
	}
	if r.MaxDiscount != 0 {
		return Invalid("max_discount", "only percent coupons take max_discount")
	}
	return nil
}

func (r Rules) validateScope() error {
	switch r.Scope.Kind {
	case ScopeAll:
		if len(r.Scope.IDs) != 0 {
			return Invalid("scope.ids", "must be empty for scope all")
		}
	case ScopeMerchant, ScopeCategory, ScopeProduct:
		if r.Kind == KindShipping {
			return Invalid("scope.kind", "a shipping coupon applies to the shipping fee: scope must be all")
		}
		if len(r.Scope.IDs) == 0 || len(r.Scope.IDs) > MaxScopeIDs {
			return Invalid("scope.ids", "must hold 1..%d ids", MaxScopeIDs)
		}
		seen := make(map[string]struct{}, len(r.Scope.IDs))
		for _, id := range r.Scope.IDs {
			if err := ValidateID("scope.ids", id); err != nil {
				return err
			}
			if _, dup := seen[id]; dup {
				return Invalid("scope.ids", "duplicate id %q", id)
			}
			seen[id] = struct{}{}
		}
	default:
		return Invalid("scope.kind", "must be one of all, merchant, category, product")
	}
	return nil
}

// TermsAt returns the coupon terms for a coupon claimed or granted at t.
func (r Rules) TermsAt(batchID string, ruleVersion int, t time.Time) CouponTerms {
	from, until := r.ValidFrom, r.ValidUntil
	if r.ValidDays > 0 {
		from, until = t, t.Add(time.Duration(r.ValidDays)*24*time.Hour)
	}
	return CouponTerms{
		BatchID: batchID, RuleVersion: ruleVersion, Kind: r.Kind, Issuer: r.Issuer,
		Threshold: r.Threshold, AmountOff: r.AmountOff, PercentOff: r.PercentOff, MaxDiscount: r.MaxDiscount,
		Scope: r.Scope, Exclusive: r.Exclusive, ValidFrom: from, ValidUntil: until,
	}
}

// Normalized returns the rules with every time in UTC, so equal instants
// compare and encode equally.
func (r Rules) Normalized() Rules {
	for _, t := range []*time.Time{&r.ClaimStartsAt, &r.ClaimEndsAt, &r.ValidFrom, &r.ValidUntil} {
		*t = t.UTC()
	}
	return r
}

// Equal compares two rule sets by their stored form.
func (r Rules) Equal(o Rules) bool {
	a, _ := json.Marshal(r.Normalized())
	b, _ := json.Marshal(o.Normalized())
	return string(a) == string(b)
}
