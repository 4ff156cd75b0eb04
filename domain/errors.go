package domain

import (
	"errors"
	"fmt"
)

// Sentinel errors. Adapters map driver errors onto these; the HTTP layer maps
// them onto status codes in one place (infra/httpapi).
var (
	ErrInvalidArgument = errors.New("invalid_argument")
	ErrNotFound        = errors.New("not_found")
	ErrConflict        = errors.New("conflict")
	ErrConcurrency     = errors.New("concurrency")
	ErrForbidden       = errors.New("forbidden")
	ErrAlreadyClaimed  = errors.New("already_claimed")
	ErrSoldOut         = errors.New("sold_out")
	ErrNotClaimable    = errors.New("not_claimable")
	ErrOutsideValidity = errors.New("outside_validity")
	ErrRateLimited     = errors.New("rate_limited")
	ErrUnavailable     = errors.New("unavailable")
)

// Error is a domain error: a sentinel Kind plus a message for humans.
type Error struct {
	Kind    error
	Message string
}

func (e *Error) Error() string { return e.Message }

// Unwrap lets errors.Is match the sentinel kind.
func (e *Error) Unwrap() error { return e.Kind }

// Errorf builds an *Error of the given kind.
func Errorf(kind error, format string, args ...any) error {
	return &Error{Kind: kind, Message: fmt.Sprintf(format, args...)}
}

// Invalid is a shorthand for an ErrInvalidArgument naming a field.
func Invalid(field, format string, args ...any) error {
	return &Error{Kind: ErrInvalidArgument, Message: field + ": " + fmt.Sprintf(format, args...)}
}
