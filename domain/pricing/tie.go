package pricing

import (
	"math"
	"slices"
	"strings"

	"github.com/couponsd/couponsd/domain"
)

// Phase 2: among the combinations reaching the best total T*, find the one
// the tie-break prefers, by building its key greedily and asking an oracle
// whether some combination reaching T* still fits.
//
// The key is first the sorted valid_until list, a list that is a prefix of
// another winning. Group the candidate coupons into classes of equal
// valid_until, in ascending order; a combination's list is then given by how
// many coupons it takes from each class. Lexicographic minimisation of such
// strings, where "end of list" is the smallest symbol: with the counts of the
// classes before t fixed, ending now is best if possible; otherwise one more
// coupon of class t is better than any later class. So per class, while
// ending is impossible, raise the count of t as long as the oracle finds a
// combination with that many; then fix it. Then, with every class count fixed
// (all lists now equal), the sorted id list is minimised the usual way: for
// each candidate in id order, keep it if a combination containing it and the
// kept ones (and none of the refused) still reaches T*.
//
// The oracle searches the same families as phase 1 (the per-branch reduced
// options; the best combination is in them, see the package doc) for any
// combination with total exactly T* (nothing exceeds T*) that meets the
// constraints: per-class count bounds, coupons forced in and out. It filters
// the options that can no longer be taken, puts first the merchants that are
// forced or can fill a class short of its lower bound, cuts on the phase-1
// bounds (below T*) and on lower bounds that the remaining merchants can no
// longer meet, and checks every constraint at the leaf. A question that turns
// out long starts again with a knapsack table of its own options. A witness
// found on the way answers later questions it already satisfies.

type cons struct {
	lo, hi  []int32 // per class count bounds
	loList  []int32 // classes with lo > 0
	shipHas []bool  // per loList entry: some shipping coupon of that class is usable
	in, out []bool  // per coupon
	nIn     int
	inPlat  int32 // forced-in platform goods coupon, or -1
	inShip  int32
	inExcl  int32
	cnt     []int32 // per class, along the current path
}

