package boltindex

import (
	"encoding/binary"
	"errors"
	"time"

	"github.com/couponsd/couponsd/projections"
)

// Record layout (value of the recs bucket, keyed by coupon id):
//
//	[0]     format (recordFormat)
//	[1:9]   version, big-endian (read without decoding the rest)
//	9 strings, each uvarint length + bytes: coupon, batch, user, status,
//	        source, kind, issuer, order, payment
//	5 varints: threshold, amount off, percent off, max discount, discount
//	8 times, each a byte 0 (zero time) or 1 + varint Unix seconds + uvarint
//	        nanoseconds: obtained, valid from, valid until, redeemed,
//	        expired, returned, ended, updated
const recordFormat = 1

var errCorrupt = errors.New("boltindex: corrupt record")

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendTime(b []byte, t time.Time) []byte {
	if t.IsZero() {
		return append(b, 0)
	}
	b = append(b, 1)
	b = binary.AppendVarint(b, t.Unix())
	return binary.AppendUvarint(b, uint64(t.Nanosecond()))
}

func encodeRecord(r *projections.CouponRecord) []byte {
	n := 1 + 8 + 9*2 + len(r.CouponID) + len(r.BatchID) + len(r.UserID) + len(r.Status) + len(r.Source) +
		len(r.Kind) + len(r.Issuer) + len(r.OrderID) + len(r.PaymentID) + 5*binary.MaxVarintLen64 + 8*16
	b := make([]byte, 0, n)
	b = append(b, recordFormat)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	for _, s := range [...]string{r.CouponID, r.BatchID, r.UserID, r.Status, r.Source, r.Kind, r.Issuer, r.OrderID, r.PaymentID} {
		b = appendString(b, s)
	}
	for _, v := range [...]int64{r.Threshold, r.AmountOff, r.PercentOff, r.MaxDiscount, r.Discount} {
		b = binary.AppendVarint(b, v)
	}
	for _, t := range [...]time.Time{r.ObtainedAt, r.ValidFrom, r.ValidUntil, r.RedeemedAt, r.ExpiredAt, r.ReturnedAt, r.EndedAt, r.UpdatedAt} {
		b = appendTime(b, t)
	}
	return b
}

// storedVersion reads the version of an encoded record.
func storedVersion(v []byte) (uint64, error) {
	if len(v) < 9 || v[0] != recordFormat {
		return 0, errCorrupt
	}
	return binary.BigEndian.Uint64(v[1:9]), nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) uvarint() uint64 {
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) varint() int64 {
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.bad = true
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) string() string {
	n := r.uvarint()
	if r.bad || n > uint64(len(r.b)) {
		r.bad = true
		return ""
	}
	s := string(r.b[:n]) // copies: the result must not share bolt's memory
	r.b = r.b[n:]
	return s
}

func (r *reader) time() time.Time {
	if len(r.b) == 0 {
		r.bad = true
		return time.Time{}
	}
	tag := r.b[0]
	r.b = r.b[1:]
	switch tag {
	case 0:
		return time.Time{}
	case 1:
		sec := r.varint()
		nsec := r.uvarint()
		if nsec >= 1e9 {
			r.bad = true
		}
		return time.Unix(sec, int64(nsec)).UTC()
	}
	r.bad = true
	return time.Time{}
}

// decodeRecord decodes v, which may be memory owned by bolt; the result
// shares nothing with it.
func decodeRecord(v []byte) (projections.CouponRecord, error) {
	ver, err := storedVersion(v)
	if err != nil {
		return projections.CouponRecord{}, err
	}
	rd := reader{b: v[9:]}
	r := projections.CouponRecord{Version: ver}
	for _, p := range [...]*string{&r.CouponID, &r.BatchID, &r.UserID, &r.Status, &r.Source, &r.Kind, &r.Issuer, &r.OrderID, &r.PaymentID} {
		*p = rd.string()
	}
	for _, p := range [...]*int64{&r.Threshold, &r.AmountOff, &r.PercentOff, &r.MaxDiscount, &r.Discount} {
		*p = rd.varint()
	}
	for _, p := range [...]*time.Time{&r.ObtainedAt, &r.ValidFrom, &r.ValidUntil, &r.RedeemedAt, &r.ExpiredAt, &r.ReturnedAt, &r.EndedAt, &r.UpdatedAt} {
		*p = rd.time()
	}
	if rd.bad || len(rd.b) != 0 {
		return projections.CouponRecord{}, errCorrupt
	}
	return r, nil
}

