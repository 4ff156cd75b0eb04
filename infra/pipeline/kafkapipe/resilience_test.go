package kafkapipe

import (
	"context"
	"github.com/couponsd/couponsd/internal/testkit"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

// TestConsumerRestart: a consumer stopped halfway and replaced by a new one
// in the same group resumes from the committed offsets: nothing is lost,
// duplicates (if any) are skipped by the idempotent projector, and it does
// not start over from the beginning.
func TestConsumerRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	ctx := context.Background()

	w := workload{streams: 30, perStream: 60, chunk: 20}
	w.appendRange(t, ctx, store, 0, 40)
	f, _ := startForwarder(t, cfg, store, &testkit.MemCheckpoint{}, log)

	r := newRecorder("restart")
	r.delay = time.Millisecond
	stop := startConsumer(t, cfg, r, log)
	r.waitTotal(t, w.streams*40/2, 15*time.Second)
	stop()
	applied, _, _ := r.counts()
	if applied >= w.streams*40 {
		t.Fatalf("the first consumer applied everything (%d) before it was stopped", applied)
	}

	w.appendRange(t, ctx, store, 40, 60) // while no consumer runs
	r.delay = 0
	startConsumer(t, cfg, r, log)
	r.waitTotal(t, w.total(), 15*time.Second)
	r.verify(t, w.want())
	total, seen, dups := r.counts()
	if dups >= applied {
		t.Errorf("%d duplicates after a restart at %d applied: the new consumer did not resume from the committed offsets", dups, applied)
	}
	t.Logf("stopped after %d applied; in the end %d applied, %d deliveries, %d duplicates; forwarder %+v", applied, total, seen, dups, f.Stats())
}

// TestConsumerGroupRebalance: two instances of one projector share the
// partitions; one stops halfway, the other takes over its partitions.
// Nothing is lost, nothing applied twice, each coupon in order.
func TestConsumerGroupRebalance(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	ctx := context.Background()
	startForwarder(t, cfg, store, &testkit.MemCheckpoint{}, log)

	r := newRecorder("rebalance")
	one, two := &instance{recorder: r}, &instance{recorder: r}
	stopOne := startConsumer(t, cfg, one, log)
	startConsumer(t, cfg, two, log)

	w := workload{streams: 48, perStream: 40, chunk: 2, pause: 5 * time.Millisecond}
	var appends sync.WaitGroup
	appends.Go(func() { w.appendRange(t, ctx, store, 0, w.perStream) })

	deadline := time.Now().Add(15 * time.Second)
	for {
		total, _, _ := r.counts()
		if one.handled.Load() > 0 && two.handled.Load() > 0 && total >= w.total()/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("instances handled %d and %d, %d applied: the partitions were not shared", one.handled.Load(), two.handled.Load(), total)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopOne()
	atStop := one.handled.Load()
	appends.Wait()

	r.waitTotal(t, w.total(), 20*time.Second)
	r.verify(t, w.want())
	total, seen, dups := r.counts()
	if one.handled.Load() != atStop {
		t.Errorf("the stopped instance handled events after it stopped")
	}
	t.Logf("instance one handled %d (stopped), two %d; %d applied, %d deliveries, %d duplicates", atStop, two.handled.Load(), total, seen, dups)
}

// TestBrokerRestart: the (only) broker goes down while the forwarder is
// publishing and comes back on the same port with its data (kfake DataDir:
// log, committed offsets) once the forwarder's sends failed and it started
// re-subscribing. It re-publishes from its checkpoint, the consumer
// reconnects, and the projector ends with every event exactly once, in
// order.
func TestBrokerRestart(t *testing.T) {
	t.Parallel()
	dir, port := t.TempDir(), freePort(t)
	opts := []kfake.Opt{kfake.Ports(port), kfake.DataDir(dir)}
	c1 := newCluster(t, opts...)
	cfg := testConfig(c1.ListenAddrs())
	// Few producer retries, so that sends fail soon in the outage (with
	// the defaults, Sarama's retries and metadata refreshes ride out a
	// short one by themselves).
	cfg.ProduceRetries = 2
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	ctx := context.Background()
	cp := &testkit.MemCheckpoint{}
	f, stopForwarder := startForwarder(t, cfg, store, cp, log)
	r := newRecorder("broker-restart")
	stopConsumer := startConsumer(t, cfg, r, log)

	w := workload{streams: 40, perStream: 50, chunk: 2, pause: 10 * time.Millisecond}
	var appends sync.WaitGroup
	appends.Go(func() { w.appendRange(t, ctx, store, 0, w.perStream) })

	waitForwarded(t, f, uint64(w.total()/4), 15*time.Second)
	c1.Close()
	downAt := time.Now()
	log.Info("TEST: broker closed")
	down := f.Stats()
	// Appends go on; the broker stays down until publishing failed and
	// the forwarder restarted.
	deadline := time.Now().Add(10 * time.Second)
	for f.Stats().Restarts == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("publishing never failed with the broker down: %+v", f.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("broker down for %v", time.Since(downAt))
	newCluster(t, opts...)
	log.Info("TEST: broker restarted")
	up := time.Now()
	appends.Wait()
	t.Logf("appends done %v after the restart", time.Since(up))
	head, _ := store.LastPosition(ctx)
	waitForwarded(t, f, head, 10*time.Second)
	t.Logf("forwarded %v after the restart", time.Since(up))

	r.waitTotal(t, w.total(), 20*time.Second)
	t.Logf("applied %v after the restart", time.Since(up))
	log.Info("TEST: all applied")
	// Stop the clients before the cluster (cleanups run last in, first
	// out): a consumer stopping with no broker waits for its timeouts.
	stopConsumer()
	stopForwarder()
	r.verify(t, w.want())
	st := f.Stats()
	if down.Position >= head {
		t.Errorf("everything was published before the broker went down (%d of %d)", down.Position, head)
	}
	total, seen, dups := r.counts()
	t.Logf("broker down at forwarder %+v; end %+v; projector %d applied, %d deliveries, %d duplicates", down, st, total, seen, dups)
}
