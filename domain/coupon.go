package domain

import "time"

// CouponStatus is where a coupon is in its life.
type CouponStatus string

// Coupon statuses.
const (
	CouponUsable   CouponStatus = "usable"
	CouponLockedSt CouponStatus = "locked"
	CouponUsed     CouponStatus = "redeemed"
	CouponExpiredS CouponStatus = "expired"
	CouponVoided   CouponStatus = "voided" // a claim that never completed; not a coupon
)

// Coupon is the aggregate of one claimed or granted coupon (stream coupon-<id>).
type Coupon struct {
	ID             string
	UserID         string
	Terms          CouponTerms
	Status         CouponStatus
	Source         string // "claimed" or "granted"
	IdempotencyKey string
	ObtainedAt     time.Time
	OrderID        string // the order holding or having used it
	HoldUntil      time.Time
	PaymentID      string
	ExpiryReminded bool                // coupon.expiry_reminded.v1 was recorded (once per coupon)
	released       map[string]struct{} // orders whose lock or use was released (unlock or return)
	version        int64
	changes        []Event
}

// NewCouponFromHistory rebuilds a coupon from its events.
func NewCouponFromHistory(id string, history []Event) *Coupon {
	c := &Coupon{ID: id, version: -1}
	for _, e := range history {
		c.Apply(e)
	}
	return c
}

// Exists tells whether the coupon was claimed or granted.
func (c *Coupon) Exists() bool { return c.version >= 0 && c.Status != CouponVoided }

// Version is the revision of the last applied event (-1: new stream).
func (c *Coupon) Version() int64 { return c.version }

// BaseVersion is the stored revision the pending changes were made on.
func (c *Coupon) BaseVersion() int64 { return c.version - int64(len(c.changes)) }

// Changes are the events recorded by the last command.
func (c *Coupon) Changes() []Event { return c.changes }

// ValidAt tells whether t is inside the validity window [from, until).
func (c *Coupon) ValidAt(t time.Time) bool {
	return !t.Before(c.Terms.ValidFrom) && t.Before(c.Terms.ValidUntil)
}

// ClaimCoupon records coupon.claimed.v1 for a public batch inside its claim
// window. Pause, stop, stock and per-user limits change at any moment and are
// checked atomically by the stock guard before this is called; the rules
// checked here are fixed once the batch has started.
func ClaimCoupon(couponID, userID, idempotencyKey string, b *Batch, now time.Time) (*Coupon, error) {
	if err := ValidateID("coupon_id", couponID); err != nil {
		return nil, err
	}
	if err := ValidateID("user_id", userID); err != nil {
		return nil, err
	}
	if !b.Exists() {
		return nil, Errorf(ErrNotFound, "batch %s not found", b.ID)
	}
	if b.Rules.Audience != AudiencePublic {
		return nil, Errorf(ErrNotClaimable, "batch %s is targeted: coupons are granted, not claimed", b.ID)
	}
	if now.Before(b.Rules.ClaimStartsAt) || !now.Before(b.Rules.ClaimEndsAt) {
		return nil, Errorf(ErrNotClaimable, "batch %s is outside its claim window", b.ID)
	}
	if err := b.checkNotBornExpired(now, ErrNotClaimable); err != nil {
		return nil, err
	}
	c := NewCouponFromHistory(couponID, nil)
	c.record(&CouponClaimed{CouponID: couponID, UserID: userID, IdempotencyKey: idempotencyKey,
		Terms: b.Rules.TermsAt(b.ID, b.RuleVersion, now), At: now})
	return c, nil
}

// GrantCoupon records coupon.granted.v1: the back office gives a coupon of
// any live batch (public or targeted) to a shopper.
func GrantCoupon(couponID, userID, jobID string, b *Batch, now time.Time) (*Coupon, error) {
	if err := ValidateID("coupon_id", couponID); err != nil {
		return nil, err
	}
	if err := ValidateID("user_id", userID); err != nil {
		return nil, err
	}
	if err := b.mutable(now, "grant"); err != nil {
		return nil, err
	}
	if err := b.checkNotBornExpired(now, ErrConflict); err != nil {
		return nil, err
	}
	c := NewCouponFromHistory(couponID, nil)
	c.record(&CouponGranted{CouponID: couponID, UserID: userID, JobID: jobID,
		Terms: b.Rules.TermsAt(b.ID, b.RuleVersion, now), At: now})
	return c, nil
}

