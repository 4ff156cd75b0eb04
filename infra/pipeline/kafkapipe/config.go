// Package kafkapipe is the production event pipeline (used when
// COUPONS_KAFKA_BROKERS is set): a Forwarder copies the event store into one
// Kafka topic, and every projector consumes that topic through a Watermill
// router in its own consumer group.
//
// # Layout
//
//	topic           pipeline.Topic ("couponsd.events.v1"), Config.Partitions
//	                partitions (default 12), replication factor
//	                Config.ReplicationFactor (default 1, use 3 in production
//	                with min.insync.replicas=2), retention.ms=-1 (the topic
//	                keeps every event: a new consumer group replays from the
//	                beginning), cleanup.policy=delete (never compact: that
//	                would drop a coupon's older events).
//	message key     pipeline.AggregateID(stream) ("coupon-<id>" -> "<id>"),
//	                Sarama's hash partitioner (FNV-1a), so one aggregate's
//	                events land in one partition, in revision order.
//	message value   the event data; metadata as Kafka headers (stream, type,
//	                revision, position, recorded_at, partition_key) plus
//	                Watermill's _watermill_message_uuid = event id.
//	consumer group  pipeline.HandlerName(p) ("couponsd-projector-<name>"),
//	                one per projector, never renamed. Instances of one
//	                projector share the group and split the partitions.
//
// Never change the partition count of a live topic: keys would move to other
// partitions and a consumer could apply a coupon's newer event before an
// older one still queued in the old partition.
//
// # Guarantees
//
// At least once, in order per aggregate. The forwarder checkpoints only
// positions Kafka acknowledged (acks=all) and re-publishes from its
// checkpoint after any failure; it never has more than one event of an
// aggregate in flight, so a retry cannot reorder an aggregate's events.
// Consumers commit a partition offset only after the projector handled the
// message. Duplicates therefore happen (after a forwarder or consumer
// restart, a rebalance, a broker failover, a producer retry) and projectors
// must be idempotent, as every projector in package projections is
// (per-aggregate revision).
//
// # Why the producer is not idempotent by default
//
// Sarama's idempotent producer (v1.43.3) loses acknowledged records when a
// send to one partition fails after its retries while other partitions keep
// producing: in TestProducerAcksAreDurable (KAFKAPIPE_SARAMA_PROBE=1) most
// runs find acknowledged sends (up to 15%) missing from the log, their
// reported offset holding another record. Our reading of Sarama's source: on each failed
// message it bumps the producer epoch locally and restarts every
// partition's sequence at 0, but a record batch is stamped with the epoch
// current when the batch is opened, not the one its records' sequences were
// assigned under; two batches of a partition can then carry the same epoch
// and sequence, and the broker, deduplicating as Kafka does (kfake follows
// Kafka's rules), acknowledges the second without appending it. The
// broker-side deduplication would only save duplicates the projectors
// discard anyway, so Config.IdempotentProducer defaults to false: acks=all,
// one request in flight per broker and one event per aggregate in flight
// keep the order and durability guarantees without it.
//
// Events of different aggregates are NOT delivered in global position order:
// partitions are consumed concurrently, so a projector's Handle runs
// concurrently for different partitions, and the positions it sees are not
// monotonic.
package kafkapipe

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/IBM/sarama"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/pipeline"
)

// Defaults of the zero Config fields.
const (
	DefaultPartitions         = 12
	DefaultReplicationFactor  = 1
	DefaultClientID           = "couponsd"
	DefaultKafkaVersion       = "2.3.0"
	DefaultDialTimeout        = 10 * time.Second
	DefaultRequestTimeout     = 30 * time.Second
	DefaultProduceTimeout     = 10 * time.Second
	DefaultAdminTimeout       = 30 * time.Second
	DefaultProduceRetries     = 10
	DefaultRetryBackoff       = 100 * time.Millisecond
	DefaultBatchSize          = 512
	DefaultCheckpointEvery    = 1000
	DefaultCheckpointInterval = 100 * time.Millisecond
	DefaultMinBackoff         = 100 * time.Millisecond
	DefaultMaxBackoff         = 5 * time.Second
	DefaultCommitInterval     = time.Second
	DefaultSessionTimeout     = 10 * time.Second
	DefaultHeartbeatInterval  = 3 * time.Second
	DefaultRebalanceTimeout   = 60 * time.Second
	DefaultCloseTimeout       = 10 * time.Second
)

