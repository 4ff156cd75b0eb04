package kafkapipe

import (
	"context"
	"github.com/couponsd/couponsd/internal/testkit"
	"strconv"
	"testing"
	"time"

	"github.com/IBM/sarama"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/couponsd/couponsd/infra/pipeline"
)

type rawRecord struct {
	partition int32
	offset    int64
	key       string
	stream    string
	revision  uint64
	id        string
}

// readTopic reads n records of the topic straight from the partitions (no
// group), oldest first.
func readTopic(t *testing.T, cfg Config, n int) []rawRecord {
	t.Helper()
	cfg = cfg.WithDefaults()
	sc, err := cfg.ConsumerConfig()
	if err != nil {
		t.Fatal(err)
	}
	// Partitions are added one by one to the broker's fetch session, each
	// waiting out the fetch in flight (MaxWaitTime, 500ms by default).
	sc.Consumer.MaxWaitTime = 20 * time.Millisecond
	consumer, err := sarama.NewConsumer(cfg.Brokers, sc)
	if err != nil {
		t.Fatal(err)
	}
	defer consumer.Close()
	parts, err := consumer.Partitions(cfg.Topic)
	if err != nil {
		t.Fatal(err)
	}
	out := make(chan rawRecord, min(n, 1<<16))
	done := make(chan struct{})
	defer close(done)
	for _, p := range parts {
		pc, err := consumer.ConsumePartition(cfg.Topic, p, sarama.OffsetOldest)
		if err != nil {
			t.Fatal(err)
		}
		defer pc.Close()
		go func() {
			for {
				select {
				case m, ok := <-pc.Messages():
					if !ok {
						return
					}
					r := rawRecord{partition: m.Partition, offset: m.Offset, key: string(m.Key)}
					for _, h := range m.Headers {
						switch string(h.Key) {
						case pipeline.MetaStream:
							r.stream = string(h.Value)
						case pipeline.MetaRevision:
							r.revision, _ = strconv.ParseUint(string(h.Value), 10, 64)
						case "_watermill_message_uuid":
							r.id = string(h.Value)
						}
					}
					select {
					case out <- r:
					case <-done:
						return
					}
				case <-done:
					return
				}
			}
		}()
	}
	recs := make([]rawRecord, 0, min(n, 1<<16))
	timeout := time.After(10 * time.Second)
	for len(recs) < n {
		select {
		case r := <-out:
			recs = append(recs, r)
		case <-timeout:
			if n == 1<<30 {
				return recs
			}
			t.Fatalf("read %d of %d records", len(recs), n)
		}
	}
	return recs
}

// TestTopicLayout: every record is keyed by its aggregate id, one
// aggregate's records sit in one partition (the one Sarama's hash
// partitioner picks for the key), in revision order, and carry the event id.
func TestTopicLayout(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	store := openStore(t)
	w := workload{streams: 30, perStream: 20, chunk: 4}
	w.appendRange(t, context.Background(), store, 0, w.perStream)
	f, _ := startForwarder(t, cfg, store, &testkit.MemCheckpoint{}, testLog(t))
	waitForwarded(t, f, uint64(w.total()), 10*time.Second)
	recs := readTopic(t, cfg, w.total())
	hash := sarama.NewHashPartitioner(cfg.WithDefaults().Topic)
	partOf := map[string]int32{}
	byPart := map[int32][]rawRecord{}
	for _, r := range recs {
		if r.key != pipeline.AggregateID(r.stream) || r.id == "" {
			t.Fatalf("record %+v: key should be %q and carry the event id", r, pipeline.AggregateID(r.stream))
		}
		if p, ok := partOf[r.key]; ok && p != r.partition {
			t.Fatalf("key %s in partitions %d and %d", r.key, p, r.partition)
		}
		partOf[r.key] = r.partition
		want, err := hash.Partition(&sarama.ProducerMessage{Key: sarama.StringEncoder(r.key)}, cfg.WithDefaults().Partitions)
		if err != nil || want != r.partition {
			t.Fatalf("key %s in partition %d, the hash partitioner says %d (%v)", r.key, r.partition, want, err)
		}
		byPart[r.partition] = append(byPart[r.partition], r)
	}
	for p, rs := range byPart {
		next := map[string]uint64{}
		for _, r := range rs { // in offset order: Sarama delivers a partition in order
			if r.revision != next[r.stream] {
				t.Fatalf("partition %d offset %d: %s revision %d, want %d", p, r.offset, r.stream, r.revision, next[r.stream])
			}
			next[r.stream]++
		}
	}
	if len(byPart) < 6 {
		t.Errorf("30 keys landed in only %d partitions", len(byPart))
	}
}

