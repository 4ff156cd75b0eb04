// Package grantbus carries grant shard commands (commands.GrantShard) from a
// grant job's coordinator to the shard consumers with Watermill's CQRS
// component: a CommandBus on the publishing side, a CommandProcessor on the
// consuming side. The transport is any Watermill Pub/Sub: Kafka in
// production (a consumer group spreads the topic's partitions over the
// instances; the partition key is job/shard, so one job's shards spread over
// all partitions), an in-process GoChannel when embedded (lost in a crash:
// the coordinator sends stalled shards again).
package grantbus

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/components/cqrs"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/pipeline"
)

const (
	// CommandName is the explicit, versioned name of the command on the wire
	// (never derived from the Go type).
	CommandName = "grant.shard.v1"
	// HandlerName names the consumer (the Kafka consumer group derives from
	// it): never change it, or a new group re-reads the topic.
	HandlerName = "grant-shards"
	// DefaultTopic carries the grant shard commands.
	DefaultTopic = "couponsd.grant-shards.v1"
)

// Config tunes the bus.
type Config struct {
	Topic string // default DefaultTopic
	// Concurrency bounds the shards granted at once by this instance
	// (default 4). Kafka delivers one message per partition at a time.
	Concurrency int
	// Retries of a shard whose handling failed, before it is left to the
	// coordinator's re-send (default 3, backing off from 500ms).
	Retries int
}

// WithDefaults fills zero fields.
func (c Config) WithDefaults() Config {
	if c.Topic == "" {
		c.Topic = DefaultTopic
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 4
	}
	if c.Retries <= 0 {
		c.Retries = 3
	}
	return c
}

// marshaler names the command explicitly.
func marshaler() cqrs.CommandEventMarshaler {
	return cqrs.JSONMarshaler{GenerateName: func(any) string { return CommandName }}
}

// Bus sends grant shard commands; it implements commands.GrantShardBus.
type Bus struct {
	bus *cqrs.CommandBus
}

var _ commands.GrantShardBus = (*Bus)(nil)

// NewBus publishes on pub.
func NewBus(pub message.Publisher, cfg Config, log *slog.Logger) (*Bus, error) {
	if pub == nil || log == nil {
		return nil, errors.New("grantbus: NewBus needs a publisher and a logger")
	}
	cfg = cfg.WithDefaults()
	bus, err := cqrs.NewCommandBusWithConfig(pub, cqrs.CommandBusConfig{
		GeneratePublishTopic: func(cqrs.CommandBusGeneratePublishTopicParams) (string, error) { return cfg.Topic, nil },
		OnSend: func(p cqrs.CommandBusOnSendParams) error {
			c, ok := p.Command.(*commands.GrantShard)
			if !ok {
				return fmt.Errorf("grantbus: unexpected command %T", p.Command)
			}
			p.Message.Metadata.Set(pipeline.MetaKey, c.JobID+"/"+strconv.Itoa(c.Shard))
			return nil
		},
		Marshaler: marshaler(),
		Logger:    watermill.NewSlogLogger(log),
	})
	if err != nil {
		return nil, err
	}
	return &Bus{bus: bus}, nil
}

// SendGrantShards publishes one message per command.
func (b *Bus) SendGrantShards(ctx context.Context, cmds []commands.GrantShard) error {
	for i := range cmds {
		if err := b.bus.Send(ctx, &cmds[i]); err != nil {
			return fmt.Errorf("%w: grant shard bus: %w", domain.ErrUnavailable, err)
		}
	}
	return nil
}

// ShardHandler grants one shard (commands.GrantShardHandler).
type ShardHandler interface {
	Handle(ctx context.Context, cmd commands.GrantShard) (*domain.GrantShardDone, error)
}

// AddConsumer registers the shard consumer on router, subscribing with sub.
// A message is acknowledged once its shard is handled, or once handling
// failed Retries times (logged; the coordinator sends a stalled shard again),
// so a poisoned shard never blocks a partition. Run the router to consume.
func AddConsumer(router *message.Router, sub message.Subscriber, h ShardHandler, cfg Config, log *slog.Logger) error {
	if router == nil || sub == nil || h == nil || log == nil {
		return errors.New("grantbus: AddConsumer needs a router, a subscriber, a handler and a logger")
	}
	cfg = cfg.WithDefaults()
	sem := make(chan struct{}, cfg.Concurrency)
	proc, err := cqrs.NewCommandProcessorWithConfig(router, cqrs.CommandProcessorConfig{
		GenerateSubscribeTopic: func(cqrs.CommandProcessorGenerateSubscribeTopicParams) (string, error) { return cfg.Topic, nil },
		SubscriberConstructor:  func(cqrs.CommandProcessorSubscriberConstructorParams) (message.Subscriber, error) { return sub, nil },
		Marshaler:              marshaler(),
		Logger:                 watermill.NewSlogLogger(log),
	})
	if err != nil {
		return err
	}
	return proc.AddHandlers(cqrs.NewCommandHandler(HandlerName, func(ctx context.Context, cmd *commands.GrantShard) error {
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		}
		defer func() { <-sem }()
		backoff := 500 * time.Millisecond
		for attempt := 1; ; attempt++ {
			_, err := h.Handle(ctx, *cmd)
			switch {
			case err == nil:
				return nil
			case ctx.Err() != nil:
				return ctx.Err() // stopping: nacked, redelivered or re-sent later
			case errors.Is(err, domain.ErrInvalidArgument), errors.Is(err, domain.ErrNotFound), attempt > cfg.Retries:
				log.Warn("grant shard not handled; the job's coordinator sends it again if it is still due",
					"job", cmd.JobID, "shard", cmd.Shard, "attempts", attempt, "err", err)
				return nil
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff *= 2
		}
	}))
}
