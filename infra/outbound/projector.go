package outbound

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/projections"
)

// ProjectorName is the outbound projector's name. Never change it: it names
// its checkpoint and (on Kafka) its consumer group.
const ProjectorName = "outbound"

// Checkpoints keeps the outbound projector's position: the last event whose
// messages the sink accepted. redisops.NewCheckpoint(rdb, prefix+
// "outbound:checkpoint") satisfies it.
type Checkpoints interface {
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

var (
	_ projections.BatchProjector = (*Projector)(nil)
	_ Sink                       = (*WebhookSink)(nil)
	_ Sink                       = (*KafkaSink)(nil)
)

// Projector publishes every stored event through a Sink: it maps each event
// (Mapper), publishes the messages, and only then saves the checkpoint at
// the last event's position, so the checkpoint never passes an undelivered
// event. A failure returns the error, and the runner re-subscribes from the
// checkpoint: delivery is at least once, consumers deduplicate by id.
//
// It relies on events arriving in position order: drive it straight from
// the event store (projections.Run, pipeline.RunEmbedded, optionally
// through projections.Batching), not as a Kafka pipeline consumer, whose
// partitions interleave positions. Events at or below the checkpoint are
// skipped (a replay through the live projector re-delivers nothing).
type Projector struct {
	mapper *Mapper
	sink   Sink
	cp     Checkpoints

	mu     sync.Mutex
	done   uint64 // checkpoint as last read or saved
	loaded bool
}

// NewProjector publishes what mapper makes of each event to sink and keeps
// its position in cp. It fails on a nil argument.
func NewProjector(mapper *Mapper, sink Sink, cp Checkpoints) (*Projector, error) {
	if mapper == nil || sink == nil || cp == nil {
		return nil, errors.New("outbound: NewProjector needs a mapper, a sink and a checkpoint store")
	}
	return &Projector{mapper: mapper, sink: sink, cp: cp}, nil
}

// Name is ProjectorName ("outbound").
func (p *Projector) Name() string { return ProjectorName }

// Checkpoint reads the saved position (0: nothing published yet).
func (p *Projector) Checkpoint(ctx context.Context) (uint64, error) {
	pos, err := p.cp.Checkpoint(ctx)
	if err != nil {
		return 0, fmt.Errorf("outbound: read checkpoint: %w", err)
	}
	p.mu.Lock()
	p.done, p.loaded = pos, true
	p.mu.Unlock()
	return pos, nil
}

// Handle publishes one event (HandleBatch of one).
func (p *Projector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	return p.HandleBatch(ctx, []es.RecordedEvent{rec})
}

// HandleBatch publishes the messages of recs (in order) in one Publish
// call, then saves the checkpoint at the last event's position.
func (p *Projector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.loaded {
		pos, err := p.cp.Checkpoint(ctx)
		if err != nil {
			return fmt.Errorf("outbound: read checkpoint: %w", err)
		}
		p.done, p.loaded = pos, true
	}
	var (
		msgs []Message
		last uint64
	)
	for _, rec := range recs {
		if rec.Position <= p.done {
			continue
		}
		m, err := p.mapper.Map(rec)
		if err != nil {
			return err
		}
		msgs = append(msgs, m...)
		last = max(last, rec.Position)
	}
	if last == 0 {
		return nil
	}
	if len(msgs) > 0 {
		if err := p.sink.Publish(ctx, msgs); err != nil {
			return fmt.Errorf("outbound: publish up to position %d: %w", last, err)
		}
	}
	if err := p.cp.SaveCheckpoint(ctx, last); err != nil {
		return fmt.Errorf("outbound: save checkpoint %d: %w", last, err)
	}
	p.done = last
	return nil
}
