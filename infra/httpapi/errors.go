package httpapi

import (
	"context"
	"errors"
	"log/slog"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
)

// Error kinds of the HTTP layer itself (the domain's are in domain/errors.go).
var (
	// ErrUnauthenticated: missing, malformed, expired or forged bearer token.
	ErrUnauthenticated = errors.New("unauthenticated")
	// ErrPayloadTooLarge: the request body is over the configured limit.
	ErrPayloadTooLarge = errors.New("payload_too_large")
)

// Error codes of the error body (spec/api.md).
const (
	CodeInvalidArgument  = "invalid_argument"
	CodeUnauthenticated  = "unauthenticated"
	CodeForbidden        = "forbidden"
	CodeNotFound         = "not_found"
	CodeMethodNotAllowed = "method_not_allowed"
	CodeAlreadyClaimed   = "already_claimed"
	CodeConflict         = "conflict"
	CodeSoldOut          = "sold_out"
	CodePayloadTooLarge  = "payload_too_large"
	CodeNotClaimable     = "not_claimable"
	CodeOutsideValidity  = "outside_validity"
	CodeRateLimited      = "rate_limited"
	CodeUnavailable      = "unavailable"
	CodeInternal         = "internal"
)

// ErrorBody is the body of every 4xx and 5xx answer.
type ErrorBody struct {
	Error ErrorDetail `json:"error"`
}

// ErrorDetail is the machine code and the human message of an error.
type ErrorDetail struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

var kindStatus = []struct {
	kind   error
	status int
	code   string
}{
	{domain.ErrInvalidArgument, http.StatusBadRequest, CodeInvalidArgument},
	{ErrUnauthenticated, http.StatusUnauthorized, CodeUnauthenticated},
	{domain.ErrForbidden, http.StatusForbidden, CodeForbidden},
	{domain.ErrNotFound, http.StatusNotFound, CodeNotFound},
	{domain.ErrAlreadyClaimed, http.StatusConflict, CodeAlreadyClaimed},
	{domain.ErrConflict, http.StatusConflict, CodeConflict},
	{domain.ErrConcurrency, http.StatusConflict, CodeConflict},
	{domain.ErrSoldOut, http.StatusGone, CodeSoldOut},
	{ErrPayloadTooLarge, http.StatusRequestEntityTooLarge, CodePayloadTooLarge},
	{domain.ErrNotClaimable, http.StatusUnprocessableEntity, CodeNotClaimable},
	{domain.ErrOutsideValidity, http.StatusUnprocessableEntity, CodeOutsideValidity},
	{domain.ErrRateLimited, http.StatusTooManyRequests, CodeRateLimited},
	{domain.ErrUnavailable, http.StatusServiceUnavailable, CodeUnavailable},
	{context.DeadlineExceeded, http.StatusServiceUnavailable, CodeUnavailable},
	{context.Canceled, http.StatusServiceUnavailable, CodeUnavailable},
}

// statusOf maps an error onto its HTTP status and error code. It is the one
// place where errors become statuses.
func statusOf(err error) (status int, code string) {
	for _, k := range kindStatus {
		if errors.Is(err, k.kind) {
			return k.status, k.code
		}
	}
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return http.StatusRequestEntityTooLarge, CodePayloadTooLarge
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		return he.Code, codeOfStatus(he.Code)
	}
	return http.StatusInternalServerError, CodeInternal
}

func codeOfStatus(status int) string {
	switch status {
	case http.StatusBadRequest:
		return CodeInvalidArgument
	case http.StatusUnauthorized:
		return CodeUnauthenticated
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodePayloadTooLarge
	case http.StatusTooManyRequests:
		return CodeRateLimited
	case http.StatusServiceUnavailable:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalidArgument
}

// messageOf is the human message: the domain error's own for domain errors,
// a fixed text otherwise (internals are never shown).
func messageOf(err error, status int, code string) string {
	if status >= 500 && code == CodeInternal {
		return "internal error"
	}
	var de *domain.Error
	if errors.As(err, &de) && de.Message != "" {
		return de.Message
	}
	var he *echo.HTTPError
	if errors.As(err, &he) {
		switch he.Code {
		case http.StatusNotFound:
			return "no such route"
		case http.StatusMethodNotAllowed:
			return "method not allowed on this route"
		case http.StatusRequestEntityTooLarge:
			return "request body is too large"
		}
	}
	switch code {
	case CodePayloadTooLarge:
		return "request body is too large"
	case CodeUnavailable:
		if errors.Is(err, context.DeadlineExceeded) {
			return "the request timed out; retry later"
		}
		return "a back end is unavailable; retry later"
	case CodeConflict:
		return "conflicting concurrent change; retry"
	case CodeUnauthenticated:
		return "authentication required"
	}
	return http.StatusText(status)
}

// handleError is the Echo HTTPErrorHandler: it writes every error with the
// {"error": {"code", "message"}} body.
func (s *Server) handleError(err error, c echo.Context) {
	status, code := statusOf(err)
	msg := messageOf(err, status, code)
	req := c.Request()
	attrs := []any{"method", req.Method, "path", req.URL.Path, "route", c.Path(), "status", status, "code", code, "err", err}
	if status >= 500 {
		s.log.ErrorContext(req.Context(), "request failed", attrs...)
	} else {
		s.log.DebugContext(req.Context(), "request refused", attrs...)
	}
	if c.Response().Committed {
		return
	}
	if status == http.StatusUnauthorized {
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="couponsd"`)
	}
	if req.Method == http.MethodHead {
		err = c.NoContent(status)
	} else {
		err = c.JSON(status, ErrorBody{Error: ErrorDetail{Code: code, Message: msg}})
	}
	if err != nil {
		s.log.WarnContext(req.Context(), "writing an error response failed", slog.Any("err", err))
	}
}
