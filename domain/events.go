package domain

import "time"

// Stored event names. They are part of the storage format: never rename one;
// add a .v2 instead.
const (
	EvBatchIssued       = "batch.issued.v1"
	EvBatchRulesChanged = "batch.rules_changed.v1"
	EvBatchPaused       = "batch.paused.v1"
	EvBatchResumed      = "batch.resumed.v1"
	EvBatchStopped      = "batch.stopped.v1"
	EvBatchStockAdded   = "batch.stock_added.v1"

	EvCouponClaimed     = "coupon.claimed.v1"
	EvCouponGranted     = "coupon.granted.v1"
	EvCouponLocked      = "coupon.locked.v1"
	EvCouponUnlocked    = "coupon.unlocked.v1"
	EvCouponRedeemed    = "coupon.redeemed.v1"
	EvCouponReturned    = "coupon.returned.v1"
	EvCouponExpired     = "coupon.expired.v1"
	EvCouponClaimVoided = "coupon.claim_voided.v1"
)

// allEvents lists every event of the service; each area keeps its own list.
func allEvents() []Event {
	var out []Event
	out = append(out, batchAndCouponEvents()...)
	out = append(out, grantJobEvents()...)
	out = append(out, reminderEvents()...)
	return out
}

func batchAndCouponEvents() []Event {
	return []Event{
		&BatchIssued{}, &BatchRulesChanged{}, &BatchPaused{}, &BatchResumed{}, &BatchStopped{}, &BatchStockAdded{},
		&CouponClaimed{}, &CouponGranted{}, &CouponLocked{}, &CouponUnlocked{}, &CouponRedeemed{},
		&CouponReturned{}, &CouponExpired{}, &CouponClaimVoided{},
	}
}

// BatchIssued: a coupon batch (template + stock) was created.
type BatchIssued struct {
	BatchID    string    `json:"batch_id"`
	Rules      Rules     `json:"rules"`
	TotalStock int64     `json:"total_stock"`
	IssuedBy   string    `json:"issued_by"`
	At         time.Time `json:"at"`
}

// BatchRulesChanged: the rules of a not yet started batch were replaced.
type BatchRulesChanged struct {
	BatchID     string    `json:"batch_id"`
	Rules       Rules     `json:"rules"`
	RuleVersion int       `json:"rule_version"`
	By          string    `json:"by"`
	At          time.Time `json:"at"`
}