// TestForwarderResumesFromCheckpoint: a new forwarder (a process restart)
// continues from the saved checkpoint, not from the beginning.
func TestForwarderResumesFromCheckpoint(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	ctx := context.Background()
	cp := &testkit.MemCheckpoint{}
	r := newRecorder("forwarder-restart")
	startConsumer(t, cfg, r, log)

	w := workload{streams: 20, perStream: 30, chunk: 5}
	w.appendRange(t, ctx, store, 0, 15)
	f1, stop1 := startForwarder(t, cfg, store, cp, log)
	waitForwarded(t, f1, uint64(w.streams*15), 10*time.Second)
	stop1()
	if got := cp.Get(); got != uint64(w.streams*15) {
		t.Fatalf("checkpoint after a clean stop: %d, want %d", got, w.streams*15)
	}

	w.appendRange(t, ctx, store, 15, 30)
	f2, _ := startForwarder(t, cfg, store, cp, log)
	waitForwarded(t, f2, uint64(w.total()), 10*time.Second)
	if st := f2.Stats(); st.Published != uint64(w.total()-w.streams*15) {
		t.Errorf("second forwarder published %d, want only the %d new events", st.Published, w.total()-w.streams*15)
	}
	r.waitTotal(t, w.total(), 10*time.Second)
	r.verify(t, w.want())
}

// TestForwarderCheckpointStoreDown: failing checkpoint saves do not stop
// publishing; the checkpoint catches up once the store answers.
func TestForwarderCheckpointStoreDown(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	store := openStore(t)
	cp := &testkit.MemCheckpoint{FailSaves: 5}
	w := workload{streams: 10, perStream: 50, chunk: 5, pause: 2 * time.Millisecond}
	f, _ := startForwarder(t, cfg, store, cp, testLog(t))
	w.appendRange(t, context.Background(), store, 0, w.perStream)
	waitForwarded(t, f, uint64(w.total()), 10*time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for cp.Get() != uint64(w.total()) {
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %d, want %d (%+v)", cp.Get(), w.total(), f.Stats())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if st := f.Stats(); st.CheckpointErrors != 5 || st.Restarts != 0 || st.Published != uint64(w.total()) {
		t.Errorf("stats %+v: want 5 checkpoint errors, no restart, %d published", st, w.total())
	}
}

// TestForwarderProduceFailures: three partitions refuse writes
// (NOT_ENOUGH_REPLICAS, as when the ISR shrinks below min.insync.replicas)
// long enough for the producer's retries to give up. The batches fail
// partway (the other partitions took their part), the forwarder re-publishes
// from its checkpoint, so the topic holds duplicates; the projector still
// applies every event once, in order.
func TestForwarderProduceFailures(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	ctx := context.Background()
	r := newRecorder("produce-failures")
	startConsumer(t, cfg, r, log)
	f, _ := startForwarder(t, cfg, store, &testkit.MemCheckpoint{}, log)

	w := workload{streams: 40, perStream: 20, chunk: 5}
	w.appendRange(t, ctx, store, 0, 10)
	waitForwarded(t, f, uint64(w.streams*10), 10*time.Second)

	fault := c.Fault(kfake.Fault{Keys: []kmsg.Key{kmsg.Produce}, Topic: cfg.WithDefaults().Topic,
		Partitions: []int32{0, 1, 2}, Err: kerr.NotEnoughReplicas, Count: -1})
	w.appendRange(t, ctx, store, 10, 20)
	deadline := time.Now().Add(10 * time.Second)
	for f.Stats().Restarts < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("the forwarder did not fail: %+v, %d faulted requests", f.Stats(), fault.Hits())
		}
		time.Sleep(10 * time.Millisecond)
	}
	failing := f.Stats()
	fault.Remove()
	removed := time.Now()

	waitForwarded(t, f, uint64(w.total()), 15*time.Second)
	t.Logf("forwarded everything %v after the fault was removed", time.Since(removed))
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		recs := readTopic(t, cfg, 1<<30)
		bad := map[string]bool{}
		r.mu.Lock()
		for s, revs := range r.applied {
			if len(revs) != w.perStream || int(revs[len(revs)-1]) != w.perStream-1 {
				bad[s] = true
			}
		}
		r.mu.Unlock()
		for _, rec := range recs {
			if bad[rec.stream] {
				t.Logf("%s p%d@%d rev %d", rec.stream, rec.partition, rec.offset, rec.revision)
			}
		}
	})
	r.waitTotal(t, w.total(), 15*time.Second)
	t.Logf("applied everything %v after the fault was removed", time.Since(removed))
	r.verify(t, w.want())
	st := f.Stats()
	_, seen, dups := r.counts()
	if dups == 0 {
		t.Errorf("expected re-published events, the projector saw no duplicate")
	}
	t.Logf("while failing %+v; end %+v; %d faulted produce requests; projector %d deliveries, %d duplicates",
		failing, st, fault.Hits(), seen, dups)
}
