package kafkapipe

import (
	"context"
	"errors"
	"fmt"
	"strconv"

	"github.com/IBM/sarama"
)

// TopicInfo describes the events topic as EnsureTopic found or made it.
type TopicInfo struct {
	Created    bool  // EnsureTopic created it
	Partitions int32 // its partition count (may differ from Config.Partitions if it existed)
}

// EnsureTopic creates the events topic with cfg's partitions, replication
// factor, min.insync.replicas and retention unless it exists. An existing
// topic is left alone (its partition count is never changed: that would
// move keys between partitions); compare TopicInfo.Partitions with
// cfg.Partitions to warn about a mismatch. Concurrent callers are fine.
func EnsureTopic(ctx context.Context, cfg Config) (TopicInfo, error) {
	if err := cfg.Validate(); err != nil {
		return TopicInfo{}, err
	}
	if err := ctx.Err(); err != nil {
		return TopicInfo{}, err
	}
	cfg = cfg.WithDefaults()
	sc, err := cfg.baseSarama()
	if err != nil {
		return TopicInfo{}, err
	}
	// Sarama's admin takes no context: run it aside and stop waiting when
	// ctx ends (it finishes within its own timeouts).
	type result struct {
		info TopicInfo
		err  error
	}
	done := make(chan result, 1)
	go func() {
		info, err := ensureTopic(cfg, sc)
		done <- result{info, err}
	}()
	select {
	case r := <-done:
		return r.info, r.err
	case <-ctx.Done():
		return TopicInfo{}, ctx.Err()
	}
}

func ensureTopic(cfg Config, sc *sarama.Config) (TopicInfo, error) {
	admin, err := sarama.NewClusterAdmin(cfg.Brokers, sc)
	if err != nil {
		return TopicInfo{}, fmt.Errorf("kafkapipe: cluster admin: %w", err)
	}
	defer admin.Close()
	if info, ok, err := describeTopic(admin, cfg.Topic); err != nil || ok {
		return info, err
	}
	retention := "-1"
	if cfg.Retention > 0 {
		retention = strconv.FormatInt(cfg.Retention.Milliseconds(), 10)
	}
	entries := map[string]*string{"retention.ms": &retention, "cleanup.policy": ptr("delete")}
	if cfg.MinInSyncReplicas > 0 {
		entries["min.insync.replicas"] = ptr(strconv.Itoa(cfg.MinInSyncReplicas))
	}
	err = admin.CreateTopic(cfg.Topic, &sarama.TopicDetail{
		NumPartitions: cfg.Partitions, ReplicationFactor: cfg.ReplicationFactor, ConfigEntries: entries,
	}, false)
	if errors.Is(err, sarama.ErrTopicAlreadyExists) {
		info, _, err := describeTopic(admin, cfg.Topic)
		return info, err
	}
	if err != nil {
		return TopicInfo{}, fmt.Errorf("kafkapipe: create topic %s: %w", cfg.Topic, err)
	}
	return TopicInfo{Created: true, Partitions: cfg.Partitions}, nil
}

func describeTopic(admin sarama.ClusterAdmin, topic string) (TopicInfo, bool, error) {
	metas, err := admin.DescribeTopics([]string{topic})
	if err != nil {
		return TopicInfo{}, false, fmt.Errorf("kafkapipe: describe topic %s: %w", topic, err)
	}
	for _, m := range metas {
		if m.Name != topic {
			continue
		}
		switch {
		case errors.Is(m.Err, sarama.ErrUnknownTopicOrPartition):
			return TopicInfo{}, false, nil
		case m.Err != sarama.ErrNoError:
			return TopicInfo{}, false, fmt.Errorf("kafkapipe: describe topic %s: %w", topic, m.Err)
		}
		return TopicInfo{Partitions: int32(len(m.Partitions))}, true, nil
	}
	return TopicInfo{}, false, nil
}

func ptr[T any](v T) *T { return &v }
