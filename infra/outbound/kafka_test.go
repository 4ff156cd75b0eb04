package outbound

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill-kafka/v3/pkg/kafka"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
)

// kafkaTestConfig is a kafkapipe.Config with timeouts fit for kfake.
func kafkaTestConfig(addrs []string) kafkapipe.Config {
	return kafkapipe.Config{
		Brokers: addrs, Partitions: 6,
		DialTimeout: time.Second, RequestTimeout: 3 * time.Second, ProduceTimeout: 3 * time.Second, AdminTimeout: 3 * time.Second,
		ProduceRetries: 5, RetryBackoff: 20 * time.Millisecond,
	}
}

// TestKafkaSinkPublishesKeyedEnvelopes publishes mapped events of several
// coupons, a batch and a notification to kfake, reads them back with
// franz-go and checks topic, key, partition per key, order and payload.
func TestKafkaSinkPublishesKeyedEnvelopes(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	cfg := kafkaTestConfig(cluster.ListenAddrs())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := EnsureTopics(ctx, cfg, Topics{}); err != nil {
		t.Fatal(err)
	}

	reg := testRegistry()
	mapper := mustMapper(t, reg)
	at := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	var recs []es.RecordedEvent
	pos := uint64(0)
	add := func(stream string, rev uint64, e domain.Event) {
		pos++
		recs = append(recs, recorded(t, reg, stream, rev, pos, e))
	}
	add("batch-b-1", 0, &domain.BatchPaused{BatchID: "b-1", By: "ops", At: at})
	for rev := range uint64(4) {
		for c := range 5 {
			id := fmt.Sprintf("c-%d", c)
			add("coupon-"+id, rev, &domain.CouponLocked{CouponID: id, BatchID: "b-1", UserID: "u", OrderID: fmt.Sprint("o-", rev), At: at})
		}
	}
	add("reminder-r-1", 0, &testReminder{CouponID: "c-1", UserID: "dave", DueAt: at})
	var msgs []Message
	for _, rec := range recs {
		m, err := mapper.Map(rec)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, m...)
	}

	sink, err := NewKafkaSink(cfg, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if err := sink.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}

	cl, err := kgo.NewClient(kgo.SeedBrokers(cluster.ListenAddrs()...),
		kgo.ConsumeTopics(DefaultCouponTopic, DefaultBatchTopic, DefaultOtherTopic, DefaultNotificationsTopic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	var got []*kgo.Record
	for len(got) < len(msgs) {
		fetches := cl.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d records", len(got), len(msgs))
		}
		for _, fe := range fetches.Errors() {
			t.Fatalf("fetch %s/%d: %v", fe.Topic, fe.Partition, fe.Err)
		}
		got = append(got, fetches.Records()...)
	}
	if len(got) != len(msgs) {
		t.Fatalf("consumed %d records, published %d", len(got), len(msgs))
	}

	byID := map[string]*kgo.Record{}
	for _, r := range got {
		var uuid string
		for _, h := range r.Headers {
			if h.Key == kafka.UUIDHeaderKey {
				uuid = string(h.Value)
			}
		}
		byID[uuid] = r
	}
	partitionOf := map[string]int32{} // topic/key -> partition
	lastOffset := map[string]int64{}  // topic/key -> offset of its previous message
	perTopic := map[string][]string{} // topic -> keys seen
	for _, m := range msgs {
		r, ok := byID[m.Envelope.ID]
		if !ok {
			t.Errorf("%s (%s) not consumed", m.Envelope.ID, m.Envelope.Type)
			continue
		}
		want, _ := m.Envelope.Encode()
		if r.Topic != m.Topic || string(r.Key) != m.Key || string(r.Value) != string(want) {
			t.Errorf("%s: got topic %s key %s value %s; want %s, %s, %s", m.Envelope.ID, r.Topic, r.Key, r.Value, m.Topic, m.Key, want)
		}
		tk := m.Topic + "/" + m.Key
		if p, seen := partitionOf[tk]; seen {
			if p != r.Partition {
				t.Errorf("%s: key %s in partitions %d and %d", m.Topic, m.Key, p, r.Partition)
			}
			if r.Offset <= lastOffset[tk] {
				t.Errorf("%s: %s out of order (offset %d after %d)", tk, m.Envelope.ID, r.Offset, lastOffset[tk])
			}
		}
		partitionOf[tk], lastOffset[tk] = r.Partition, r.Offset
		perTopic[m.Topic] = append(perTopic[m.Topic], m.Key)
	}
	if keys := perTopic[DefaultCouponTopic]; len(keys) != 20 || !slices.Contains(keys, "c-4") {
		t.Errorf("coupon topic keys %v", keys)
	}
	if keys := perTopic[DefaultNotificationsTopic]; !slices.Equal(keys, []string{"dave"}) {
		t.Errorf("notification keys %v", keys)
	}
	if keys := perTopic[DefaultBatchTopic]; !slices.Equal(keys, []string{"b-1"}) {
		t.Errorf("batch keys %v", keys)
	}
	parts := map[int32]bool{}
	for tk, p := range partitionOf {
		if len(tk) > len(DefaultCouponTopic) && tk[:len(DefaultCouponTopic)] == DefaultCouponTopic {
			parts[p] = true
		}
	}
	if len(parts) < 2 {
		t.Errorf("5 coupons all landed in partition(s) %v: not partitioned by key?", parts)
	}
}

func TestNewKafkaSinkValidates(t *testing.T) {
	if _, err := NewKafkaSink(kafkapipe.Config{}, testLog(t)); err == nil {
		t.Error("config without brokers accepted")
	}
	if _, err := NewKafkaSink(kafkapipe.Config{Brokers: []string{"localhost:9092"}}, nil); err == nil {
		t.Error("nil logger accepted")
	}
}