// ---- index keys ----

// timeKeyLen is the size of an order-preserving time key: Unix seconds
// with the sign bit flipped, then nanoseconds, both big-endian. The zero
// time has a key below every real time.
const timeKeyLen = 12

func appendTimeKey(b []byte, t time.Time) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(t.Unix())^(1<<63))
	return binary.BigEndian.AppendUint32(b, uint32(t.Nanosecond()))
}

func timeKey(t time.Time) []byte { return appendTimeKey(make([]byte, 0, timeKeyLen), t) }

var zeroTimeKey = timeKey(time.Time{})

// userPrefix is the byuser key prefix of a user's records of one status:
// length-prefixed user then status, so that no prefix is a prefix of
// another's.
func userPrefix(user, status string) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(user)+len(status))
	return appendString(appendString(b, user), status)
}

// userKey: userPrefix + time key of EndedAt + coupon id. Iterated backwards
// it gives EndedAt desc, then id desc.
func userKey(r *projections.CouponRecord) []byte {
	b := appendTimeKey(userPrefix(r.UserID, r.Status), r.EndedAt)
	return append(b, r.CouponID...)
}

func batchPrefix(batch string) []byte {
	return appendString(make([]byte, 0, binary.MaxVarintLen64+len(batch)), batch)
}

// batchKey: length-prefixed batch + coupon id.
func batchKey(r *projections.CouponRecord) []byte {
	return append(batchPrefix(r.BatchID), r.CouponID...)
}

// Batch summary (value of a bybatch entry): what BatchReport needs, so it
// reads no record.
//
//	[0]      1 if the status is redeemed, 2 if expired, 0 otherwise
//	[1:13]   time key of ObtainedAt
//	[13:25]  time key of RedeemedAt
//	[25:37]  time key of ExpiredAt
//	[37:45]  Discount, big-endian
const summaryLen = 45

const (
	sumOther    = 0
	sumRedeemed = 1
	sumExpired  = 2
)

func batchSummary(r *projections.CouponRecord) []byte {
	b := make([]byte, 1, summaryLen)
	switch r.Status {
	case statusRedeemed:
		b[0] = sumRedeemed
	case statusExpired:
		b[0] = sumExpired
	}
	b = appendTimeKey(b, r.ObtainedAt)
	b = appendTimeKey(b, r.RedeemedAt)
	b = appendTimeKey(b, r.ExpiredAt)
	return binary.BigEndian.AppendUint64(b, uint64(r.Discount))
}

// redeemedKey: time key of RedeemedAt + coupon id, for records whose status
// is redeemed and RedeemedAt is set.
func redeemedKey(r *projections.CouponRecord) []byte {
	return append(timeKey(r.RedeemedAt), r.CouponID...)
}

// redeemedValue: length-prefixed batch, length-prefixed user, discount.
func redeemedValue(r *projections.CouponRecord) []byte {
	b := make([]byte, 0, 2*binary.MaxVarintLen64+len(r.BatchID)+len(r.UserID)+8)
	b = appendString(appendString(b, r.BatchID), r.UserID)
	return binary.BigEndian.AppendUint64(b, uint64(r.Discount))
}

func decodeRedeemedValue(v []byte) (batch, user string, discount int64, err error) {
	rd := reader{b: v}
	batch, user = rd.string(), rd.string()
	if rd.bad || len(rd.b) != 8 {
		return "", "", 0, errCorrupt
	}
	return batch, user, int64(binary.BigEndian.Uint64(rd.b)), nil
}