func (e *engine) tieBreak() {
	// Candidates: every coupon some branch can use, and the exclusive ones.
	e.classOf = make([]int32, len(e.cs))
	for i := range e.classOf {
		e.classOf[i] = -1
	}
	var cands []int32
	mark := func(ci int32) {
		if e.classOf[ci] < 0 {
			e.classOf[ci] = 0
			cands = append(cands, ci)
		}
	}
	for _, b := range e.branches {
		for _, ci := range b.fixed {
			mark(ci)
		}
		for _, m := range b.ms {
			for _, o := range m.opts {
				mark(o.ci)
			}
		}
		if b.pi >= 0 {
			mark(e.plats[b.pi].ci)
		}
	}
	for _, s := range e.ships {
		mark(s.ci)
	}
	for _, ci := range e.excl {
		mark(ci)
	}
	slices.SortFunc(cands, func(a, b int32) int { return cmpKey(&e.keys[a], &e.keys[b]) })
	nc := int32(-1)
	for i, ci := range cands {
		if i == 0 || cmpTime(&e.keys[cands[i-1]], &e.keys[ci]) != 0 {
			nc++
		}
		e.classOf[ci] = nc
	}
	e.nClass = int(nc + 1)
	c := &e.con
	c.lo, c.hi, c.cnt = make([]int32, e.nClass), make([]int32, e.nClass), make([]int32, e.nClass)
	for s := range c.hi {
		c.hi[s] = noLimit
	}
	c.in, c.out = make([]bool, len(e.cs)), make([]bool, len(e.cs))
	c.inPlat, c.inShip, c.inExcl = -1, -1, -1

	w := slices.Clone(e.best) // a combination reaching T* that meets every fixed constraint
	count := func(set []int32, t int) (n int32, beyond bool) {
		for _, ci := range set {
			switch s := int(e.classOf[ci]); {
			case s == t:
				n++
			case s > t:
				beyond = true
			}
		}
		return
	}
	// oracleWith runs the oracle with class t bounded to [lo, hi] and, when
	// endHere, every later class empty; bounds are restored afterwards.
	oracleWith := func(t int, lo, hi int32, endHere bool) bool {
		olo, ohi := c.lo[t], c.hi[t]
		c.lo[t], c.hi[t] = lo, hi
		if endHere {
			for s := t + 1; s < e.nClass; s++ {
				c.hi[s] = 0
			}
		}
		ok := e.oracle()
		c.lo[t], c.hi[t] = olo, ohi
		if endHere {
			for s := t + 1; s < e.nClass; s++ {
				c.hi[s] = noLimit
			}
		}
		return ok
	}
	fixClass := func(t int, n int32) { c.lo[t], c.hi[t] = n, n }

classes:
	for t := 0; t < e.nClass; t++ {
		var j int32 // the count of class t so far; ending with j is impossible
		for {
			wp := w
			if n, _ := count(w, t); n <= j {
				if !oracleWith(t, j+1, noLimit, false) {
					if e.aborted {
						return
					}
					fixClass(t, j)
					break
				}
				wp = slices.Clone(e.wit)
			}
			n, beyond := count(wp, t)
			// Is ending possible with a count in [j+1, n]? Take the least.
			var end []int32
			top := n
			if !beyond {
				end, top = wp, n-1
			}
			for top >= j+1 && oracleWith(t, j+1, top, true) {
				end = slices.Clone(e.wit)
				m, _ := count(end, t)
				top = m - 1
			}
			if e.aborted {
				return
			}
			if end != nil {
				w = end
				m, _ := count(end, t)
				fixClass(t, m)
				for s := t + 1; s < e.nClass; s++ {
					fixClass(s, 0)
				}
				break classes
			}
			w, j = wp, n
		}
	}
	// Every class count is fixed: minimise the sorted id list.
	slices.SortFunc(cands, func(a, b int32) int { return strings.Compare(e.keys[a].id, e.keys[b].id) })
	size := len(w)
	for _, ci := range cands {
		if c.nIn == size {
			break
		}
		if c.hi[e.classOf[ci]] == 0 || e.groupTaken(ci) {
			continue
		}
		e.force(ci, true)
		if slices.Contains(w, ci) {
			continue
		}
		if e.oracle() {
			w = slices.Clone(e.wit)
			continue
		}
		if e.aborted {
			return
		}
		e.force(ci, false)
		c.out[ci] = true
	}
	e.best = w
}

// groupTaken reports whether a coupon already forced in excludes ci: the
// same group (merchant, platform, shipping), or an exclusive one on either side.
func (e *engine) groupTaken(ci int32) bool {
	c := &e.con
	if c.nIn == 0 {
		return false
	}
	if c.inExcl >= 0 || slices.Contains(e.excl, ci) {
		return true
	}
	x := &e.cs[ci]
	switch {
	case x.Kind == domain.KindShipping:
		return c.inShip >= 0
	case x.Issuer == domain.IssuerPlatform:
		return c.inPlat >= 0
	}
	for j, in := range c.in {
		if y := &e.cs[j]; in && y.Issuer == x.Issuer && y.Kind != domain.KindShipping {
			return true
		}
	}
	return false
}

// force puts coupon ci in the forced-in set (on) or takes it out.
func (e *engine) force(ci int32, on bool) {
	c := &e.con
	c.in[ci] = on
	v := int32(-1)
	if on {
		v = ci
		c.nIn++
	} else {
		c.nIn--
	}
	switch {
	case slices.Contains(e.excl, ci):
		c.inExcl = v
	case e.cs[ci].Kind == domain.KindShipping:
		c.inShip = v
	case e.cs[ci].Issuer == domain.IssuerPlatform:
		c.inPlat = v
	}
}

