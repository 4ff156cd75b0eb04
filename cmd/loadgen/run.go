package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/couponsd/couponsd/infra/httpapi"
)

// shopper is one simulated user with its own token.
type shopper struct {
	id    string
	token string

	mu      sync.Mutex
	seq     int
	lastKey string
}

// Ack is one coupon acknowledged by a 201 (the first answer for it).
type Ack struct {
	User     string  `json:"user"`
	Key      string  `json:"key"`
	Coupon   string  `json:"coupon"`
	Position uint64  `json:"position"`
	AtS      float64 `json:"at_s"` // seconds since the open (completion)
}

type pendingClaim struct {
	sh  *shopper
	key string
}

// ledger is what the shoppers were told: every 201 and what it means.
type ledger struct {
	mu         sync.Mutex
	byKey      map[string]string // user \x00 key -> coupon
	byCoupon   map[string]string // coupon -> user
	acks       []Ack
	replays    int64 // 201s with Idempotent-Replayed: true
	violations []string
	maxPos     uint64
	unresolved []pendingClaim
}

func newLedger() *ledger {
	return &ledger{byKey: map[string]string{}, byCoupon: map[string]string{}}
}

func (l *ledger) violate(format string, args ...any) {
	if len(l.violations) < 50 {
		l.violations = append(l.violations, fmt.Sprintf(format, args...))
	} else if len(l.violations) == 50 {
		l.violations = append(l.violations, "... (more)")
	}
}

// ack records a 201 and reports whether it acknowledged a new coupon.
func (l *ledger) ack(batchID, user, key string, body claimBody, replayed bool, atS float64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if replayed {
		l.replays++
	}
	if body.ID == "" {
		l.violate("201 for %s (key %s) without a coupon id", user, key)
		return false
	}
	if body.UserID != user || body.BatchID != batchID {
		l.violate("201 for %s on batch %s returned coupon %s of user %q batch %q", user, batchID, body.ID, body.UserID, body.BatchID)
	}
	k := user + "\x00" + key
	if prev, ok := l.byKey[k]; ok {
		if prev != body.ID {
			l.violate("Idempotency-Key %s of %s answered two coupons: %s then %s (replayed header %v)", key, user, prev, body.ID, replayed)
		}
		return false
	}
	if owner, ok := l.byCoupon[body.ID]; ok {
		l.violate("coupon %s acknowledged to %s and to %s", body.ID, owner, user)
		return false
	}
	// A replay whose first answer we never saw (it timed out) acknowledges
	// the coupon now: it is counted once, here.
	l.byKey[k] = body.ID
	l.byCoupon[body.ID] = user
	l.acks = append(l.acks, Ack{User: user, Key: key, Coupon: body.ID, Position: body.Position, AtS: atS})
	l.maxPos = max(l.maxPos, body.Position)
	return true
}

type claimBody struct {
	ID       string `json:"id"`
	BatchID  string `json:"batch_id"`
	UserID   string `json:"user_id"`
	Position uint64 `json:"position"`
}

// gen is one load run.
type gen struct {
	cfg      Config
	base     string
	client   *http.Client // the load, sized to --conns
	admin    *http.Client // setup and checks
	adminTok string
	batchID  string
	shoppers []shopper
	open     time.Time
	end      time.Time
	rec      *recorder
	led      *ledger
	issued   atomic.Int64
	allReqs  atomic.Int64
	seed     uint64
	out      io.Writer
}

func newTransport(conns int) *http.Transport {
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        conns,
		MaxIdleConnsPerHost: conns,
		MaxConnsPerHost:     conns,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
	}
}

