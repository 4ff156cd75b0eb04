package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
	"github.com/couponsd/couponsd/readapi"
)

func TestOperationsNeedNoToken(t *testing.T) {
	e := newEnv(t)
	r := e.get("/healthz", "")
	expectStatus(t, r, http.StatusOK)
	if string(r.Body) != "{\"status\":\"ok\"}\n" {
		t.Fatalf("healthz body %q", r.Body)
	}
	r = e.get("/openapi.yaml", "")
	expectStatus(t, r, http.StatusOK)
	if !strings.HasPrefix(r.Header.Get("Content-Type"), "application/yaml") || !strings.HasPrefix(string(r.Body), "openapi: 3.0") {
		t.Fatalf("openapi: %s %.40s", r.Header.Get("Content-Type"), r.Body)
	}
	e.get("/v1/batches/x", e.admin)
	m := e.metrics()
	for _, want := range []string{
		`couponsd_http_request_duration_seconds_count{method="GET",route="/healthz",status="200"} 1`,
		`couponsd_http_request_duration_seconds_count{method="GET",route="/v1/batches/:id",status="404"} 1`,
		`couponsd_eventstore_append_batch_size_count 0`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	e.srv.Metrics().ObserveAppendBatch(3)
	if !strings.Contains(e.metrics(), `couponsd_eventstore_append_batch_size_count 1`) {
		t.Error("ObserveAppendBatch not exported")
	}
}

func TestUnknownRoutes(t *testing.T) {
	e := newEnv(t)
	for _, rq := range []req{
		{Method: http.MethodGet, Path: "/nope"},
		{Method: http.MethodGet, Path: "/v1/nope", Token: "garbage"},
		{Method: http.MethodPost, Path: "/v1/coupons/c1/zap", Token: e.service},
		{Method: http.MethodGet, Path: "/v1/batches/b1/claim/extra"},
	} {
		expectError(t, e.do(rq), http.StatusNotFound, CodeNotFound)
	}
	for _, rq := range []req{
		{Method: http.MethodGet, Path: "/v1/batches"},
		{Method: http.MethodDelete, Path: "/v1/batches/b1", Token: e.admin},
		{Method: http.MethodGet, Path: "/v1/coupons/c1/lock"},
	} {
		r := e.do(rq)
		expectError(t, r, http.StatusMethodNotAllowed, CodeMethodNotAllowed)
		if r.Header.Get("Allow") == "" {
			t.Errorf("%s %s: no Allow header", rq.Method, rq.Path)
		}
	}
	if m := e.metrics(); !strings.Contains(m, `route="unmatched"`) || strings.Contains(m, "/v1/nope") {
		t.Errorf("unknown routes must share the label route=\"unmatched\":\n%s", grep(m, "duration_seconds_count"))
	}
}

// testRoutes registers routes through the extension points.
type testRoutes struct {
	calls   atomic.Int64
	entered chan struct{}
	release chan struct{}
	flaky   atomic.Int64
}

func (tr *testRoutes) register(s *Server) {
	s.Handle(http.MethodPost, "/v1/test/slow", func(c echo.Context) error {
		n := tr.calls.Add(1)
		tr.entered <- struct{}{}
		<-tr.release
		return c.JSON(http.StatusCreated, map[string]any{"call": n})
	}, []string{RoleAdmin})
	s.Handle(http.MethodPost, "/v1/test/flaky", func(c echo.Context) error {
		if tr.flaky.Add(1) == 1 {
			return errors.New("boom: secret internals")
		}
		return c.JSON(http.StatusCreated, map[string]any{"call": tr.flaky.Load()})
	}, []string{RoleAdmin})
	s.Handle(http.MethodPost, "/v1/test/unavailable", func(c echo.Context) error {
		if tr.flaky.Add(1) == 1 {
			return fmt.Errorf("%w: redis: dial tcp 10.0.0.1:6379: refused", domain.ErrUnavailable)
		}
		return c.NoContent(http.StatusNoContent)
	}, []string{RoleAdmin})
	s.Handle(http.MethodGet, "/v1/test/sleep", func(c echo.Context) error {
		<-c.Request().Context().Done()
		return c.Request().Context().Err()
	}, []string{RoleAdmin})
	s.Handle(http.MethodGet, "/v1/test/panic", func(c echo.Context) error { panic("kaboom") }, []string{RoleAdmin})
	s.Handle(http.MethodPost, "/v1/test/panic-once", func(c echo.Context) error {
		if tr.flaky.Add(1) == 1 {
			panic("kaboom once")
		}
		return c.JSON(http.StatusCreated, map[string]string{"ok": "yes"})
	}, []string{RoleAdmin})
	s.Handle(http.MethodGet, "/v1/test/public", func(c echo.Context) error { return c.String(http.StatusOK, "hi") }, nil)
	s.RegisterRoutes(func(e *echo.Echo, mw Middlewares) {
		e.GET("/v1/test/me", func(c echo.Context) error {
			p, _ := PrincipalOf(c)
			return c.JSON(http.StatusOK, map[string]string{"sub": p.Subject, "role": p.Role})
		}, mw.Auth, mw.Require(RoleUser, RoleService))
	})
}

func newTestRoutes() *testRoutes {
	return &testRoutes{entered: make(chan struct{}, 8), release: make(chan struct{})}
}

func TestExtensionHook(t *testing.T) {
	tr := newTestRoutes()
	e := newEnv(t, withRoutes(tr.register))
	expectError(t, e.get("/v1/test/me", ""), http.StatusUnauthorized, CodeUnauthenticated)
	expectError(t, e.get("/v1/test/me", e.admin), http.StatusForbidden, CodeForbidden)
	r := e.get("/v1/test/me", e.alice)
	expectStatus(t, r, http.StatusOK)
	if got := decode[map[string]string](t, r); got["sub"] != "alice" || got["role"] != RoleUser {
		t.Fatalf("principal = %v", got)
	}
	expectStatus(t, e.get("/v1/test/public", ""), http.StatusOK)
	expectError(t, e.post("/v1/test/slow", "", nil), http.StatusUnauthorized, CodeUnauthenticated)
	expectError(t, e.post("/v1/test/slow", e.alice, nil), http.StatusForbidden, CodeForbidden)
}

func TestIdempotencyWaitsForInFlight(t *testing.T) {
	tr := newTestRoutes()
	e := newEnv(t, withRoutes(tr.register))
	var wg sync.WaitGroup
	answers := make([]resp, 3)
	wg.Go(func() { answers[0] = e.post("/v1/test/slow", e.admin, `{"a":1}`, HeaderIdempotencyKey, "k1") })
	<-tr.entered
	for i := 1; i < len(answers); i++ {
		wg.Go(func() { answers[i] = e.post("/v1/test/slow", e.admin, `{"a":1}`, HeaderIdempotencyKey, "k1") })
	}
	time.Sleep(150 * time.Millisecond) // the duplicates are polling
	close(tr.release)
	wg.Wait()
	for i, r := range answers {
		expectStatus(t, r, http.StatusCreated)
		if string(r.Body) != string(answers[0].Body) {
			t.Fatalf("answer %d = %s, want %s", i, r.Body, answers[0].Body)
		}
		if replayed := r.Header.Get(HeaderIdempotentReplayed) == "true"; replayed != (i > 0) {
			t.Fatalf("answer %d: replayed header %v", i, replayed)
		}
	}
	if n := tr.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times", n)
	}
	// A different body with the key is refused, and so is one while in flight.
	expectError(t, e.post("/v1/test/slow", e.admin, `{"a":2}`, HeaderIdempotencyKey, "k1"), http.StatusConflict, CodeConflict)
	// Same key, other path or other caller: independent.
	// (tr.release stays closed: later calls do not block.)
	expectStatus(t, e.post("/v1/test/slow", e.token("boss2", RoleAdmin), `{"a":1}`, HeaderIdempotencyKey, "k1"), http.StatusCreated)
	<-tr.entered
	if n := tr.calls.Load(); n != 2 {
		t.Fatalf("handler ran %d times, want 2", n)
	}
}

