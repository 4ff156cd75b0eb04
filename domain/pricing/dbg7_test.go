package pricing

import (
	"strconv"
	"testing"
)

func TestDbg7Tmp(t *testing.T) {
	for _, cfg := range [][3]int{{60, 30, 100}, {60, 30, 200}} {
	for seed := uint64(1); seed <= 100; seed++ {
		cart, cs, at := genRealistic(seed, cfg[0], cfg[1], cfg[2])
		e := newEngine(cart, cs, at)
		e.tuning = tuning{MaxTieWork, KnapAfter, MaxKnapCells, MaxWork}
		e.search()
		if !e.aborted { continue }
		e2 := newEngine(cart, cs, at)
		e2.tuning = tuning{MaxTieWork, KnapAfter, MaxKnapCells, 1 << 40}
		e2.ties = true
		for i, ci := range e2.excl { e2.cand = append(e2.cand[:0], ci); e2.offer(e2.exclD[i]) }
		for pi := range e2.plats { e2.branches = append(e2.branches, e2.buildBranch(pi)) }
		e2.branches = append(e2.branches, e2.buildBranch(-1))
		sortB(e2)
		info := ""
		for _, b := range e2.branches {
			w0 := e2.work
			if b.rootUB > e2.tstar || b.rootUB == e2.tstar && e2.ties { e2.dfsValue(b, 0, b.d0, b.r0) }
			if e2.work-w0 > 300000 {
				kind := "none"
				if b.knap != nil { if b.knap.bits != nil { kind = "bits" } else { kind = "int" }; kind += " q=" + itoa(b.knap.q) }
				info += " [pi=" + itoa(int64(b.pi)) + " ms=" + itoa(int64(len(b.ms))) + " work=" + itoa(e2.work-w0) + " knap=" + kind + " rmax=" + itoa(b.rmax) + "]"
			}
		}
		p1 := e2.work
		e2.tieBreak()
		t.Logf("%v seed %d: phase1 %d ties=%v phase2 %d %s", cfg, seed, p1, e2.ties, e2.work-p1, info)
	}
	}
}

func itoa(v int64) string { return fmtInt(v) }

func sortB(e *engine) {
	for i := range e.branches { for j := i+1; j < len(e.branches); j++ { if e.branches[j].rootUB > e.branches[i].rootUB { e.branches[i], e.branches[j] = e.branches[j], e.branches[i] } } }
}

func fmtInt(v int64) string { return strconv.FormatInt(v, 10) }