// oracle reports whether a combination of the families reaches T* under the
// constraints; the combination is left in e.wit.
func (e *engine) oracle() bool {
	c := &e.con
	c.loList = c.loList[:0]
	for s, v := range c.lo {
		if v > 0 {
			c.loList = append(c.loList, int32(s))
		}
	}
	c.shipHas = c.shipHas[:0]
	for _, s := range c.loList {
		has := false
		for _, h := range e.ships {
			if e.classOf[h.ci] == s && !c.out[h.ci] {
				has = true
			}
		}
		c.shipHas = append(c.shipHas, has)
	}
	for i, ci := range e.excl {
		if e.exclD[i] != e.tstar || c.out[ci] || c.nIn > 1 || c.nIn == 1 && !c.in[ci] {
			continue
		}
		s := e.classOf[ci]
		ok := c.hi[s] >= 1
		for _, l := range c.loList {
			if l != s && c.lo[l] > 0 || l == s && c.lo[l] > 1 {
				ok = false
			}
		}
		if ok {
			e.wit = append(e.wit[:0], ci)
			return true
		}
	}
	if c.inExcl >= 0 {
		return false
	}
	for _, b := range e.branches {
		if e.oracleBranch(b) {
			return true
		}
		if e.aborted {
			return false
		}
	}
	return false
}

func (e *engine) oracleBranch(b *branch) bool {
	c := &e.con
	if b.rootUB < e.tstar {
		return false
	}
	var pci int32 = -1
	if b.pi >= 0 {
		pci = e.plats[b.pi].ci
		if c.out[pci] || c.inPlat >= 0 && c.inPlat != pci {
			return false
		}
	} else if c.inPlat >= 0 {
		return false
	}
	w := &e.wb
	w.pi, w.fn, w.s0, w.rmax = b.pi, b.fn, b.s0, b.rmax
	w.d0 = b.d0
	w.fixed = append(w.fixed[:0], b.fixed...)
	w.ms = w.ms[:0]
	matched := 0
	if pci >= 0 && c.in[pci] {
		matched++
	}
	for _, ci := range b.fixed {
		if c.out[ci] {
			return false
		}
		if c.in[ci] {
			matched++
		}
	}
	pool := e.pool[:0]
	defer func() { e.pool = pool[:0] }()
	for _, m := range b.ms {
		start := len(pool)
		if j := slices.IndexFunc(m.opts, func(o bopt) bool { return c.in[o.ci] }); j >= 0 {
			pool = append(pool, m.opts[j])
			w.ms = append(w.ms, bmer{opts: pool[start:len(pool):len(pool)], top: m.top, pri: true})
			matched++
			continue
		}
		for _, o := range m.opts {
			if !c.out[o.ci] && c.hi[e.classOf[o.ci]] > 0 {
				pool = append(pool, o)
			}
		}
		if len(pool) == start {
			if !m.none {
				return false
			}
			continue
		}
		w.ms = append(w.ms, bmer{opts: pool[start:len(pool):len(pool)], none: m.none, top: m.top})
	}
	wantIn := c.nIn
	if c.inShip >= 0 {
		wantIn--
	}
	if matched != wantIn {
		return false
	}
	// Count the fixed part into the classes.
	fixedCls := w.fixed
	if pci >= 0 {
		fixedCls = append(fixedCls, pci)
	}
	ok := true
	for _, ci := range fixedCls {
		s := e.classOf[ci]
		c.cnt[s]++
		if c.cnt[s] > c.hi[s] {
			ok = false
		}
	}
	if ok {
		// The merchants that are forced or can fill a class short of its
		// lower bound go first.
		for i := range w.ms {
			m := &w.ms[i]
			m.pri = m.pri || slices.ContainsFunc(m.opts, func(o bopt) bool { s := e.classOf[o.ci]; return c.lo[s] > c.cnt[s] })
		}
		sortMerchants(w.ms)
		e.prepBranch(w)
		n := len(w.ms)
		for len(w.sup) < len(c.loList) {
			w.sup = append(w.sup, nil)
		}
		for i, s := range c.loList {
			sup := slices.Grow(w.sup[i][:0], n+1)[:n+1]
			sup[n] = 0
			for k := n - 1; k >= 0; k-- {
				sup[k] = sup[k+1]
				if slices.ContainsFunc(w.ms[k].opts, func(o bopt) bool { return e.classOf[o.ci] == s }) {
					sup[k]++
				}
			}
			w.sup[i] = sup
		}
		// A search that turns out long gets a knapsack table over this
		// question's options and merchant order, and starts again with it.
		e.oracleNodes, e.oracleLimit = 0, e.knapAfter
		if b.knap != nil {
			e.oracleLimit = 0 // the branch is known to be hard: table first
		}
		ok = e.dfsOracle(w, 0, w.d0, 0)
		if e.restart {
			e.restart, e.oracleLimit = false, math.MaxInt64
			if t := e.makeKnap(w, 0, &e.wknap); t != nil {
				e.wknap = *t
				w.knap = &e.wknap
			}
			ok = e.dfsOracle(w, 0, w.d0, 0)
			w.knap = nil
		}
	}
	for _, ci := range fixedCls {
		c.cnt[e.classOf[ci]]--
	}
	return ok
}

