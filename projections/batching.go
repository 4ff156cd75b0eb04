package projections

import (
	"context"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

// BatchProjector applies many events at once (one bulk write, then the
// checkpoint of the last event).
type BatchProjector interface {
	Projector
	HandleBatch(ctx context.Context, recs []es.RecordedEvent) error
}

// BatchConfig bounds a batch: flushed when it holds MaxEvents, or MaxDelay
// after its first event.
type BatchConfig struct {
	MaxEvents int           // default 500
	MaxDelay  time.Duration // default 5ms
}

// Batching buffers events for p and applies them in bulk. Handle returns
// before the event is applied, so use it only where redelivery restarts from
// the projector's own checkpoint (the embedded pipeline), never where a
// returned Handle commits a broker offset. Progress is reported (and the gate
// held) at flush time, so read-your-writes waits for the flush.
type Batching struct {
	p        BatchProjector
	gate     *Gate
	progress *Progress
	cfg      BatchConfig

	mu      sync.Mutex
	buf     []es.RecordedEvent
	timer   *time.Timer
	lastErr error
}

// NewBatching wraps p; gate and progress may be nil.
func NewBatching(p BatchProjector, gate *Gate, progress *Progress, cfg BatchConfig) *Batching {
	if cfg.MaxEvents <= 0 {
		cfg.MaxEvents = 500
	}
	if cfg.MaxDelay <= 0 {
		cfg.MaxDelay = 5 * time.Millisecond
	}
	if gate == nil {
		gate = &Gate{}
	}
	return &Batching{p: p, gate: gate, progress: progress, cfg: cfg}
}

// Name is the wrapped projector's.
func (b *Batching) Name() string { return b.p.Name() }

// Checkpoint is the wrapped projector's (what is flushed).
func (b *Batching) Checkpoint(ctx context.Context) (uint64, error) {
	pos, err := b.p.Checkpoint(ctx)
	if err == nil && b.progress != nil {
		b.progress.Observe(b.p.Name(), pos, time.Time{})
	}
	return pos, err
}

// Handle buffers rec; a full buffer is flushed now, a partial one after MaxDelay.
func (b *Batching) Handle(ctx context.Context, rec es.RecordedEvent) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, rec)
	if len(b.buf) >= b.cfg.MaxEvents {
		return b.flushLocked(ctx)
	}
	if b.timer == nil {
		b.timer = time.AfterFunc(b.cfg.MaxDelay, func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.timer = nil
			if err := b.flushLocked(context.Background()); err != nil {
				b.lastErr = err
				b.timer = time.AfterFunc(time.Second, func() { _ = b.Flush(context.Background()) })
			}
		})
	}
	// A failed timed flush surfaces on the next event, which is retried by
	// the pipeline; the buffer is kept and flushed again.
	err := b.lastErr
	b.lastErr = nil
	return err
}

// Flush applies whatever is buffered.
func (b *Batching) Flush(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked(ctx)
}

func (b *Batching) flushLocked(ctx context.Context) error {
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	if len(b.buf) == 0 {
		return nil
	}
	b.gate.mu.Lock()
	err := b.p.HandleBatch(ctx, b.buf)
	b.gate.mu.Unlock()
	if err != nil {
		return err
	}
	last := b.buf[len(b.buf)-1]
	if b.progress != nil {
		b.progress.Observe(b.p.Name(), last.Position, last.RecordedAt)
	}
	b.buf = b.buf[:0]
	return nil
}

// Discard drops the buffered events without applying them (before the
// projection is reset and replayed from its first event).
func (b *Batching) Discard() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.timer != nil {
		b.timer.Stop()
		b.timer = nil
	}
	b.buf, b.lastErr = b.buf[:0], nil
}
