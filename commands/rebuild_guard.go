package commands

import (
	"context"
	"errors"
	"strings"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// RebuildGuard recomputes the stock guard's whole state (policy and stock of
// every batch, per-user counts, idempotency records) from the event store.
// Run it when the guard is empty (Redis lost its data) or on demand while
// claims are stopped.
type RebuildGuard struct{}

// RebuildGuardReport tells what was rebuilt.
type RebuildGuardReport struct {
	Batches  int
	Coupons  int
	Position uint64 // last event read
}

// RebuildGuardHandler handles RebuildGuard.
type RebuildGuardHandler struct{ d Deps }

// NewRebuildGuardHandler fails fast on missing dependencies.
func NewRebuildGuardHandler(d Deps) (*RebuildGuardHandler, error) {
	if err := d.validate("RebuildGuardHandler"); err != nil {
		return nil, err
	}
	return &RebuildGuardHandler{d: d}, nil
}

// Handle reads every event once and replaces the guard's state.
func (h *RebuildGuardHandler) Handle(ctx context.Context, _ RebuildGuard) (RebuildGuardReport, error) {
	var rep RebuildGuardReport
	batches := map[string]*domain.Batch{}
	states := map[string]*GuardBatchState{}
	stateOf := func(id string) *GuardBatchState {
		s := states[id]
		if s == nil {
			s = &GuardBatchState{PerUser: map[string]int64{}, Idem: map[string]string{}}
			states[id] = s
		}
		return s
	}
	err := es.Scan(ctx, h.d.Repo.Store(), 0, 5000, func(rec es.RecordedEvent) error {
		rep.Position = rec.Position
		if !strings.HasPrefix(rec.Type, "batch.") && rec.Type != domain.EvCouponClaimed && rec.Type != domain.EvCouponGranted {
			return nil
		}
		e, err := h.d.Repo.Registry().Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		switch e := e.(type) {
		case *domain.CouponClaimed:
			s := stateOf(e.Terms.BatchID)
			s.Consumed++
			s.PerUser[e.UserID]++
			if e.IdempotencyKey != "" {
				s.Idem[e.UserID+"\x00"+e.IdempotencyKey] = e.CouponID
			}
			rep.Coupons++
		case *domain.CouponGranted:
			s := stateOf(e.Terms.BatchID)
			s.Consumed++
			s.PerUser[e.UserID]++
			rep.Coupons++
		default:
			id := strings.TrimPrefix(rec.StreamID, "batch-")
			b := batches[id]
			if b == nil {
				b = domain.NewBatchFromHistory(id, nil)
				batches[id] = b
			}
			b.Apply(e)
		}
		return nil
	})
	if err != nil {
		return rep, err
	}
	out := make([]GuardBatchState, 0, len(batches))
	for id, b := range batches {
		if !b.Exists() {
			continue
		}
		s := stateOf(id)
		s.Batch = GuardBatchOf(b)
		out = append(out, *s)
	}
	for id := range states {
		if batches[id] == nil {
			return rep, errors.New("commands: coupons of batch " + id + " without a batch stream")
		}
	}
	rep.Batches = len(out)
	return rep, h.d.Guard.Rebuild(ctx, out)
}
