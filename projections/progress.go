package projections

import (
	"context"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

// Progress tracks how far each projector has got, for read-your-writes
// (wait until a position is visible), lag metrics and readiness.
type Progress struct {
	mu    sync.Mutex
	pos   map[string]uint64
	at    map[string]time.Time // recorded time of the last applied event
	wake  chan struct{}
	names []string
}

// NewProgress tracks the named projectors.
func NewProgress(names ...string) *Progress {
	p := &Progress{pos: map[string]uint64{}, at: map[string]time.Time{}, wake: make(chan struct{}), names: names}
	for _, n := range names {
		p.pos[n] = 0
	}
	return p
}

// Observe records that projector name applied everything up to pos.
func (p *Progress) Observe(name string, pos uint64, recordedAt time.Time) {
	p.mu.Lock()
	if pos > p.pos[name] {
		p.pos[name] = pos
		if !recordedAt.IsZero() {
			p.at[name] = recordedAt
		}
	}
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// Position of one projector.
func (p *Progress) Position(name string) (uint64, time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.pos[name], p.at[name]
}

// Names lists the tracked projectors.
func (p *Progress) Names() []string { return p.names }

// Min is the lowest position among the named projectors (all when none named).
func (p *Progress) Min(names ...string) uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.minLocked(names)
}

func (p *Progress) minLocked(names []string) uint64 {
	if len(names) == 0 {
		names = p.names
	}
	var m uint64
	for i, n := range names {
		if v := p.pos[n]; i == 0 || v < m {
			m = v
		}
	}
	return m
}

// WaitFor blocks until every named projector (all when none named) reached
// pos, or ctx ends (then it returns ctx.Err()).
func (p *Progress) WaitFor(ctx context.Context, pos uint64, names ...string) error {
	for {
		p.mu.Lock()
		reached, wake := p.minLocked(names) >= pos, p.wake
		p.mu.Unlock()
		if reached {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-wake:
		}
	}
}

// Tracked wraps a projector so its progress is observed.
func Tracked(p Projector, prog *Progress) Projector { return tracked{p, prog} }

type tracked struct {
	Projector
	prog *Progress
}

func (t tracked) Checkpoint(ctx context.Context) (uint64, error) {
	pos, err := t.Projector.Checkpoint(ctx)
	if err == nil {
		t.prog.Observe(t.Name(), pos, time.Time{})
	}
	return pos, err
}

func (t tracked) Handle(ctx context.Context, rec es.RecordedEvent) error {
	if err := t.Projector.Handle(ctx, rec); err != nil {
		return err
	}
	t.prog.Observe(t.Name(), rec.Position, rec.RecordedAt)
	return nil
}

// Reset forgets a projector's position (its projection was wiped and is
// being rebuilt from the first event).
func (p *Progress) Reset(name string) {
	p.mu.Lock()
	p.pos[name], p.at[name] = 0, time.Time{}
	p.mu.Unlock()
}
