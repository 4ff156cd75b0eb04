package grantbus_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/grantbus"
	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
)

// recorder is a shard handler that remembers what it handled; fail makes
// the first attempts of a shard fail.
type recorder struct {
	mu      sync.Mutex
	handled map[string]int // job/shard -> times
	fail    map[string]int // job/shard -> failures left
	err     error
}

func newRecorder() *recorder { return &recorder{handled: map[string]int{}, fail: map[string]int{}} }

func (r *recorder) Handle(_ context.Context, cmd commands.GrantShard) (*domain.GrantShardDone, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	k := fmt.Sprintf("%s/%d", cmd.JobID, cmd.Shard)
	if r.fail[k] > 0 {
		r.fail[k]--
		if r.err != nil {
			return nil, r.err
		}
		return nil, errors.New("redis blip")
	}
	r.handled[k]++
	return &domain.GrantShardDone{JobID: cmd.JobID, Shard: cmd.Shard}, nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.handled)
}

func quiet() *slog.Logger { return slog.New(slog.DiscardHandler) }

func shards(job string, n int) []commands.GrantShard {
	out := make([]commands.GrantShard, n)
	for i := range out {
		out[i] = commands.GrantShard{JobID: job, BatchID: "b1", Shard: i}
	}
	return out
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// In process: every shard sent is handled; a shard whose handling fails is
// retried by the consumer.
func TestEmbeddedBusDeliversEveryShard(t *testing.T) {
	tr, err := grantbus.NewEmbedded(grantbus.Config{Concurrency: 3}, quiet())
	if err != nil {
		t.Fatal(err)
	}
	rec := newRecorder()
	rec.fail["job-1/3"] = 2 // recovered by the consumer's retries
	if err := tr.Consume(rec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	<-tr.Running()
	if err := tr.Bus.SendGrantShards(ctx, shards("job-1", 50)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "50 shards handled", func() bool { return rec.count() == 50 })
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := tr.Close(); err != nil {
		t.Fatal(err)
	}
}

// Over Kafka (kfake), two instances in one consumer group share the shards
// of one job: the key job/shard spreads them over the partitions.
func TestKafkaBusSpreadsShardsOverConsumers(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.GroupMinSessionTimeout(time.Second))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	kcfg := kafkapipe.Config{Brokers: cluster.ListenAddrs(), Topic: grantbus.DefaultTopic, Partitions: 8,
		DialTimeout: time.Second, RequestTimeout: 3 * time.Second, ProduceTimeout: 3 * time.Second, AdminTimeout: 3 * time.Second,
		MinBackoff: 20 * time.Millisecond, MaxBackoff: 300 * time.Millisecond, CommitInterval: 50 * time.Millisecond,
		SessionTimeout: 3 * time.Second, HeartbeatInterval: 200 * time.Millisecond, RebalanceTimeout: 5 * time.Second,
		CloseTimeout: 2 * time.Second}.WithDefaults()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := kafkapipe.EnsureTopic(ctx, kcfg); err != nil {
		t.Fatal(err)
	}
	open := func(rec *recorder) *grantbus.Transport {
		pub, err := kafkapipe.NewPublisher(kcfg, quiet())
		if err != nil {
			t.Fatal(err)
		}
		sub, err := kafkapipe.NewSubscriber(kcfg, "couponsd-grant-shards-test", quiet())
		if err != nil {
			t.Fatal(err)
		}
		tr, err := grantbus.NewTransport(pub, sub, func() error { _ = sub.Close(); return pub.Close() }, grantbus.Config{}, quiet())
		if err != nil {
			t.Fatal(err)
		}
		if err := tr.Consume(rec); err != nil {
			t.Fatal(err)
		}
		go func() { _ = tr.Run(ctx) }()
		<-tr.Running()
		t.Cleanup(func() { _ = tr.Close() })
		return tr
	}
	a, b := newRecorder(), newRecorder()
	ta := open(a)
	open(b)
	time.Sleep(2 * time.Second) // let the group settle with both members
	if err := ta.Bus.SendGrantShards(ctx, shards("job-k", 64)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "64 shards handled", func() bool {
		seen := map[string]bool{}
		for _, r := range []*recorder{a, b} {
			r.mu.Lock()
			for k := range r.handled {
				seen[k] = true
			}
			r.mu.Unlock()
		}
		return len(seen) == 64
	})
	if a.count() == 0 || b.count() == 0 {
		t.Fatalf("one consumer did all the work: %d and %d shards", a.count(), b.count())
	}
	t.Logf("shards handled: %d by one instance, %d by the other", a.count(), b.count())
}
