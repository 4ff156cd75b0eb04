package esdbstore

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/couponsd/couponsd/domain"
)

var (
	// ErrClosed is returned by calls on a closed store. It matches
	// domain.ErrUnavailable.
	ErrClosed = domain.Errorf(domain.ErrUnavailable, "esdbstore: store closed")
	// ErrOutcomeUnknown marks an append that may or may not have been
	// written: the connection failed or the caller gave up while it was
	// under way. Retrying it with the same event IDs and the same expected
	// version is safe: the server recognizes the events and does not write
	// them twice.
	ErrOutcomeUnknown = errors.New("esdbstore: append outcome unknown")
	// ErrPositionUnavailable is returned when the server does not report
	// the $all position of events read from a stream (EventStoreDB before
	// 22.6, or events written in explicit transactions).
	ErrPositionUnavailable = errors.New("esdbstore: the server did not report the event's $all position (EventStoreDB 22.6 or later is required)")
)

// Error is an error of the store: a message, the kinds it matches with
// errors.Is (domain sentinels, context errors, ErrOutcomeUnknown) and the
// underlying client error, reachable with errors.As (e.g. *esdb.Error).
type Error struct {
	Msg   string
	Kinds []error
	Cause error
}

func (e *Error) Error() string {
	if e.Cause == nil {
		return e.Msg
	}
	return e.Msg + ": " + e.Cause.Error()
}

// Unwrap returns the kinds and the cause.
func (e *Error) Unwrap() []error {
	out := append([]error(nil), e.Kinds...)
	if e.Cause != nil {
		out = append(out, e.Cause)
	}
	return out
}

// esdbError finds the client's error in err's chain. (esdb.FromError is of
// no use here: it reports ok=true only for a nil error, and does not look
// through wrapping.)
func esdbError(err error) (*esdb.Error, bool) {
	var e *esdb.Error
	if errors.As(err, &e) {
		return e, true
	}
	return nil, false
}

// isStreamNotFound tells whether err is the client's answer to a
// stream_not_found message (a missing or soft-deleted stream). A gRPC
// NotFound status (e.g. "leader info available") maps onto the same code
// and is not a missing stream.
func isStreamNotFound(err error) bool {
	e, ok := esdbError(err)
	if !ok || e.Code() != esdb.ErrorCodeResourceNotFound {
		return false
	}
	_, isStatus := status.FromError(e.Err())
	return !isStatus
}

// isConnectionClosed tells whether the client gave up: it closes itself for
// good when a (re)discovery fails.
func isConnectionClosed(err error) bool {
	e, ok := esdbError(err)
	return ok && e.Code() == esdb.ErrorCodeConnectionClosed
}

// isInvalidPosition tells whether the server may have refused to read $all
// from a position that is not the start of a record: EventStoreDB answers
// InvalidArgument ("Trying to read from an invalid position."); older
// versions may fail with an unknown error instead.
func isInvalidPosition(err error) bool {
	if transient(err) || errors.Is(err, ErrPositionUnavailable) || errors.Is(err, domain.ErrUnavailable) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return false
	}
	switch status.Code(err) {
	case codes.InvalidArgument, codes.Unknown, codes.Internal:
		return true
	}
	return false
}

// transient tells whether err is a connection or server availability
// problem, i.e. worth retrying later.
func transient(err error) bool {
	// grpc-go reports a send on a broken stream as io.EOF (the status would
	// come from a receive, which the client does not do).
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, errClientReplaced) {
		return true
	}
	if e, ok := esdbError(err); ok {
		switch e.Code() {
		case esdb.ErrorUnavailable, esdb.ErrorCodeConnectionClosed, esdb.ErrorCodeDeadlineExceeded,
			esdb.ErrorCodeNotLeader, esdb.ErrorAborted:
			return true
		}
	}
	switch status.Code(err) {
	case codes.Unavailable, codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.ResourceExhausted:
		return true
	}
	return false
}

// mapErr turns an error of the client into the store's errors:
// a cancelled or expired caller context wins (the error matches ctx.Err()),
// wrong expected version matches domain.ErrConcurrency, connection and
// availability problems match domain.ErrUnavailable.
func (s *Store) mapErr(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	var own *Error
	if errors.As(err, &own) || errors.Is(err, ErrClosed) {
		return err
	}
	msg := "esdbstore: " + op
	if cerr := ctx.Err(); cerr != nil {
		return &Error{Msg: msg, Kinds: []error{cerr}, Cause: err}
	}
	if s.ctx.Err() != nil {
		return ErrClosed
	}
	if e, ok := esdbError(err); ok && e.Code() == esdb.ErrorCodeWrongExpectedVersion {
		return &Error{Msg: msg + ": wrong expected version", Kinds: []error{domain.ErrConcurrency}, Cause: err}
	}
	if e, ok := esdbError(err); ok && e.Code() == esdb.ErrorCodeStreamDeleted {
		return &Error{Msg: msg + ": stream deleted", Kinds: []error{domain.ErrConflict}, Cause: err}
	}
	if errors.Is(err, errRequestTimeout) || transient(err) {
		return &Error{Msg: msg + ": event store unavailable", Kinds: []error{domain.ErrUnavailable}, Cause: err}
	}
	if status.Code(err) == codes.InvalidArgument { // e.g. maximum append size exceeded
		return &Error{Msg: msg + ": rejected by the server", Kinds: []error{domain.ErrInvalidArgument}, Cause: err}
	}
	return &Error{Msg: msg, Cause: err}
}

// errRequestTimeout is the cause when Options.RequestTimeout expires.
var errRequestTimeout = errors.New("request timeout")

func panicError(v any) error {
	return fmt.Errorf("esdb client panicked: %v", v)
}
