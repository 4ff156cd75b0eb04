package outbound

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
)

// Sink delivers outbound messages to other systems.
type Sink interface {
	// Publish returns nil once every message of msgs was delivered; messages
	// of one key are delivered in order. On an error some may have been
	// delivered: the caller publishes them all again (at least once).
	Publish(ctx context.Context, msgs []Message) error
	// Close releases the sink's resources.
	Close() error
}

// Kafka headers of an outbound message, besides Watermill's
// _watermill_message_uuid (= Envelope.ID).
const (
	// HeaderKey carries the message key (also the Kafka record key): the
	// pipeline's key metadata, so kafkapipe's publisher keys the records.
	HeaderKey = pipeline.MetaKey
	// HeaderType carries Envelope.Type.
	HeaderType = "type"
	// HeaderContentType is always "application/json".
	HeaderContentType = "content-type"
)

// EnsureTopics creates the outbound topics of topics (defaults applied)
// with cfg's partitions, replication and retention (kafkapipe.EnsureTopic,
// cfg.Topic ignored) unless they exist.
func EnsureTopics(ctx context.Context, cfg kafkapipe.Config, topics Topics) error {
	if err := topics.Validate(); err != nil {
		return fmt.Errorf("outbound: topics: %w", err)
	}
	t := topics.WithDefaults()
	for _, name := range []string{t.Coupon, t.Batch, t.Other, t.Notifications} {
		c := cfg
		c.Topic = name
		if _, err := kafkapipe.EnsureTopic(ctx, c); err != nil {
			return fmt.Errorf("outbound: ensure topic %s: %w", name, err)
		}
	}
	return nil
}

// KafkaSink publishes envelopes to Kafka through a Watermill-Kafka
// publisher configured like the event pipeline's (kafkapipe.Config's
// producer: acks=all, one request in flight per broker, retries). The
// Watermill message UUID is the envelope id.
type KafkaSink struct {
	pub message.Publisher
}

// NewKafkaSink opens a publisher on cfg's brokers (cfg.Topic is not used:
// each message names its topic). It fails on an invalid config or a nil log.
func NewKafkaSink(cfg kafkapipe.Config, log *slog.Logger) (*KafkaSink, error) {
	if log == nil {
		return nil, errors.New("outbound: NewKafkaSink needs a logger")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("outbound: kafka config: %w", err)
	}
	pub, err := kafkapipe.NewPublisher(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("outbound: open kafka publisher: %w", err)
	}
	return &KafkaSink{pub: pub}, nil
}

// Publish sends msgs and returns once Kafka acknowledged all of them, or
// with the first error. Messages are grouped by topic and key; each group
// is sent in order (a send waits for its acknowledgement before the next),
// the groups concurrently.
func (s *KafkaSink) Publish(ctx context.Context, msgs []Message) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	out := make([]kafkapipe.Outgoing, len(msgs))
	for i, m := range msgs {
		payload, err := m.Envelope.Encode()
		if err != nil {
			return err
		}
		wm := message.NewMessage(m.Envelope.ID, payload)
		wm.Metadata.Set(HeaderKey, m.Key)
		wm.Metadata.Set(HeaderType, m.Envelope.Type)
		wm.Metadata.Set(HeaderContentType, "application/json")
		wm.SetContext(ctx)
		out[i] = kafkapipe.Outgoing{Topic: m.Topic, Msg: wm}
	}
	if err := kafkapipe.PublishByKey(s.pub, out); err != nil {
		return fmt.Errorf("outbound: publish to %w", err)
	}
	return nil
}

// Close closes the publisher.
func (s *KafkaSink) Close() error {
	if err := s.pub.Close(); err != nil {
		return fmt.Errorf("outbound: close kafka publisher: %w", err)
	}
	return nil
}