// Config configures the Kafka pipeline. The zero value of every field but
// Brokers takes its default.
type Config struct {
	// Brokers are the bootstrap brokers (host:port). Required.
	Brokers []string
	// Topic carrying every event. Default pipeline.Topic.
	Topic string
	// Partitions of the topic when EnsureTopic creates it. Default 12. It
	// bounds the parallelism of one projector (one consumer per partition).
	Partitions int32
	// ReplicationFactor of the topic when EnsureTopic creates it. Default 1
	// (development); use 3 in production.
	ReplicationFactor int16
	// MinInSyncReplicas of the topic when EnsureTopic creates it. Default
	// 2 when ReplicationFactor >= 3, else the broker's default. With
	// acks=all, a write is acknowledged once this many replicas have it.
	MinInSyncReplicas int
	// Retention of the topic when EnsureTopic creates it. Default 0: keep
	// forever (retention.ms=-1), so a new projector can replay everything.
	Retention time.Duration
	// ClientID sent to the brokers. Default "couponsd".
	ClientID string
	// KafkaVersion is the protocol version the client speaks
	// (sarama.ParseKafkaVersion); brokers must be at least that version.
	// Default "2.3.0", the newest version before Sarama switches
	// OffsetFetch to its flexible encoding, which it decodes wrongly when
	// a broker answers a partition without a committed offset with a null
	// metadata string (kfake does; Apache Kafka sends ""): every new
	// consumer group then fails with "invalid byteslice length". Must be
	// >= 0.11.0 (record headers). Kafka 4.x still accepts every request
	// version 2.3.0 uses.
	KafkaVersion string
	// IdempotentProducer turns on Sarama's idempotent producer. Default
	// false: see "Why the producer is not idempotent by default" in the
	// package documentation before turning it on.
	IdempotentProducer bool

	// DialTimeout for broker connections. Default 10s.
	DialTimeout time.Duration
	// RequestTimeout bounds one request's read and write. Default 30s.
	RequestTimeout time.Duration
	// ProduceTimeout is how long a broker waits for the in-sync replicas
	// (acks=all) before failing a produce. Default 10s.
	ProduceTimeout time.Duration
	// AdminTimeout bounds EnsureTopic's requests. Default 30s.
	AdminTimeout time.Duration
	// ProduceRetries is how often the producer retries a failed send
	// before Publish fails. Default 10.
	ProduceRetries int
	// RetryBackoff is the first producer retry backoff, doubling up to 20x.
	// Default 100ms.
	RetryBackoff time.Duration

	// BatchSize is the most events the forwarder publishes at once (the
	// aggregates of a batch are sent concurrently, each aggregate's events
	// in order). Default 512.
	BatchSize int
	// CheckpointEvery: the forwarder saves its checkpoint at least every
	// that many acknowledged events... Default 1000.
	CheckpointEvery int
	// ...and at least every CheckpointInterval while behind. Default 100ms.
	CheckpointInterval time.Duration
	// MinBackoff and MaxBackoff bound the forwarder's and consumer's
	// restart backoff (doubling). Default 100ms and 5s.
	MinBackoff, MaxBackoff time.Duration

	// CommitInterval: consumers commit the offsets of handled messages this
	// often (and when they stop or lose a partition). Default 1s. A crash
	// re-delivers at most this much.
	CommitInterval time.Duration
	// SessionTimeout, HeartbeatInterval and RebalanceTimeout of the
	// consumer groups. Defaults 10s, 3s and 60s. The broker bounds the
	// session timeout (group.min.session.timeout.ms, 6s by default).
	SessionTimeout, HeartbeatInterval, RebalanceTimeout time.Duration
	// CloseTimeout bounds how long a stopping consumer waits for the
	// message being handled. Default 10s.
	CloseTimeout time.Duration
}

