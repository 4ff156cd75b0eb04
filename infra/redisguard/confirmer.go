package redisguard

import (
	"context"
	"log/slog"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/infra/redisx"
)

// Confirmer confirms reservations in bulk: the claim path hands it the
// coupon once its event is durable and answers at once; the confirmer sends
// the confirms of every claim that arrived meanwhile in one pipeline. A
// confirm that never lands is harmless: the reservation stays pending and
// the reconciler confirms it (its void finds the claim stored).
type Confirmer struct {
	g   *Guard
	log *slog.Logger
	ch  chan [2]string
}

// maxConfirmBatch bounds one pipeline.
const maxConfirmBatch = 512

// NewConfirmer buffers up to buffer confirms; when full, Confirm runs
// synchronously.
func (g *Guard) NewConfirmer(buffer int, log *slog.Logger) *Confirmer {
	if buffer <= 0 {
		buffer = 4096
	}
	return &Confirmer{g: g, log: log, ch: make(chan [2]string, buffer)}
}

// Confirm queues the confirmation of a durable claim.
func (c *Confirmer) Confirm(ctx context.Context, batchID, couponID string) error {
	select {
	case c.ch <- [2]string{batchID, couponID}:
		return nil
	default:
		return c.g.Confirm(ctx, batchID, couponID)
	}
}

// Run sends queued confirms until ctx ends, then sends what is left.
func (c *Confirmer) Run(ctx context.Context) {
	batch := make([][2]string, 0, maxConfirmBatch)
	for {
		select {
		case <-ctx.Done():
			// batch still holds the last batch sent: its send may have been
			// cut by this very cancellation, so it goes again (confirming
			// twice changes nothing) with what is left.
			for {
				select {
				case it := <-c.ch:
					batch = append(batch, it)
				default:
					c.send(context.WithoutCancel(ctx), batch)
					return
				}
			}
		case it := <-c.ch:
			batch = append(batch[:0], it)
		drain:
			for len(batch) < maxConfirmBatch {
				select {
				case it := <-c.ch:
					batch = append(batch, it)
				default:
					break drain
				}
			}
			c.send(ctx, batch)
		}
	}
}

func (c *Confirmer) send(ctx context.Context, batch [][2]string) {
	if len(batch) == 0 {
		return
	}
	err := redisx.Pipelined(ctx, c.g.rdb, []*redis.Script{confirmScript.Script}, func(p redis.Pipeliner) error {
		for _, it := range batch {
			confirmScript.Run(ctx, p, confirmScript.keys(c.g.Keys(it[0])), it[1])
		}
		return nil
	})
	if err != nil {
		c.log.Warn("bulk confirm failed; the reconciler will confirm these reservations", "count", len(batch), "err", err)
	}
}
