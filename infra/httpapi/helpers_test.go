package httpapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisidem"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/readapi"
)

// t0 is the test clock's start.
var t0 = time.Date(2030, 6, 1, 12, 0, 0, 0, time.UTC)

// testClock is a controllable clock.
type testClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

// zeroCounts is the CountsReader stand-in until the projection exists.
type zeroCounts struct{}

func (zeroCounts) BatchCounts(context.Context, string) (readapi.BatchCounts, error) {
	return readapi.BatchCounts{}, nil
}

var testSecret = []byte("0123456789abcdef0123456789abcdef-test-secret")

// env is a real server on real back ends: the bbolt event store, the Redis
// stock guard on an embedded miniredis, the Redis idempotency store.
type env struct {
	t      *testing.T
	clock  *testClock
	srv    *Server
	ts     *httptest.Server
	repo   *commands.Repository
	guard  *redisguard.Guard
	reg    *prometheus.Registry
	logBuf *syncBuffer

	admin, alice, bob, service string // tokens
}

// envConfig tunes newEnv.
type envConfig struct {
	cfg      Config
	idem     IdempotencyStore // default: redisidem on the embedded Redis
	register func(*Server)    // extra routes, registered before serving
	limiter  ClaimLimiter
}

type envOption func(*envConfig)

func withConfig(f func(*Config)) envOption  { return func(c *envConfig) { f(&c.cfg) } }
func withIdem(s IdempotencyStore) envOption { return func(c *envConfig) { c.idem = s } }
func withRoutes(f func(*Server)) envOption  { return func(c *envConfig) { c.register = f } }
func withLimiter(l ClaimLimiter) envOption  { return func(c *envConfig) { c.limiter = l } }

// writeSide is what every test env of this package builds alike: the bbolt
// event store on the test clock at t0, an embedded Redis, the stock guard,
// the repository, the command handlers with the grant jobs (runGrants
// consumes their shards until its ctx ends) and the batch queries.
type writeSide struct {
	clock     *testClock
	store     *boltstore.Store
	conn      *redisx.Conn
	guard     *redisguard.Guard
	reg       *domain.Registry
	repo      *commands.Repository
	handlers  *commands.Handlers
	batches   *readapi.Batches
	jobs      *redisjobs.Store
	runGrants func(context.Context)
}

func newWriteSide(tb testing.TB, log *slog.Logger) *writeSide {
	tb.Helper()
	must := func(err error) {
		tb.Helper()
		if err != nil {
			tb.Fatal(err)
		}
	}
	ws := &writeSide{clock: &testClock{now: t0}, reg: domain.NewRegistry()}
	var err error
	ws.store, err = boltstore.Open(tb.TempDir(), boltstore.Options{Now: ws.clock.Now})
	must(err)
	tb.Cleanup(func() { _ = ws.store.Close() })
	ws.conn, err = redisx.Open(context.Background(), redisx.Config{}, nil)
	must(err)
	tb.Cleanup(func() { _ = ws.conn.Close() })
	ws.guard, err = redisguard.New(ws.conn.Client, ws.conn.Prefix)
	must(err)
	ws.repo, err = commands.NewRepository(ws.store, ws.reg)
	must(err)
	deps := commands.Deps{Repo: ws.repo, Guard: ws.guard, Clock: ws.clock}
	ws.handlers, err = commands.NewHandlers(deps, 15*time.Minute)
	must(err)
	ws.batches, err = readapi.NewBatches(ws.repo, ws.guard, zeroCounts{}, ws.clock)
	must(err)
	ws.jobs, err = redisjobs.New(ws.conn.Client, ws.conn.Prefix)
	must(err)
	ws.runGrants = attachGrants(tb, ws.handlers, deps, ws.jobs, log)
	return ws
}

func newEnv(t *testing.T, opts ...envOption) *env {
	t.Helper()
	ec := envConfig{cfg: Config{JWTSecret: testSecret}}
	for _, o := range opts {
		o(&ec)
	}
	// Jobs are stored, not run: no worker in this env.
	ws := newWriteSide(t, slog.New(slog.DiscardHandler))
	clock, conn, repo, guard, handlers, batches := ws.clock, ws.conn, ws.repo, ws.guard, ws.handlers, ws.batches
	var err error
	idem := ec.idem
	if idem == nil {
		if idem, err = redisidem.New(conn.Client, conn.Prefix); err != nil {
			t.Fatal(err)
		}
	}
	reg := prometheus.NewRegistry()
	logBuf := &syncBuffer{}
	srv, err := New(ec.cfg, Deps{
		Commands: handlers, Batches: batches, Repo: repo, Idempotency: idem,
		Metrics: NewMetrics(reg), Registry: reg, Clock: clock, ClaimLimiter: ec.limiter,
		Logger: slog.New(slog.NewTextHandler(logBuf, &slog.HandlerOptions{Level: slog.LevelDebug})),
	})
	if err != nil {
		t.Fatal(err)
	}
	if ec.register != nil {
		ec.register(srv)
	}
	ts := httptest.NewServer(srv.Echo())
	t.Cleanup(ts.Close)
	e := &env{t: t, clock: clock, srv: srv, ts: ts, repo: repo, guard: guard, reg: reg, logBuf: logBuf}
	e.admin = e.token("boss", RoleAdmin)
	e.alice = e.token("alice", RoleUser)
	e.bob = e.token("bob", RoleUser)
	e.service = e.token("orders", RoleService)
	return e
}

