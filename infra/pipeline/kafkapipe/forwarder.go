package kafkapipe

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/pipeline"
)

// CheckpointStore keeps the forwarder's position: the last event position
// Kafka acknowledged. redisops.NewCheckpoint(rdb, prefix+"kafka-forwarder:
// checkpoint") satisfies it. It must be durable and shared by every
// forwarder instance.
type CheckpointStore interface {
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// Marshaler is the Watermill-Kafka marshaler of the pipeline: Watermill's
// default (payload as value, metadata as headers) with the key taken from
// the pipeline.MetaKey metadata, i.e. pipeline.AggregateID(stream).
func Marshaler() kafka.MarshalerUnmarshaler {
	return kafka.NewWithPartitioningMarshaler(func(_ string, m *message.Message) (string, error) {
		key := m.Metadata.Get(pipeline.MetaKey)
		if key == "" {
			return "", fmt.Errorf("kafkapipe: message %s has no %s metadata", m.UUID, pipeline.MetaKey)
		}
		return key, nil
	})
}

// NewPublisher opens a Watermill-Kafka publisher (a Sarama sync producer
// with Config.ProducerConfig) using Marshaler.
func NewPublisher(cfg Config, log *slog.Logger) (*kafka.Publisher, error) {
	cfg = cfg.WithDefaults()
	sc, err := cfg.ProducerConfig()
	if err != nil {
		return nil, err
	}
	return kafka.NewPublisher(kafka.PublisherConfig{
		Brokers: cfg.Brokers, Marshaler: Marshaler(), OverwriteSaramaConfig: sc,
	}, watermill.NewSlogLogger(log))
}

// ForwarderStats are the forwarder's counters, for metrics.
type ForwarderStats struct {
	Published        uint64 // events of acknowledged batches (re-published ones count again)
	Batches          uint64 // publish batches acknowledged
	Position         uint64 // position of the last event Kafka acknowledged
	Checkpoint       uint64 // last position saved to the CheckpointStore
	Restarts         uint64 // sessions ended by an error (re-subscribed from the checkpoint)
	CheckpointErrors uint64 // failed checkpoint saves
}

// Forwarder copies every stored event into the Kafka topic, in position
// order per aggregate, at least once. Run one per deployment. A second one
// breaks nothing, it only wastes: it publishes the same events again (each
// aggregate's copies in order, so idempotent projectors skip them) and the
// two may move the shared checkpoint back, which means more duplicates
// after a restart.
type Forwarder struct {
	cfg   Config
	store es.Store
	cp    CheckpointStore
	log   *slog.Logger
	pub   func() (message.Publisher, error)

	published, batches, position, saved, restarts, cpErrors atomic.Uint64
	lastSave                                                time.Time // owned by Run
}

// NewForwarder validates cfg and the dependencies.
func NewForwarder(cfg Config, store es.Store, cp CheckpointStore, log *slog.Logger) (*Forwarder, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if store == nil || cp == nil {
		return nil, errors.New("kafkapipe: NewForwarder needs an event store and a checkpoint store")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	f := &Forwarder{cfg: cfg, store: store, cp: cp, log: log.With("component", "kafka-forwarder")}
	f.pub = func() (message.Publisher, error) { return NewPublisher(cfg, log) }
	return f, nil
}

// Stats returns the counters.
func (f *Forwarder) Stats() ForwarderStats {
	return ForwarderStats{
		Published: f.published.Load(), Batches: f.batches.Load(), Position: f.position.Load(),
		Checkpoint: f.saved.Load(), Restarts: f.restarts.Load(), CheckpointErrors: f.cpErrors.Load(),
	}
}

// Run forwards events until ctx ends (then it returns nil, after saving the
// last acknowledged position). Call it once. Any failure (store, Kafka,
// checkpoint read) ends the session: the publisher is closed and, after a
// backoff (MinBackoff doubling to MaxBackoff, reset by a session that
// published something), a new session re-subscribes from the checkpoint, or
// from the last position this process saw acknowledged if that is further
// (a checkpoint save may have failed). Events of a batch that failed partway
// are published again.
func (f *Forwarder) Run(ctx context.Context) error {
	backoff := f.cfg.MinBackoff
	for {
		before := f.position.Load()
		err := f.session(ctx)
		if ctx.Err() != nil {
			return nil
		}
		f.restarts.Add(1)
		if f.position.Load() != before {
			backoff = f.cfg.MinBackoff
		}
		f.log.Warn("forwarder stopped; re-subscribing from the checkpoint", "err", err, "backoff", backoff,
			"position", f.position.Load())
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, f.cfg.MaxBackoff)
	}
}

// session is one subscription: from the checkpoint until the first error.
func (f *Forwarder) session(ctx context.Context) (err error) {
	stored, err := f.cp.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("read checkpoint: %w", err)
	}
	// What this process saw acknowledged is a checkpoint too, even if
	// saving it failed (it is saved at the next tick).
	from := max(stored, f.position.Load())
	f.saved.Store(stored)
	f.position.Store(from)

	pub, err := f.pub()
	if err != nil {
		return fmt.Errorf("open publisher: %w", err)
	}
	f.log.Info("forwarding events to Kafka", "topic", f.cfg.Topic, "after", from)
	defer func() {
		if cerr := pub.Close(); cerr != nil {
			f.log.Debug("close publisher", "err", cerr)
		}
	}()

	sctx, cancel := context.WithCancel(ctx)
	events := make(chan es.RecordedEvent, 2*f.cfg.BatchSize)
	subDone := make(chan error, 1)
	go func() {
		subDone <- f.store.Subscribe(sctx, from, func(ctx context.Context, ev es.RecordedEvent) error {
			select {
			case events <- ev:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
	}()
	subRunning := true
	defer func() {
		cancel()
		if subRunning {
			<-subDone
		}
		// Everything up to position was acknowledged: keep it.
		cctx, ccancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		f.checkpoint(cctx, true)
		ccancel()
	}()

	tick := time.NewTicker(f.cfg.CheckpointInterval)
	defer tick.Stop()
	batch := make([]es.RecordedEvent, 0, f.cfg.BatchSize)
	for {
		select {
		case ev := <-events:
			batch = append(batch[:0], ev)
		fill:
			for len(batch) < f.cfg.BatchSize {
				select {
				case ev := <-events:
					batch = append(batch, ev)
				default:
					break fill
				}
			}
			if err := f.publish(ctx, pub, batch); err != nil {
				return err
			}
			f.position.Store(batch[len(batch)-1].Position)
			f.published.Add(uint64(len(batch)))
			f.batches.Add(1)
			clear(batch)
			if f.position.Load()-f.saved.Load() >= uint64(f.cfg.CheckpointEvery) {
				f.checkpoint(ctx, true)
			}
		case <-tick.C:
			f.checkpoint(ctx, false)
		case err := <-subDone:
			subRunning = false
			return fmt.Errorf("subscription: %w", err)
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkpoint saves the acknowledged position if it moved, and (unless
// force) CheckpointInterval passed since the last save. A failure is logged
// and retried at the next call: the checkpoint only lags.
func (f *Forwarder) checkpoint(ctx context.Context, force bool) {
	pos := f.position.Load()
	if pos <= f.saved.Load() || (!force && time.Since(f.lastSave) < f.cfg.CheckpointInterval) {
		return
	}
	if err := f.cp.SaveCheckpoint(ctx, pos); err != nil {
		f.cpErrors.Add(1)
		f.log.Warn("save forwarder checkpoint", "position", pos, "err", err)
		return
	}
	f.saved.Store(pos)
	f.lastSave = time.Now()
}

// publish sends one batch and returns once Kafka acknowledged all of it, or
// with the first error. Events are grouped by partition key: each group is
// published in order by its own goroutine (a sync send waits for its ack
// before the next, so one aggregate's events cannot be reordered), the
// groups concurrently, which lets the Sarama producer pack them into a few
// produce requests. (watermill-kafka's Publish(topic, msgs...) sends its
// messages one by one, each waiting for its ack: one call per batch would be
// one round trip per event.)
func (f *Forwarder) publish(ctx context.Context, pub message.Publisher, batch []es.RecordedEvent) error {
	out := make([]Outgoing, len(batch))
	for i, ev := range batch {
		m := pipeline.ToMessage(ev)
		m.SetContext(ctx)
		out[i] = Outgoing{Topic: f.cfg.Topic, Msg: m}
	}
	if err := PublishByKey(pub, out); err != nil {
		return fmt.Errorf("publish: %w", err)
	}
	return nil
}

// Outgoing is a message and the topic it goes to.
type Outgoing struct {
	Topic string
	Msg   *message.Message
}

// PublishByKey publishes msgs grouped by topic and partition key (the
// pipeline.MetaKey metadata): each group in order by its own goroutine (a
// sync send waits for its ack before the next, so one key's messages cannot
// be reordered), the groups concurrently, which lets the Sarama producer
// pack them into a few produce requests. (watermill-kafka's
// Publish(topic, msgs...) sends its messages one by one, each waiting for its
// ack: one call per batch would be one round trip per message.) It returns
// once every message is acknowledged, or with the first error.
func PublishByKey(pub message.Publisher, msgs []Outgoing) error {
	type group struct {
		topic string
		msgs  []*message.Message
	}
	groups := make(map[string]*group, len(msgs))
	order := make([]string, 0, len(msgs))
	for _, o := range msgs {
		gk := o.Topic + "\x00" + o.Msg.Metadata.Get(pipeline.MetaKey)
		g, ok := groups[gk]
		if !ok {
			g = &group{topic: o.Topic}
			groups[gk] = g
			order = append(order, gk)
		}
		g.msgs = append(g.msgs, o.Msg)
	}
	if len(order) == 1 {
		g := groups[order[0]]
		return pub.Publish(g.topic, g.msgs...)
	}
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for _, gk := range order {
		g := groups[gk]
		wg.Go(func() {
			if err := pub.Publish(g.topic, g.msgs...); err != nil {
				mu.Lock()
				if firstErr == nil {
					firstErr = fmt.Errorf("%s: %w", g.topic, err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return firstErr
}
