package projections

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

// Generation is a fresh copy of a projection being rebuilt: it consumes
// events like a projector and, once caught up, replaces the live copy.
type Generation interface {
	Checkpoint(ctx context.Context) (uint64, error)
	// HandleBatch applies events in order and saves the checkpoint of the last.
	HandleBatch(ctx context.Context, recs []es.RecordedEvent) error
	// Commit makes this generation the live one and drops the old one.
	Commit(ctx context.Context) error
	// Abort drops this generation.
	Abort(ctx context.Context) error
}

// Rebuildable is a projection that can be rebuilt into a fresh generation
// while its live copy keeps serving.
type Rebuildable interface {
	Projector
	BeginRebuild(ctx context.Context) (Generation, error)
}

// Gate serializes a projector's live handling with the final switch of a
// rebuild, so no live event is lost between the catch-up and the commit.
type Gate struct{ mu sync.Mutex }

// Gated wraps p so that each Handle holds the gate.
func Gated(p Projector, g *Gate) Projector { return gated{p, g} }

type gated struct {
	Projector
	g *Gate
}

func (x gated) Handle(ctx context.Context, rec es.RecordedEvent) error {
	x.g.mu.Lock()
	defer x.g.mu.Unlock()
	return x.Projector.Handle(ctx, rec)
}

// ReplayProgress is reported while replaying.
type ReplayProgress struct {
	Projection string
	Done       uint64 // events read
	Position   uint64
	Head       uint64
	Started    time.Time
}

// ReplayPageSize is the events read and applied per batch.
const ReplayPageSize = 1000

// replay feeds events after from (up to head, or to the end when head is 0)
// to apply in pages, reporting progress.
func replay(ctx context.Context, store es.Store, from, head uint64, apply func(context.Context, []es.RecordedEvent) error,
	report func(ReplayProgress), prog ReplayProgress) (uint64, error) {
	pos := from
	for head == 0 || pos < head {
		recs, err := store.ReadAll(ctx, pos, ReplayPageSize)
		if err != nil {
			return pos, err
		}
		if head != 0 {
			for i, r := range recs {
				if r.Position > head {
					recs = recs[:i]
					break
				}
			}
		}
		if len(recs) == 0 {
			break
		}
		if err := apply(ctx, recs); err != nil {
			return pos, err
		}
		pos = recs[len(recs)-1].Position
		prog.Done += uint64(len(recs))
		prog.Position = pos
		if report != nil {
			report(prog)
		}
		if len(recs) < ReplayPageSize && head == 0 {
			break
		}
	}
	return pos, nil
}

// Rebuild rebuilds p into a fresh generation from the first event while the
// live copy keeps serving, then, holding the gate, catches up with the
// events appended meanwhile and switches the live copy to the new one.
func Rebuild(ctx context.Context, store es.Store, p Rebuildable, gate *Gate, report func(ReplayProgress)) (err error) {
	if gate == nil {
		return errors.New("projections: Rebuild needs the live projector's gate")
	}
	gen, err := p.BeginRebuild(ctx)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = gen.Abort(context.WithoutCancel(ctx))
		}
	}()
	head, err := store.LastPosition(ctx)
	if err != nil {
		return err
	}
	from, err := gen.Checkpoint(ctx)
	if err != nil {
		return err
	}
	prog := ReplayProgress{Projection: p.Name(), Head: head, Started: time.Now()}
	pos, err := replay(ctx, store, from, head, gen.HandleBatch, report, prog)
	if err != nil {
		return err
	}
	gate.mu.Lock()
	defer gate.mu.Unlock()
	if _, err = replay(ctx, store, pos, 0, gen.HandleBatch, nil, prog); err != nil {
		return err
	}
	return gen.Commit(ctx)
}

// Reapply feeds the events after from to the live projector again. Every
// projector skips what it already applied, so this only fills gaps.
func Reapply(ctx context.Context, store es.Store, p Projector, gate *Gate, from uint64, report func(ReplayProgress)) error {
	head, err := store.LastPosition(ctx)
	if err != nil {
		return err
	}
	apply := func(ctx context.Context, recs []es.RecordedEvent) error {
		for _, r := range recs {
			if err := Gated(p, gate).Handle(ctx, r); err != nil {
				return err
			}
		}
		return nil
	}
	_, err = replay(ctx, store, from, head, apply, report, ReplayProgress{Projection: p.Name(), Head: head, Started: time.Now()})
	return err
}
