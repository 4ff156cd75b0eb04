package pricing

import (
	"math"
	"math/bits"
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
	d0       int64   // discount of the fixed part (its reduction is 0)
	fixed    []int32 // its merchant coupons
	ms       []bmer
	incs     []inc   // all hull increments, slope desc
	sincs    [][]inc // sincs[k]: those of the merchants >= k
	sufBase  []int64 // Σ over merchants >= k of the best d with r = 0
	sufMaxD  []int64 // Σ over merchants >= k of the best d
	choice   []int   // option per depth, -1 none
	rootUB   int64   // bound of the whole branch
	nodes    int64   // nodes phase 1 searched in this branch
	knap     *knap   // exact knapsack bound, built once the branch proves hard
	knapDone bool    // knap built or refused (too large)
	sup      [][]int // oracle: per constrained class, merchants >= k offering it
	kids     [][]int // per depth: the choices being tried
	kidUB    [][]int64
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
			e.dfsValue(b, 0, b.d0, 0)
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

// setKey is a combination's tie-break key, as ranks: the valid_until ranks
// (equal instants share a rank) and the id ranks, each sorted.
type setKey struct {
	vus, ids []int32
}

func (e *engine) keyOf(k setKey, set []int32) setKey {
	k.vus, k.ids = k.vus[:0], k.ids[:0]
	for _, ci := range set {
		k.vus = append(k.vus, e.vuRank[ci])
		k.ids = append(k.ids, e.idRank[ci])
	}
	slices.Sort(k.vus)
	slices.Sort(k.ids)
	e.work += int64(len(set))
	return k
}

// less is the tie-break order at equal totals: the sorted valid_until list,
// earliest first, element by element, a shorter list winning a tie of its
// prefix; then the sorted id list.
func (k *setKey) less(o *setKey) bool {
	if c := slices.Compare(k.vus, o.vus); c != 0 {
		return c < 0 // slices.Compare: a proper prefix is smaller
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
	phiLo := b.d0 + e.fAt(b, 0)
	b.rootUB = e.shipUB(phiLo, phiLo+e.lp(b, 0, b.rmax))
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
	if e.work > e.maxWork {
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
	if b.nodes++; b.nodes > e.knapAfter && !b.knapDone {
		e.buildKnap(b)
	}
	switch ub := e.shipUB(phiLo, phiLo+e.goodsUB(b, k, capacity)); {
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
	for _, j := range e.children(b, k, capacity) {
		b.choice[k] = j
		if j < 0 {
			e.dfsValue(b, k+1, d, r)
		} else {
			o := &b.ms[k].opts[j]
			e.dfsValue(b, k+1, d+o.d, r+o.r)
		}
		if e.aborted {
			return
		}
	}
}

// goodsUB bounds Σd over the merchants >= k of b given capacity: by b's
// knapsack table when it has one, else by the linear relaxation.
func (e *engine) goodsUB(b *branch, k int, capacity int64) int64 {
	if b.knap != nil {
		e.work++
		return b.knap.at(k, capacity)
	}
	return e.lp(b, k, capacity)
}

// children lists the choices at depth k that fit capacity (option indices,
// -1 for none): in option order, or best bound first when the knapsack table
// can rank them (then the first leaf reached is often already the best).
func (e *engine) children(w *branch, k int, capacity int64) []int {
	for len(w.kids) <= k {
		w.kids = append(w.kids, nil)
		w.kidUB = append(w.kidUB, nil)
	}
	m := &w.ms[k]
	kids, ubs := w.kids[k][:0], w.kidUB[k][:0]
	for j := range m.opts {
		if o := &m.opts[j]; o.r <= capacity {
			kids = append(kids, j)
			if w.knap != nil {
				ubs = append(ubs, o.d+w.knap.at(k+1, capacity-o.r))
			}
		}
	}
	if m.none {
		kids = append(kids, -1)
		if w.knap != nil {
			ubs = append(ubs, w.knap.at(k+1, capacity))
		}
	}
	if w.knap != nil {
		e.work += int64(len(kids))       // table reads, often cache misses
		for i := 1; i < len(kids); i++ { // insertion sort, stable, bound desc
			for x := i; x > 0 && ubs[x] > ubs[x-1]; x-- {
				ubs[x], ubs[x-1] = ubs[x-1], ubs[x]
				kids[x], kids[x-1] = kids[x-1], kids[x]
			}
		}
	}
	w.kids[k], w.kidUB[k] = kids, ubs
	return kids
}

// knap is a branch's knapsack table: at(k, c) >= the largest Σd over the
// merchants >= k, each taking one option or none, with Σr <= c; equal to it
// when q == 1. With q > 1 (a table that would be too large otherwise) weights
// and capacities are divided by q, rounding down: every choice that fits c
// still fits c/q, so the value stays an upper bound.
//
// When every option's d equals its r (the platform coupon covers all of the
// merchants' lines, the common case), Σd = Σr and the table is a bitset of
// the reachable sums, 64 to a word: at(k, c) is the largest one <= c.
type knap struct {
	c, q int64 // capacities (divided by q) above c are the same as c
	w    int64 // row width: c+1 cells, or words for bits
	r32  []int32
	r64  []int64
	bits []uint64
}

func (t *knap) at(k int, capacity int64) int64 {
	x := min(capacity/t.q, t.c)
	if t.bits != nil {
		row := t.bits[int64(k)*t.w : int64(k+1)*t.w]
		i := x >> 6
		m := row[i] & (^uint64(0) >> (63 - x&63))
		for m == 0 { // bit 0 (everyone takes none) is always set
			i--
			m = row[i]
		}
		return i<<6 + 63 - int64(bits.LeadingZeros64(m))
	}
	x += int64(k) * t.w
	if t.r32 != nil {
		return int64(t.r32[x])
	}
	return t.r64[x]
}

// buildKnap fills b.knap by dynamic programming over the capacity. It only
// replaces the linear bound (never below a reachable Σd), so it changes no
// answer, only the work. A table has at most MaxKnapCells cells; the tables
// kept for the branches at most 4*MaxKnapCells together.
func (e *engine) buildKnap(b *branch) {
	b.knapDone = true
	if t := e.makeKnap(b, e.knapCells, nil); t != nil {
		e.knapCells += t.w * int64(len(b.ms)+1)
		if t.bits != nil {
			e.knapCells += t.w * int64(len(b.ms)+1) // words count double
		}
		b.knap = t
	}
}

// makeKnap computes a knapsack table for b's merchants and options, or nil
// when b has no capacity or the table would pass the cell budget (used cells
// already spent of 4*MaxKnapCells). reuse, if it fits, lends its storage.
func (e *engine) makeKnap(b *branch, used int64, reuse *knap) *knap {
	if b.pi < 0 {
		return nil // no capacity: the linear bound is already exact
	}
	var c, top int64
	for _, m := range b.ms {
		var rt int64
		for _, o := range m.opts {
			rt = max(rt, o.r)
		}
		c += rt
		top += m.top
	}
	c = min(c, b.rmax)
	n := int64(len(b.ms))
	pure := true
	for _, m := range b.ms {
		for _, o := range m.opts {
			pure = pure && o.r == o.d
		}
	}
	if words := c>>6 + 1; pure && 2*(n+1)*words <= e.knapCells1 && used+2*(n+1)*words <= 4*e.knapCells1 {
		t := &knap{c: c, q: 1, w: words}
		if reuse != nil {
			t.bits = reuse.bits[:0]
		}
		t.bits = slices.Grow(t.bits, int((n+1)*words))[:(n+1)*words]
		fillBits(t.bits, b, t)
		for _, m := range b.ms {
			e.work += words * int64(len(m.opts)+1) / 32
		}
		return t
	}
	q := max(1, ((n+1)*(c+1)+e.knapCells1-1)/e.knapCells1)
	c /= q
	cells := (n + 1) * (c + 1)
	if used+cells > 4*e.knapCells1 {
		return nil
	}
	t := &knap{c: c, q: q, w: c + 1}
	if reuse != nil {
		t.r32, t.r64 = reuse.r32[:0], reuse.r64[:0]
	}
	t.bits = nil
	if top <= math.MaxInt32 {
		t.r32 = slices.Grow(t.r32, int(cells))[:cells]
		t.r64 = nil
		fillKnap(t.r32, b, t)
	} else {
		t.r64 = slices.Grow(t.r64, int(cells))[:cells]
		t.r32 = nil
		fillKnap(t.r64, b, t)
	}
	for _, m := range b.ms {
		e.work += (c + 1) * int64(len(m.opts)+1) / 8
	}
	return t
}

// fillBits: row k has bit x set when the merchants >= k can reach Σr = x
// (each taking one option or none).
func fillBits(rows []uint64, b *branch, t *knap) {
	w := t.w
	n := int64(len(b.ms))
	last := rows[n*w : (n+1)*w]
	clear(last)
	last[0] = 1
	for k := n - 1; k >= 0; k-- {
		cur, nxt := rows[k*w:(k+1)*w], rows[(k+1)*w:(k+2)*w]
		copy(cur, nxt)
		for _, o := range b.ms[k].opts {
			ws, bs := o.r>>6, uint(o.r&63)
			for i := w - 1; i >= ws; i-- {
				v := nxt[i-ws] << bs
				if bs > 0 && i-ws > 0 {
					v |= nxt[i-ws-1] >> (64 - bs)
				}
				cur[i] |= v
			}
		}
	}
}

func fillKnap[T int32 | int64](rows []T, b *branch, t *knap) {
	w := t.w
	n := int64(len(b.ms))
	clear(rows[n*w:])
	for k := n - 1; k >= 0; k-- {
		cur, nxt := rows[k*w:(k+1)*w], rows[(k+1)*w:(k+2)*w]
		copy(cur, nxt)
		for _, o := range b.ms[k].opts {
			r, d := o.r/t.q, T(o.d)
			for x := r; x <= t.c; x++ {
				cur[x] = max(cur[x], nxt[x-r]+d)
			}
		}
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
