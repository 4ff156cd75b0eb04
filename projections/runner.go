package projections

import (
	"context"
	"log/slog"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

// Projector consumes stored events in position order.
type Projector interface {
	Name() string
	Checkpoint(ctx context.Context) (uint64, error)
	Handle(ctx context.Context, rec es.RecordedEvent) error
}

// Run subscribes p to the store from its checkpoint and re-subscribes from
// the last checkpoint after any failure, until ctx is done.
func Run(ctx context.Context, store es.Store, p Projector, log *slog.Logger) {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		from, err := p.Checkpoint(ctx)
		if err == nil {
			err = store.Subscribe(ctx, from, p.Handle)
		}
		if ctx.Err() != nil {
			return
		}
		log.Warn("projector stopped; re-subscribing from checkpoint", "projector", p.Name(), "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if backoff < 5*time.Second {
			backoff *= 2
		}
	}
}
