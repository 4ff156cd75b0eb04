package kafkapipe

import (
	"context"
	"fmt"
	"github.com/couponsd/couponsd/internal/testkit"
	"testing"
	"time"
)

// BenchmarkForwarder measures the forwarder's throughput on a one-broker
// kfake cluster: b.N events, 4 per coupon, are stored first, then the clock
// runs from the forwarder's start until Kafka acknowledged the last one.
// BatchSize 1 is one sync send at a time. "interleaved": each coupon's
// events are far apart in the store (the usual case: claimed now, redeemed
// later), so a batch holds one event per coupon; "adjacent": a coupon's 4
// events follow each other (one append), so a batch needs 4 round trips.
func BenchmarkForwarder(b *testing.B) {
	for _, shape := range []string{"interleaved", "adjacent"} {
		for _, batch := range []int{1, 64, 512, 2048} {
			b.Run(fmt.Sprintf("%s/batch=%d", shape, batch), func(b *testing.B) {
				benchForwarder(b, shape, batch)
			})
		}
	}
}

func benchForwarder(b *testing.B, shape string, batch int) {
	c := newCluster(b)
	cfg := testConfig(c.ListenAddrs())
	cfg.BatchSize = batch
	mustEnsureTopic(b, cfg)
	store := openStore(b)
	w := workload{streams: max(1, b.N/4), perStream: 4, chunk: 4}
	if shape == "interleaved" {
		w.chunk = 1
		for rev := range w.perStream {
			w.appendRange(b, context.Background(), store, rev, rev+1)
		}
	} else {
		w.appendRange(b, context.Background(), store, 0, w.perStream)
	}
	head, err := store.LastPosition(context.Background())
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	f, stop := startForwarder(b, cfg, store, &testkit.MemCheckpoint{}, testLog(b))
	waitForwarded(b, f, head, 5*time.Minute)
	el := time.Since(start)
	b.StopTimer()
	stop()
	b.ReportMetric(float64(head)/el.Seconds(), "events/s")
	st := f.Stats()
	b.ReportMetric(float64(st.Published)/float64(max(st.Batches, 1)), "events/batch")
}

// BenchmarkConsumer measures one projector's consumption (a recorder, no
// I/O) of b.N events already in the topic, from RunConsumer's start (group
// join included) to the last event applied.
func BenchmarkConsumer(b *testing.B) {
	c := newCluster(b)
	cfg := testConfig(c.ListenAddrs())
	mustEnsureTopic(b, cfg)
	store := openStore(b)
	w := workload{streams: max(1, b.N/4), perStream: 4, chunk: 4}
	w.appendRange(b, context.Background(), store, 0, w.perStream)
	head, _ := store.LastPosition(context.Background())
	f, stop := startForwarder(b, cfg, store, &testkit.MemCheckpoint{}, testLog(b))
	waitForwarded(b, f, head, 5*time.Minute)
	stop()
	r := newRecorder(fmt.Sprintf("bench-%d", b.N))
	b.ResetTimer()
	start := time.Now()
	stopConsumer := startConsumer(b, cfg, r, testLog(b))
	r.waitTotal(b, int(head), 5*time.Minute)
	el := time.Since(start)
	b.StopTimer()
	stopConsumer()
	b.ReportMetric(float64(head)/el.Seconds(), "events/s")
}
