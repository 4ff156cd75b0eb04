// Package httpapi is the HTTP adapter of couponsd: an Echo server exposing
// the commands and queries under /v1 (spec/api.md, openapi.yaml), with JWT
// auth, roles, Idempotency-Key replays, one error mapping, Prometheus
// metrics and slog request logs.
package httpapi

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"
	"github.com/labstack/echo/v4/middleware"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/readapi"
)

// Deps are the server's collaborators.
type Deps struct {
	// Commands are the command handlers (commands.NewHandlers). Required.
	Commands *commands.Handlers
	// Batches answers GET /v1/batches/{id}. Required.
	Batches *readapi.Batches
	// Repo reads event streams (audit trail, claim positions). Required.
	Repo *commands.Repository
	// Idempotency records POST outcomes by Idempotency-Key. Required.
	Idempotency IdempotencyStore
	// Metrics from NewMetrics. Required.
	Metrics *Metrics
	// Registry is what GET /metrics serves (the registry Metrics were
	// registered on, plus whatever else the composition root adds). When nil,
	// the registry given to NewMetrics is served if it is a Gatherer.
	Registry prometheus.Gatherer
	// Logger defaults to slog.Default().
	Logger *slog.Logger
	// NewID makes batch and coupon ids; defaults to UUID v7 strings.
	NewID func() string
	// Clock defaults to domain.SystemClock; it also checks token expiry.
	Clock domain.Clock
	// Queries serve the read side (listings, reports, readiness). Optional:
	// without them those routes answer 503.
	Queries *Queries
	// WakeGrants, when set, is called after a grant job is created so the
	// grant worker starts it at once.
	WakeGrants func()
	// Admin serves the operator endpoints (replay, verify). Optional.
	Admin *Admin
	// ClaimLimiter limits claims per shopper (429 past it). Optional.
	ClaimLimiter ClaimLimiter
	// Reminders subscribes shoppers to a batch's claim opening
	// (commands.NewSubscribeReminderHandler). Optional: without it
	// POST /v1/batches/{id}/reminders answers 503.
	Reminders ReminderSubscriber
}

// ClaimLimiter counts a shopper's claims; past the limit it returns an error
// matching domain.ErrRateLimited and when to retry.
type ClaimLimiter interface {
	Allow(ctx context.Context, subject string) (retryAfter time.Duration, err error)
}

// Middlewares are the building blocks of routes, for packages adding routes
// through Server.RegisterRoutes.
type Middlewares struct {
	// Auth requires a valid bearer token (401 otherwise); PrincipalOf then
	// returns the caller.
	Auth echo.MiddlewareFunc
	// Require admits only the given roles (403 otherwise); put it after Auth.
	Require func(roles ...string) echo.MiddlewareFunc
	// Idempotency replays POST outcomes by Idempotency-Key; put it after
	// Require (it scopes keys by the caller).
	Idempotency echo.MiddlewareFunc
}

// Server is the HTTP API.
type Server struct {
	cfg       Config
	bodyLimit int64
	// uploadLimit caps grant list uploads.
	uploadLimit int64
	e           *echo.Echo
	cmd         *commands.Handlers
	batches     *readapi.Batches
	repo        *commands.Repository
	idem        IdempotencyStore
	metrics     *Metrics
	log         *slog.Logger
	newID       func() string
	clock       domain.Clock
	mw          Middlewares
	gatherer    prometheus.Gatherer
	q           *Queries
	wakeGrants  func()
	admin       *Admin
	limiter     ClaimLimiter
	inflight    chan struct{}
}

// New builds the server and registers its routes. It fails fast on an
// invalid config or missing dependencies.
func New(cfg Config, deps Deps) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if deps.Commands == nil || deps.Batches == nil || deps.Repo == nil || deps.Idempotency == nil || deps.Metrics == nil {
		return nil, errors.New("httpapi: New needs Commands, Batches, Repo, Idempotency and Metrics")
	}
	h := deps.Commands
	if h.IssueBatch == nil || h.ChangeRules == nil || h.Activity == nil || h.AddStock == nil || h.Claim == nil ||
		h.Lock == nil || h.Redeem == nil || h.Unlock == nil || h.Return == nil {
		return nil, errors.New("httpapi: New needs every command handler (use commands.NewHandlers)")
	}
	gatherer := deps.Registry
	if gatherer == nil {
		gatherer = deps.Metrics.gatherer
	}
	if gatherer == nil {
		return nil, errors.New("httpapi: New needs Deps.Registry to serve /metrics")
	}
	limit, _ := ParseByteSize(cfg.BodyLimit) // checked by Validate
	uploadLimit, _ := ParseByteSize(cfg.GrantUploadLimit)
	s := &Server{
		cfg: cfg, bodyLimit: limit, uploadLimit: uploadLimit, cmd: deps.Commands, batches: deps.Batches, repo: deps.Repo,
		idem: deps.Idempotency, metrics: deps.Metrics, gatherer: gatherer, log: deps.Logger, newID: deps.NewID, clock: deps.Clock, q: deps.Queries, wakeGrants: deps.WakeGrants, admin: deps.Admin, limiter: deps.ClaimLimiter,
	}
	if s.log == nil {
		s.log = slog.Default()
	}
	if s.newID == nil {
		s.newID = newUUIDv7
	}
	if s.clock == nil {
		s.clock = domain.SystemClock{}
	}
	auth, err := s.authMiddleware()
	if err != nil {
		return nil, fmt.Errorf("httpapi: auth middleware: %w", err)
	}
	s.mw = Middlewares{Auth: auth, Require: requireRole, Idempotency: s.idempotencyMiddleware}

	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.Pre(s.shed)
	e.Use(s.observe, s.recoverPanics, middleware.RequestID(), s.timeout, s.limitBody)
	s.e = e
	s.inflight = make(chan struct{}, s.cfg.MaxInflightClaims)
	s.routes()
	s.queryRoutes()
	s.grantRoutes()
	s.reminderRoutes(deps.Reminders)
	s.checkoutRoutes()
	s.adminRoutes()
	return s, nil
}

