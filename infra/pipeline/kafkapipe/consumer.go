package kafkapipe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/projections"
)

// NewSubscriber opens a Watermill-Kafka subscriber in consumer group group
// with Config.ConsumerConfig.
func NewSubscriber(cfg Config, group string, log *slog.Logger) (*kafka.Subscriber, error) {
	cfg = cfg.WithDefaults()
	sc, err := cfg.ConsumerConfig()
	if err != nil {
		return nil, err
	}
	return kafka.NewSubscriber(kafka.SubscriberConfig{
		Brokers: cfg.Brokers, Unmarshaler: Marshaler(), OverwriteSaramaConfig: sc, ConsumerGroup: group,
		NackResendSleep: cfg.MinBackoff, ReconnectRetrySleep: cfg.MinBackoff,
	}, watermill.NewSlogLogger(log))
}

// RunConsumer feeds projector p from the topic until ctx ends (then it
// returns nil), through a Watermill router whose handler is
// pipeline.ConsumerFunc(p, log) in consumer group pipeline.HandlerName(p).
//
// Each partition is consumed in order, one message at a time: the next
// message of a partition is delivered once the projector handled the
// previous one (a failing projector is retried in place, so it stalls its
// partition rather than skipping an event). The offset of a handled message
// is marked and committed every Config.CommitInterval and when the
// partition is released (rebalance, stop). Partitions are consumed
// concurrently: p.Handle must be safe for concurrent use. Instances of one
// projector (same name) share the partitions. If the router cannot start or
// stops (brokers unreachable), it is restarted after a backoff.
func RunConsumer(ctx context.Context, cfg Config, p projections.Projector, log *slog.Logger) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	if p == nil {
		return errors.New("kafkapipe: RunConsumer needs a projector")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	log = log.With("component", "kafka-consumer", "projector", p.Name())
	backoff := cfg.MinBackoff
	for {
		started := time.Now()
		err := runRouter(ctx, cfg, p, log)
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(started) > cfg.MaxBackoff {
			backoff = cfg.MinBackoff
		}
		log.Warn("consumer stopped; restarting", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, cfg.MaxBackoff)
	}
}

func runRouter(ctx context.Context, cfg Config, p projections.Projector, log *slog.Logger) error {
	group := pipeline.HandlerName(p)
	sub, err := NewSubscriber(cfg, group, log)
	if err != nil {
		return err
	}
	defer sub.Close()
	router, err := message.NewRouter(message.RouterConfig{CloseTimeout: cfg.CloseTimeout}, watermill.NewSlogLogger(log))
	if err != nil {
		return err
	}
	router.AddConsumerHandler(group, cfg.Topic, retryingSubscriber{sub, cfg, log}, pipeline.ConsumerFunc(p, log))
	// Run returns when ctx ends or every handler stopped.
	if err := router.Run(ctx); err != nil {
		return fmt.Errorf("router: %w", err)
	}
	if ctx.Err() == nil {
		return errors.New("router stopped")
	}
	return nil
}

// retryingSubscriber retries the first Subscribe (it fails while no broker
// answers) until it succeeds or ctx ends; once subscribed, watermill-kafka
// reconnects by itself. A failing Subscribe would otherwise make Router.Run
// return with its handler-watching goroutine stuck for good.
type retryingSubscriber struct {
	*kafka.Subscriber
	cfg Config
	log *slog.Logger
}

func (s retryingSubscriber) Subscribe(ctx context.Context, topic string) (<-chan *message.Message, error) {
	backoff := s.cfg.MinBackoff
	for {
		ch, err := s.Subscriber.Subscribe(ctx, topic)
		if err == nil {
			return ch, nil
		}
		s.log.Warn("cannot subscribe to Kafka; retrying", "err", err, "backoff", backoff)
		select {
		case <-ctx.Done():
			// A closed channel stops the handler, hence the router.
			closed := make(chan *message.Message)
			close(closed)
			return closed, nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, s.cfg.MaxBackoff)
	}
}
