package kafkapipe

import (
	"context"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redistest"
)

// TestEndToEnd: events appended to a bbolt store before and while the
// forwarder runs reach two projectors (two consumer groups); each applies
// every event exactly once, in revision order per coupon. The forwarder's
// checkpoint lives in (embedded) Redis through redisops.KeyCheckpoint.
func TestEndToEnd(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(t, cfg)
	log := testLog(t)
	store := openStore(t)
	rb := redistest.Embedded(t)
	cp, err := redisops.NewCheckpoint(rb.Client, rb.Prefix+"kafka-forwarder:checkpoint")
	if err != nil {
		t.Fatal(err)
	}
	var _ CheckpointStore = cp

	w := workload{streams: 40, perStream: 30, chunk: 5}
	ctx := context.Background()
	w.appendRange(t, ctx, store, 0, 15) // before the forwarder starts
	f, _ := startForwarder(t, cfg, store, cp, log)
	a, b := newRecorder("e2e-a"), newRecorder("e2e-b")
	startConsumer(t, cfg, a, log)
	startConsumer(t, cfg, b, log)
	w.appendRange(t, ctx, store, 15, 30) // while it runs

	a.waitTotal(t, w.total(), 20*time.Second)
	b.waitTotal(t, w.total(), 20*time.Second)
	a.verify(t, w.want())
	b.verify(t, w.want())

	head, _ := store.LastPosition(ctx)
	waitForwarded(t, f, head, 5*time.Second)
	deadline := time.Now().Add(2 * time.Second)
	for {
		got, err := cp.Checkpoint(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got == head {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("checkpoint %d, want %d", got, head)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st := f.Stats()
	if st.Published != uint64(w.total()) || st.Restarts != 0 {
		t.Errorf("stats %+v: want %d published, no restart", st, w.total())
	}
	_, _, da := a.counts()
	_, _, db := b.counts()
	t.Logf("forwarder %+v; duplicates a=%d b=%d", st, da, db)
}