// BatchPaused: claims are suspended.
type BatchPaused struct {
	BatchID string    `json:"batch_id"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// BatchResumed: claims are allowed again.
type BatchResumed struct {
	BatchID string    `json:"batch_id"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// BatchStopped: the batch is closed for good.
type BatchStopped struct {
	BatchID string    `json:"batch_id"`
	By      string    `json:"by"`
	At      time.Time `json:"at"`
}

// BatchStockAdded: more stock. IdempotencyKey makes a retried request a no-op.
type BatchStockAdded struct {
	BatchID        string    `json:"batch_id"`
	Added          int64     `json:"added"`
	TotalStock     int64     `json:"total_stock"`
	IdempotencyKey string    `json:"idempotency_key,omitempty"`
	By             string    `json:"by"`
	At             time.Time `json:"at"`
}

// CouponTerms are the facts of a coupon fixed at claim time: the batch's rules
// as they were (RuleVersion), and the coupon's own validity window.
type CouponTerms struct {
	BatchID     string    `json:"batch_id"`
	RuleVersion int       `json:"rule_version"`
	Kind        Kind      `json:"kind"`
	Issuer      string    `json:"issuer"`
	Threshold   int64     `json:"threshold"`
	AmountOff   int64     `json:"amount_off"`
	PercentOff  int64     `json:"percent_off"`
	MaxDiscount int64     `json:"max_discount"`
	Scope       Scope     `json:"scope"`
	Exclusive   bool      `json:"exclusive"`
	ValidFrom   time.Time `json:"valid_from"`
	ValidUntil  time.Time `json:"valid_until"`
}

// CouponClaimed: a shopper claimed a coupon of a public batch.
type CouponClaimed struct {
	CouponID       string      `json:"coupon_id"`
	UserID         string      `json:"user_id"`
	IdempotencyKey string      `json:"idempotency_key,omitempty"`
	Terms          CouponTerms `json:"terms"`
	At             time.Time   `json:"at"`
}

// CouponGranted: the back office gave a coupon to a shopper.
type CouponGranted struct {
	CouponID string      `json:"coupon_id"`
	UserID   string      `json:"user_id"`
	JobID    string      `json:"job_id,omitempty"`
	Terms    CouponTerms `json:"terms"`
	At       time.Time   `json:"at"`
}

// CouponLocked: held for an order (TCC try) until HoldUntil.
type CouponLocked struct {
	CouponID  string    `json:"coupon_id"`
	BatchID   string    `json:"batch_id"`
	UserID    string    `json:"user_id"`
	OrderID   string    `json:"order_id"`
	HoldUntil time.Time `json:"hold_until"`
	At        time.Time `json:"at"`
}

// Unlock reasons.
const (
	UnlockOrderCancelled = "order_cancelled"
	UnlockHoldExpired    = "hold_expired"
)

// CouponUnlocked: the hold was released; the coupon is usable again.
type CouponUnlocked struct {
	CouponID string    `json:"coupon_id"`
	BatchID  string    `json:"batch_id"`
	UserID   string    `json:"user_id"`
	OrderID  string    `json:"order_id"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// CouponRedeemed: the order was paid; the coupon is used.
type CouponRedeemed struct {
	CouponID  string    `json:"coupon_id"`
	BatchID   string    `json:"batch_id"`
	UserID    string    `json:"user_id"`
	OrderID   string    `json:"order_id"`
	PaymentID string    `json:"payment_id"`
	Discount  int64     `json:"discount"` // minor units given, as reported by the order system
	At        time.Time `json:"at"`
}

// CouponReturned: the order was refunded; UsableAgain tells whether the
// coupon came back (still valid) or expires with this return.
type CouponReturned struct {
	CouponID    string    `json:"coupon_id"`
	BatchID     string    `json:"batch_id"`
	UserID      string    `json:"user_id"`
	OrderID     string    `json:"order_id"`
	UsableAgain bool      `json:"usable_again"`
	At          time.Time `json:"at"`
}

// CouponExpired: validity ended while the coupon was usable.
type CouponExpired struct {
	CouponID   string    `json:"coupon_id"`
	BatchID    string    `json:"batch_id"`
	UserID     string    `json:"user_id"`
	ValidUntil time.Time `json:"valid_until"`
	At         time.Time `json:"at"`
}

// CouponClaimVoided: a stock reservation whose claim append never completed
// was abandoned by the reconciler. Written with NoStream, it guarantees the
// late claim append can never land; the coupon never existed for the shopper.
type CouponClaimVoided struct {
	CouponID string    `json:"coupon_id"`
	BatchID  string    `json:"batch_id"`
	UserID   string    `json:"user_id"`
	Reason   string    `json:"reason"`
	At       time.Time `json:"at"`
}

// EventName implementations: explicit, never reflected from the type.
func (*BatchIssued) EventName() string       { return EvBatchIssued }
func (*BatchRulesChanged) EventName() string { return EvBatchRulesChanged }
func (*BatchPaused) EventName() string       { return EvBatchPaused }
func (*BatchResumed) EventName() string      { return EvBatchResumed }
func (*BatchStopped) EventName() string      { return EvBatchStopped }
func (*BatchStockAdded) EventName() string   { return EvBatchStockAdded }
func (*CouponClaimed) EventName() string     { return EvCouponClaimed }
func (*CouponGranted) EventName() string     { return EvCouponGranted }
func (*CouponLocked) EventName() string      { return EvCouponLocked }
func (*CouponUnlocked) EventName() string    { return EvCouponUnlocked }
func (*CouponRedeemed) EventName() string    { return EvCouponRedeemed }
func (*CouponReturned) EventName() string    { return EvCouponReturned }
func (*CouponExpired) EventName() string     { return EvCouponExpired }
func (*CouponClaimVoided) EventName() string { return EvCouponClaimVoided }