func newUUIDv7() string {
	id, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return id.String()
}

// Echo returns the Echo instance (an http.Handler), for serving and tests.
func (s *Server) Echo() *echo.Echo { return s.e }

// Routes lists the registered routes.
func (s *Server) Routes() []*echo.Route { return s.e.Routes() }

// Middlewares returns the auth, role and idempotency middlewares.
func (s *Server) Middlewares() Middlewares { return s.mw }

// RegisterRoutes is the extension point for routes added by other packages
// (queries such as GET /v1/me/coupons): fn registers them on the Echo
// instance with the same middlewares. The global middlewares (error
// mapping, metrics, logs, timeouts, body limit) apply to them as well.
// Prefer Handle for the common case. Pass middlewares per route: do not
// use echo.Group.Use or Group(prefix, mw...), which registers catch-all
// routes that turn unknown paths under the prefix into 401s. Document every
// new route in openapi.yaml (TestOpenAPIDocumentsEveryRoute checks it).
func (s *Server) RegisterRoutes(fn func(e *echo.Echo, mw Middlewares)) { fn(s.e, s.mw) }

// Handle registers method+path (Echo syntax, e.g. /v1/me/coupons or
// /v1/users/:uid/coupons). With roles, the route requires a bearer token
// with one of them; without, it is public. POST routes of authenticated
// callers also get Idempotency-Key replays. Extra middlewares run last,
// just before h.
func (s *Server) Handle(method, path string, h echo.HandlerFunc, roles []string, extra ...echo.MiddlewareFunc) *echo.Route {
	var m []echo.MiddlewareFunc
	if len(roles) > 0 {
		m = append(m, s.mw.Auth, s.mw.Require(roles...))
		if method == http.MethodPost {
			m = append(m, s.mw.Idempotency)
		}
	}
	m = append(m, extra...)
	return s.e.Add(method, path, h, m...)
}

// HTTPServer returns an http.Server for addr with sane timeouts.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{
		Addr:              addr,
		Handler:           s.e,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       s.cfg.RequestTimeout + 5*time.Second,
		WriteTimeout:      s.cfg.RequestTimeout + 10*time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// observe is the outermost middleware: it writes errors through the error
// handler, then records the request duration and logs the request.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		route := c.Path()
		var he *echo.HTTPError
		if errors.As(err, &he) && he.Code == http.StatusNotFound || route == "" {
			route = "unmatched" // keep label cardinality bounded
		}
		req, res := c.Request(), c.Response()
		d := time.Since(start)
		status := res.Status
		s.metrics.duration.WithLabelValues(route, req.Method, fmt.Sprint(status)).Observe(d.Seconds())
		s.log.DebugContext(req.Context(), "http request", "method", req.Method, "route", route, "path", req.URL.Path,
			"status", status, "duration", d, "request_id", res.Header().Get(echo.HeaderXRequestID))
		return nil
	}
}

// recoverPanics turns a handler panic into a logged 500.
func (s *Server) recoverPanics(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				s.log.ErrorContext(c.Request().Context(), "panic in handler", "panic", fmt.Sprint(r), "stack", string(debug.Stack()))
				err = fmt.Errorf("panic: %v", r)
			}
		}()
		return next(c)
	}
}

// timeout bounds the request's work by RequestTimeout.
func (s *Server) timeout(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		d := s.cfg.RequestTimeout
		if isGrantUpload(c) {
			d = s.cfg.GrantUploadTimeout
		}
		ctx, cancel := context.WithTimeout(c.Request().Context(), d)
		defer cancel()
		c.SetRequest(c.Request().WithContext(ctx))
		return next(c)
	}
}

// limitBody answers 413 for bodies over the limit.
func (s *Server) limitBody(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		limit := s.bodyLimit
		if isGrantUpload(c) {
			limit = s.uploadLimit
		}
		if req.ContentLength > limit {
			return domain.Errorf(ErrPayloadTooLarge, "request body is larger than %d bytes", limit)
		}
		if req.Body != nil && req.Body != http.NoBody {
			req.Body = http.MaxBytesReader(c.Response(), req.Body, limit)
		}
		return next(c)
	}
}

// Metrics returns the server's metrics.
func (s *Server) Metrics() *Metrics { return s.metrics }
