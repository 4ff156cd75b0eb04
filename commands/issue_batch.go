package commands

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/domain"
)

// IssueBatch creates a coupon batch. BatchID comes from the HTTP layer
// (derived from the Idempotency-Key when there is one).
type IssueBatch struct {
	BatchID    string
	Rules      domain.Rules
	TotalStock int64
	By         string
}

// IssueBatchHandler handles IssueBatch.
type IssueBatchHandler struct{ d Deps }

// NewIssueBatchHandler fails fast on missing dependencies.
func NewIssueBatchHandler(d Deps) (*IssueBatchHandler, error) {
	if err := d.validate("IssueBatchHandler"); err != nil {
		return nil, err
	}
	return &IssueBatchHandler{d: d}, nil
}

// Handle issues the batch. Issuing the same id again with the same rules is
// a replay and returns the stored batch; with other rules it is a conflict.
func (h *IssueBatchHandler) Handle(ctx context.Context, cmd IssueBatch) (Result[*domain.Batch], error) {
	b, err := domain.IssueBatch(cmd.BatchID, cmd.Rules, cmd.TotalStock, cmd.By, h.d.Clock.Now())
	if err != nil {
		return Result[*domain.Batch]{}, err
	}
	out := Result[*domain.Batch]{Aggregate: b, Changed: true}
	res, err := h.d.Repo.SaveBatch(ctx, b)
	switch {
	case errors.Is(err, domain.ErrConcurrency):
		stored, lerr := h.d.Repo.LoadBatch(ctx, cmd.BatchID)
		if lerr != nil {
			return Result[*domain.Batch]{}, lerr
		}
		if !stored.Rules.Equal(b.Rules) && stored.RuleVersion == 0 {
			return Result[*domain.Batch]{}, domain.Errorf(domain.ErrConflict, "batch %s already exists with other rules", cmd.BatchID)
		}
		out = Result[*domain.Batch]{Aggregate: stored}
	case err != nil:
		return Result[*domain.Batch]{}, err
	default:
		out.Position = res.Position
	}
	return out, h.d.Guard.SyncBatch(ctx, GuardBatchOf(out.Aggregate))
}
