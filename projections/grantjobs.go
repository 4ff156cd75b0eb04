package projections

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// GrantJobsStore keeps the set of unfinished grant jobs. Each change is
// applied together with the checkpoint (one atomic step), and replaying an
// event is harmless (set add / remove).
type GrantJobsStore interface {
	// MarkGrantJobActive adds jobID to the set and saves pos as the checkpoint.
	MarkGrantJobActive(ctx context.Context, jobID string, pos uint64) error
	// MarkGrantJobFinished removes jobID from the set and saves pos.
	MarkGrantJobFinished(ctx context.Context, jobID string, pos uint64) error
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// GrantJobsProjector maintains the unfinished grant jobs that the grant
// worker polls: added on grantjob.created.v1, removed on grantjob.finished.v1.
// It never decodes an event: the job id is the stream's, so the (large) user
// list of a created event is not read.
type GrantJobsProjector struct {
	store GrantJobsStore
}

// NewGrantJobsProjector fails fast on a nil store.
func NewGrantJobsProjector(store GrantJobsStore) (*GrantJobsProjector, error) {
	if store == nil {
		return nil, errors.New("projections: NewGrantJobsProjector needs a store")
	}
	return &GrantJobsProjector{store: store}, nil
}

// Name identifies the projector; never change it.
func (p *GrantJobsProjector) Name() string { return "grant-jobs" }

// Checkpoint is the position of the last event handled.
func (p *GrantJobsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.store.Checkpoint(ctx)
}

// Handle projects one stored event and advances the checkpoint.
func (p *GrantJobsProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	switch rec.Type {
	case domain.EvGrantJobCreated, domain.EvGrantJobFinished:
		id, ok := commands.GrantJobIDOfStream(rec.StreamID)
		if !ok || id == "" {
			break
		}
		if rec.Type == domain.EvGrantJobCreated {
			return p.store.MarkGrantJobActive(ctx, id, rec.Position)
		}
		return p.store.MarkGrantJobFinished(ctx, id, rec.Position)
	}
	return p.store.SaveCheckpoint(ctx, rec.Position)
}