// WithDefaults returns c with every zero field set to its default.
func (c Config) WithDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	if c.Topic == "" {
		c.Topic = pipeline.Topic
	}
	if c.Partitions == 0 {
		c.Partitions = DefaultPartitions
	}
	if c.ReplicationFactor == 0 {
		c.ReplicationFactor = DefaultReplicationFactor
	}
	if c.MinInSyncReplicas == 0 && c.ReplicationFactor >= 3 {
		c.MinInSyncReplicas = 2
	}
	if c.ClientID == "" {
		c.ClientID = DefaultClientID
	}
	if c.KafkaVersion == "" {
		c.KafkaVersion = DefaultKafkaVersion
	}
	def(&c.DialTimeout, DefaultDialTimeout)
	def(&c.RequestTimeout, DefaultRequestTimeout)
	def(&c.ProduceTimeout, DefaultProduceTimeout)
	def(&c.AdminTimeout, DefaultAdminTimeout)
	if c.ProduceRetries == 0 {
		c.ProduceRetries = DefaultProduceRetries
	}
	def(&c.RetryBackoff, DefaultRetryBackoff)
	if c.BatchSize == 0 {
		c.BatchSize = DefaultBatchSize
	}
	if c.CheckpointEvery == 0 {
		c.CheckpointEvery = DefaultCheckpointEvery
	}
	def(&c.CheckpointInterval, DefaultCheckpointInterval)
	def(&c.MinBackoff, DefaultMinBackoff)
	def(&c.MaxBackoff, DefaultMaxBackoff)
	def(&c.CommitInterval, DefaultCommitInterval)
	def(&c.SessionTimeout, DefaultSessionTimeout)
	def(&c.HeartbeatInterval, DefaultHeartbeatInterval)
	def(&c.RebalanceTimeout, DefaultRebalanceTimeout)
	def(&c.CloseTimeout, DefaultCloseTimeout)
	return c
}

// ParseBrokers splits a comma-separated broker list (COUPONS_KAFKA_BROKERS).
func ParseBrokers(s string) []string {
	var out []string
	for _, b := range strings.Split(s, ",") {
		if b = strings.TrimSpace(b); b != "" {
			out = append(out, b)
		}
	}
	return out
}

// Validate reports invalid settings: missing brokers, negative values, a
// version older than 0.11, a heartbeat not below a third of the session.
// Zero values are valid and mean the defaults.
func (c Config) Validate() error {
	var errs []error
	if len(c.Brokers) == 0 {
		errs = append(errs, domain.Invalid("Brokers", "required"))
	}
	for _, b := range c.Brokers {
		if strings.TrimSpace(b) == "" || !strings.Contains(b, ":") {
			errs = append(errs, domain.Invalid("Brokers", "%q is not host:port", b))
		}
	}
	if c.Partitions < 0 {
		errs = append(errs, domain.Invalid("Partitions", "must not be negative, got %d", c.Partitions))
	}
	if c.ReplicationFactor < 0 {
		errs = append(errs, domain.Invalid("ReplicationFactor", "must not be negative, got %d", c.ReplicationFactor))
	}
	if c.MinInSyncReplicas < 0 || (c.MinInSyncReplicas > 0 && c.ReplicationFactor > 0 && c.MinInSyncReplicas > int(c.ReplicationFactor)) {
		errs = append(errs, domain.Invalid("MinInSyncReplicas", "must be between 0 and the replication factor, got %d", c.MinInSyncReplicas))
	}
	if c.KafkaVersion != "" {
		v, err := sarama.ParseKafkaVersion(c.KafkaVersion)
		if err != nil {
			errs = append(errs, domain.Invalid("KafkaVersion", "%v", err))
		} else if !v.IsAtLeast(sarama.V0_11_0_0) {
			errs = append(errs, domain.Invalid("KafkaVersion", "record headers need >= 0.11.0, got %s", c.KafkaVersion))
		}
	}
	for name, d := range map[string]time.Duration{
		"Retention": c.Retention, "DialTimeout": c.DialTimeout, "RequestTimeout": c.RequestTimeout,
		"ProduceTimeout": c.ProduceTimeout, "AdminTimeout": c.AdminTimeout, "RetryBackoff": c.RetryBackoff,
		"CheckpointInterval": c.CheckpointInterval, "MinBackoff": c.MinBackoff, "MaxBackoff": c.MaxBackoff,
		"CommitInterval": c.CommitInterval, "SessionTimeout": c.SessionTimeout,
		"HeartbeatInterval": c.HeartbeatInterval, "RebalanceTimeout": c.RebalanceTimeout, "CloseTimeout": c.CloseTimeout,
	} {
		if d < 0 {
			errs = append(errs, domain.Invalid(name, "must not be negative, got %v", d))
		}
	}
	for name, n := range map[string]int{"ProduceRetries": c.ProduceRetries, "BatchSize": c.BatchSize, "CheckpointEvery": c.CheckpointEvery} {
		if n < 0 {
			errs = append(errs, domain.Invalid(name, "must not be negative, got %d", n))
		}
	}
	d := c.WithDefaults()
	if d.MinBackoff > d.MaxBackoff {
		errs = append(errs, domain.Invalid("MinBackoff", "must not exceed MaxBackoff (%v > %v)", d.MinBackoff, d.MaxBackoff))
	}
	if d.HeartbeatInterval*3 > d.SessionTimeout {
		errs = append(errs, domain.Invalid("HeartbeatInterval", "must be at most a third of SessionTimeout (%v, %v)", d.HeartbeatInterval, d.SessionTimeout))
	}
	return errors.Join(errs...)
}

