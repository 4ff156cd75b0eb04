package projections

import (
	"context"
	"errors"
	"strings"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain/es"
)

// CheckpointStore keeps one projector's checkpoint.
type CheckpointStore interface {
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// GuardSyncProjector keeps the stock guard's copy of every batch's policy in
// step with the batch streams. Command handlers sync the guard right after
// their append; this projector is the safety net for a sync that failed
// (SyncBatch is idempotent by batch version).
type GuardSyncProjector struct {
	repo  *commands.Repository
	guard commands.StockGuard
	cp    CheckpointStore
}

// NewGuardSyncProjector fails fast on nil dependencies.
func NewGuardSyncProjector(repo *commands.Repository, guard commands.StockGuard, cp CheckpointStore) (*GuardSyncProjector, error) {
	if repo == nil || guard == nil || cp == nil {
		return nil, errors.New("projections: NewGuardSyncProjector needs a repository, a guard and a checkpoint store")
	}
	return &GuardSyncProjector{repo: repo, guard: guard, cp: cp}, nil
}

// Name identifies the projector; never change it.
func (p *GuardSyncProjector) Name() string { return "guard-sync" }

// Checkpoint is the last handled position.
func (p *GuardSyncProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.cp.Checkpoint(ctx)
}

// Handle syncs the batch of a batch event with its current state.
func (p *GuardSyncProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	if strings.HasPrefix(rec.Type, "batch.") {
		b, err := p.repo.LoadBatch(ctx, strings.TrimPrefix(rec.StreamID, "batch-"))
		if err != nil {
			return err
		}
		if b.Exists() {
			if err := p.guard.SyncBatch(ctx, commands.GuardBatchOf(b)); err != nil {
				return err
			}
		}
	}
	return p.cp.SaveCheckpoint(ctx, rec.Position)
}