func newRunID() string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// Run drives the load (or only the checks with cfg.CheckOnly) and returns
// the result; the error wraps ErrInvariant when an invariant broke (the
// result and files are still written).
func Run(ctx context.Context, cfg Config, stdout io.Writer) (*Result, error) {
	if stdout == nil {
		stdout = io.Discard
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	g := &gen{
		cfg:   cfg,
		base:  strings.TrimRight(cfg.URL, "/"),
		admin: &http.Client{Transport: newTransport(64)},
		led:   newLedger(),
		out:   stdout,
	}
	defer g.admin.CloseIdleConnections()
	var err error
	if g.adminTok, err = httpapi.IssueToken(cfg.Secret, "loadgen-admin", httpapi.RoleAdmin, 24*time.Hour, time.Now()); err != nil {
		return nil, err
	}
	if err := g.health(ctx); err != nil {
		return nil, err
	}
	if cfg.CheckOnly {
		return g.checkOnly(ctx)
	}
	return g.run(ctx)
}

func (g *gen) health(ctx context.Context) error {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, g.base+"/healthz", nil)
	resp, err := g.admin.Do(req)
	if err != nil {
		return fmt.Errorf("the service at %s does not answer: %w", g.base, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s/healthz answered %d", g.base, resp.StatusCode)
	}
	return nil
}

func (g *gen) run(ctx context.Context) (*Result, error) {
	cfg := g.cfg
	runID := newRunID()
	prefix := cfg.UserPrefix
	if prefix == "" {
		prefix = "lg-" + runID + "-"
	}
	g.seed = uint64(cfg.Seed)
	if g.seed == 0 {
		g.seed = uint64(time.Now().UnixNano())
	}

	// Tokens: one per shopper, valid for the whole run and the checks.
	ttl := cfg.OpenIn + cfg.Duration + time.Hour
	if cfg.Requests > 0 {
		ttl += 2 * time.Hour
	}
	t0 := time.Now()
	g.shoppers = make([]shopper, cfg.Users)
	for i := range g.shoppers {
		id := fmt.Sprintf("%s%06d", prefix, i)
		tok, err := httpapi.IssueToken(cfg.Secret, id, httpapi.RoleUser, ttl, t0)
		if err != nil {
			return nil, err
		}
		g.shoppers[i] = shopper{id: id, token: tok}
	}
	fmt.Fprintf(g.out, "loadgen %s: %d shoppers (tokens minted in %v), stock %d, limit %d, %d conns, mix %s, target %s\n",
		runID, cfg.Users, time.Since(t0).Round(time.Millisecond), cfg.Stock, cfg.Limit, cfg.Conns, cfg.Mix, g.base)

	// The batch: its claim window opens OpenIn from now.
	g.open = time.Now().Add(cfg.OpenIn).Truncate(time.Millisecond)
	window := cfg.Duration
	if cfg.Requests > 0 && cfg.Duration <= 0 {
		window = time.Hour
	}
	g.end = g.open.Add(window)
	batchID, err := g.createBatch(ctx, runID, window)
	if err != nil {
		return nil, err
	}
	g.batchID = batchID
	fmt.Fprintf(g.out, "batch %s: claim window opens at %s (in %v)\n", batchID, g.open.Format("15:04:05.000"), time.Until(g.open).Round(time.Millisecond))

	pre := int((time.Until(g.open)+time.Second-1)/time.Second) + 1
	secs := int((window+cfg.Timeout)/time.Second) + 5
	g.rec = newRecorder(g.open, pre, min(secs, 4*3600))

	tr := newTransport(cfg.Conns)
	g.client = &http.Client{Transport: tr, Timeout: cfg.Timeout}
	defer tr.CloseIdleConnections()

	var wg sync.WaitGroup
	for w := range cfg.Conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			g.worker(ctx, w)
		}()
	}
	cpuAtOpen := make(chan cpuSample, 1)
	go func() {
		sleepUntil(ctx, g.open)
		cpuAtOpen <- sampleCPU(cfg.ServerPID)
	}()
	done := make(chan struct{})
	progDone := make(chan struct{})
	go func() {
		defer close(progDone)
		g.progress(done)
	}()
	wg.Wait()
	close(done)
	<-progDone
	loadEnd := time.Now()
	cpuEnd := sampleCPU(cfg.ServerPID)
	cpuOpen := <-cpuAtOpen

	g.resolveUnresolved(ctx)
	res := g.result(runID, prefix, loadEnd)
	res.CPU = cpuBetween(cpuOpen, cpuEnd, runtime.NumCPU())
	res.print(g.out)

	fmt.Fprintf(g.out, "\nchecking invariants (waiting up to %v for projections)...\n", cfg.Settle)
	inv := g.check(ctx, g.led.acks, g.led.maxPos, g.led.violations, true, g.sample(prefix))
	res.Invariants = inv
	return g.finish(res)
}