// baseSarama is the client configuration shared by producer, consumer and
// admin. c has its defaults.
func (c Config) baseSarama() (*sarama.Config, error) {
	v, err := sarama.ParseKafkaVersion(c.KafkaVersion)
	if err != nil {
		return nil, err
	}
	sc := sarama.NewConfig()
	sc.Version = v
	sc.ClientID = c.ClientID
	sc.Net.DialTimeout = c.DialTimeout
	sc.Net.ReadTimeout = c.RequestTimeout
	sc.Net.WriteTimeout = c.RequestTimeout
	sc.Metadata.Retry.Max = 5
	sc.Metadata.Retry.Backoff = 250 * time.Millisecond
	sc.Admin.Timeout = c.AdminTimeout
	return sc, nil
}

// ProducerConfig is the Sarama configuration of the forwarder's sync
// producer: acks from all in-sync replicas, one request in flight per broker
// (a retried batch is never overtaken), retries with exponential backoff,
// hash partitioning by key, idempotence only with Config.IdempotentProducer.
func (c Config) ProducerConfig() (*sarama.Config, error) {
	c = c.WithDefaults()
	sc, err := c.baseSarama()
	if err != nil {
		return nil, err
	}
	sc.Producer.RequiredAcks = sarama.WaitForAll
	sc.Producer.Idempotent = c.IdempotentProducer
	sc.Net.MaxOpenRequests = 1
	sc.Producer.Timeout = c.ProduceTimeout
	sc.Producer.Return.Successes = true // required by the sync producer
	sc.Producer.Return.Errors = true
	sc.Producer.Retry.Max = c.ProduceRetries
	base := c.RetryBackoff
	sc.Producer.Retry.BackoffFunc = func(retries, _ int) time.Duration {
		d := base
		for i := 1; i < retries && d < 20*base; i++ {
			d *= 2
		}
		return min(d, 20*base)
	}
	sc.Producer.Partitioner = sarama.NewHashPartitioner
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafkapipe: producer config: %w", err)
	}
	return sc, nil
}

// ConsumerConfig is the Sarama configuration of a projector's consumer:
// new groups start from the oldest offset (Sarama's default is the newest,
// which would skip every event published before the group first joined),
// offsets of acknowledged messages are committed every CommitInterval and
// when a partition is released.
func (c Config) ConsumerConfig() (*sarama.Config, error) {
	c = c.WithDefaults()
	sc, err := c.baseSarama()
	if err != nil {
		return nil, err
	}
	sc.Consumer.Return.Errors = true
	sc.Consumer.Offsets.Initial = sarama.OffsetOldest
	sc.Consumer.Offsets.AutoCommit.Enable = true
	sc.Consumer.Offsets.AutoCommit.Interval = c.CommitInterval
	sc.Consumer.Group.Session.Timeout = c.SessionTimeout
	sc.Consumer.Group.Heartbeat.Interval = c.HeartbeatInterval
	sc.Consumer.Group.Rebalance.Timeout = c.RebalanceTimeout
	sc.Consumer.Group.Rebalance.GroupStrategies = []sarama.BalanceStrategy{sarama.NewBalanceStrategySticky()}
	if err := sc.Validate(); err != nil {
		return nil, fmt.Errorf("kafkapipe: consumer config: %w", err)
	}
	return sc, nil
}
