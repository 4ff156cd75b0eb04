package httpapi

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
)

// IdempotencyStore is the port the Idempotency-Key middleware records
// outcomes in (adapter: infra/redisidem; in-process: idempotency.NewMemory).
type IdempotencyStore = idempotency.Store

// StoredResponse is a recorded outcome.
type StoredResponse = idempotency.Response

// Idempotency headers.
const (
	HeaderIdempotencyKey      = "Idempotency-Key"
	HeaderIdempotentReplayed  = "Idempotent-Replayed"
	maxIdempotencyKeyLen      = 255
	idempotencyPollInterval   = 25 * time.Millisecond
	idempotencyLeaseExtraTime = 10 * time.Second
)

// idempotencyKeyOf returns the request's Idempotency-Key ("" when absent):
// at most 255 bytes of printable ASCII, else ErrInvalidArgument.
func idempotencyKeyOf(c echo.Context) (string, error) {
	vals := c.Request().Header.Values(HeaderIdempotencyKey)
	switch len(vals) {
	case 0:
		return "", nil
	case 1:
	default:
		return "", domain.Invalid(HeaderIdempotencyKey, "must be given once")
	}
	k := vals[0]
	if k == "" {
		return "", domain.Invalid(HeaderIdempotencyKey, "must not be empty")
	}
	if len(k) > maxIdempotencyKeyLen {
		return "", domain.Invalid(HeaderIdempotencyKey, "is longer than %d bytes", maxIdempotencyKeyLen)
	}
	for i := 0; i < len(k); i++ {
		if k[i] < 0x20 || k[i] > 0x7e {
			return "", domain.Invalid(HeaderIdempotencyKey, "must be printable ASCII")
		}
	}
	return k, nil
}

// idempotencyMiddleware replays the first outcome of a POST retried with the
// same Idempotency-Key, scoped by (caller, method, path, key). It runs after
// auth. A different body under the same key is a 409; a duplicate of a
// request still running waits up to IdempotencyWait, then gets a 409.
// Outcomes of 5xx are not recorded, so retries run again.
func (s *Server) idempotencyMiddleware(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		req := c.Request()
		if req.Method != http.MethodPost {
			return next(c)
		}
		key, err := idempotencyKeyOf(c)
		if err != nil {
			return err
		}
		if key == "" {
			return next(c)
		}
		body, err := readBody(c)
		if err != nil {
			return err
		}
		p, _ := PrincipalOf(c)
		scope := hashOf("v1", p.Subject, req.Method, req.URL.Path, key)
		fingerprint := hashOf(req.URL.RawQuery, string(body))
		ctx := req.Context()
		lease := s.cfg.RequestTimeout + idempotencyLeaseExtraTime

		deadline := time.Now().Add(s.cfg.IdempotencyWait)
		for {
			e, err := s.idem.Begin(ctx, scope, fingerprint, lease)
			if err != nil {
				return err
			}
			if e.State != idempotency.Acquired && e.Fingerprint != fingerprint {
				return domain.Errorf(domain.ErrConflict, "Idempotency-Key %q was already used with another request", key)
			}
			switch e.State {
			case idempotency.Completed:
				h := c.Response().Header()
				h.Set(HeaderIdempotentReplayed, "true")
				ct := e.Response.ContentType
				if ct == "" {
					ct = echo.MIMEApplicationJSON
				}
				return c.Blob(e.Response.Status, ct, e.Response.Body)
			case idempotency.Acquired:
				return s.runRecorded(c, next, scope, e.Token)
			}
			// In flight: wait for the first request to finish.
			if !time.Now().Before(deadline) {
				return domain.Errorf(domain.ErrConflict, "a request with Idempotency-Key %q is still in progress; retry later", key)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(idempotencyPollInterval):
			}
		}
	}
}

// runRecorded runs the handler, writes its answer (errors included) and
// records it under scope, or frees scope for a 5xx.
func (s *Server) runRecorded(c echo.Context, next echo.HandlerFunc, scope, token string) error {
	res := c.Response()
	rec := &recorder{ResponseWriter: res.Writer}
	res.Writer = rec
	// Record even when the client went away: the work is done.
	reqCtx := c.Request().Context()
	storeCtx := func() (context.Context, context.CancelFunc) {
		return context.WithTimeout(context.WithoutCancel(reqCtx), 5*time.Second)
	}
	defer func() {
		if r := recover(); r != nil {
			// Free the key so a retry runs again, then let the recover
			// middleware answer 500.
			res.Writer = rec.ResponseWriter
			ctx, cancel := storeCtx()
			_ = s.idem.Abandon(ctx, scope, token)
			cancel()
			panic(r)
		}
	}()
	err := next(c)
	if err != nil {
		c.Error(err) // write the error body now, so it is recorded too
	}
	res.Writer = rec.ResponseWriter

	ctx, cancel := storeCtx()
	defer cancel()
	status := res.Status
	if !res.Committed || status >= 500 {
		if aerr := s.idem.Abandon(ctx, scope, token); aerr != nil {
			s.log.WarnContext(ctx, "idempotency: abandon failed", "err", aerr)
		}
		return nil
	}
	resp := StoredResponse{Status: status, ContentType: res.Header().Get(echo.HeaderContentType), Body: rec.buf.Bytes()}
	if cerr := s.idem.Complete(ctx, scope, token, resp, s.cfg.IdempotencyTTL); cerr != nil {
		s.log.WarnContext(ctx, "idempotency: recording the outcome failed", "err", cerr)
		if !errors.Is(cerr, idempotency.ErrNotHeld) {
			_ = s.idem.Abandon(ctx, scope, token)
		}
	}
	return nil
}

// recorder copies what is written to the client.
type recorder struct {
	http.ResponseWriter
	buf bytes.Buffer
}

func (r *recorder) Write(b []byte) (int, error) {
	r.buf.Write(b)
	return r.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

func hashOf(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		var n [8]byte
		l := uint64(len(p))
		for i := range n {
			n[i] = byte(l >> (8 * i))
		}
		h.Write(n[:])
		h.Write([]byte(p))
	}
	return hex.EncodeToString(h.Sum(nil))
}