func TestIdempotencyInProgressConflict(t *testing.T) {
	tr := newTestRoutes()
	e := newEnv(t, withRoutes(tr.register), withConfig(func(c *Config) { c.IdempotencyWait = 100 * time.Millisecond }))
	var wg sync.WaitGroup
	var first resp
	wg.Go(func() { first = e.post("/v1/test/slow", e.admin, `{}`, HeaderIdempotencyKey, "k") })
	<-tr.entered
	start := time.Now()
	msg := expectError(t, e.post("/v1/test/slow", e.admin, `{}`, HeaderIdempotencyKey, "k"), http.StatusConflict, CodeConflict)
	if waited := time.Since(start); waited < 100*time.Millisecond || !strings.Contains(msg, "in progress") {
		t.Fatalf("waited %v, message %q", waited, msg)
	}
	// A different body while in flight: 409 at once.
	expectError(t, e.post("/v1/test/slow", e.admin, `{"x":1}`, HeaderIdempotencyKey, "k"), http.StatusConflict, CodeConflict)
	close(tr.release)
	wg.Wait()
	expectStatus(t, first, http.StatusCreated)
	r := e.post("/v1/test/slow", e.admin, `{}`, HeaderIdempotencyKey, "k")
	expectStatus(t, r, http.StatusCreated)
	if r.Header.Get(HeaderIdempotentReplayed) != "true" || tr.calls.Load() != 1 {
		t.Fatalf("after the first finished: replayed=%q calls=%d", r.Header.Get(HeaderIdempotentReplayed), tr.calls.Load())
	}
}

