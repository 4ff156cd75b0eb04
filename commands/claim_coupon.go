package commands

import (
	"context"
	"errors"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// ClaimCoupon claims one coupon of a public batch for a shopper. CouponID is
// created by the HTTP layer; IdempotencyKey makes a retry return the first
// outcome.
type ClaimCoupon struct {
	BatchID        string
	UserID         string
	IdempotencyKey string
	CouponID       string
}

// ClaimCouponHandler handles ClaimCoupon: reserve in the stock guard, append
// coupon.claimed.v1 to the new coupon stream, then confirm the reservation.
type ClaimCouponHandler struct {
	d       Deps
	batches *BatchCache
	// settleTimeout bounds the clean-up after a failed append.
	settleTimeout time.Duration
	// keeper, when set, is kicked when the guard turns out empty.
	keeper *GuardKeeper
	// confirmer confirms durable claims; the guard itself unless set.
	confirmer Confirmer
}

// Confirmer confirms a reservation whose claim is durable, possibly later
// and in bulk (a lost confirm is settled by the reconciler).
type Confirmer interface {
	Confirm(ctx context.Context, batchID, couponID string) error
}

// SetConfirmer routes the confirms of durable claims through c (e.g. a
// bulk confirmer that saves the claim path one Redis round trip).
func (h *ClaimCouponHandler) SetConfirmer(c Confirmer) { h.confirmer = c }

// SetKeeper makes the handler start a guard recovery when it finds the
// guard empty (Redis lost its data).
func (h *ClaimCouponHandler) SetKeeper(k *GuardKeeper) { h.keeper = k }

// NewClaimCouponHandler fails fast on missing dependencies.
func NewClaimCouponHandler(d Deps, batches *BatchCache) (*ClaimCouponHandler, error) {
	if err := d.validate("ClaimCouponHandler"); err != nil {
		return nil, err
	}
	if batches == nil {
		return nil, errors.New("commands: ClaimCouponHandler needs a batch cache")
	}
	return &ClaimCouponHandler{d: d, batches: batches, settleTimeout: 5 * time.Second}, nil
}

// Handle answers only once the claim is durable. On a duplicate
// Idempotency-Key it returns the first coupon with Changed false.
func (h *ClaimCouponHandler) Handle(ctx context.Context, cmd ClaimCoupon) (Result[*domain.Coupon], error) {
	var none Result[*domain.Coupon]
	for _, f := range [][2]string{{"batch_id", cmd.BatchID}, {"user_id", cmd.UserID}, {"coupon_id", cmd.CouponID}} {
		if err := domain.ValidateID(f[0], f[1]); err != nil {
			return none, err
		}
	}
	if len(cmd.IdempotencyKey) > 255 {
		return none, domain.Invalid("Idempotency-Key", "is longer than 255 bytes")
	}
	now := h.d.Clock.Now()
	res, err := h.d.Guard.Reserve(ctx, cmd.BatchID, cmd.UserID, cmd.IdempotencyKey, cmd.CouponID, now)
	if errors.Is(err, domain.ErrNotFound) {
		// The guard may not know a batch whose sync failed: heal and retry once.
		if res, err = h.syncAndReserve(ctx, cmd, now); err != nil {
			return none, err
		}
	} else if err != nil {
		return none, err
	}
	batch, err := h.batches.Get(ctx, cmd.BatchID, res.RuleVersion)
	if err != nil {
		if !res.Duplicate {
			h.settle(cmd.BatchID, cmd.CouponID, cmd.UserID)
		}
		return none, err
	}
	if res.Duplicate {
		return h.replay(ctx, cmd, res, batch, now)
	}
	return h.appendClaim(ctx, cmd.CouponID, cmd, batch, now)
}

func (h *ClaimCouponHandler) syncAndReserve(ctx context.Context, cmd ClaimCoupon, now time.Time) (res Reservation, err error) {
	defer func() {
		if errors.Is(err, ErrGuardEmpty) && h.keeper != nil {
			h.keeper.Kick()
		}
	}()
	b, err := h.d.Repo.LoadBatch(ctx, cmd.BatchID)
	if err != nil {
		return Reservation{}, err
	}
	if !b.Exists() {
		return Reservation{}, domain.Errorf(domain.ErrNotFound, "batch %s not found", cmd.BatchID)
	}
	if err := h.d.Guard.SyncBatch(ctx, GuardBatchOf(b)); err != nil {
		return Reservation{}, err
	}
	return h.d.Guard.Reserve(ctx, cmd.BatchID, cmd.UserID, cmd.IdempotencyKey, cmd.CouponID, now)
}

// appendClaim writes coupon.claimed.v1 for a reserved unit and settles the
// reservation whatever happens.
func (h *ClaimCouponHandler) appendClaim(ctx context.Context, couponID string, cmd ClaimCoupon, batch *domain.Batch, now time.Time) (Result[*domain.Coupon], error) {
	c, err := domain.ClaimCoupon(couponID, cmd.UserID, cmd.IdempotencyKey, batch, now)
	if err != nil {
		h.settle(cmd.BatchID, couponID, cmd.UserID)
		return Result[*domain.Coupon]{}, err
	}
	ar, err := h.d.Repo.SaveCoupon(ctx, c)
	if err == nil {
		// Best effort: an unconfirmed reservation is confirmed by the reconciler.
		confirm := h.d.Guard.Confirm
		if h.confirmer != nil {
			confirm = h.confirmer.Confirm
		}
		_ = confirm(ctx, cmd.BatchID, couponID)
		return Result[*domain.Coupon]{Aggregate: c, Position: ar.Position, Changed: true}, nil
	}
	if errors.Is(err, domain.ErrConcurrency) {
		// Someone else wrote this coupon stream first: the same claim retried
		// (idempotent adoption) or the reconciler voiding it.
		return h.existing(ctx, cmd, couponID)
	}
	if h.settle(cmd.BatchID, couponID, cmd.UserID) {
		// The void lost the race: the claim append did land.
		return h.existing(ctx, cmd, couponID)
	}
	return Result[*domain.Coupon]{}, err
}

// replay answers a repeated Idempotency-Key with the first coupon. If the
// first request's append is still unconfirmed, this request finishes it: the
// claim is appended with NoStream, so only one of them can land.
func (h *ClaimCouponHandler) replay(ctx context.Context, cmd ClaimCoupon, res Reservation, batch *domain.Batch, now time.Time) (Result[*domain.Coupon], error) {
	c, err := h.d.Repo.LoadCoupon(ctx, res.CouponID)
	if err != nil {
		return Result[*domain.Coupon]{}, err
	}
	if c.Version() >= 0 {
		return h.existing(ctx, cmd, res.CouponID)
	}
	if !res.Pending {
		return Result[*domain.Coupon]{}, domain.Errorf(domain.ErrUnavailable, "coupon %s is reserved but not stored; retry", res.CouponID)
	}
	return h.appendClaim(ctx, res.CouponID, cmd, batch, now)
}

// existing returns the stored claim of couponID for this caller.
func (h *ClaimCouponHandler) existing(ctx context.Context, cmd ClaimCoupon, couponID string) (Result[*domain.Coupon], error) {
	c, err := h.d.Repo.LoadCoupon(ctx, couponID)
	if err != nil {
		return Result[*domain.Coupon]{}, err
	}
	if !c.Exists() || c.UserID != cmd.UserID || c.Terms.BatchID != cmd.BatchID {
		return Result[*domain.Coupon]{}, domain.Errorf(domain.ErrUnavailable, "the claim timed out and was voided; retry")
	}
	_ = h.d.Guard.Confirm(ctx, cmd.BatchID, couponID)
	return Result[*domain.Coupon]{Aggregate: c}, nil
}

// settle makes a failed claim final: it appends coupon.claim_voided.v1 with
// NoStream (so a late claim append can never land) and gives the unit back.
// It returns true when the void found the stream taken, i.e. the claim landed.
// If neither can be decided now, the reservation stays pending for the reconciler.
func (h *ClaimCouponHandler) settle(batchID, couponID, userID string) (claimLanded bool) {
	ctx, cancel := context.WithTimeout(context.Background(), h.settleTimeout)
	defer cancel()
	landed, err := voidReservation(ctx, h.d, batchID, couponID, userID, "append_failed")
	return err == nil && landed
}

// voidReservation settles one reservation: void + release, or confirm if the
// coupon stream already holds the claim.
func voidReservation(ctx context.Context, d Deps, batchID, couponID, userID, reason string) (claimLanded bool, err error) {
	v := domain.VoidClaim(couponID, batchID, userID, reason, d.Clock.Now())
	_, err = d.Repo.SaveCoupon(ctx, v)
	if errors.Is(err, domain.ErrConcurrency) {
		c, lerr := d.Repo.LoadCoupon(ctx, couponID)
		if lerr != nil {
			return false, lerr
		}
		if c.Exists() {
			return true, d.Guard.Confirm(ctx, batchID, couponID)
		}
		// Voided earlier, release not done yet: fall through to release.
	} else if err != nil {
		return false, err
	}
	return false, d.Guard.Release(ctx, batchID, couponID)
}
