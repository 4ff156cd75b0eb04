package httpapi

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/labstack/echo/v4"
)

// shedBody is the prebuilt answer of a shed claim.
var shedBody = []byte(`{"error":{"code":"rate_limited","message":"too many claims in progress; retry in a second"}}` + "\n")

// shed answers a claim 429 at once when MaxInflightClaims claims are
// already in progress here: under overload a fast refusal with Retry-After
// beats a timeout. It runs before routing and every other middleware (an
// Echo Pre middleware) and writes a prebuilt body, so a refusal costs next
// to nothing.
func (s *Server) shed(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		r := c.Request()
		if r.Method != http.MethodPost || !strings.HasPrefix(r.URL.Path, "/v1/batches/") || !strings.HasSuffix(r.URL.Path, "/claim") {
			return next(c)
		}
		select {
		case s.inflight <- struct{}{}:
			defer func() { <-s.inflight }()
			return next(c)
		default:
			h := c.Response().Header()
			h.Set("Retry-After", "1")
			h.Set(echo.HeaderContentType, echo.MIMEApplicationJSON)
			s.metrics.claim(CodeRateLimited)
			return c.Blob(http.StatusTooManyRequests, echo.MIMEApplicationJSON, shedBody)
		}
	}
}

// limitClaims applies the per-shopper claim rate limit.
func (s *Server) limitClaims(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if s.limiter == nil {
			return next(c)
		}
		retry, err := s.limiter.Allow(c.Request().Context(), "claim:"+caller(c))
		if err != nil {
			if retry > 0 {
				secs := int(retry.Seconds() + 0.999)
				c.Response().Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			}
			_, code := statusOf(err)
			s.metrics.claim(code)
			return err
		}
		return next(c)
	}
}
