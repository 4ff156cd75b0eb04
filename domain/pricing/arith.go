package pricing

import (
	"math/bits"
	"slices"

	"github.com/couponsd/couponsd/domain"
)

// goodsFn is a goods coupon's discount as a function of its eligible amount S.
type goodsFn struct {
	percent bool
	amount  int64 // amount_off (threshold, direct)
	pct     int64 // percent_off (percent)
	cap     int64 // max_discount (percent), 0 = none
	smin    int64 // the least S with a discount > 0: max(threshold, 1, ceil(100/pct))
}

func newGoodsFn(c *Coupon) goodsFn {
	f := goodsFn{smin: max(c.Threshold, 1)}
	if c.Kind == domain.KindPercent {
		f.percent, f.pct, f.cap = true, c.PercentOff, c.MaxDiscount
		f.smin = max(f.smin, (100+c.PercentOff-1)/c.PercentOff)
	} else {
		f.amount = c.AmountOff
	}
	return f
}

// at returns d for eligible amount s: 0 unless s >= smin, and then > 0 and <= s.
// s <= domain.MaxMoney, so s*pct cannot overflow.
func (f *goodsFn) at(s int64) int64 {
	if s < f.smin {
		return 0
	}
	if f.percent {
		d := s * f.pct / 100
		if f.cap > 0 && d > f.cap {
			d = f.cap
		}
		return d
	}
	return min(f.amount, s)
}

// spread distributes d (0 <= d <= s) over the lines idx (ascending cart
// positions) whose current amounts are a[idx[j]] and sum to s > 0, by largest
// remainder: floor(d*a_i/s) each, then one unit each to the largest
// (d*a_i) mod s, ties to the earlier line. out[j] receives line idx[j]'s share.
// d*a_i can reach 10^24, so it is formed in 128 bits; the quotient is <= a_i,
// so bits.Div64 cannot overflow. rem is scratch of len(idx).
func spread(d int64, idx []int32, a []int64, s int64, out []int64, rem []uint64, order []int32) {
	var given int64
	for j, i := range idx {
		hi, lo := bits.Mul64(uint64(d), uint64(a[i]))
		q, r := bits.Div64(hi, lo, uint64(s))
		out[j], rem[j] = int64(q), r
		given += int64(q)
	}
	left := d - given // < len(idx): each remainder is < s
	if left == 0 {
		return
	}
	order = order[:0]
	for j := range idx {
		if rem[j] > 0 {
			order = append(order, int32(j))
		}
	}
	slices.SortFunc(order, func(x, y int32) int {
		if rem[x] != rem[y] {
			if rem[x] > rem[y] {
				return -1
			}
			return 1
		}
		return int(x - y)
	})
	for _, j := range order[:left] {
		out[j]++
	}
}

// mulDiv returns floor(a*b/c) for 0 <= a, b and 0 <= b < c (so the quotient fits).
func mulDiv(a, b, c int64) int64 {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	q, _ := bits.Div64(hi, lo, uint64(c))
	return int64(q)
}

// cmpRatio compares a/b with c/d for a, c >= 0 and b, d > 0, exactly.
func cmpRatio(a, b, c, d int64) int {
	h1, l1 := bits.Mul64(uint64(a), uint64(d))
	h2, l2 := bits.Mul64(uint64(c), uint64(b))
	switch {
	case h1 != h2:
		if h1 < h2 {
			return -1
		}
		return 1
	case l1 != l2:
		if l1 < l2 {
			return -1
		}
		return 1
	}
	return 0
}