// VoidClaim records that a reserved claim never completed. It is only ever
// appended to a stream that does not exist.
func VoidClaim(couponID, batchID, userID, reason string, now time.Time) *Coupon {
	c := NewCouponFromHistory(couponID, nil)
	c.record(&CouponClaimVoided{CouponID: couponID, BatchID: batchID, UserID: userID, Reason: reason, At: now})
	return c
}

func (c *Coupon) mustExist() error {
	if !c.Exists() {
		return Errorf(ErrNotFound, "coupon %s not found", c.ID)
	}
	return nil
}

// Lock holds the coupon for an order until now+hold (TCC try). Locking again
// for the same order changes nothing.
func (c *Coupon) Lock(orderID, userID string, hold time.Duration, now time.Time) error {
	if err := ValidateID("order_id", orderID); err != nil {
		return err
	}
	if err := ValidateID("user_id", userID); err != nil {
		return err
	}
	if err := c.mustExist(); err != nil {
		return err
	}
	if userID != c.UserID {
		return Errorf(ErrForbidden, "coupon %s belongs to another user", c.ID)
	}
	switch c.Status {
	case CouponLockedSt:
		if c.OrderID == orderID {
			return nil
		}
		return Errorf(ErrConflict, "coupon %s is locked by another order", c.ID)
	case CouponUsed:
		return Errorf(ErrConflict, "coupon %s is already used", c.ID)
	case CouponExpiredS:
		return Errorf(ErrOutsideValidity, "coupon %s has expired", c.ID)
	}
	if !c.ValidAt(now) {
		return Errorf(ErrOutsideValidity, "coupon %s is valid from %s until %s", c.ID,
			c.Terms.ValidFrom.Format(time.RFC3339), c.Terms.ValidUntil.Format(time.RFC3339))
	}
	c.record(&CouponLocked{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID, OrderID: orderID,
		HoldUntil: now.Add(hold), At: now})
	return nil
}

// Redeem confirms the order's use of the coupon (TCC confirm). A repeat for
// the same order changes nothing.
func (c *Coupon) Redeem(orderID, paymentID string, discount int64, now time.Time) error {
	if err := ValidateID("order_id", orderID); err != nil {
		return err
	}
	if err := ValidateID("payment_id", paymentID); err != nil {
		return err
	}
	if err := validMoney("discount", discount); err != nil {
		return err
	}
	if err := c.mustExist(); err != nil {
		return err
	}
	switch {
	case c.Status == CouponUsed && c.OrderID == orderID:
		return nil
	case c.Status == CouponLockedSt && c.OrderID == orderID:
		c.record(&CouponRedeemed{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID, OrderID: orderID,
			PaymentID: paymentID, Discount: discount, At: now})
		return nil
	case c.Status == CouponLockedSt || c.Status == CouponUsed:
		return Errorf(ErrConflict, "coupon %s is held by another order", c.ID)
	default:
		return Errorf(ErrConflict, "coupon %s is not locked by order %s", c.ID, orderID)
	}
}

// Unlock cancels the order's hold (TCC cancel). A repeat for the same order
// changes nothing.
func (c *Coupon) Unlock(orderID string, now time.Time) error {
	if err := ValidateID("order_id", orderID); err != nil {
		return err
	}
	if err := c.mustExist(); err != nil {
		return err
	}
	switch {
	case c.Status == CouponLockedSt && c.OrderID == orderID:
		c.record(&CouponUnlocked{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID, OrderID: orderID,
			Reason: UnlockOrderCancelled, At: now})
		return nil
	case c.Status == CouponUsed && c.OrderID == orderID:
		return Errorf(ErrConflict, "coupon %s is already redeemed by order %s: return it instead", c.ID, orderID)
	case c.OrderID != orderID && c.wasReleased(orderID):
		return nil // a repeat, even if another order has taken the coupon since
	default:
		return Errorf(ErrConflict, "coupon %s is not locked by order %s", c.ID, orderID)
	}
}

// ReleaseExpiredHold unlocks a coupon whose hold ran out (reason hold_expired).
// It records nothing when the coupon is not locked or the hold is still running.
func (c *Coupon) ReleaseExpiredHold(now time.Time) {
	if c.Status == CouponLockedSt && !now.Before(c.HoldUntil) {
		c.record(&CouponUnlocked{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID, OrderID: c.OrderID,
			Reason: UnlockHoldExpired, At: now})
	}
}