func TestIdempotencyDoesNotStore5xx(t *testing.T) {
	tr := newTestRoutes()
	e := newEnv(t, withRoutes(tr.register))
	msg := expectError(t, e.post("/v1/test/flaky", e.admin, `{}`, HeaderIdempotencyKey, "k"), http.StatusInternalServerError, CodeInternal)
	if strings.Contains(msg, "boom") || strings.Contains(msg, "secret") {
		t.Fatalf("internal error leaked: %q", msg)
	}
	if !strings.Contains(e.logBuf.String(), "boom: secret internals") {
		t.Error("the internal error was not logged")
	}
	r := e.post("/v1/test/flaky", e.admin, `{}`, HeaderIdempotencyKey, "k")
	expectStatus(t, r, http.StatusCreated)
	if r.Header.Get(HeaderIdempotentReplayed) != "" {
		t.Fatal("the retry after a 5xx was a replay")
	}
	r2 := e.post("/v1/test/flaky", e.admin, `{}`, HeaderIdempotencyKey, "k")
	if r2.Header.Get(HeaderIdempotentReplayed) != "true" || string(r2.Body) != string(r.Body) {
		t.Fatalf("second retry not replayed: %s", r2)
	}

	tr.flaky.Store(0)
	msg = expectError(t, e.post("/v1/test/unavailable", e.admin, nil, HeaderIdempotencyKey, "u"), http.StatusServiceUnavailable, CodeUnavailable)
	if strings.Contains(msg, "10.0.0.1") {
		t.Fatalf("back end address leaked: %q", msg)
	}
	expectStatus(t, e.post("/v1/test/unavailable", e.admin, nil, HeaderIdempotencyKey, "u"), http.StatusNoContent)
}

