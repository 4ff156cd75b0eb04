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
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/infra/redisidem"
)

// Fuzz targets of the HTTP API. Their seed corpus runs with every `go test`;
// to fuzz one: go test -run XXX -fuzz FuzzBatchRequest -fuzztime 30s ./infra/httpapi
//
// A fuzz target cannot use newEnv (it takes a *testing.T, and one env per
// input would be far too slow), so fuzzEnv builds the same server on the same
// back ends once per fuzzing process, and points the env's *testing.T at the
// input being run (inputs of one process run one at a time).

// fuzzEnv is an env shared by the inputs of one fuzz target.
type fuzzEnv struct {
	*env
	log *resettableBuffer // warnings and errors logged while serving the current input
}

// resettableBuffer is a log sink emptied before each input.
type resettableBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (r *resettableBuffer) Write(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.b.Len() > 1<<16 {
		return len(p), nil
	}
	return r.b.Write(p)
}

func (r *resettableBuffer) reset() {
	r.mu.Lock()
	r.b.Reset()
	r.mu.Unlock()
}

func (r *resettableBuffer) String() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.b.String()
}

// newFuzzEnv is newEnv for a fuzz target: the bbolt event store, the Redis
// stock guard and idempotency store on an embedded miniredis, the real
// Echo server, the test clock at t0 and the usual tokens.
func newFuzzEnv(f *testing.F) *fuzzEnv {
	f.Helper()
	ws := newWriteSide(f, slog.New(slog.DiscardHandler))
	clock, conn, repo, guard, handlers, batches := ws.clock, ws.conn, ws.repo, ws.guard, ws.handlers, ws.batches
	idem, err := redisidem.New(conn.Client, conn.Prefix)
	if err != nil {
		f.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	logs := &resettableBuffer{}
	srv, err := New(Config{JWTSecret: testSecret}, Deps{
		Commands: handlers, Batches: batches, Repo: repo, Idempotency: idem,
		Metrics: NewMetrics(reg), Registry: reg, Clock: clock,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	if err != nil {
		f.Fatal(err)
	}
	ts := httptest.NewServer(srv.Echo())
	f.Cleanup(ts.Close)
	tok := func(sub, role string) string {
		s, err := IssueToken(testSecret, sub, role, 30*24*time.Hour, t0)
		if err != nil {
			f.Fatal(err)
		}
		return s
	}
	e := &env{clock: clock, srv: srv, ts: ts, repo: repo, guard: guard, reg: reg, logBuf: &syncBuffer{},
		admin: tok("boss", RoleAdmin), alice: tok("alice", RoleUser), bob: tok("bob", RoleUser), service: tok("orders", RoleService)}
	return &fuzzEnv{env: e, log: logs}
}

// use points the env at the input being run, and empties the log.
func (fe *fuzzEnv) use(t *testing.T) *env {
	fe.t = t
	fe.log.reset()
	return fe.env
}

// mustPost is a fixture request made before fuzzing: it must answer want.
func (fe *fuzzEnv) mustPost(f *testing.F, path, token string, body any, want int, out any) {
	f.Helper()
	var b []byte
	if body != nil {
		b = []byte(bodyString(body))
	}
	r := fe.serve(http.MethodPost, path, token, b, nil)
	if r.Status != want {
		f.Fatalf("POST %s: %s, want %d", path, r, want)
	}
	if err := json.Unmarshal(r.Body, out); err != nil {
		f.Fatalf("POST %s: %v: %s", path, err, r.Body)
	}
}

// issueF issues a batch (batchBody with overrides) before fuzzing.
func (fe *fuzzEnv) issueF(f *testing.F, over map[string]any) BatchView {
	f.Helper()
	var v BatchView
	fe.mustPost(f, "/v1/batches", fe.admin, batchBody(over), http.StatusCreated, &v)
	return v
}

// claimF claims a coupon before fuzzing.
func (fe *fuzzEnv) claimF(f *testing.F, batchID, token string) CouponView {
	f.Helper()
	var v CouponView
	fe.mustPost(f, "/v1/batches/"+batchID+"/claim", token, nil, http.StatusCreated, &v)
	return v
}

// serve sends a request straight to the Echo handler (no network) and
// returns the answer. headers may hold several values for one name.
func (fe *fuzzEnv) serve(method, path, token string, body []byte, headers http.Header) resp {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	r := httptest.NewRequest(method, path, rd)
	if body != nil {
		r.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	for k, vs := range headers {
		r.Header[k] = vs // raw: no canonicalization, no validation
	}
	w := httptest.NewRecorder()
	fe.srv.Echo().ServeHTTP(w, r)
	return resp{Status: w.Code, Header: w.Header(), Body: w.Body.Bytes()}
}

// checkAnswer fails on a status outside allowed (5xx in particular), and
// checks the error body shape of every 4xx; it returns true for a 4xx.
func (fe *fuzzEnv) checkAnswer(t *testing.T, what string, r resp, allowed ...int) bool {
	t.Helper()
	if !slices.Contains(allowed, r.Status) {
		t.Fatalf("%s: status %d (allowed %v); body: %.500s\nlog: %.2000s", what, r.Status, allowed, r.Body, fe.log.String())
	}
	if r.Status >= 400 {
		checkErrorShape(t, r)
		return true
	}
	return false
}

// batchSeeds are request bodies for POST /v1/batches: valid ones, and the
// malformed, hostile and borderline ones a client could send.
func batchSeeds() [][]byte {
	valid := mustJSON(batchBody(nil))
	seeds := []string{
		valid,
		mustJSON(batchBody(map[string]any{
			"kind": "percent", "amount_off": nil, "percent_off": 15, "max_discount": 3000,
			"scope":     map[string]any{"kind": "merchant", "ids": []string{"m1", "m2"}},
			"exclusive": true, "per_user_limit": 2, "valid_days": nil,
			"valid_from": t0.Format(time.RFC3339), "valid_until": t0.Add(72 * time.Hour).Format(time.RFC3339),
		})),
		mustJSON(batchBody(map[string]any{"kind": "threshold", "threshold": 1000, "amount_off": 100, "audience": "targeted"})),
		mustJSON(batchBody(map[string]any{"kind": "shipping", "amount_off": 800, "name": "🚚 free shipping ✨"})),
		// The README's example (with a claim window still open at t0).
		`{"name":"Double 11","kind":"threshold","issuer":"platform","threshold":1000,"amount_off":100,
		  "scope":{"kind":"all"},"total_stock":500,"per_user_limit":2,
		  "claim_starts_at":"2030-06-01T00:00:00Z","claim_ends_at":"2031-01-01T00:00:00Z",
		  "valid_days":7,"audience":"public"}`,
		"", " ", "null", "[]", "{}", `"x"`, "0", "true", `{"name":`, `{"name" "x"}`, valid + "x", valid + "{}", valid + " \n",
		"\ufeff" + valid,
		strings.Replace(valid, `"amount_off":500`, `"amount_off":-1`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":1e30`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":9223372036854775808`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":1.5`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":1000000000001`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":"500"`, 1),
		strings.Replace(valid, `"amount_off":500`, `"amount_off":null`, 1),
		strings.Replace(valid, `"total_stock":10`, `"total_stock":1000000001`, 1),
		strings.Replace(valid, `"total_stock":10`, `"total_stock":-9223372036854775808`, 1),
		strings.Replace(valid, `"per_user_limit":1`, `"per_user_limit":99999999999999999999`, 1),
		strings.Replace(valid, `"issuer":"platform"`, `"issuer":"pl\u0000tform"`, 1),
		strings.Replace(valid, `"issuer":"platform"`, "\"issuer\":\"pl\xfftform\"", 1),
		strings.Replace(valid, `"issuer":"platform"`, `"issuer":"\ud800"`, 1),
		strings.Replace(valid, `"name":"flash 5 off"`, "\"name\":\"\xc3\x28\"", 1),
		strings.Replace(valid, `"name":"flash 5 off"`, `"NAME":"upper case"`, 1),
		strings.Replace(valid, `"name":"flash 5 off"`, `"name":"a","name":"b"`, 1),
		strings.Replace(valid, `"valid_days":30`, `"valid_days":30,"extra":[[[]]]`, 1),
		strings.Replace(valid, `"scope":{"kind":"all"}`, `"scope":{"kind":"product","ids":["p1","p1"]}`, 1),
		strings.Replace(valid, `"scope":{"kind":"all"}`, `"scope":{"kind":"product","ids":[""]}`, 1),
		strings.Replace(valid, `"scope":{"kind":"all"}`, `"scope":[]`, 1),
		// Times at the edge of what RFC 3339 holds once in UTC.
		strings.Replace(valid, `"claim_starts_at":"2030-06-01T11:00:00Z"`, `"claim_starts_at":"0000-01-01T00:00:00+01:00"`, 1),
		strings.Replace(valid, `"claim_ends_at":"2030-06-02T12:00:00Z"`, `"claim_ends_at":"9999-12-31T23:59:59-01:00"`, 1),
		strings.Replace(valid, `"claim_ends_at":"2030-06-02T12:00:00Z"`, `"claim_ends_at":"9999-12-31T00:00:00Z"`, 1),
		strings.Replace(valid, `"claim_ends_at":"2030-06-02T12:00:00Z"`, `"claim_ends_at":"2030-06-02T12:00:00.123456789+23:59"`, 1),
		strings.Replace(valid, `"claim_ends_at":"2030-06-02T12:00:00Z"`, `"claim_ends_at":"2030-13-02T12:00:00Z"`, 1),
		strings.Repeat("[", 10000) + strings.Repeat("]", 10000),
		`{"name":` + strings.Repeat("[", 10001) + strings.Repeat("]", 10001) + `}`,
		`{"scope":` + strings.Repeat(`{"kind":`, 5000) + `"all"` + strings.Repeat("}", 5000) + `}`,
	}
	out := make([][]byte, len(seeds))
	for i, s := range seeds {
		out[i] = []byte(s)
	}
	return out
}

// FuzzBatchRequest posts arbitrary bytes as the body of POST /v1/batches
// (admin token): the answer is 201 with the batch, or a 400/413 with the
// error body and nothing written; never a 5xx or a panic.
func FuzzBatchRequest(f *testing.F) {
	for _, s := range batchSeeds() {
		f.Add(s)
	}
	fe := newFuzzEnv(f)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, body []byte) {
		e := fe.use(t)
		before := e.head()
		r := fe.serve(http.MethodPost, "/v1/batches", e.admin, body, nil)
		after := e.head()
		if fe.checkAnswer(t, "POST /v1/batches", r, http.StatusCreated, http.StatusBadRequest, http.StatusRequestEntityTooLarge) {
			if after != before {
				t.Fatalf("refused (%s) yet the store moved from %d to %d", r, before, after)
			}
			return
		}
		if after != before+1 {
			t.Fatalf("201 appended %d events, want 1", after-before)
		}
		v := decode[BatchView](t, r)
		b, err := e.repo.LoadBatch(ctx, v.ID)
		if err != nil || !b.Exists() {
			t.Fatalf("the issued batch %q cannot be loaded: %v", v.ID, err)
		}
		if !b.Rules.Equal(v.Rules) || b.TotalStock != v.TotalStock || v.Remaining != v.TotalStock {
			t.Fatalf("stored batch %+v differs from the answer %s", b, r.Body)
		}
		if err := b.Rules.Validate(); err != nil {
			t.Fatalf("stored rules are invalid: %v", err)
		}
	})
}

// orderRoutes are the routes FuzzClaimAndOrderBodies posts to, with the
// statuses spec/api.md documents for them (besides 401, as the token is
// valid).
var orderRoutes = []struct {
	name    string
	path    func(batch, targeted, coupon string) string
	role    string
	csv     bool
	allowed []int
}{
	{"lock", func(_, _, c string) string { return "/v1/coupons/" + c + "/lock" }, RoleService, false,
		[]int{200, 400, 403, 404, 409, 413, 422}},
	{"redeem", func(_, _, c string) string { return "/v1/coupons/" + c + "/redeem" }, RoleService, false,
		[]int{200, 400, 404, 409, 413, 422}},
	{"unlock", func(_, _, c string) string { return "/v1/coupons/" + c + "/unlock" }, RoleService, false,
		[]int{200, 400, 404, 409, 413}},
	{"return", func(_, _, c string) string { return "/v1/coupons/" + c + "/return" }, RoleService, false,
		[]int{200, 400, 404, 409, 413}},
	{"stock", func(b, _, _ string) string { return "/v1/batches/" + b + "/stock" }, RoleAdmin, false,
		[]int{200, 400, 404, 409, 413}},
	{"grants", func(_, tb, _ string) string { return "/v1/batches/" + tb + "/grants" }, RoleAdmin, false,
		[]int{202, 400, 404, 409, 413}},
	{"grants csv", func(_, tb, _ string) string { return "/v1/batches/" + tb + "/grants" }, RoleAdmin, true,
		[]int{202, 400, 404, 409, 413}},
	{"claim", func(b, _, _ string) string { return "/v1/batches/" + b + "/claim" }, RoleUser, false,
		[]int{201, 400, 409, 410, 413, 422, 429}},
	{"pause", func(b, _, _ string) string { return "/v1/batches/" + b + "/pause" }, RoleAdmin, false,
		[]int{200, 400, 404, 409, 413}},
}

// FuzzClaimAndOrderBodies posts arbitrary bodies to the order system's
// routes (lock, redeem, unlock, return), the back office's stock, grants
// (JSON and CSV) and pause, and the shopper's claim: only documented status
// codes, the error body on every 4xx, nothing written on a 4xx, no 5xx.
// route picks the route (modulo their number); the coupon and batches are
// shared by the inputs, so their states change as the fuzzer goes.
func FuzzClaimAndOrderBodies(f *testing.F) {
	seed := func(route string, body string) {
		for i, r := range orderRoutes {
			if r.name == route {
				f.Add(uint8(i), []byte(body))
				return
			}
		}
		panic("no route " + route)
	}
	for _, b := range []string{
		`{"order_id":"o1","user_id":"alice"}`, `{"order_id":"o2","user_id":"bob"}`, `{"order_id":"o1","user_id":"alice","x":1}`,
		`{"order_id":"","user_id":"alice"}`, `{"order_id":"o\u0001","user_id":"alice"}`, "{\"order_id\":\"o\xff\",\"user_id\":\"alice\"}",
		`{"order_id":"` + strings.Repeat("o", 129) + `","user_id":"alice"}`, `{"order_id":["o1"],"user_id":"alice"}`, "", "null", "[]",
	} {
		seed("lock", b)
	}
	for _, b := range []string{
		`{"order_id":"o1","payment_id":"p1","discount":100}`, `{"order_id":"o1","payment_id":"p1"}`,
		`{"order_id":"o1","payment_id":"p1","discount":-1}`, `{"order_id":"o1","payment_id":"p1","discount":1e30}`,
		`{"order_id":"o1","payment_id":"p1","discount":9223372036854775808}`, `{"order_id":"o1","payment_id":"p1","discount":1.5}`,
		`{"order_id":"o1","payment_id":"p1","discount":9223372036854775807}`,
	} {
		seed("redeem", b)
	}
	for _, b := range []string{`{"order_id":"o1"}`, `{"order_id":"o2"}`, `{}`, `{"order_id":"o1"} {}`} {
		seed("unlock", b)
		seed("return", b)
	}
	for _, b := range []string{`{"add":1}`, `{"add":0}`, `{"add":-1}`, `{"add":1000000000}`, `{"add":9223372036854775807}`, `{"add":1.5}`, `{"add":"1"}`} {
		seed("stock", b)
	}
	for _, b := range []string{`{"user_ids":["u1","u2","u1"]}`, `{"user_ids":[]}`, `{"user_ids":null}`, `{"user_ids":["u\u0000"]}`,
		`{"user_ids":[1,2]}`, `{"user_ids":"u1"}`, `{"user_ids":` + strings.Repeat("[", 10000) + strings.Repeat("]", 10000) + `}`} {
		seed("grants", b)
	}
	for _, b := range []string{"user_id\nu1\nu2\n", "\ufeffu1\r\nu2\r\n", "\"u1\n", "", "u\x01\n", "u\xff\n"} {
		seed("grants csv", b)
	}
	for _, b := range []string{"", "{}", "[]", "null", `{"x":1}`} {
		seed("claim", b)
		seed("pause", b)
	}

	fe := newFuzzEnv(f)
	batchID := fe.issueF(f, map[string]any{"total_stock": 1000, "per_user_limit": 1}).ID
	targetedID := fe.issueF(f, map[string]any{"audience": "targeted", "total_stock": 1000}).ID
	couponID := fe.claimF(f, batchID, fe.alice).ID
	tokens := map[string]string{RoleAdmin: fe.admin, RoleService: fe.service, RoleUser: fe.alice}
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		e := fe.use(t)
		rt := orderRoutes[int(route)%len(orderRoutes)]
		path := rt.path(batchID, targetedID, couponID)
		var h http.Header
		if rt.csv {
			h = http.Header{"Content-Type": {"text/csv"}}
		}
		before := e.head()
		r := fe.serve(http.MethodPost, path, tokens[rt.role], body, h)
		after := e.head()
		if fe.checkAnswer(t, "POST "+path, r, rt.allowed...) && after != before {
			t.Fatalf("POST %s refused (%s) yet the store moved from %d to %d", path, r, before, after)
		}
	})
}

// validIdempotencyKey is the documented rule: 1 to 255 bytes of printable
// ASCII, given once.
func validIdempotencyKey(vals []string) bool {
	if len(vals) != 1 || len(vals[0]) == 0 || len(vals[0]) > 255 {
		return false
	}
	for i := 0; i < len(vals[0]); i++ {
		if c := vals[0][i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// FuzzIdempotencyKeyHeader sends arbitrary Idempotency-Key values (once, or
// twice) with otherwise valid requests on the routes that take one: a valid
// key succeeds (or replays), anything else is a 400 naming the header with
// nothing written; never a 5xx.
func FuzzIdempotencyKeyHeader(f *testing.F) {
	for _, k := range []string{"k-1", "batch-2026-11-11", strings.Repeat("~", 255), strings.Repeat("k", 256), "", " ", "clé", "a\tb",
		"a\r\nX-Injected: 1", "\x00", "\x7f", "日本", "\xff", `"quoted"`, "*", "k-1"} {
		for route := range uint8(4) {
			f.Add(k, false, route)
		}
		f.Add(k, true, uint8(0))
	}
	fe := newFuzzEnv(f)
	batchID := fe.issueF(f, map[string]any{"total_stock": 1_000_000, "per_user_limit": 1}).ID
	couponID := fe.claimF(f, batchID, fe.alice).ID
	issueBody := []byte(mustJSON(batchBody(nil)))
	var shoppers atomic.Int64
	f.Fuzz(func(t *testing.T, key string, twice bool, route uint8) {
		e := fe.use(t)
		vals := []string{key}
		if twice {
			vals = append(vals, key)
		}
		h := http.Header{HeaderIdempotencyKey: vals}
		var path, token string
		var body []byte
		ok := http.StatusOK
		switch route % 4 {
		case 0:
			path, token, body, ok = "/v1/batches", e.admin, issueBody, http.StatusCreated
		case 1:
			// A new shopper each time: the claim itself always succeeds.
			path, token, ok = "/v1/batches/"+batchID+"/claim", e.token(fmt.Sprintf("shopper-%d", shoppers.Add(1)), RoleUser), http.StatusCreated
		case 2:
			path, token, body = "/v1/batches/"+batchID+"/stock", e.admin, []byte(`{"add":1}`)
		case 3:
			path, token, body = "/v1/coupons/"+couponID+"/lock", e.service, []byte(`{"order_id":"o-idem","user_id":"alice"}`)
		}
		before := e.head()
		r := fe.serve(http.MethodPost, path, token, body, h)
		after := e.head()
		if validIdempotencyKey(vals) {
			fe.checkAnswer(t, fmt.Sprintf("POST %s with key %q", path, key), r, ok)
			return
		}
		fe.checkAnswer(t, fmt.Sprintf("POST %s with key %q", path, key), r, http.StatusBadRequest)
		var b ErrorBody
		_ = json.Unmarshal(r.Body, &b)
		if !strings.Contains(b.Error.Message, HeaderIdempotencyKey) {
			t.Fatalf("message %q does not name the header", b.Error.Message)
		}
		if after != before {
			t.Fatalf("refused key %q yet the store moved from %d to %d", key, before, after)
		}
	})
}
