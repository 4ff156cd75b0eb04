package esindex

import (
	"encoding/json"
	"fmt"
	"math"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/history/internal/histkit"
	"github.com/couponsd/couponsd/projections"
)

// dateNanos is the mapping of every time field: nanosecond precision, so
// that listings order and reports cut ranges exactly as the embedded
// adapter does. It limits times to 1970-01-01..2262-04-11.
var dateNanos = map[string]any{"type": "date_nanos", "format": "strict_date_optional_time_nanos"}

// recordMapping is the explicit mapping of the generation indices.
// dynamic: strict makes a field the adapter does not know an error.
func recordMapping() map[string]any {
	keyword := map[string]any{"type": "keyword"}
	long := map[string]any{"type": "long"}
	props := map[string]any{}
	for _, f := range []string{"coupon_id", "batch_id", "user_id", "status", "source", "kind", "issuer", "order_id", "payment_id"} {
		props[f] = keyword
	}
	for _, f := range []string{"threshold", "amount_off", "percent_off", "max_discount", "discount", "version"} {
		props[f] = long
	}
	for _, f := range []string{"obtained_at", "valid_from", "valid_until", "redeemed_at", "expired_at", "returned_at", "ended_at", "updated_at"} {
		props[f] = dateNanos
	}
	return map[string]any{"dynamic": "strict", "properties": props}
}

// metaMapping is the mapping of the meta index: one document per
// generation index (id = the index name) holding its checkpoint.
func metaMapping() map[string]any {
	return map[string]any{"dynamic": "strict", "properties": map[string]any{
		"generation": map[string]any{"type": "keyword"},
		"checkpoint": map[string]any{"type": "unsigned_long"},
	}}
}

// doc is a record as indexed: times as RFC 3339 strings with nanoseconds,
// absent when zero.
type doc struct {
	CouponID    string `json:"coupon_id"`
	BatchID     string `json:"batch_id"`
	UserID      string `json:"user_id"`
	Status      string `json:"status"`
	Source      string `json:"source"`
	Kind        string `json:"kind"`
	Issuer      string `json:"issuer"`
	OrderID     string `json:"order_id,omitempty"`
	PaymentID   string `json:"payment_id,omitempty"`
	Threshold   int64  `json:"threshold"`
	AmountOff   int64  `json:"amount_off"`
	PercentOff  int64  `json:"percent_off"`
	MaxDiscount int64  `json:"max_discount"`
	Discount    int64  `json:"discount"`
	ObtainedAt  string `json:"obtained_at,omitempty"`
	ValidFrom   string `json:"valid_from,omitempty"`
	ValidUntil  string `json:"valid_until,omitempty"`
	RedeemedAt  string `json:"redeemed_at,omitempty"`
	ExpiredAt   string `json:"expired_at,omitempty"`
	ReturnedAt  string `json:"returned_at,omitempty"`
	EndedAt     string `json:"ended_at,omitempty"`
	UpdatedAt   string `json:"updated_at,omitempty"`
	Version     int64  `json:"version"`
}

var (
	minNanoTime = time.Unix(0, 0).UTC()
	maxNanoTime = time.Unix(0, math.MaxInt64).UTC()
)

func formatTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	return time.Parse(time.RFC3339Nano, s)
}

// checkForES rejects what the mapping cannot hold: times outside the
// date_nanos range and versions whose external version (Version+1) does not
// fit a long.
func checkForES(recs []projections.CouponRecord) error {
	for i := range recs {
		r := &recs[i]
		if r.Version >= math.MaxInt64 {
			return domain.Invalid("version", "coupon %s: %d is too large", r.CouponID, r.Version)
		}
		for _, t := range histkit.Times(r) {
			if !t.IsZero() && (t.Before(minNanoTime) || t.After(maxNanoTime)) {
				return domain.Invalid("time", "coupon %s: %s is outside 1970..2262", r.CouponID, t.Format(time.RFC3339Nano))
			}
		}
	}
	return nil
}

func toDoc(r *projections.CouponRecord) doc {
	return doc{
		CouponID: r.CouponID, BatchID: r.BatchID, UserID: r.UserID, Status: r.Status, Source: r.Source,
		Kind: r.Kind, Issuer: r.Issuer, OrderID: r.OrderID, PaymentID: r.PaymentID,
		Threshold: r.Threshold, AmountOff: r.AmountOff, PercentOff: r.PercentOff, MaxDiscount: r.MaxDiscount, Discount: r.Discount,
		ObtainedAt: formatTime(r.ObtainedAt), ValidFrom: formatTime(r.ValidFrom), ValidUntil: formatTime(r.ValidUntil),
		RedeemedAt: formatTime(r.RedeemedAt), ExpiredAt: formatTime(r.ExpiredAt), ReturnedAt: formatTime(r.ReturnedAt),
		EndedAt: formatTime(r.EndedAt), UpdatedAt: formatTime(r.UpdatedAt),
		Version: int64(r.Version),
	}
}

func fromSource(src json.RawMessage) (projections.CouponRecord, error) {
	var d doc
	if err := json.Unmarshal(src, &d); err != nil {
		return projections.CouponRecord{}, fmt.Errorf("esindex: decode document: %w", err)
	}
	if d.Version < 0 {
		return projections.CouponRecord{}, fmt.Errorf("esindex: document %s has version %d", d.CouponID, d.Version)
	}
	r := projections.CouponRecord{
		CouponID: d.CouponID, BatchID: d.BatchID, UserID: d.UserID, Status: d.Status, Source: d.Source,
		Kind: d.Kind, Issuer: d.Issuer, OrderID: d.OrderID, PaymentID: d.PaymentID,
		Threshold: d.Threshold, AmountOff: d.AmountOff, PercentOff: d.PercentOff, MaxDiscount: d.MaxDiscount, Discount: d.Discount,
		Version: uint64(d.Version),
	}
	for _, f := range []struct {
		dst *time.Time
		src string
	}{
		{&r.ObtainedAt, d.ObtainedAt}, {&r.ValidFrom, d.ValidFrom}, {&r.ValidUntil, d.ValidUntil},
		{&r.RedeemedAt, d.RedeemedAt}, {&r.ExpiredAt, d.ExpiredAt}, {&r.ReturnedAt, d.ReturnedAt},
		{&r.EndedAt, d.EndedAt}, {&r.UpdatedAt, d.UpdatedAt},
	} {
		t, err := parseTime(f.src)
		if err != nil {
			return projections.CouponRecord{}, fmt.Errorf("esindex: document %s: %w", d.CouponID, err)
		}
		*f.dst = t
	}
	return r, nil
}
