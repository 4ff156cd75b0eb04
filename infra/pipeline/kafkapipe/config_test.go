package kafkapipe

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/pipeline"
)

func TestConfigDefaults(t *testing.T) {
	c := Config{Brokers: []string{"k:9092"}}.WithDefaults()
	if c.Topic != pipeline.Topic || c.Partitions != 12 || c.ReplicationFactor != 1 || c.MinInSyncReplicas != 0 ||
		c.ClientID != "couponsd" || c.KafkaVersion != DefaultKafkaVersion || c.BatchSize != DefaultBatchSize {
		t.Errorf("defaults: %+v", c)
	}
	if c := (Config{ReplicationFactor: 3}).WithDefaults(); c.MinInSyncReplicas != 2 {
		t.Errorf("RF 3: min.insync.replicas %d, want 2", c.MinInSyncReplicas)
	}
	if err := (Config{Brokers: []string{"k:9092"}}).Validate(); err != nil {
		t.Errorf("zero config with brokers: %v", err)
	}
}

func TestConfigValidate(t *testing.T) {
	for name, tc := range map[string]struct {
		c     Config
		field string
	}{
		"no brokers":     {Config{}, "Brokers"},
		"bad broker":     {Config{Brokers: []string{"k"}}, "Brokers"},
		"partitions":     {Config{Brokers: []string{"k:1"}, Partitions: -1}, "Partitions"},
		"min insync":     {Config{Brokers: []string{"k:1"}, ReplicationFactor: 3, MinInSyncReplicas: 4}, "MinInSyncReplicas"},
		"old version":    {Config{Brokers: []string{"k:1"}, KafkaVersion: "0.10.2.0"}, "KafkaVersion"},
		"bad version":    {Config{Brokers: []string{"k:1"}, KafkaVersion: "x"}, "KafkaVersion"},
		"negative time":  {Config{Brokers: []string{"k:1"}, CommitInterval: -time.Second}, "CommitInterval"},
		"negative batch": {Config{Brokers: []string{"k:1"}, BatchSize: -1}, "BatchSize"},
		"backoffs":       {Config{Brokers: []string{"k:1"}, MinBackoff: time.Minute}, "MinBackoff"},
		"heartbeat":      {Config{Brokers: []string{"k:1"}, HeartbeatInterval: 5 * time.Second}, "HeartbeatInterval"},
	} {
		err := tc.c.Validate()
		if !errors.Is(err, domain.ErrInvalidArgument) || !strings.Contains(err.Error(), tc.field) {
			t.Errorf("%s: Validate() = %v, want an invalid %s", name, err, tc.field)
		}
	}
}

func TestParseBrokers(t *testing.T) {
	got := ParseBrokers(" a:1, b:2 ,,")
	if len(got) != 2 || got[0] != "a:1" || got[1] != "b:2" {
		t.Errorf("ParseBrokers = %q", got)
	}
}

// The settings the delivery guarantees rest on.
func TestSaramaConfigs(t *testing.T) {
	cfg := Config{Brokers: []string{"k:9092"}}
	p, err := cfg.ProducerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if p.Producer.RequiredAcks != sarama.WaitForAll || p.Producer.Idempotent || p.Net.MaxOpenRequests != 1 ||
		!p.Version.IsAtLeast(sarama.V0_11_0_0) || p.Producer.Retry.Max != DefaultProduceRetries || !p.Producer.Return.Successes {
		t.Errorf("producer config: acks %v idempotent %v max open %d version %v retries %d",
			p.Producer.RequiredAcks, p.Producer.Idempotent, p.Net.MaxOpenRequests, p.Version, p.Producer.Retry.Max)
	}
	if b := p.Producer.Retry.BackoffFunc; b(1, 10) != DefaultRetryBackoff || b(3, 10) != 4*DefaultRetryBackoff || b(30, 30) != 20*DefaultRetryBackoff {
		t.Errorf("retry backoffs %v %v %v", b(1, 10), b(3, 10), b(30, 30))
	}
	cfg.IdempotentProducer = true
	if p, err := cfg.ProducerConfig(); err != nil || !p.Producer.Idempotent {
		t.Errorf("IdempotentProducer: %v, %v", p.Producer.Idempotent, err)
	}
	c, err := cfg.ConsumerConfig()
	if err != nil {
		t.Fatal(err)
	}
	if c.Consumer.Offsets.Initial != sarama.OffsetOldest || !c.Consumer.Offsets.AutoCommit.Enable ||
		c.Consumer.Offsets.AutoCommit.Interval != DefaultCommitInterval {
		t.Errorf("consumer config: initial %d autocommit %v every %v", c.Consumer.Offsets.Initial,
			c.Consumer.Offsets.AutoCommit.Enable, c.Consumer.Offsets.AutoCommit.Interval)
	}
}

// EnsureTopic creates the topic once, with its partitions and configs, and
// leaves an existing one alone.
func TestEnsureTopic(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	ctx := context.Background()
	info, err := EnsureTopic(ctx, cfg)
	if err != nil || !info.Created || info.Partitions != 12 {
		t.Fatalf("first EnsureTopic = %+v, %v", info, err)
	}
	info, err = EnsureTopic(ctx, cfg)
	if err != nil || info.Created || info.Partitions != 12 {
		t.Fatalf("second EnsureTopic = %+v, %v", info, err)
	}
	other := cfg
	other.Partitions = 3
	if info, err = EnsureTopic(ctx, other); err != nil || info.Created || info.Partitions != 12 {
		t.Fatalf("EnsureTopic with another partition count = %+v, %v; want the existing 12", info, err)
	}
	topicConfig(t, cfg, map[string]string{"retention.ms": "-1", "cleanup.policy": "delete"})

	if _, err := EnsureTopic(ctx, Config{}); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Errorf("EnsureTopic without brokers: %v", err)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := EnsureTopic(canceled, cfg); !errors.Is(err, context.Canceled) {
		t.Errorf("EnsureTopic with a canceled context: %v", err)
	}
}

// Production layout: three brokers, replication factor 3, min.insync 2.
func TestEnsureTopicReplicated(t *testing.T) {
	t.Parallel()
	c := newCluster(t, kfake.NumBrokers(3))
	cfg := testConfig(c.ListenAddrs())
	cfg.ReplicationFactor = 3
	if info, err := EnsureTopic(context.Background(), cfg); err != nil || !info.Created {
		t.Fatalf("EnsureTopic = %+v, %v", info, err)
	}
	topicConfig(t, cfg, map[string]string{"min.insync.replicas": "2", "retention.ms": "-1"})
}

func topicConfig(t *testing.T, cfg Config, want map[string]string) {
	t.Helper()
	sc, err := cfg.WithDefaults().baseSarama()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	entries, err := admin.DescribeConfig(sarama.ConfigResource{Type: sarama.TopicResource, Name: cfg.WithDefaults().Topic})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, e := range entries {
		got[e.Name] = e.Value
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("topic config %s = %q, want %q", k, got[k], v)
		}
	}
}