// Return gives the coupon back after a refund: usable again while still
// valid, expired otherwise. A repeat for the same order changes nothing.
func (c *Coupon) Return(orderID string, now time.Time) error {
	if err := ValidateID("order_id", orderID); err != nil {
		return err
	}
	if err := c.mustExist(); err != nil {
		return err
	}
	switch {
	case c.Status == CouponUsed && c.OrderID == orderID:
		usable := now.Before(c.Terms.ValidUntil)
		c.record(&CouponReturned{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID, OrderID: orderID,
			UsableAgain: usable, At: now})
		if !usable {
			c.record(&CouponExpired{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID,
				ValidUntil: c.Terms.ValidUntil, At: now})
		}
		return nil
	case c.OrderID != orderID && c.wasReleased(orderID):
		return nil // a repeat, even if another order has taken the coupon since
	default:
		return Errorf(ErrConflict, "coupon %s was not redeemed by order %s", c.ID, orderID)
	}
}

// Expire records coupon.expired.v1 when a usable coupon's validity has ended.
// Locked coupons are left to their order; they expire once released.
func (c *Coupon) Expire(now time.Time) {
	if c.Status == CouponUsable && !now.Before(c.Terms.ValidUntil) {
		c.record(&CouponExpired{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID,
			ValidUntil: c.Terms.ValidUntil, At: now})
	}
}

// RemindExpiry records coupon.expiry_reminded.v1 when the coupon is usable
// and its validity ends within lead of now (now in [ValidUntil-lead,
// ValidUntil)). A coupon is reminded at most once, even if it is later
// locked and released, or redeemed and returned. Refusals are domain errors:
// ErrNotFound (no such coupon), ErrConflict (already reminded, not usable,
// not due yet), ErrOutsideValidity (validity over). A locked coupon is
// refused now and may be reminded once its order releases it, if that
// happens before its validity ends.
func (c *Coupon) RemindExpiry(lead time.Duration, now time.Time) error {
	if lead <= 0 {
		return Invalid("lead", "must be positive, got %v", lead)
	}
	if err := c.mustExist(); err != nil {
		return err
	}
	if c.ExpiryReminded {
		return Errorf(ErrConflict, "coupon %s was already reminded of its expiry", c.ID)
	}
	if c.Status != CouponUsable {
		return Errorf(ErrConflict, "coupon %s is %s, not usable: no expiry reminder", c.ID, c.Status)
	}
	if !now.Before(c.Terms.ValidUntil) {
		return Errorf(ErrOutsideValidity, "coupon %s was valid until %s", c.ID, c.Terms.ValidUntil.Format(time.RFC3339))
	}
	if due := c.Terms.ValidUntil.Add(-lead); now.Before(due) {
		return Errorf(ErrConflict, "coupon %s: its expiry reminder is due at %s", c.ID, due.Format(time.RFC3339))
	}
	c.record(&CouponExpiryReminded{CouponID: c.ID, BatchID: c.Terms.BatchID, UserID: c.UserID,
		ValidUntil: c.Terms.ValidUntil, At: now})
	return nil
}

// wasReleased tells whether orderID's hold or use was released (unlock or return).
func (c *Coupon) wasReleased(orderID string) bool {
	_, ok := c.released[orderID]
	return ok
}

func (c *Coupon) release(orderID string) {
	if c.released == nil {
		c.released = map[string]struct{}{}
	}
	c.released[orderID] = struct{}{}
}

func (c *Coupon) record(e Event) {
	c.Apply(e)
	c.changes = append(c.changes, e)
}

// Apply folds one event into the state. It never fails.
func (c *Coupon) Apply(e Event) {
	switch e := e.(type) {
	case *CouponClaimed:
		c.UserID, c.Terms, c.Status, c.Source, c.IdempotencyKey, c.ObtainedAt = e.UserID, e.Terms, CouponUsable, "claimed", e.IdempotencyKey, e.At
	case *CouponGranted:
		c.UserID, c.Terms, c.Status, c.Source, c.ObtainedAt = e.UserID, e.Terms, CouponUsable, "granted", e.At
	case *CouponClaimVoided:
		c.UserID, c.Status = e.UserID, CouponVoided
		c.Terms.BatchID = e.BatchID
	case *CouponLocked:
		c.Status, c.OrderID, c.HoldUntil = CouponLockedSt, e.OrderID, e.HoldUntil
	case *CouponUnlocked:
		c.release(e.OrderID)
		c.Status, c.OrderID, c.HoldUntil = CouponUsable, "", time.Time{}
	case *CouponRedeemed:
		c.Status, c.PaymentID = CouponUsed, e.PaymentID
	case *CouponReturned:
		c.release(e.OrderID)
		c.Status, c.OrderID, c.PaymentID = CouponUsable, "", ""
	case *CouponExpired:
		c.Status = CouponExpiredS
	case *CouponExpiryReminded:
		c.ExpiryReminded = true
	}
	c.version++
}
