package main

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
)

// Histogram is an HDR-like latency histogram: values in microseconds, 64
// linear sub-buckets per power of two (relative error under 1.6 %), atomic
// counters so every worker records into the same one without a lock.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Uint64
}

const (
	histSub     = 64 // sub-buckets per power of two
	histSubBits = 6
	histBuckets = 40 * histSub // up to 2^39 µs (6 days): plenty
)

func histIndex(v uint64) int {
	if v < histSub {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v>>e is in [64, 128)
	i := (e+1)*histSub + int(v>>uint(e)) - histSub
	if i >= histBuckets {
		return histBuckets - 1
	}
	return i
}

// histValue is the upper bound of bucket i (what a percentile reports).
func histValue(i int) uint64 {
	if i < histSub {
		return uint64(i)
	}
	e := i/histSub - 1
	lo := uint64(i%histSub+histSub) << uint(e)
	return lo + (uint64(1)<<uint(e) - 1)
}

// Record adds one latency.
func (h *Histogram) Record(d time.Duration) {
	us := uint64(max(d.Microseconds(), 0))
	h.counts[histIndex(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			return
		}
	}
}

// Merge adds o's counts into h.
func (h *Histogram) Merge(o *Histogram) {
	if o == nil {
		return
	}
	for i := range o.counts {
		if c := o.counts[i].Load(); c > 0 {
			h.counts[i].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	if m := o.max.Load(); m > h.max.Load() {
		h.max.Store(m)
	}
}

// Count is the number of recorded values.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Quantile returns the q-quantile (0..1) in microseconds; the maximum for q = 1.
func (h *Histogram) Quantile(q float64) uint64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	if q >= 1 {
		return h.max.Load()
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = min(max(rank, 1), n)
	var seen uint64
	for i := range h.counts {
		seen += h.counts[i].Load()
		if seen >= rank {
			return min(histValue(i), h.max.Load())
		}
	}
	return h.max.Load()
}

// Endpoint is one kind of request the generator sends.
type Endpoint int

// The endpoints, in report order.
const (
	EpClaim Endpoint = iota
	EpMe
	EpProduct
	EpQuote
	EpClaimable
	numEndpoints
)

var endpointNames = [numEndpoints]string{"claim", "me", "product", "quote", "claimable"}

var endpointRoutes = [numEndpoints]string{
	"POST /v1/batches/{id}/claim",
	"GET /v1/me/coupons",
	"GET /v1/products/{pid}/coupons",
	"POST /v1/checkout/quote",
	"GET /v1/batches/claimable",
}

func (e Endpoint) String() string { return endpointNames[e] }

// statusErr is the pseudo status code of a transport error or timeout.
const statusErr = 0

const maxStatus = 600

// epStats are the sale-window figures of one endpoint.
type epStats struct {
	hist  Histogram
	codes [maxStatus]atomic.Int64
}

// secStats are the figures of one second of the run (by completion time).
type secStats struct {
	reqs      [numEndpoints]atomic.Int64
	codes     [maxStatus]atomic.Int64
	accepted  atomic.Int64 // new coupons acknowledged (distinct)
	hClaim    Histogram
	hReads    Histogram
	hAll      Histogram
	errs      atomic.Int64
	notFound  atomic.Int64
	preOpenTx atomic.Int64 // requests completed before the open (reads)
}

// sliceStats are the figures of one 100 ms slice (the first seconds of a
// sale are about the burst).
type sliceStats struct {
	reqs     atomic.Int64
	claims   atomic.Int64
	accepted atomic.Int64
}

const sliceDur = 100 * time.Millisecond

// recorder collects everything the workers measure. Seconds are indexed
// from the open of the sale: index = floor((t-open)/1s) + pre, where pre
// covers the browsing before the open.
type recorder struct {
	open time.Time
	pre  int // seconds before the open kept in the series

	ep      [numEndpoints]epStats
	preOpen [numEndpoints]epStats

	secs   []atomic.Pointer[secStats]
	slices []sliceStats // from the open on

	total    atomic.Int64 // sale-window requests
	accepted atomic.Int64 // distinct coupons acknowledged
	claims   atomic.Int64 // claim attempts in the sale window

	mu        sync.Mutex
	lastDone  time.Time
	soldOutAt time.Time // when the accepted count reached the stock
	first410  time.Time
}

func newRecorder(open time.Time, pre, seconds int) *recorder {
	return &recorder{
		open:   open,
		pre:    pre,
		secs:   make([]atomic.Pointer[secStats], pre+seconds+1),
		slices: make([]sliceStats, seconds*int(time.Second/sliceDur)+1),
	}
}

func (r *recorder) sec(t time.Time) *secStats {
	d := t.Sub(r.open)
	i := int(d/time.Second) + r.pre
	if d < 0 && d%time.Second != 0 {
		i-- // floor for negative offsets
	}
	i = min(max(i, 0), len(r.secs)-1)
	p := &r.secs[i]
	if s := p.Load(); s != nil {
		return s
	}
	s := new(secStats)
	if p.CompareAndSwap(nil, s) {
		return s
	}
	return p.Load()
}

func (r *recorder) slice(t time.Time) *sliceStats {
	d := t.Sub(r.open)
	if d < 0 {
		return nil
	}
	i := min(int(d/sliceDur), len(r.slices)-1)
	return &r.slices[i]
}

// record one request that completed at done.
func (r *recorder) record(ep Endpoint, start, done time.Time, status int) {
	lat := done.Sub(start)
	if status < 0 || status >= maxStatus {
		status = statusErr
	}
	s := r.sec(done)
	s.reqs[ep].Add(1)
	s.codes[status].Add(1)
	s.hAll.Record(lat)
	if ep == EpClaim {
		s.hClaim.Record(lat)
	} else {
		s.hReads.Record(lat)
	}
	switch status {
	case statusErr:
		s.errs.Add(1)
	case 404:
		s.notFound.Add(1)
	}
	if done.Before(r.open) {
		s.preOpenTx.Add(1)
		r.preOpen[ep].hist.Record(lat)
		r.preOpen[ep].codes[status].Add(1)
		return
	}
	r.ep[ep].hist.Record(lat)
	r.ep[ep].codes[status].Add(1)
	r.total.Add(1)
	if sl := r.slice(done); sl != nil {
		sl.reqs.Add(1)
		if ep == EpClaim {
			sl.claims.Add(1)
		}
	}
	if ep == EpClaim {
		r.claims.Add(1)
		if status == 410 {
			r.mu.Lock()
			if r.first410.IsZero() || done.Before(r.first410) {
				r.first410 = done
			}
			r.mu.Unlock()
		}
	}
	r.mu.Lock()
	if done.After(r.lastDone) {
		r.lastDone = done
	}
	r.mu.Unlock()
}

// newCoupon counts a newly acknowledged coupon.
func (r *recorder) newCoupon(done time.Time, stock int64) {
	n := r.accepted.Add(1)
	r.sec(done).accepted.Add(1)
	if sl := r.slice(done); sl != nil {
		sl.accepted.Add(1)
	}
	if n >= stock {
		r.mu.Lock()
		if r.soldOutAt.IsZero() {
			r.soldOutAt = done
		}
		r.mu.Unlock()
	}
}

// codeTotals sums the sale-window status codes over every endpoint.
func (r *recorder) codeTotals() map[int]int64 {
	out := map[int]int64{}
	for ep := range r.ep {
		for c := range r.ep[ep].codes {
			if n := r.ep[ep].codes[c].Load(); n > 0 {
				out[c] += n
			}
		}
	}
	return out
}
