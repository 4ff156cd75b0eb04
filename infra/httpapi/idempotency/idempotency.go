// Package idempotency is the port behind the HTTP layer's Idempotency-Key
// support: a store that records the first outcome of a request so a retry
// with the same key gets that outcome back instead of running again.
//
// It lives in its own package (re-exported by httpapi) so that adapters such
// as infra/redisidem implement it without importing the HTTP layer.
package idempotency

import (
	"context"
	"errors"
	"time"
)

// Response is a recorded HTTP outcome.
type Response struct {
	Status      int    `json:"status"`
	ContentType string `json:"content_type,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

// State tells what Begin found under a key.
type State int

// States returned by Begin.
const (
	// Acquired: the key was free and now belongs to the caller, who runs the
	// request and then calls Complete or Abandon with Entry.Token.
	Acquired State = iota + 1
	// InFlight: another request holds the key and has not finished.
	InFlight
	// Completed: an outcome is recorded under the key (Entry.Response).
	Completed
)

func (s State) String() string {
	switch s {
	case Acquired:
		return "acquired"
	case InFlight:
		return "in_flight"
	case Completed:
		return "completed"
	default:
		return "unknown"
	}
}

// Entry is the answer of Begin.
type Entry struct {
	State State
	// Fingerprint is the request hash of the request that holds the key or
	// recorded the outcome (the caller's own for Acquired).
	Fingerprint string
	// Token identifies the caller's hold on an Acquired key.
	Token string
	// Response is the recorded outcome, for Completed.
	Response *Response
}

// ErrNotHeld is returned by Complete when the caller's hold on the key is
// gone (its lease ran out and the key expired or was taken by another request).
var ErrNotHeld = errors.New("idempotency: key no longer held by this request")

// Store records request outcomes by key. Keys are opaque, already scoped by
// the caller (who, which method and path, which Idempotency-Key).
type Store interface {
	// Begin takes key for a request with the given fingerprint: when the key
	// is free it is held for lease (so a crashed holder does not block it
	// forever) and Begin returns Acquired; otherwise it returns InFlight or
	// Completed with what is stored. Begin never blocks on other requests.
	Begin(ctx context.Context, key, fingerprint string, lease time.Duration) (Entry, error)
	// Complete records resp under key for ttl, if the caller (token) still
	// holds the key; otherwise it returns ErrNotHeld and changes nothing.
	Complete(ctx context.Context, key, token string, resp Response, ttl time.Duration) error
	// Abandon frees key if the caller (token) still holds it, so a retry runs
	// the request again. Abandoning a key not held changes nothing.
	Abandon(ctx context.Context, key, token string) error
}
