// Package commands holds one handler per command. Handlers load aggregates
// from the event store, let them decide, append their events with an expected
// version, and keep the Redis stock guard in step.
package commands

import (
	"context"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// ErrGuardEmpty: the stock guard holds no state (Redis lost its data, or
// was never initialized); it must be rebuilt from the event store before it
// admits claims. It matches domain.ErrUnavailable.
var ErrGuardEmpty error = &domain.Error{Kind: domain.ErrUnavailable,
	Message: "the stock guard is being rebuilt from the event store (Redis lost its data); retry shortly"}

// GuardBatch is what the stock guard needs to know of a batch to admit or
// refuse a claim atomically. Version is the batch stream's revision: a sync
// with a version at or below the stored one changes nothing.
type GuardBatch struct {
	BatchID       string
	Version       int64
	RuleVersion   int
	Paused        bool
	Stopped       bool
	Public        bool // audience public; targeted batches only take grants
	PerUserLimit  int
	ClaimStartsAt time.Time
	ClaimEndsAt   time.Time
	TotalStock    int64
}

// Reservation is the outcome of a successful Reserve.
type Reservation struct {
	// CouponID is the coupon the unit is reserved for. When Duplicate is true
	// it is the coupon of an earlier request with the same idempotency key.
	CouponID  string
	Duplicate bool
	// Pending tells, for a duplicate, that the earlier reservation is not yet
	// confirmed (its append may still be in flight, or was lost).
	Pending bool
	// RuleVersion is the batch's rule version the guard checked against.
	RuleVersion int
}

// PendingReservation is a reserved unit whose claim append was not confirmed.
type PendingReservation struct {
	BatchID        string
	CouponID       string
	UserID         string
	IdempotencyKey string
	ReservedAt     time.Time
}

// GuardBatchState is the guard state of one batch derived from the event store.
type GuardBatchState struct {
	Batch    GuardBatch
	Consumed int64             // coupons claimed or granted
	PerUser  map[string]int64  // user id -> coupons held from this batch
	Idem     map[string]string // user id + "\x00" + idempotency key -> coupon id
}

// GrantSlot is what ReserveGrants did for one user.
type GrantSlot int

// GrantSlot values.
const (
	GrantReserved       GrantSlot = iota // a unit is reserved for the user's coupon
	GrantUserHoldsLimit                  // the user holds the batch's per-user limit: skipped
	GrantSoldOut                         // no stock left: not granted
	GrantCouponTaken                     // the coupon id is reserved already (an earlier attempt)
)

// StockGuard admits claims atomically: batch state and claim window,
// audience, per-user limit, remaining stock and idempotency key, in one step.
type StockGuard interface {
	// SyncBatch stores a batch's claim policy and stock; idempotent by Version.
	SyncBatch(ctx context.Context, b GuardBatch) error
	// Reserve takes one unit for userID. Refusals are errors matching
	// domain.ErrNotFound (batch unknown), ErrNotClaimable, ErrAlreadyClaimed
	// or ErrSoldOut. With a non-empty idempotencyKey seen before, it takes
	// nothing and returns the earlier coupon with Duplicate set.
	Reserve(ctx context.Context, batchID, userID, idempotencyKey, couponID string, now time.Time) (Reservation, error)
	// ReserveGrant takes one unit for a grant: no window, pause or audience
	// check, but the per-user limit (ErrAlreadyClaimed) and stock (ErrSoldOut) hold.
	ReserveGrant(ctx context.Context, batchID, userID, couponID string, now time.Time) error
	// ReserveGrants takes one unit per (users[i], couponIDs[i]) in one step,
	// in order, with ReserveGrant's rules, and tells per pair what happened.
	// A stopped batch refuses the whole call (ErrNotClaimable), an unknown
	// one too (ErrNotFound). now is in Unix milliseconds.
	ReserveGrants(ctx context.Context, batchID string, users, couponIDs []string, now int64) ([]GrantSlot, error)
	// ConfirmMany confirms reservations of one batch at once.
	ConfirmMany(ctx context.Context, batchID string, couponIDs []string) error
	// Confirm marks a reservation as durable (its event is stored).
	Confirm(ctx context.Context, batchID, couponID string) error
	// Release gives a reserved unit back and forgets its idempotency key.
	// Releasing an unknown or already settled reservation changes nothing.
	Release(ctx context.Context, batchID, couponID string) error
	// Pending lists unconfirmed reservations made before olderThan.
	Pending(ctx context.Context, olderThan time.Time, limit int) ([]PendingReservation, error)
	// PendingIn lists one batch's unconfirmed reservations made before olderThan.
	PendingIn(ctx context.Context, batchID string, olderThan time.Time) ([]PendingReservation, error)
	// Remaining is the batch's unreserved stock.
	Remaining(ctx context.Context, batchID string) (int64, error)
	// Initialized tells whether the guard holds state (false on an empty Redis).
	Initialized(ctx context.Context) (bool, error)
	// Rebuild replaces the guard's state with state derived from the event
	// store and marks the guard initialized.
	Rebuild(ctx context.Context, batches []GuardBatchState) error
}