// finish prints the invariants, writes the files and returns the verdict.
func (g *gen) finish(res *Result) (*Result, error) {
	res.OK = true
	var failed []string
	for _, c := range res.Invariants {
		mark := "ok  "
		if !c.OK {
			mark = "FAIL"
			res.OK = false
			failed = append(failed, c.Name)
		}
		fmt.Fprintf(g.out, "  [%s] %-22s %s\n", mark, c.Name, c.Detail)
	}
	var errs []error
	if g.cfg.Out != "" {
		if err := writeJSON(g.cfg.Out, res); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(g.out, "wrote %s\n", g.cfg.Out)
		}
	}
	if g.cfg.Plot != "" && len(res.Series) > 0 {
		if err := writePlot(g.cfg.Plot, res); err != nil {
			errs = append(errs, err)
		} else {
			fmt.Fprintf(g.out, "wrote %s\n", g.cfg.Plot)
		}
	}
	if !res.OK {
		errs = append(errs, fmt.Errorf("%w: %s (batch %s)", ErrInvariant, strings.Join(failed, ", "), res.BatchID))
	} else {
		fmt.Fprintf(g.out, "all invariants hold for batch %s\n", res.BatchID)
	}
	return res, errors.Join(errs...)
}

func (g *gen) createBatch(ctx context.Context, runID string, window time.Duration) (string, error) {
	body := map[string]any{
		"name": "loadgen " + runID, "kind": "direct", "issuer": "platform", "amount_off": 500,
		"scope": map[string]any{"kind": "all"}, "total_stock": g.cfg.Stock, "per_user_limit": g.cfg.Limit,
		"claim_starts_at": g.open.UTC().Format(time.RFC3339Nano),
		"claim_ends_at":   g.open.Add(window + time.Hour).UTC().Format(time.RFC3339Nano),
		"valid_days":      7, "audience": "public",
	}
	var out struct {
		ID string `json:"id"`
	}
	code, raw, err := g.adminCall(ctx, http.MethodPost, "/v1/batches", body, "loadgen-batch-"+runID, &out)
	if err != nil {
		return "", fmt.Errorf("create batch: %w", err)
	}
	if code != http.StatusCreated || out.ID == "" {
		return "", fmt.Errorf("create batch: %d %s", code, raw)
	}
	return out.ID, nil
}

// adminCall sends an admin request and decodes a 2xx JSON answer into out.
func (g *gen) adminCall(ctx context.Context, method, path string, body any, key string, out any) (int, []byte, error) {
	return g.adminCallT(ctx, 30*time.Second, method, path, body, key, out)
}

func (g *gen) adminCallT(ctx context.Context, timeout time.Duration, method, path string, body any, key string, out any) (int, []byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return 0, nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, rd)
	if err != nil {
		return 0, nil, err
	}
	req.Header.Set("Authorization", "Bearer "+g.adminTok)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := g.admin.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		return resp.StatusCode, nil, err
	}
	if out != nil && resp.StatusCode/100 == 2 {
		if err := json.Unmarshal(raw, out); err != nil {
			return resp.StatusCode, raw, fmt.Errorf("%s %s: decode: %w", method, path, err)
		}
	}
	return resp.StatusCode, raw, nil
}

// preOpenQuiet: browsing stops this long before the open, so that every
// connection is free to claim at the open.
const preOpenQuiet = 150 * time.Millisecond

func (g *gen) worker(ctx context.Context, w int) {
	rng := mrand.New(mrand.NewPCG(g.seed, uint64(w)+1))
	mix, reads := g.cfg.Mix, g.cfg.Mix.reads()
	mixTotal, readTotal := mix.total(), reads.total()
	for ctx.Err() == nil {
		now := time.Now()
		var ep Endpoint
		if now.Before(g.open) {
			if readTotal == 0 || now.After(g.open.Add(-preOpenQuiet)) {
				sleepUntil(ctx, g.open)
				continue
			}
			ep = reads.pick(rng.IntN(readTotal))
		} else {
			if !now.Before(g.end) {
				return
			}
			if g.cfg.Requests > 0 && g.issued.Add(1) > g.cfg.Requests {
				return
			}
			ep = mix.pick(rng.IntN(mixTotal))
		}
		sh := &g.shoppers[rng.IntN(len(g.shoppers))]
		g.do(ctx, rng, ep, sh)
	}
}

func sleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

// answer is one HTTP exchange.
type answer struct {
	status   int // statusErr on a transport error
	replayed bool
	body     []byte
	start    time.Time
	done     time.Time
}

// send does one shopper request; the body is read only when keep is set
// (always drained, so the connection is reused).
func (g *gen) send(ctx context.Context, method, path, token, key string, body []byte, keep bool) answer {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	a := answer{start: time.Now()}
	req, err := http.NewRequestWithContext(ctx, method, g.base+path, rd)
	if err != nil {
		a.done = time.Now()
		return a
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		a.done = time.Now()
		return a
	}
	if keep {
		a.body, err = io.ReadAll(resp.Body)
	} else {
		_, err = io.Copy(io.Discard, resp.Body)
	}
	resp.Body.Close()
	a.done = time.Now()
	if err != nil {
		return a // the answer was cut: unknown outcome
	}
	a.status = resp.StatusCode
	a.replayed = resp.Header.Get(httpapi.HeaderIdempotentReplayed) == "true"
	return a
}

// The simulated catalog behind the product page and the quote.
const (
	catalogProducts   = 2000
	catalogMerchants  = 50
	catalogCategories = 20
)

func product(i int) (pid, mid, cid string, price int64) {
	return fmt.Sprintf("p-%d", i), fmt.Sprintf("m-%d", i%catalogMerchants), fmt.Sprintf("c-%d", i%catalogCategories),
		int64(500 + (i*7919)%30000)
}

func (g *gen) do(ctx context.Context, rng *mrand.Rand, ep Endpoint, sh *shopper) {
	g.allReqs.Add(1)
	var a answer
	switch ep {
	case EpClaim:
		g.claim(ctx, rng, sh)
		return
	case EpMe:
		a = g.send(ctx, http.MethodGet, "/v1/me/coupons?status=usable", sh.token, "", nil, false)
	case EpProduct:
		pid, mid, cid, _ := product(rng.IntN(catalogProducts))
		q := url.Values{"merchant_id": {mid}, "category_id": {cid}}
		a = g.send(ctx, http.MethodGet, "/v1/products/"+pid+"/coupons?"+q.Encode(), sh.token, "", nil, false)
	case EpQuote:
		a = g.send(ctx, http.MethodPost, "/v1/checkout/quote", sh.token, "", quoteBody(rng), false)
	case EpClaimable:
		a = g.send(ctx, http.MethodGet, "/v1/batches/claimable", sh.token, "", nil, false)
	}
	g.rec.record(ep, a.start, a.done, a.status)
}

func quoteBody(rng *mrand.Rand) []byte {
	type item struct {
		LineID     string `json:"line_id"`
		ProductID  string `json:"product_id"`
		MerchantID string `json:"merchant_id"`
		CategoryID string `json:"category_id"`
		UnitPrice  int64  `json:"unit_price"`
		Quantity   int64  `json:"quantity"`
	}
	n := 1 + rng.IntN(4)
	items := make([]item, n)
	for i := range items {
		pid, mid, cid, price := product(rng.IntN(catalogProducts))
		items[i] = item{LineID: fmt.Sprintf("l%d", i+1), ProductID: pid, MerchantID: mid, CategoryID: cid, UnitPrice: price, Quantity: int64(1 + rng.IntN(3))}
	}
	b, _ := json.Marshal(map[string]any{"items": items, "shipping_fee": 800})
	return b
}