func TestIdempotencyReplaysErrors(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	p := "/v1/coupons/" + c.ID
	expectStatus(t, e.post(p+"/lock", e.service, map[string]string{"order_id": "o1", "user_id": "alice"}), http.StatusOK)
	body := map[string]string{"order_id": "o2"}
	r1 := e.post(p+"/unlock", e.service, body, HeaderIdempotencyKey, "u-1")
	expectError(t, r1, http.StatusConflict, CodeConflict)
	expectStatus(t, e.post(p+"/unlock", e.service, map[string]string{"order_id": "o1"}), http.StatusOK)
	// The first outcome (a 409) is replayed, though the state changed.
	r2 := e.post(p+"/unlock", e.service, body, HeaderIdempotencyKey, "u-1")
	expectError(t, r2, http.StatusConflict, CodeConflict)
	if r2.Header.Get(HeaderIdempotentReplayed) != "true" || string(r1.Body) != string(r2.Body) {
		t.Fatalf("replay = %s", r2)
	}
	// Successful outcomes too, with the stored body.
	lock := map[string]string{"order_id": "o3", "user_id": "alice"}
	l1 := e.post(p+"/lock", e.service, lock, HeaderIdempotencyKey, "l-1")
	expectStatus(t, l1, http.StatusOK)
	l2 := e.post(p+"/lock", e.service, lock, HeaderIdempotencyKey, "l-1")
	if l2.Status != http.StatusOK || l2.Header.Get(HeaderIdempotentReplayed) != "true" || string(l1.Body) != string(l2.Body) {
		t.Fatalf("lock replay = %s", l2)
	}
	expectError(t, e.post(p+"/lock", e.service, map[string]string{"order_id": "o4", "user_id": "alice"}, HeaderIdempotencyKey, "l-1"),
		http.StatusConflict, CodeConflict)
	// Same key on another coupon's path is independent.
	c2 := e.claim(b.ID, e.bob)
	expectStatus(t, e.post("/v1/coupons/"+c2.ID+"/lock", e.service, map[string]string{"order_id": "o3", "user_id": "bob"}, HeaderIdempotencyKey, "l-1"), http.StatusOK)
}

// failingStore is an idempotency store whose back end is down.
type failingStore struct{}

func (failingStore) Begin(context.Context, string, string, time.Duration) (idempotency.Entry, error) {
	return idempotency.Entry{}, fmt.Errorf("%w: redis down at 10.1.2.3", domain.ErrUnavailable)
}
func (failingStore) Complete(context.Context, string, string, idempotency.Response, time.Duration) error {
	return nil
}
func (failingStore) Abandon(context.Context, string, string) error { return nil }

func TestIdempotencyStoreDown(t *testing.T) {
	e := newEnv(t, withIdem(failingStore{}))
	expectError(t, e.post("/v1/batches", e.admin, batchBody(nil), HeaderIdempotencyKey, "k"), http.StatusServiceUnavailable, CodeUnavailable)
	// Without a key the store is not used; the claim never uses it.
	b := e.issue(nil)
	expectStatus(t, e.post("/v1/batches/"+b.ID+"/claim", e.alice, nil, HeaderIdempotencyKey, "k"), http.StatusCreated)
}

func TestMemoryIdempotencyStoreWorks(t *testing.T) {
	e := newEnv(t, withIdem(idempotency.NewMemory(nil)))
	r1 := e.post("/v1/batches", e.admin, batchBody(nil), HeaderIdempotencyKey, "k")
	r2 := e.post("/v1/batches", e.admin, batchBody(nil), HeaderIdempotencyKey, "k")
	expectStatus(t, r2, http.StatusCreated)
	if r2.Header.Get(HeaderIdempotentReplayed) != "true" || string(r1.Body) != string(r2.Body) {
		t.Fatal("memory store did not replay")
	}
}

