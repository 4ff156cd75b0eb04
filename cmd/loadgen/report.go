package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Result is the JSON written by --out.
type Result struct {
	RunID      string    `json:"run_id,omitempty"`
	URL        string    `json:"url"`
	BatchID    string    `json:"batch_id"`
	UserPrefix string    `json:"user_prefix"`
	Users      int       `json:"users"`
	Stock      int64     `json:"stock"`
	Limit      int       `json:"per_user_limit"`
	Conns      int       `json:"conns,omitempty"`
	Mix        string    `json:"mix,omitempty"`
	ReplayPct  float64   `json:"replay_pct,omitempty"`
	OpenAt     time.Time `json:"open_at,omitzero"`
	// WindowS is the measured sale window: from the open to the last answer.
	WindowS float64 `json:"window_s,omitempty"`
	// DurationS is the --duration asked for (the plot stops there).
	DurationS float64 `json:"duration_s,omitempty"`
	// CPU is the CPU used during the sale window by the generator and the
	// service (with --server-pid).
	CPU *CPUResult `json:"cpu,omitempty"`

	Claims         ClaimSummary     `json:"claims"`
	RequestsPerSec float64          `json:"requests_per_s"`
	ReadsPerSec    float64          `json:"reads_per_s"`
	Endpoints      []EndpointResult `json:"endpoints,omitempty"`
	PreOpen        *PreOpenResult   `json:"pre_open,omitempty"`
	// Series is one entry per second, t = seconds since the open (negative
	// before it), by completion time.
	Series []SecondResult `json:"series,omitempty"`
	// FirstSeconds are the first two seconds of the sale in 100 ms slices.
	FirstSeconds []SliceResult `json:"first_seconds,omitempty"`
	PlotLegend   []string      `json:"plot_legend,omitempty"`

	Invariants []CheckResult `json:"invariants"`
	OK         bool          `json:"ok"`
	Violations []string      `json:"client_violations,omitempty"`
	Unresolved int           `json:"unresolved_claims"`
	Notes      []string      `json:"notes,omitempty"`
	// Acknowledged are the coupons the shoppers were given (one per 201 that
	// was not a replay of a known one); --check-only reads them back.
	Acknowledged []Ack `json:"acknowledged"`
}

// ClaimSummary are the claim figures of the sale window.
type ClaimSummary struct {
	Attempted         int64    `json:"attempted"`
	Accepted          int64    `json:"accepted"`
	Replayed201       int64    `json:"replayed_201"`
	AttemptedPerSec   float64  `json:"attempted_per_s"`
	AcceptedPerSec    float64  `json:"accepted_per_s"`
	AcceptedFirstSec  int64    `json:"accepted_first_second"`
	AttemptedFirstSec int64    `json:"attempted_first_second"`
	AcceptedPerSecTSO float64  `json:"accepted_per_s_until_sold_out,omitempty"`
	SoldOutAfterS     *float64 `json:"sold_out_after_s"`
	First410AfterS    *float64 `json:"first_410_after_s"`
}

// EndpointResult is one endpoint over the sale window.
type EndpointResult struct {
	Name     string           `json:"name"`
	Route    string           `json:"route"`
	Requests int64            `json:"requests"`
	PerSec   float64          `json:"per_s"`
	P50Ms    float64          `json:"p50_ms"`
	P99Ms    float64          `json:"p99_ms"`
	P999Ms   float64          `json:"p999_ms"`
	MaxMs    float64          `json:"max_ms"`
	Codes    map[string]int64 `json:"codes"`
	// Missing: every answer was a 404 (the server lacks the route).
	Missing bool `json:"missing,omitempty"`
}

// PreOpenResult is the browsing before the open.
type PreOpenResult struct {
	Requests int64            `json:"requests"`
	Codes    map[string]int64 `json:"codes"`
}

// SecondResult is one second of the run.
type SecondResult struct {
	T          int              `json:"t"`
	Requests   int64            `json:"requests"`
	Claims     int64            `json:"claims"`
	Accepted   int64            `json:"accepted"`
	Codes      map[string]int64 `json:"codes"`
	P50Ms      float64          `json:"p50_ms"`
	P99Ms      float64          `json:"p99_ms"`
	P99ClaimMs float64          `json:"p99_claim_ms"`
	P99ReadMs  float64          `json:"p99_read_ms"`
}

// SliceResult is 100 ms of the start of the sale.
type SliceResult struct {
	FromMs   int   `json:"from_ms"`
	Requests int64 `json:"requests"`
	Claims   int64 `json:"claims"`
	Accepted int64 `json:"accepted"`
}