// dfsOracle looks for a leaf reaching T* under the constraints.
func (e *engine) dfsOracle(w *branch, k int, d, r int64) bool {
	if e.tick() {
		return false
	}
	c := &e.con
	phiLo := d + e.fAt(w, r)
	if k == len(w.ms) {
		return e.leafOracle(w, phiLo)
	}
	capacity := w.rmax - r
	if e.oracleNodes++; e.oracleNodes > e.oracleLimit {
		e.restart = true
	}
	if e.restart {
		return false
	}
	if e.shipUB(phiLo, phiLo+e.goodsUB(w, k, capacity)) < e.tstar {
		return false
	}
	short := 0
	for i, s := range c.loList {
		if def := int(c.lo[s] - c.cnt[s]); def > 0 {
			avail := w.sup[i][k]
			if c.shipHas[i] {
				avail++
			}
			if def > avail {
				return false
			}
			short += def
		}
	}
	if short > len(w.ms)-k+1 {
		return false
	}
	for _, j := range e.children(w, k, capacity) {
		w.choice[k] = j
		var found bool
		if j < 0 {
			found = e.dfsOracle(w, k+1, d, r)
		} else {
			o := &w.ms[k].opts[j]
			s := e.classOf[o.ci]
			if c.cnt[s] >= c.hi[s] {
				continue
			}
			c.cnt[s]++
			found = e.dfsOracle(w, k+1, d+o.d, r+o.r)
			c.cnt[s]--
		}
		if found || e.aborted || e.restart {
			return found
		}
	}
	return false
}

func (e *engine) leafOracle(w *branch, phi int64) bool {
	c := &e.con
	need := e.tstar - phi
	loOK := func(extra int32) bool {
		for _, s := range c.loList {
			n := c.cnt[s]
			if s == extra {
				n++
			}
			if n < c.lo[s] {
				return false
			}
		}
		return true
	}
	if need == 0 {
		if c.inShip >= 0 || !loOK(-1) {
			return false
		}
		e.wit = e.collect(w, e.wit[:0], -1)
		return true
	}
	for h := range e.ships {
		sh := &e.ships[h]
		s := e.classOf[sh.ci]
		if sh.v != need || e.gt-sh.thr < phi || c.out[sh.ci] || c.inShip >= 0 && c.inShip != sh.ci ||
			c.cnt[s] >= c.hi[s] || !loOK(s) {
			continue
		}
		e.wit = e.collect(w, e.wit[:0], h)
		return true
	}
	return false
}