func TestTimeoutAndPanic(t *testing.T) {
	tr := newTestRoutes()
	e := newEnv(t, withRoutes(tr.register), withConfig(func(c *Config) { c.RequestTimeout = 50 * time.Millisecond }))
	msg := expectError(t, e.get("/v1/test/sleep", e.admin), http.StatusServiceUnavailable, CodeUnavailable)
	if !strings.Contains(msg, "timed out") {
		t.Errorf("timeout message %q", msg)
	}
	msg = expectError(t, e.get("/v1/test/panic", e.admin), http.StatusInternalServerError, CodeInternal)
	if strings.Contains(msg, "kaboom") {
		t.Errorf("panic leaked: %q", msg)
	}
	if !strings.Contains(e.logBuf.String(), "kaboom") {
		t.Error("panic not logged")
	}
	// A panic under an Idempotency-Key frees the key: the retry runs.
	expectError(t, e.post("/v1/test/panic-once", e.admin, `{}`, HeaderIdempotencyKey, "p"), http.StatusInternalServerError, CodeInternal)
	r := e.post("/v1/test/panic-once", e.admin, `{}`, HeaderIdempotencyKey, "p")
	expectStatus(t, r, http.StatusCreated)
	if r.Header.Get(HeaderIdempotentReplayed) != "" || !strings.HasPrefix(r.Header.Get("Content-Type"), "application/json") {
		t.Fatalf("retry after a panic: %v %s", r.Header, r.Body)
	}
	// The server still serves.
	expectStatus(t, e.get("/healthz", ""), http.StatusOK)
}

func TestStatusOf(t *testing.T) {
	cases := []struct {
		err    error
		status int
		code   string
	}{
		{domain.Invalid("x", "bad"), 400, CodeInvalidArgument},
		{domain.Errorf(domain.ErrNotFound, "no"), 404, CodeNotFound},
		{domain.Errorf(domain.ErrForbidden, "no"), 403, CodeForbidden},
		{domain.Errorf(domain.ErrAlreadyClaimed, "no"), 409, CodeAlreadyClaimed},
		{domain.Errorf(domain.ErrConflict, "no"), 409, CodeConflict},
		{fmt.Errorf("append: %w", domain.ErrConcurrency), 409, CodeConflict},
		{domain.Errorf(domain.ErrSoldOut, "no"), 410, CodeSoldOut},
		{domain.Errorf(domain.ErrNotClaimable, "no"), 422, CodeNotClaimable},
		{domain.Errorf(domain.ErrOutsideValidity, "no"), 422, CodeOutsideValidity},
		{domain.Errorf(domain.ErrRateLimited, "no"), 429, CodeRateLimited},
		{fmt.Errorf("x: %w", domain.ErrUnavailable), 503, CodeUnavailable},
		{context.DeadlineExceeded, 503, CodeUnavailable},
		{fmt.Errorf("read: %w", context.DeadlineExceeded), 503, CodeUnavailable},
		{domain.Errorf(ErrUnauthenticated, "no"), 401, CodeUnauthenticated},
		{domain.Errorf(ErrPayloadTooLarge, "no"), 413, CodePayloadTooLarge},
		{&http.MaxBytesError{Limit: 1}, 413, CodePayloadTooLarge},
		{echo.ErrNotFound, 404, CodeNotFound},
		{echo.ErrMethodNotAllowed, 405, CodeMethodNotAllowed},
		{echo.ErrStatusRequestEntityTooLarge, 413, CodePayloadTooLarge},
		{errors.New("boom"), 500, CodeInternal},
	}
	for _, tc := range cases {
		st, code := statusOf(tc.err)
		if st != tc.status || code != tc.code {
			t.Errorf("statusOf(%v) = %d %s, want %d %s", tc.err, st, code, tc.status, tc.code)
		}
		if msg := messageOf(tc.err, st, code); msg == "" {
			t.Errorf("messageOf(%v) is empty", tc.err)
		}
	}
	if msg := messageOf(domain.Errorf(domain.ErrSoldOut, "batch b1 is sold out"), 410, CodeSoldOut); msg != "batch b1 is sold out" {
		t.Errorf("domain message not kept: %q", msg)
	}
	if msg := messageOf(errors.New("pq: password=hunter2"), 500, CodeInternal); msg != "internal error" {
		t.Errorf("internal message %q", msg)
	}
}

