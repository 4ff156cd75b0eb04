package pricing

import (
	"math"
	"slices"
)

// bopt is a merchant option inside a branch: the coupon, its discount d and
// the reduction r of the branch's platform coupon's eligible amount.
type bopt struct {
	ci   int32
	d, r int64
}

type bmer struct {
	opts []bopt // d desc
	none bool   // "no coupon from this merchant" is a choice
	top  int64  // the largest d
	pri  bool   // oracle: searched first
}

// inc is a slope of one merchant's upper hull of (r, d) points.
type inc struct {
	depth  int
	dr, dd int64
}

// branch is the search for one platform choice: the merchants still to
// decide, the fixed part, and the bound tables.
type branch struct {
	pi       int // index into e.plats, -1 for none
	fn       goodsFn
	s0, rmax int64
	d0, r0   int64   // discount and reduction of the fixed part
	fixed    []int32 // its merchant coupons
	ms       []bmer
	incs     []inc   // all hull increments, slope desc
	sincs    [][]inc // sincs[k]: those of the merchants >= k
	sufBase  []int64 // Σ over merchants >= k of the best d with r = 0
	sufMaxD  []int64 // Σ over merchants >= k of the best d
	choice   []int   // option per depth, -1 none
	rootUB   int64   // bound of the whole branch
	sup      [][]int // oracle: per constrained class, merchants >= k offering it
}

const noLimit = math.MaxInt32

// search runs phase 1 (the best total and one combination reaching it) and
// phase 2 (the tie-break among all combinations reaching it).
func (e *engine) search() {
	e.ties = true
	for i, ci := range e.excl {
		e.cand = append(e.cand[:0], ci)
		e.offer(e.exclD[i])
	}
	for pi := range e.plats {
		e.branches = append(e.branches, e.buildBranch(pi))
	}
	e.branches = append(e.branches, e.buildBranch(-1))
	// Most promising branch first: the incumbent then often makes the later
	// branches' root bounds too low to search at all.
	slices.SortStableFunc(e.branches, func(a, b *branch) int { return cmp64(b.rootUB, a.rootUB) })
	for _, b := range e.branches {
		if b.rootUB > e.tstar || b.rootUB == e.tstar && e.ties {
			e.dfsValue(b, 0, b.d0, b.r0)
		}
		if e.aborted {
			return
		}
	}
	if !e.ties && e.tstar > 0 {
		e.tieBreak()
	}
}

// offer considers the combination in e.cand with the given total: a larger
// total wins; while ties are followed, an equal total with a better key too.
func (e *engine) offer(total int64) {
	switch {
	case total > e.tstar:
		e.tstar = total
		e.best = append(e.best[:0], e.cand...)
		e.bestKey = e.keyOf(e.bestKey, e.best)
	case total == e.tstar && e.ties:
		e.candKey = e.keyOf(e.candKey, e.cand)
		if e.candKey.less(&e.bestKey) {
			e.best = append(e.best[:0], e.cand...)
			e.bestKey, e.candKey = e.candKey, e.bestKey
		}
	}
}

// setKey is a combination's tie-break key.
type setKey struct {
	vus []ckey // sorted by valid_until
	ids []string
}

func (e *engine) keyOf(k setKey, set []int32) setKey {
	k.vus, k.ids = k.vus[:0], k.ids[:0]
	for _, ci := range set {
		k.vus = append(k.vus, e.keys[ci])
		k.ids = append(k.ids, e.keys[ci].id)
	}
	slices.SortFunc(k.vus, func(a, b ckey) int { return cmpTime(&a, &b) })
	slices.Sort(k.ids)
	return k
}

// less is the tie-break order at equal totals: the sorted valid_until list,
// earliest first, element by element, a shorter list winning a tie of its
// prefix; then the sorted id list.
func (k *setKey) less(o *setKey) bool {
	for i := 0; i < len(k.vus) && i < len(o.vus); i++ {
		if c := cmpTime(&k.vus[i], &o.vus[i]); c != 0 {
			return c < 0
		}
	}
	if len(k.vus) != len(o.vus) {
		return len(k.vus) < len(o.vus)
	}
	return slices.Compare(k.ids, o.ids) < 0
}

