// Package histkit holds what the history index adapters share: argument
// validation, limits, the listing order and the keyset cursor codec. Keeping
// them in one place makes the adapters agree on every edge (the conformance
// suite in historytest checks that they do).
package histkit

import (
	"encoding/base64"
	"encoding/binary"
	"hash/crc32"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

// Coupon statuses kept by the index.
var (
	StatusUsable   = string(domain.CouponUsable)
	StatusLocked   = string(domain.CouponLockedSt)
	StatusRedeemed = string(domain.CouponUsed)
	StatusExpired  = string(domain.CouponExpiredS)
)

// AllStatuses lists every status, sorted.
var AllStatuses = []string{StatusExpired, StatusLocked, StatusRedeemed, StatusUsable}

// Limits of listings and rankings.
const (
	DefaultListLimit = 50
	MaxListLimit     = 200
	DefaultTopLimit  = 10
	MaxTopLimit      = 1000
	// MaxIDLen bounds coupon, batch and user ids, in bytes.
	MaxIDLen = 512
)

// ValidStatus tells whether s is one of the four statuses.
func ValidStatus(s string) bool {
	return slices.Contains(AllStatuses, s)
}

// Statuses validates a listing's status filter and returns it sorted and
// without duplicates; an empty filter means every status.
func Statuses(in []string) ([]string, error) {
	if len(in) == 0 {
		return slices.Clone(AllStatuses), nil
	}
	out := make([]string, 0, len(in))
	for _, s := range in {
		if !ValidStatus(s) {
			return nil, domain.Invalid("statuses", "unknown status %q", s)
		}
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// ListLimit validates a listing's page size: 1..MaxListLimit, 0 for the
// default.
func ListLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultListLimit, nil
	case n < 0 || n > MaxListLimit:
		return 0, domain.Invalid("limit", "must be between 1 and %d, got %d", MaxListLimit, n)
	}
	return n, nil
}

// TopLimit validates a ranking's size: 1..MaxTopLimit, 0 for the default.
func TopLimit(n int) (int, error) {
	switch {
	case n == 0:
		return DefaultTopLimit, nil
	case n < 0 || n > MaxTopLimit:
		return 0, domain.Invalid("limit", "must be between 1 and %d, got %d", MaxTopLimit, n)
	}
	return n, nil
}

// CheckRange rejects a range whose From is after its To (both set).
func CheckRange(r projections.TimeRange) error {
	if !r.From.IsZero() && !r.To.IsZero() && r.From.After(r.To) {
		return domain.Invalid("range", "from %s is after to %s", r.From.Format(time.RFC3339Nano), r.To.Format(time.RFC3339Nano))
	}
	return nil
}

// InRange tells whether t lies in [r.From, r.To). A zero t is never in
// range: a record without the time of a transition does not count for it.
func InRange(t time.Time, r projections.TimeRange) bool {
	if t.IsZero() {
		return false
	}
	if !r.From.IsZero() && t.Before(r.From) {
		return false
	}
	if !r.To.IsZero() && !t.Before(r.To) {
		return false
	}
	return true
}

// CheckID validates a coupon, batch or user id.
func CheckID(field, id string) error {
	switch {
	case id == "":
		return domain.Invalid(field, "required")
	case len(id) > MaxIDLen:
		return domain.Invalid(field, "longer than %d bytes", MaxIDLen)
	case !utf8.ValidString(id):
		return domain.Invalid(field, "not valid UTF-8")
	}
	return nil
}

// CheckRecords validates an upsert: every record needs a coupon, batch and
// user id and one of the four statuses. Nothing is written when one fails.
func CheckRecords(recs []projections.CouponRecord) error {
	for i := range recs {
		r := &recs[i]
		if err := CheckID("coupon_id", r.CouponID); err != nil {
			return err
		}
		if err := CheckID("batch_id", r.BatchID); err != nil {
			return domain.Invalid("batch_id", "coupon %s: %v", r.CouponID, err)
		}
		if err := CheckID("user_id", r.UserID); err != nil {
			return domain.Invalid("user_id", "coupon %s: %v", r.CouponID, err)
		}
		if !ValidStatus(r.Status) {
			return domain.Invalid("status", "coupon %s: unknown status %q", r.CouponID, r.Status)
		}
	}
	return nil
}

// Key is a record's place in a listing: newest EndedAt first, ties by
// coupon id descending; a zero EndedAt sorts after every other.
type Key struct {
	Ended time.Time
	ID    string
}

// KeyOf is r's listing key.
func KeyOf(r *projections.CouponRecord) Key { return Key{Ended: r.EndedAt, ID: r.CouponID} }

// Compare orders keys as listings do: negative when a comes first.
func Compare(a, b Key) int {
	if c := b.Ended.Compare(a.Ended); c != 0 {
		return c
	}
	switch {
	case a.ID > b.ID:
		return -1
	case a.ID < b.ID:
		return 1
	}
	return 0
}

const cursorFormat = 1

// EncodeCursor encodes the key of a page's last record. The cursor is
// opaque to callers: base64url of a format byte, the end time (flag, then
// Unix seconds and nanoseconds as varints), the coupon id, and a CRC-32 of
// all that, so that a truncated or altered cursor is rejected rather than
// read as another position.
func EncodeCursor(k Key) string {
	b := make([]byte, 0, 2+2*binary.MaxVarintLen64+len(k.ID)+4)
	b = append(b, cursorFormat)
	if k.Ended.IsZero() {
		b = append(b, 0)
	} else {
		b = append(b, 1)
		b = binary.AppendVarint(b, k.Ended.Unix())
		b = binary.AppendUvarint(b, uint64(k.Ended.Nanosecond()))
	}
	b = append(b, k.ID...)
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor decodes a cursor; a malformed one is a
// domain.ErrInvalidArgument.
func DecodeCursor(s string) (Key, error) {
	bad := func() (Key, error) { return Key{}, domain.Invalid("cursor", "malformed") }
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil || len(b) < 7 {
		return bad()
	}
	sum := binary.BigEndian.Uint32(b[len(b)-4:])
	if b = b[:len(b)-4]; crc32.ChecksumIEEE(b) != sum || b[0] != cursorFormat {
		return bad()
	}
	var k Key
	rest := b[2:]
	switch b[1] {
	case 0:
	case 1:
		sec, n := binary.Varint(rest)
		if n <= 0 {
			return bad()
		}
		rest = rest[n:]
		nsec, n := binary.Uvarint(rest)
		if n <= 0 || nsec >= 1e9 {
			return bad()
		}
		rest = rest[n:]
		k.Ended = time.Unix(sec, int64(nsec)).UTC()
		if k.Ended.IsZero() {
			return bad() // a set time must not decode as the zero time
		}
	default:
		return bad()
	}
	if CheckID("cursor", string(rest)) != nil {
		return bad()
	}
	k.ID = string(rest)
	return k, nil
}

// Normalize returns r with its times in UTC and without monotonic clock
// readings, as the adapters store them.
func Normalize(r projections.CouponRecord) projections.CouponRecord {
	for _, t := range Times(&r) {
		if !t.IsZero() {
			*t = t.UTC().Round(0)
		} else {
			*t = time.Time{}
		}
	}
	return r
}

// Times points at every time field of r.
func Times(r *projections.CouponRecord) []*time.Time {
	return []*time.Time{&r.ObtainedAt, &r.ValidFrom, &r.ValidUntil, &r.RedeemedAt, &r.ExpiredAt, &r.ReturnedAt, &r.EndedAt, &r.UpdatedAt}
}
