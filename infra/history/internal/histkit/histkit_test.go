package histkit

import (
	"errors"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

func TestCursorRoundTrip(t *testing.T) {
	for _, k := range []Key{
		{ID: "c-1"},
		{Ended: time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC), ID: "c-ü/+=?"},
		{Ended: time.Unix(-1, 1).UTC(), ID: "x"},
	} {
		got, err := DecodeCursor(EncodeCursor(k))
		if err != nil || !got.Ended.Equal(k.Ended) || got.ID != k.ID || got.Ended.IsZero() != k.Ended.IsZero() {
			t.Fatalf("round trip of %+v = %+v, %v", k, got, err)
		}
	}
	c := EncodeCursor(Key{Ended: time.Unix(100, 5), ID: "c-1"})
	for i := range len(c) {
		for _, b := range []byte{'A', 'z', '_'} {
			bad := []byte(c)
			if bad[i] == b {
				continue
			}
			bad[i] = b
			if _, err := DecodeCursor(string(bad)); !errors.Is(err, domain.ErrInvalidArgument) {
				t.Fatalf("altered cursor %q accepted (err %v)", bad, err)
			}
		}
		if _, err := DecodeCursor(c[:i]); !errors.Is(err, domain.ErrInvalidArgument) {
			t.Fatalf("truncated cursor %q accepted", c[:i])
		}
	}
}

func TestCompareAndRange(t *testing.T) {
	t1 := time.Unix(10, 0)
	keys := []Key{{Ended: t1.Add(1), ID: "a"}, {Ended: t1, ID: "b"}, {Ended: t1, ID: "a"}, {ID: "z"}, {ID: "y"}}
	for i := 1; i < len(keys); i++ {
		if Compare(keys[i-1], keys[i]) >= 0 || Compare(keys[i], keys[i-1]) <= 0 {
			t.Fatalf("order of %+v and %+v", keys[i-1], keys[i])
		}
	}
	r := projections.TimeRange{From: t1, To: t1.Add(time.Second)}
	for _, c := range []struct {
		t    time.Time
		want bool
	}{{time.Time{}, false}, {t1.Add(-1), false}, {t1, true}, {t1.Add(time.Second - 1), true}, {t1.Add(time.Second), false}} {
		if got := InRange(c.t, r); got != c.want {
			t.Errorf("InRange(%v) = %v", c.t, got)
		}
	}
	if InRange(time.Time{}, projections.TimeRange{}) || !InRange(t1, projections.TimeRange{}) {
		t.Error("open range")
	}
	if err := CheckRange(projections.TimeRange{From: t1.Add(1), To: t1}); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Errorf("CheckRange(from > to) = %v", err)
	}
}