func cmp64(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func (e *engine) buildBranch(pi int) *branch {
	b := &branch{pi: pi}
	var elig []bool
	if pi >= 0 {
		p := &e.plats[pi]
		b.fn, b.s0, b.rmax, elig = p.fn, p.s0, p.s0-p.fn.smin, p.elig
	} else {
		b.rmax = math.MaxInt64
	}
	size := 0
	for _, g := range e.groups {
		size += len(g)
	}
	pool := make([]bopt, 0, size)
	for _, g := range e.groups {
		m := bmer{none: true}
		start := len(pool)
		for _, o := range g {
			var r int64
			if elig != nil {
				for j, l := range o.idx {
					if elig[l] {
						r += o.shares[j]
					}
				}
			}
			if r > b.rmax {
				continue // p would give 0: that combination is met in the none branch
			}
			// Equal (d, r) in this branch: same effect, keep the best key (g
			// is sorted by key).
			if !slices.ContainsFunc(pool[start:], func(k bopt) bool { return k.d == o.d && k.r == r }) {
				pool = append(pool, bopt{ci: o.ci, d: o.d, r: r})
				m.top = max(m.top, o.d)
			}
		}
		if len(pool) > start {
			m.opts = pool[start:len(pool):len(pool)]
			b.ms = append(b.ms, m)
		}
	}
	sortMerchants(b.ms)
	e.prepBranch(b)
	// When no shipping threshold can bind, Φ only matters upward: drop
	// dominated options and fix merchants left with one choice.
	if len(e.ships) == 0 || e.gt-e.ships[0].thr >= b.d0+e.fAt(b, 0)+e.lp(b, 0, b.rmax) {
		e.reduce(b)
		e.prepBranch(b)
	}
	phiLo := b.d0 + e.fAt(b, b.r0)
	b.rootUB = e.shipUB(phiLo, phiLo+e.lp(b, 0, b.rmax-b.r0))
	return b
}

// fAt is the platform coupon's discount after a reduction r (0 for none).
func (e *engine) fAt(b *branch, r int64) int64 {
	if b.pi < 0 {
		return 0
	}
	return b.fn.at(b.s0 - r)
}

// reduce applies dominance when shipping cannot bind (see the package doc).
func (e *engine) reduce(b *branch) {
	kept := b.ms[:0]
	var dom []bool
	for _, m := range b.ms {
		dom = dom[:0]
		for i, o := range m.opts {
			dom = append(dom, slices.ContainsFunc(m.opts, func(p bopt) bool {
				return p != m.opts[i] && p.d >= o.d && p.r <= o.r &&
					(p.d > o.d || cmpKey(&e.keys[p.ci], &e.keys[o.ci]) < 0)
			}))
			if o.r == 0 {
				m.none = false
			}
		}
		out := m.opts[:0]
		for i, o := range m.opts {
			if !dom[i] {
				out = append(out, o)
			}
		}
		m.opts = out
		if !m.none && len(out) == 1 {
			b.d0 += out[0].d
			b.fixed = append(b.fixed, out[0].ci)
			continue
		}
		kept = append(kept, m)
	}
	b.ms = kept
}

// sortMerchants orders the merchants for the search: those marked pri
// first, then by their largest discount.
func sortMerchants(ms []bmer) {
	slices.SortStableFunc(ms, func(x, y bmer) int {
		if x.pri != y.pri {
			if x.pri {
				return -1
			}
			return 1
		}
		return cmp64(y.top, x.top)
	})
}

// prepBranch sorts each merchant's options and precomputes the bound tables.
func (e *engine) prepBranch(b *branch) {
	n := len(b.ms)
	b.sufBase = resize(b.sufBase, n+1)
	b.sufMaxD = resize(b.sufMaxD, n+1)
	b.choice = slices.Grow(b.choice[:0], n)[:n]
	b.sufBase[n], b.sufMaxD[n] = 0, 0
	b.incs = b.incs[:0]
	type pt struct{ r, d int64 }
	var hull, pts []pt
	for k := n - 1; k >= 0; k-- {
		m := &b.ms[k]
		slices.SortFunc(m.opts, func(x, y bopt) int {
			if c := cmp64(y.d, x.d); c != 0 {
				return c
			}
			if c := cmp64(x.r, y.r); c != 0 {
				return c
			}
			return cmpKey(&e.keys[x.ci], &e.keys[y.ci])
		})
		var base, top int64
		for _, o := range m.opts {
			if o.r == 0 {
				base = max(base, o.d)
			}
			top = max(top, o.d)
		}
		b.sufBase[k] = b.sufBase[k+1] + base
		b.sufMaxD[k] = b.sufMaxD[k+1] + top
		if b.pi < 0 {
			continue
		}
		// Upper concave hull from (0, base) over the points with r > 0.
		pts = pts[:0]
		for _, o := range m.opts {
			if o.r > 0 {
				pts = append(pts, pt{o.r, o.d})
			}
		}
		slices.SortFunc(pts, func(x, y pt) int {
			if c := cmp64(x.r, y.r); c != 0 {
				return c
			}
			return cmp64(y.d, x.d)
		})
		hull = append(hull[:0], pt{0, base})
		for _, p := range pts {
			if p.d <= hull[len(hull)-1].d {
				continue
			}
			for len(hull) >= 2 {
				a, c := hull[len(hull)-2], hull[len(hull)-1]
				if cmpRatio(c.d-a.d, c.r-a.r, p.d-a.d, p.r-a.r) > 0 {
					break // slope(a,c) > slope(a,p): c stays
				}
				hull = hull[:len(hull)-1]
			}
			hull = append(hull, p)
		}
		for i := 1; i < len(hull); i++ {
			b.incs = append(b.incs, inc{depth: k, dr: hull[i].r - hull[i-1].r, dd: hull[i].d - hull[i-1].d})
		}
	}
	slices.SortStableFunc(b.incs, func(x, y inc) int {
		if c := cmpRatio(y.dd, y.dr, x.dd, x.dr); c != 0 {
			return c
		}
		return x.depth - y.depth
	})
	// Per-depth copies, so a node's bound reads only its own merchants.
	for len(b.sincs) < n {
		b.sincs = append(b.sincs, nil)
	}
	b.sincs = b.sincs[:n]
	for k := 0; k < n && b.pi >= 0; k++ {
		l := b.sincs[k][:0]
		for _, in := range b.incs {
			if in.depth >= k {
				l = append(l, in)
			}
		}
		b.sincs[k] = l
	}
}

func resize(s []int64, n int) []int64 {
	if cap(s) < n {
		return make([]int64, n)
	}
	return s[:n]
}

// lp bounds Σd over the merchants >= k with Σr <= capacity (linear
// relaxation of the multiple-choice knapsack over the hulls).
func (e *engine) lp(b *branch, k int, capacity int64) int64 {
	if b.pi < 0 {
		return b.sufMaxD[k]
	}
	v, left := b.sufBase[k], capacity
	if k == len(b.ms) {
		return v
	}
	incs := b.sincs[k]
	for i := range incs {
		in := &incs[i]
		e.work++
		if in.dr <= left {
			v += in.dd
			left -= in.dr
			continue
		}
		if left > 0 {
			v += mulDiv(in.dd, left, in.dr)
		}
		break
	}
	return v
}

// shipUB bounds the total of a leaf whose goods discount lies in [lo, hi].
func (e *engine) shipUB(lo, hi int64) int64 {
	ub := hi
	for i := range e.ships {
		s := &e.ships[i]
		if lim := e.gt - s.thr; lim >= lo {
			ub = max(ub, s.v+min(hi, lim))
		}
	}
	return ub
}

// shipFor returns the best shipping coupon for goods discount phi, or -1.
func (e *engine) shipFor(phi int64) int {
	for i := range e.ships {
		if e.gt-e.ships[i].thr >= phi {
			return i
		}
	}
	return -1
}

func (e *engine) tick() bool {
	e.work++
	if e.work > MaxWork {
		e.aborted = true
	}
	return e.aborted
}

// dfsValue is phase 1: it looks for a total above the incumbent's.
func (e *engine) dfsValue(b *branch, k int, d, r int64) {
	if e.tick() {
		return
	}
	phiLo := d + e.fAt(b, r)
	if k == len(b.ms) {
		total := phiLo
		h := e.shipFor(phiLo)
		if h >= 0 {
			total += e.ships[h].v
		}
		if total >= e.tstar {
			e.cand = e.collect(b, e.cand[:0], h)
			e.offer(total)
		}
		return
	}
	capacity := b.rmax - r
	switch ub := e.shipUB(phiLo, phiLo+e.lp(b, k, capacity)); {
	case ub < e.tstar:
		return
	case ub == e.tstar:
		// Only a tie is possible below: follow it while that stays cheap,
		// else leave the ties to phase 2.
		if !e.ties {
			return
		}
		if e.tieWork++; e.tieWork > e.tieLimit {
			e.ties = false
			return
		}
	}
	m := &b.ms[k]
	for j := range m.opts {
		o := &m.opts[j]
		if o.r > capacity {
			continue
		}
		b.choice[k] = j
		e.dfsValue(b, k+1, d+o.d, r+o.r)
		if e.aborted {
			return
		}
	}
	if m.none {
		b.choice[k] = -1
		e.dfsValue(b, k+1, d, r)
	}
}

// collect appends the coupons of the leaf at the end of the current path.
func (e *engine) collect(b *branch, set []int32, h int) []int32 {
	set = append(set, b.fixed...)
	for k, j := range b.choice {
		if j >= 0 {
			set = append(set, b.ms[k].opts[j].ci)
		}
	}
	if b.pi >= 0 {
		set = append(set, e.plats[b.pi].ci)
	}
	if h >= 0 {
		set = append(set, e.ships[h].ci)
	}
	return set
}
