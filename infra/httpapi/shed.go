package httpapi

import (
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
)

// shed answers a claim 429 at once when MaxInflightClaims claims are
// already in progress here: under overload a fast refusal with Retry-After
// beats a timeout.
func (s *Server) shed(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		select {
		case s.inflight <- struct{}{}:
			defer func() { <-s.inflight }()
			return next(c)
		default:
			c.Response().Header().Set("Retry-After", "1")
			s.metrics.claim(CodeRateLimited)
			return domain.Errorf(domain.ErrRateLimited, "too many claims in progress; retry in a second")
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