func TestNewFailsFast(t *testing.T) {
	e := newEnv(t)
	good := Deps{Commands: e.srv.cmd, Batches: e.srv.batches, Repo: e.repo, Idempotency: idempotency.NewMemory(nil),
		Metrics: NewMetrics(prometheus.NewRegistry())}
	if _, err := New(Config{JWTSecret: testSecret}, good); err != nil {
		t.Fatalf("valid deps refused: %v", err)
	}
	for name, mutate := range map[string]func(d *Deps){
		"no commands":    func(d *Deps) { d.Commands = nil },
		"no batches":     func(d *Deps) { d.Batches = nil },
		"no repo":        func(d *Deps) { d.Repo = nil },
		"no idempotency": func(d *Deps) { d.Idempotency = nil },
		"no metrics":     func(d *Deps) { d.Metrics = nil },
		"half handlers":  func(d *Deps) { d.Commands = &commands.Handlers{IssueBatch: e.srv.cmd.IssueBatch} },
	} {
		d := good
		d.Metrics = NewMetrics(prometheus.NewRegistry())
		mutate(&d)
		if _, err := New(Config{JWTSecret: testSecret}, d); err == nil {
			t.Errorf("%s: New succeeded", name)
		}
	}
	if _, err := New(Config{JWTSecret: []byte("short")}, good); err == nil {
		t.Error("short secret accepted")
	}
	if _, err := New(Config{}, good); err == nil {
		t.Error("missing secret accepted")
	}
	// A Registerer that is not a Gatherer needs Deps.Registry.
	d := good
	d.Metrics = NewMetrics(prometheus.WrapRegistererWithPrefix("x_", prometheus.NewRegistry()))
	if _, err := New(Config{JWTSecret: testSecret}, d); err == nil {
		t.Error("no registry to serve accepted")
	}
	d.Registry = prometheus.NewRegistry()
	if _, err := New(Config{JWTSecret: testSecret}, d); err != nil {
		t.Errorf("explicit registry refused: %v", err)
	}
	var _ *readapi.Batches = e.srv.batches
}

func TestConfig(t *testing.T) {
	c := Config{JWTSecret: testSecret}.WithDefaults()
	if c.BodyLimit != "1M" || c.RequestTimeout != 10*time.Second || c.IdempotencyTTL != 24*time.Hour || c.IdempotencyWait != 2*time.Second {
		t.Fatalf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Config{
		{JWTSecret: testSecret[:31], BodyLimit: "1M", RequestTimeout: time.Second, IdempotencyTTL: time.Hour},
		{JWTSecret: testSecret, BodyLimit: "lots", RequestTimeout: time.Second, IdempotencyTTL: time.Hour},
		{JWTSecret: testSecret, BodyLimit: "1M", RequestTimeout: -1, IdempotencyTTL: time.Hour},
		{JWTSecret: testSecret, BodyLimit: "1M", RequestTimeout: time.Second, IdempotencyTTL: -1},
		{JWTSecret: testSecret, BodyLimit: "1M", RequestTimeout: time.Second, IdempotencyTTL: time.Hour, IdempotencyWait: -1},
	} {
		if bad.Validate() == nil {
			t.Errorf("invalid config accepted: %+v", bad)
		}
	}
	for in, want := range map[string]int64{"1M": 1 << 20, "1MiB": 1 << 20, "512K": 512 << 10, "2g": 2 << 30, "100": 100, "64KB": 64 << 10} {
		if got, err := ParseByteSize(in); err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "M", "-1M", "1.5M", "1T", "0"} {
		if _, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) succeeded", in)
		}
	}
}
