package pipeline

import (
	"context"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/projections"
)

// HandlerName is the Watermill handler (and Kafka consumer group) name of a
// projector. It must never change: a new name re-consumes everything.
func HandlerName(p projections.Projector) string { return "couponsd-projector-" + p.Name() }

// RunEmbedded runs one projector behind an in-process Watermill GoChannel fed
// by the event store's subscription from the projector's checkpoint. A
// failing handler is retried with backoff (events stay in order); if the
// subscription breaks, it resumes from the checkpoint. Returns when ctx ends.
func RunEmbedded(ctx context.Context, store es.Store, p projections.Projector, log *slog.Logger) error {
	wlog := watermill.NewSlogLogger(log)
	pubsub := gochannel.NewGoChannel(gochannel.Config{BlockPublishUntilSubscriberAck: true, PreserveContext: true}, wlog)
	defer pubsub.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: 5 * time.Second}, wlog)
	if err != nil {
		return err
	}
	router.AddConsumerHandler(HandlerName(p), Topic, pubsub, ConsumerFunc(p, log))
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- router.Run(rctx) }()
	select {
	case <-router.Running():
	case err := <-done:
		return err
	}
	projections.Run(rctx, store, publishingProjector{p: p, pub: pubsub}, log)
	cancel()
	return <-done
}

// ConsumerFunc adapts a projector to a Watermill handler. A failure is
// retried in place with backoff until it succeeds or the message's context
// ends, so one coupon's events are never applied out of order.
func ConsumerFunc(p projections.Projector, log *slog.Logger) message.NoPublishHandlerFunc {
	return func(m *message.Message) error {
		rec, err := FromMessage(m)
		if err != nil {
			log.Error("dropping malformed event message", "projector", p.Name(), "err", err)
			return nil
		}
		backoff := 50 * time.Millisecond
		for {
			err := p.Handle(m.Context(), rec)
			if err == nil {
				return nil
			}
			log.Warn("projector failed; retrying", "projector", p.Name(), "position", rec.Position, "err", err)
			select {
			case <-m.Context().Done():
				return m.Context().Err()
			case <-time.After(backoff):
			}
			if backoff < 5*time.Second {
				backoff *= 2
			}
		}
	}
}

// publishingProjector is what the store subscription drives: it publishes
// each event and returns once the projector acknowledged it.
type publishingProjector struct {
	p   projections.Projector
	pub message.Publisher
}

func (pp publishingProjector) Name() string { return pp.p.Name() }
func (pp publishingProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return pp.p.Checkpoint(ctx)
}
func (pp publishingProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	msg := ToMessage(rec)
	msg.SetContext(ctx)
	return pp.pub.Publish(Topic, msg)
}
