package commands

import (
	"context"
	"time"
)

// ReconcileReservations finishes reservations whose claim append never
// completed (a crash or a timeout between the guard and the event store).
type ReconcileReservations struct {
	// OlderThan: only reservations at least this old are touched, so claims
	// still in flight are left alone.
	OlderThan time.Duration
	Limit     int
}

// ReconcileReport counts what a pass did.
type ReconcileReport struct {
	Confirmed int // the claim had landed: reservation confirmed
	Voided    int // the claim had not landed: voided and stock given back
	Failed    int // could not be settled now; retried next pass
}

// ReconcileReservationsHandler handles ReconcileReservations.
type ReconcileReservationsHandler struct{ d Deps }

// NewReconcileReservationsHandler fails fast on missing dependencies.
func NewReconcileReservationsHandler(d Deps) (*ReconcileReservationsHandler, error) {
	if err := d.validate("ReconcileReservationsHandler"); err != nil {
		return nil, err
	}
	return &ReconcileReservationsHandler{d: d}, nil
}

// Handle runs one pass. It is idempotent: a pass interrupted anywhere is
// finished by the next one, and no reservation is ever both confirmed and released.
func (h *ReconcileReservationsHandler) Handle(ctx context.Context, cmd ReconcileReservations) (ReconcileReport, error) {
	var rep ReconcileReport
	limit := cmd.Limit
	if limit <= 0 {
		limit = 1000
	}
	pending, err := h.d.Guard.Pending(ctx, h.d.Clock.Now().Add(-cmd.OlderThan), limit)
	if err != nil {
		return rep, err
	}
	for _, p := range pending {
		landed, err := voidReservation(ctx, h.d, p.BatchID, p.CouponID, p.UserID, "reservation_abandoned")
		switch {
		case err != nil:
			rep.Failed++
		case landed:
			rep.Confirmed++
		default:
			rep.Voided++
		}
	}
	return rep, nil
}
