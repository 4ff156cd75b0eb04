package main

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/infra/outbound"
	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/projections"
)

// outboundLease elects the one instance publishing outbound events.
const outboundLease = "outbound-publisher"

// openOutbound wires the outbound publisher: every stored event (and every
// notification) on the documented Kafka topics when COUPONS_KAFKA_BROKERS
// is set, else to COUPONS_WEBHOOK_URL when set, else nothing (nil). It reads
// the event store in position order from its own checkpoint, on one
// instance at a time (a lease).
func (a *app) openOutbound(ctx context.Context) (func(context.Context), error) {
	var sink outbound.Sink
	batched := true
	mapper, err := outbound.NewMapper(a.repo.Registry(), outbound.Topics{})
	if err != nil {
		return nil, err
	}
	switch {
	case a.cfg.KafkaBrokers != "":
		kcfg := kafkapipe.Config{Brokers: kafkapipe.ParseBrokers(a.cfg.KafkaBrokers)}.WithDefaults()
		tctx, cancel := context.WithTimeout(ctx, time.Minute)
		err = outbound.EnsureTopics(tctx, kcfg, mapper.Topics())
		cancel()
		if err != nil {
			return nil, fmt.Errorf("outbound topics: %w", err)
		}
		sink, err = outbound.NewKafkaSink(kcfg, a.log)
	case a.cfg.WebhookURL != "":
		sink, err = outbound.NewWebhookSink(outbound.WebhookConfig{URL: a.cfg.WebhookURL, Secret: a.cfg.WebhookSecret}, a.log)
		// Webhooks go one request per event anyway: no batching, so the
		// checkpoint follows each delivered event and a crash repeats at
		// most the event in flight (receivers dedupe by id).
		batched = false
	default:
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("outbound: %w", err)
	}
	a.closers = append(a.closers, sink.Close)
	cp, err := redisops.NewCheckpoint(a.redis.Client, a.redis.Prefix+"outbound:checkpoint")
	if err != nil {
		return nil, err
	}
	proj, err := outbound.NewProjector(mapper, sink, cp)
	if err != nil {
		return nil, err
	}
	// A receiver that keeps refusing stalls the stream (nothing is dropped):
	// the lag shows it.
	a.registry.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "couponsd_outbound_lag_events",
		Help: "Events appended to the store that the outbound publisher has not delivered yet."}, func() float64 {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		head, herr := a.store.LastPosition(ctx)
		pos, perr := cp.Checkpoint(ctx)
		if herr != nil || perr != nil || pos >= head {
			return 0
		}
		return float64(head - pos)
	}))
	owner := instanceID()
	return func(ctx context.Context) {
		runUnderLease(ctx, a, a.jobs, outboundLease, owner, func(ctx context.Context) error {
			if !batched {
				projections.Run(ctx, a.store, proj, a.log)
				return nil
			}
			// A fresh buffer per lease, dropped when the lease ends: its
			// timer must not publish (or move the checkpoint) for an
			// instance that no longer holds the lease.
			b := projections.NewBatching(proj, nil, nil, projections.BatchConfig{MaxEvents: 200})
			projections.Run(ctx, a.store, b, a.log)
			b.Discard()
			return nil
		})
	}, nil
}
