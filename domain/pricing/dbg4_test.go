package pricing

import (
	"fmt"
	"testing"
)

func TestDbg4Tmp(t *testing.T) {
	cart, cs, at := genRealistic(75, 60, 30, 100)
	e := newEngine(cart, cs, at)
	e.tuning = tuning{MaxTieWork, KnapAfter, MaxKnapCells, 100_000_000}
	calls := 0
	e.trace = func(ok bool, w int64) {
		calls++
		if w < 200000 { return }
		s := ""
		for i := range e.con.lo {
			if e.con.lo[i] > 0 || e.con.hi[i] < noLimit {
				s += fmt.Sprintf(" %d:[%d,%d]", i, e.con.lo[i], e.con.hi[i])
			}
		}
		t.Logf("ok=%v work=%d nIn=%d cons=%s", ok, w, e.con.nIn, s)
	}
	e.search()
	t.Logf("calls %d work %d classes %d best %d", calls, e.work, e.nClass, len(e.best))
	for _, b := range e.branches { if b.rootUB >= e.tstar { t.Logf("branch pi=%d rootUB=%d ms=%d knap=%v", b.pi, b.rootUB, len(b.ms), b.knap != nil) } }
}
