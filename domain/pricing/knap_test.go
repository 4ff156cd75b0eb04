package pricing

import (
	"math/rand/v2"
	"testing"
)

// The knapsack tables against enumeration: at(k, c) is never below the best
// Σd of the merchants >= k within capacity c, and equal to it when exact
// (q == 1). Amounts span several bitset words.
func TestKnapTables(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 8))
	for iter := 0; iter < 300; iter++ {
		n := 1 + r.IntN(6)
		pure := iter%2 == 0
		b := &branch{pi: 0, rmax: int64(50 + r.IntN(600))}
		for k := 0; k < n; k++ {
			m := bmer{none: true}
			for j := 0; j <= r.IntN(3); j++ {
				rr := int64(r.IntN(300))
				d := rr
				if !pure {
					d += int64(r.IntN(50))
				}
				if d == 0 {
					d, rr = 1, 1
				}
				m.opts = append(m.opts, bopt{d: d, r: rr})
				m.top = max(m.top, d)
			}
			b.ms = append(b.ms, m)
		}
		cells := []int64{1 << 20, 1 << 20, 64, 300}[iter%4]
		e := &engine{tuning: tuning{knapCells1: cells}}
		kt := e.makeKnap(b, 0, nil)
		if kt == nil {
			continue
		}
		// best[k][c] by enumeration
		for k := 0; k <= n; k++ {
			for c := int64(0); c <= b.rmax; c += 1 + int64(r.IntN(7)) {
				var want int64
				var rec func(j int, cap, d int64)
				rec = func(j int, cap, d int64) {
					if j == n {
						want = max(want, d)
						return
					}
					rec(j+1, cap, d)
					for _, o := range b.ms[j].opts {
						if o.r <= cap {
							rec(j+1, cap-o.r, d+o.d)
						}
					}
				}
				rec(k, c, 0)
				got := kt.at(k, c)
				if got < want || kt.q == 1 && got != want {
					t.Fatalf("iter %d pure=%v bits=%v q=%d: at(%d,%d) = %d, want %d", iter, pure, kt.bits != nil, kt.q, k, c, got, want)
				}
			}
		}
	}
}
