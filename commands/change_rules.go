package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// ChangeBatchRules replaces the rules of a batch that has not started.
type ChangeBatchRules struct {
	BatchID string
	Rules   domain.Rules
	By      string
}

// ChangeBatchRulesHandler handles ChangeBatchRules.
type ChangeBatchRulesHandler struct{ d Deps }

// NewChangeBatchRulesHandler fails fast on missing dependencies.
func NewChangeBatchRulesHandler(d Deps) (*ChangeBatchRulesHandler, error) {
	if err := d.validate("ChangeBatchRulesHandler"); err != nil {
		return nil, err
	}
	return &ChangeBatchRulesHandler{d: d}, nil
}

// Handle changes the rules and bumps the rule version.
func (h *ChangeBatchRulesHandler) Handle(ctx context.Context, cmd ChangeBatchRules) (Result[*domain.Batch], error) {
	return changeBatch(ctx, h.d, cmd.BatchID, func(b *domain.Batch) error {
		return b.ChangeRules(cmd.Rules, cmd.By, h.d.Clock.Now())
	})
}