// claim sends one claim; an unknown outcome (transport error, timeout, a
// cut answer, 5xx) is retried with the same Idempotency-Key like a real
// client, and left for resolveUnresolved after the run if still unknown.
func (g *gen) claim(ctx context.Context, rng *mrand.Rand, sh *shopper) {
	sh.mu.Lock()
	var key string
	if sh.lastKey != "" && rng.Float64()*100 < g.cfg.ReplayPct {
		key = sh.lastKey
	} else {
		sh.seq++
		key = fmt.Sprintf("%s-k%d", sh.id, sh.seq)
		sh.lastKey = key
	}
	sh.mu.Unlock()
	path := "/v1/batches/" + g.batchID + "/claim"
	for attempt := 0; ; attempt++ {
		a := g.send(ctx, http.MethodPost, path, sh.token, key, nil, true)
		g.rec.record(EpClaim, a.start, a.done, a.status)
		if a.status == http.StatusCreated {
			g.acknowledge(sh, key, a)
			return
		}
		if !ambiguous(a.status) {
			return
		}
		if attempt >= 2 || ctx.Err() != nil || !time.Now().Before(g.end) {
			g.led.mu.Lock()
			g.led.unresolved = append(g.led.unresolved, pendingClaim{sh: sh, key: key})
			g.led.mu.Unlock()
			return
		}
		sleepUntil(ctx, time.Now().Add(time.Duration(attempt+1)*50*time.Millisecond))
		g.allReqs.Add(1)
	}
}

// ambiguous: the claim may or may not have been made.
func ambiguous(status int) bool {
	return status == statusErr || status >= 500
}

func (g *gen) acknowledge(sh *shopper, key string, a answer) {
	var body claimBody
	if err := json.Unmarshal(a.body, &body); err != nil {
		g.led.mu.Lock()
		g.led.violate("201 for %s with an unreadable body: %v", sh.id, err)
		g.led.mu.Unlock()
		return
	}
	if g.led.ack(g.batchID, sh.id, key, body, a.replayed, a.done.Sub(g.open).Seconds()) {
		g.rec.newCoupon(a.done, g.cfg.Stock)
	}
}

// resolveUnresolved resends, with the same Idempotency-Key, every claim
// whose outcome stayed unknown: the service answers the first outcome.
func (g *gen) resolveUnresolved(ctx context.Context) {
	g.led.mu.Lock()
	pend := g.led.unresolved
	g.led.unresolved = nil
	g.led.mu.Unlock()
	if len(pend) == 0 {
		return
	}
	fmt.Fprintf(g.out, "resolving %d claims with an unknown outcome (same Idempotency-Key)...\n", len(pend))
	var left []pendingClaim
	for _, p := range pend {
		resolved := false
		for attempt := 0; attempt < 5 && ctx.Err() == nil; attempt++ {
			a := g.send(ctx, http.MethodPost, "/v1/batches/"+g.batchID+"/claim", p.sh.token, p.key, nil, true)
			if a.status == http.StatusCreated {
				g.acknowledge(p.sh, p.key, a)
			}
			if !ambiguous(a.status) && a.status != http.StatusTooManyRequests {
				resolved = true
				break
			}
			sleepUntil(ctx, time.Now().Add(time.Duration(attempt+1)*200*time.Millisecond))
		}
		if !resolved {
			left = append(left, p)
		}
	}
	g.led.mu.Lock()
	g.led.unresolved = left
	g.led.mu.Unlock()
}

// progress prints one line a second until done.
func (g *gen) progress(done <-chan struct{}) {
	tk := time.NewTicker(time.Second)
	defer tk.Stop()
	var lastReqs, lastClaims int64
	last := time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-tk.C:
			reqs, claims := g.allReqs.Load(), g.rec.claims.Load()
			dt := now.Sub(last).Seconds()
			rps, cps := float64(reqs-lastReqs)/dt, float64(claims-lastClaims)/dt
			lastReqs, lastClaims, last = reqs, claims, now
			if g.cfg.Quiet {
				continue
			}
			rel := now.Sub(g.open)
			tag := fmt.Sprintf("T+%5.1fs", rel.Seconds())
			if rel < 0 {
				tag = fmt.Sprintf("T-%5.1fs", -rel.Seconds())
			}
			fmt.Fprintf(g.out, "%s %7.0f req/s  claims %6.0f/s  accepted %d/%d  %s\n",
				tag, rps, cps, g.rec.accepted.Load(), g.cfg.Stock, codesLine(g.rec.codeTotals()))
		}
	}
}
