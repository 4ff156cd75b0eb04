package projections

import (
	"context"
	"time"
)

// CouponRecord is one coupon as the history index keeps it: its terms, its
// current status and the times of its transitions. Version is the revision
// of the last coupon event folded in; an upsert with a version at or below
// the stored one is skipped.
type CouponRecord struct {
	CouponID    string    `json:"coupon_id"`
	BatchID     string    `json:"batch_id"`
	UserID      string    `json:"user_id"`
	Status      string    `json:"status"` // usable, locked, redeemed, expired
	Source      string    `json:"source"` // claimed, granted
	Kind        string    `json:"kind"`
	Issuer      string    `json:"issuer"`
	Threshold   int64     `json:"threshold"`
	AmountOff   int64     `json:"amount_off"`
	PercentOff  int64     `json:"percent_off"`
	MaxDiscount int64     `json:"max_discount"`
	OrderID     string    `json:"order_id,omitempty"`
	PaymentID   string    `json:"payment_id,omitempty"`
	Discount    int64     `json:"discount"` // given at redemption (0 unless redeemed)
	ObtainedAt  time.Time `json:"obtained_at"`
	ValidFrom   time.Time `json:"valid_from"`
	ValidUntil  time.Time `json:"valid_until"`
	RedeemedAt  time.Time `json:"redeemed_at,omitzero"`
	ExpiredAt   time.Time `json:"expired_at,omitzero"`
	ReturnedAt  time.Time `json:"returned_at,omitzero"`
	// EndedAt is when the coupon became used or expired (zero otherwise): the
	// sort key of history listings, newest first.
	EndedAt   time.Time `json:"ended_at,omitzero"`
	UpdatedAt time.Time `json:"updated_at"`
	Version   uint64    `json:"version"`
}

// HistoryPage is one page of a listing; Next is empty on the last page.
type HistoryPage struct {
	Records []CouponRecord
	Next    string
}

// TimeRange is a half-open interval [From, To); a zero bound is open.
type TimeRange struct {
	From, To time.Time
}

// BatchReport sums a batch's coupons: claimed (obtained in range), redeemed
// and expired (in range), and the discount given by the redemptions.
type BatchReport struct {
	BatchID       string `json:"batch_id"`
	Claimed       int64  `json:"claimed"`
	Redeemed      int64  `json:"redeemed"`
	Expired       int64  `json:"expired"`
	TotalDiscount int64  `json:"total_discount"`
}

// UserReport sums one shopper's redemptions in a range.
type UserReport struct {
	UserID        string `json:"user_id"`
	Redeemed      int64  `json:"redeemed"`
	TotalDiscount int64  `json:"total_discount"`
}

// HistoryIndex is the port of the history index (used and expired coupons,
// and every coupon's transitions for reports). Adapters: embedded (bbolt)
// and Elasticsearch. One conformance suite runs against both.
type HistoryIndex interface {
	// Upsert writes full records; a record whose Version is at or below the
	// stored one for that coupon is skipped (at-least-once delivery is safe).
	Upsert(ctx context.Context, recs []CouponRecord) error
	// Get returns the stored records of the given coupons (missing ones are absent).
	Get(ctx context.Context, couponIDs []string) (map[string]CouponRecord, error)
	// ListByUser lists a user's coupons with one of the statuses, newest
	// EndedAt first (ties by coupon id descending), keyset-paged by cursor
	// so pages stay stable while records are added.
	ListByUser(ctx context.Context, userID string, statuses []string, cursor string, limit int) (HistoryPage, error)
	// BatchReport sums a batch's coupons over the range.
	BatchReport(ctx context.Context, batchID string, r TimeRange) (BatchReport, error)
	// TopBatches ranks batches by redemptions in the range (ties: discount, then id).
	TopBatches(ctx context.Context, r TimeRange, limit int) ([]BatchReport, error)
	// TopUsers ranks users by redemptions in the range (ties: discount, then id).
	TopUsers(ctx context.Context, r TimeRange, limit int) ([]UserReport, error)
	// Checkpoint and SaveCheckpoint keep the projector's position with the index.
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
	// Rebuild starts a fresh generation of the index; reads keep using the
	// current one until the returned rebuild is committed.
	Rebuild(ctx context.Context) (HistoryRebuild, error)
}

// HistoryRebuild writes a fresh generation of the index.
type HistoryRebuild interface {
	Upsert(ctx context.Context, recs []CouponRecord) error
	Get(ctx context.Context, couponIDs []string) (map[string]CouponRecord, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
	// Commit makes the new generation the one reads use (an alias flip) and
	// drops the old one.
	Commit(ctx context.Context) error
	// Abort drops the new generation.
	Abort(ctx context.Context) error
}