// CheckResult is one invariant.
type CheckResult struct {
	Name   string `json:"name"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func ms(us uint64) float64 { return float64(us) / 1000 }

func codeMap(codes func(int) int64) map[string]int64 {
	out := map[string]int64{}
	for c := range maxStatus {
		if n := codes(c); n > 0 {
			k := strconv.Itoa(c)
			if c == statusErr {
				k = "err"
			}
			out[k] = n
		}
	}
	return out
}

// codesLine renders status counts as "201:10 409:3 err:1".
func codesLine(codes map[int]int64) string {
	keys := make([]int, 0, len(codes))
	for c := range codes {
		keys = append(keys, c)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, c := range keys {
		if c == statusErr {
			continue
		}
		fmt.Fprintf(&b, "%d:%d ", c, codes[c])
	}
	if n := codes[statusErr]; n > 0 {
		fmt.Fprintf(&b, "err:%d", n)
	}
	return strings.TrimSpace(b.String())
}

func codesOf(m map[string]int64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
	}
	return strings.Join(parts, " ")
}

func (g *gen) result(runID, prefix string, loadEnd time.Time) *Result {
	r, cfg := g.rec, g.cfg
	res := &Result{
		RunID: runID, URL: g.base, BatchID: g.batchID, UserPrefix: prefix, Users: cfg.Users, Stock: cfg.Stock,
		Limit: cfg.Limit, Conns: cfg.Conns, Mix: cfg.Mix.String(), ReplayPct: cfg.ReplayPct, OpenAt: g.open.UTC(),
		DurationS: g.end.Sub(g.open).Seconds(),
	}
	r.mu.Lock()
	last, soldOut, first410 := r.lastDone, r.soldOutAt, r.first410
	r.mu.Unlock()
	if last.IsZero() {
		last = loadEnd
	}
	window := last.Sub(g.open).Seconds()
	if window <= 0 {
		window = 1e-9
	}
	res.WindowS = window

	var total, reads int64
	for ep := range numEndpoints {
		s := &r.ep[ep]
		n := int64(s.hist.Count())
		if n == 0 && cfg.Mix[ep] == 0 {
			continue
		}
		e := EndpointResult{
			Name: endpointNames[ep], Route: endpointRoutes[ep], Requests: n, PerSec: float64(n) / window,
			P50Ms: ms(s.hist.Quantile(0.5)), P99Ms: ms(s.hist.Quantile(0.99)), P999Ms: ms(s.hist.Quantile(0.999)),
			MaxMs: ms(s.hist.Quantile(1)), Codes: codeMap(func(c int) int64 { return s.codes[c].Load() }),
		}
		e.Missing = n > 0 && e.Codes["404"] == n
		res.Endpoints = append(res.Endpoints, e)
		total += n
		if ep != EpClaim {
			reads += n
		}
	}
	res.RequestsPerSec = float64(total) / window
	res.ReadsPerSec = float64(reads) / window

	var pre PreOpenResult
	preCodes := map[string]int64{}
	for ep := range numEndpoints {
		s := &r.preOpen[ep]
		pre.Requests += int64(s.hist.Count())
		for k, v := range codeMap(func(c int) int64 { return s.codes[c].Load() }) {
			preCodes[k] += v
		}
	}
	if pre.Requests > 0 {
		pre.Codes = preCodes
		res.PreOpen = &pre
	}

	g.led.mu.Lock()
	res.Acknowledged = slices.Clone(g.led.acks)
	res.Violations = slices.Clone(g.led.violations)
	res.Unresolved = len(g.led.unresolved)
	replays := g.led.replays
	g.led.mu.Unlock()
	slices.SortFunc(res.Acknowledged, func(a, b Ack) int {
		if a.AtS < b.AtS {
			return -1
		}
		if a.AtS > b.AtS {
			return 1
		}
		return 0
	})

	c := &res.Claims
	c.Attempted = r.claims.Load()
	c.Accepted = int64(len(res.Acknowledged))
	c.Replayed201 = replays
	c.AttemptedPerSec = float64(c.Attempted) / window
	c.AcceptedPerSec = float64(c.Accepted) / window
	if !soldOut.IsZero() {
		s := soldOut.Sub(g.open).Seconds()
		c.SoldOutAfterS = &s
		if s > 0 {
			c.AcceptedPerSecTSO = float64(cfg.Stock) / s
		}
	}
	if !first410.IsZero() {
		s := first410.Sub(g.open).Seconds()
		c.First410AfterS = &s
	}
	for _, a := range res.Acknowledged {
		if a.AtS >= 0 && a.AtS < 1 {
			c.AcceptedFirstSec++
		}
	}

	// The series, from the first second that saw traffic to the last.
	first, lastSec := -1, -1
	for i := range r.secs {
		if r.secs[i].Load() != nil {
			if first < 0 {
				first = i
			}
			lastSec = i
		}
	}
	for i := first; i >= 0 && i <= lastSec; i++ {
		s := r.secs[i].Load()
		sr := SecondResult{T: i - r.pre, Codes: map[string]int64{}}
		if s != nil {
			for ep := range numEndpoints {
				sr.Requests += s.reqs[ep].Load()
			}
			sr.Claims = s.reqs[EpClaim].Load()
			sr.Accepted = s.accepted.Load()
			sr.Codes = codeMap(func(c int) int64 { return s.codes[c].Load() })
			sr.P50Ms = ms(s.hAll.Quantile(0.5))
			sr.P99Ms = ms(s.hAll.Quantile(0.99))
			sr.P99ClaimMs = ms(s.hClaim.Quantile(0.99))
			sr.P99ReadMs = ms(s.hReads.Quantile(0.99))
		}
		if sr.T == 0 {
			c.AttemptedFirstSec = sr.Claims
		}
		res.Series = append(res.Series, sr)
	}
	for i := 0; i < 20 && i < len(r.slices); i++ {
		s := &r.slices[i]
		res.FirstSeconds = append(res.FirstSeconds, SliceResult{
			FromMs: i * int(sliceDur/time.Millisecond), Requests: s.reqs.Load(), Claims: s.claims.Load(), Accepted: s.accepted.Load(),
		})
	}
	res.PlotLegend = plotLegend
	if res.Unresolved > 0 {
		res.Notes = append(res.Notes, fmt.Sprintf("%d claims kept an unknown outcome after retries with their Idempotency-Key", res.Unresolved))
	}
	for _, e := range res.Endpoints {
		if e.Missing {
			res.Notes = append(res.Notes, fmt.Sprintf("%s (%s) answered 404 every time: not on this server", e.Name, e.Route))
		}
	}
	return res
}

func (res *Result) print(w io.Writer) {
	c := res.Claims
	fmt.Fprintf(w, "\n=== summary: batch %s, %d shoppers, stock %d, limit %d, %d conns, mix %s ===\n",
		res.BatchID, res.Users, res.Stock, res.Limit, res.Conns, res.Mix)
	fmt.Fprintf(w, "sale window %.1fs: %.0f req/s (reads %.0f/s)\n", res.WindowS, res.RequestsPerSec, res.ReadsPerSec)
	fmt.Fprintf(w, "claims: attempted %d (%.0f/s), accepted %d (%.0f/s over the window), %d replayed 201s\n",
		c.Attempted, c.AttemptedPerSec, c.Accepted, c.AcceptedPerSec, c.Replayed201)
	fmt.Fprintf(w, "first second of the sale: %d claims attempted, %d accepted\n", c.AttemptedFirstSec, c.AcceptedFirstSec)
	if c.SoldOutAfterS != nil {
		fmt.Fprintf(w, "sold out after %.3fs (%.0f accepted claims/s until then)", *c.SoldOutAfterS, c.AcceptedPerSecTSO)
	} else {
		fmt.Fprintf(w, "not sold out (%d of %d left)", res.Stock-c.Accepted, res.Stock)
	}
	if c.First410AfterS != nil {
		fmt.Fprintf(w, "; first 410 sold_out after %.3fs", *c.First410AfterS)
	}
	fmt.Fprintln(w)
	if len(res.FirstSeconds) > 0 {
		fmt.Fprintf(w, "first 2 s in 100 ms slices (claims sent/accepted):")
		for i, s := range res.FirstSeconds {
			if i%10 == 0 {
				fmt.Fprintf(w, "\n  %4.1fs:", float64(s.FromMs)/1000)
			}
			fmt.Fprintf(w, " %d/%d", s.Claims, s.Accepted)
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%-10s %9s %8s %9s %9s %9s %9s  %s\n", "endpoint", "requests", "req/s", "p50 ms", "p99 ms", "p99.9 ms", "max ms", "status codes")
	for _, e := range res.Endpoints {
		miss := ""
		if e.Missing {
			miss = "  (404: not on this server)"
		}
		fmt.Fprintf(w, "%-10s %9d %8.0f %9.2f %9.2f %9.2f %9.2f  %s%s\n", e.Name, e.Requests, e.PerSec, e.P50Ms, e.P99Ms, e.P999Ms, e.MaxMs, codesOf(e.Codes), miss)
	}
	if res.PreOpen != nil {
		fmt.Fprintf(w, "before the open (browsing): %d requests, %s\n", res.PreOpen.Requests, codesOf(res.PreOpen.Codes))
	}
	if c := res.CPU; c != nil {
		fmt.Fprintf(w, "CPU during the sale (%d cores): loadgen %.2f cores", c.Cores, *c.LoadgenCores)
		if c.ServerCores != nil {
			fmt.Fprintf(w, ", server %.2f cores", *c.ServerCores)
		}
		fmt.Fprintln(w)
	}
	for _, n := range res.Notes {
		fmt.Fprintf(w, "note: %s\n", n)
	}
}

func writeJSON(path string, res *Result) error {
	b, err := json.MarshalIndent(res, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

func readResult(path string) (*Result, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}
