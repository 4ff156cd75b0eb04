package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// AddStock adds units to a batch. A repeated IdempotencyKey adds nothing.
type AddStock struct {
	BatchID        string
	Add            int64
	IdempotencyKey string
	By             string
}

// AddStockHandler handles AddStock.
type AddStockHandler struct{ d Deps }

// NewAddStockHandler fails fast on missing dependencies.
func NewAddStockHandler(d Deps) (*AddStockHandler, error) {
	if err := d.validate("AddStockHandler"); err != nil {
		return nil, err
	}
	return &AddStockHandler{d: d}, nil
}

// Handle records the stock and raises the guard's remaining units.
func (h *AddStockHandler) Handle(ctx context.Context, cmd AddStock) (Result[*domain.Batch], error) {
	return changeBatch(ctx, h.d, cmd.BatchID, func(b *domain.Batch) error {
		return b.AddStock(cmd.Add, cmd.IdempotencyKey, cmd.By, h.d.Clock.Now())
	})
}