func (e *env) token(sub, role string) string {
	e.t.Helper()
	tok, err := IssueToken(testSecret, sub, role, 30*24*time.Hour, e.clock.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return tok
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// resp is an HTTP answer.
type resp struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r resp) String() string { return fmt.Sprintf("%d %s", r.Status, r.Body) }

// req describes a request: Body is a string, []byte, io.Reader or a value
// marshalled as JSON.
type req struct {
	Method, Path, Token string
	Body                any
	Headers             map[string]string
}

func (e *env) do(r req) resp {
	e.t.Helper()
	var body io.Reader
	switch b := r.Body.(type) {
	case nil:
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	case io.Reader:
		body = b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		body = bytes.NewReader(j)
	}
	hr, err := http.NewRequest(r.Method, e.ts.URL+r.Path, body)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != nil {
		hr.Header.Set("Content-Type", "application/json")
	}
	if r.Token != "" {
		hr.Header.Set("Authorization", "Bearer "+r.Token)
	}
	for k, v := range r.Headers {
		hr.Header.Set(k, v)
	}
	res, err := e.ts.Client().Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer func() { _ = res.Body.Close() }()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return resp{Status: res.StatusCode, Header: res.Header, Body: b}
}

func (e *env) post(path, token string, body any, headers ...string) resp {
	e.t.Helper()
	h := map[string]string{}
	for i := 0; i+1 < len(headers); i += 2 {
		h[headers[i]] = headers[i+1]
	}
	return e.do(req{Method: http.MethodPost, Path: path, Token: token, Body: body, Headers: h})
}

func (e *env) get(path, token string) resp {
	e.t.Helper()
	return e.do(req{Method: http.MethodGet, Path: path, Token: token})
}

// expectStatus fails unless r has the status.
func expectStatus(t *testing.T, r resp, status int) {
	t.Helper()
	if r.Status != status {
		t.Fatalf("status = %d, want %d; body: %s", r.Status, status, r.Body)
	}
}

// expectError checks the status, and that the body is exactly
// {"error": {"code": code, "message": <non-empty>}} with a JSON content type.
// It returns the message.
func expectError(t *testing.T, r resp, status int, code string) string {
	t.Helper()
	expectStatus(t, r, status)
	checkErrorShape(t, r)
	var b ErrorBody
	_ = json.Unmarshal(r.Body, &b)
	if b.Error.Code != code {
		t.Fatalf("error code = %q, want %q; body: %s", b.Error.Code, code, r.Body)
	}
	return b.Error.Message
}

// checkErrorShape asserts the {"error":{"code","message"}} shape, nothing more, nothing less.
func checkErrorShape(t *testing.T, r resp) {
	t.Helper()
	if ct := r.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type = %q, want application/json; body: %s", ct, r.Body)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &top); err != nil {
		t.Fatalf("error body is not a JSON object: %v: %s", err, r.Body)
	}
	if len(top) != 1 || top["error"] == nil {
		t.Fatalf("error body must hold exactly the key \"error\": %s", r.Body)
	}
	var inner map[string]any
	if err := json.Unmarshal(top["error"], &inner); err != nil {
		t.Fatalf("\"error\" is not an object: %s", r.Body)
	}
	code, ok1 := inner["code"].(string)
	msg, ok2 := inner["message"].(string)
	if len(inner) != 2 || !ok1 || !ok2 || code == "" || msg == "" {
		t.Fatalf("\"error\" must hold exactly a non-empty string code and message: %s", r.Body)
	}
}

func decode[T any](t *testing.T, r resp) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.Body, &v); err != nil {
		t.Fatalf("decode %T: %v: %s", v, err, r.Body)
	}
	return v
}

// batchBody is a valid public batch, running at t0, with overrides applied.
func batchBody(over map[string]any) map[string]any {
	b := map[string]any{
		"name":            "flash 5 off",
		"kind":            "direct",
		"issuer":          "platform",
		"amount_off":      500,
		"scope":           map[string]any{"kind": "all"},
		"total_stock":     10,
		"per_user_limit":  1,
		"claim_starts_at": t0.Add(-time.Hour).Format(time.RFC3339),
		"claim_ends_at":   t0.Add(24 * time.Hour).Format(time.RFC3339),
		"valid_days":      30,
		"audience":        "public",
	}
	for k, v := range over {
		if v == nil {
			delete(b, k)
		} else {
			b[k] = v
		}
	}
	return b
}

// issue creates a batch and returns its view.
func (e *env) issue(over map[string]any) BatchView {
	e.t.Helper()
	r := e.post("/v1/batches", e.admin, batchBody(over))
	expectStatus(e.t, r, http.StatusCreated)
	return decode[BatchView](e.t, r)
}

// claim claims a coupon of batch for token and returns it.
func (e *env) claim(batchID, token string) CouponView {
	e.t.Helper()
	r := e.post("/v1/batches/"+batchID+"/claim", token, nil)
	expectStatus(e.t, r, http.StatusCreated)
	return decode[CouponView](e.t, r)
}

// metric returns the text of /metrics.
func (e *env) metrics() string {
	e.t.Helper()
	r := e.get("/metrics", "")
	expectStatus(e.t, r, http.StatusOK)
	return string(r.Body)
}

// eventTypes lists the types of a coupon's stored events.
func (e *env) eventTypes(couponID string) []string {
	e.t.Helper()
	recs, err := e.repo.Store().ReadStream(context.Background(), commands.CouponStream(couponID), 0)
	if err != nil {
		e.t.Fatal(err)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Type
	}
	return out
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
