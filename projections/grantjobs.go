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
	// MarkGrantShardDone adds a done shard's counts to its job's progress
	// (once per shard) and saves pos.
	MarkGrantShardDone(ctx context.Context, jobID string, shard int, c domain.GrantCounts, pos uint64) error
	// MarkGrantJobFinished removes jobID from the set and saves pos.
	MarkGrantJobFinished(ctx context.Context, jobID string, pos uint64) error
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// GrantJobsProjector maintains the unfinished grant jobs that the grant
// worker polls: added on grantjob.created.v1, removed on grantjob.finished.v1.
// It also sums the counts of done shards (grantshard.done.v1) for the jobs'
// live progress. It never decodes a list: the job id is the stream's.
type GrantJobsProjector struct {
	store GrantJobsStore
	reg   *domain.Registry
}

// NewGrantJobsProjector fails fast on a nil store.
func NewGrantJobsProjector(store GrantJobsStore, reg *domain.Registry) (*GrantJobsProjector, error) {
	if store == nil || reg == nil {
		return nil, errors.New("projections: NewGrantJobsProjector needs a store and a registry")
	}
	return &GrantJobsProjector{store: store, reg: reg}, nil
}

// Name identifies the projector; never change it.
func (p *GrantJobsProjector) Name() string { return "grant-jobs" }

// Checkpoint is the position of the last event handled.
func (p *GrantJobsProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.store.Checkpoint(ctx)
}

// Handle projects one stored event and advances the checkpoint.
func (p *GrantJobsProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	applied, err := p.apply(ctx, rec)
	if err != nil || applied {
		return err
	}
	return p.store.SaveCheckpoint(ctx, rec.Position)
}

// HandleBatch projects many events: each grant job event with its own
// checkpoint, then one checkpoint for the rest (claims and the like, most
// of the stream, cost one write per batch instead of one each).
func (p *GrantJobsProjector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	if len(recs) == 0 {
		return nil
	}
	applied := false
	for _, rec := range recs {
		var err error
		if applied, err = p.apply(ctx, rec); err != nil {
			return err
		}
	}
	if applied {
		return nil // the last event's change saved its position
	}
	return p.store.SaveCheckpoint(ctx, recs[len(recs)-1].Position)
}

// apply projects rec when it is a grant job event (saving its position with
// the change); applied false: nothing to project.
func (p *GrantJobsProjector) apply(ctx context.Context, rec es.RecordedEvent) (applied bool, err error) {
	switch rec.Type {
	case domain.EvGrantJobCreated, domain.EvGrantJobFinished:
		id, ok := commands.GrantJobIDOfStream(rec.StreamID)
		if !ok || id == "" {
			break
		}
		if rec.Type == domain.EvGrantJobCreated {
			return true, p.store.MarkGrantJobActive(ctx, id, rec.Position)
		}
		return true, p.store.MarkGrantJobFinished(ctx, id, rec.Position)
	case domain.EvGrantShardDone:
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return false, err
		}
		d := e.(*domain.GrantShardDone)
		return true, p.store.MarkGrantShardDone(ctx, d.JobID, d.Shard, d.GrantCounts, rec.Position)
	}
	return false, nil
}
