package main

import (
	"context"
	"fmt"
	"time"

	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redisops"
)

// forwarderLease is the lease name that elects the one instance forwarding
// the event store to Kafka.
const forwarderLease = "kafka-forwarder"

// runKafka starts the production pipeline: the forwarder (on the instance
// holding the lease) and one consumer group per projector. Projector calls
// are serialized by their gates, and applied one by one: a returned Handle
// commits the Kafka offset, so nothing is buffered.
func (rs *readSide) runKafka(a *app, goRun func(func(context.Context)), jobs *redisjobs.Store) error {
	kcfg := kafkapipe.Config{Brokers: kafkapipe.ParseBrokers(a.cfg.KafkaBrokers)}.WithDefaults()
	if err := kcfg.Validate(); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	info, err := kafkapipe.EnsureTopic(ctx, kcfg)
	cancel()
	if err != nil {
		return fmt.Errorf("kafka topic: %w", err)
	}
	if info.Partitions != kcfg.Partitions {
		a.log.Warn("kafka topic has another partition count than configured", "topic", kcfg.Topic, "partitions", info.Partitions, "configured", kcfg.Partitions)
	}
	cp, err := redisops.NewCheckpoint(a.redis.Client, a.redis.Prefix+"kafka-forwarder:checkpoint")
	if err != nil {
		return err
	}
	fw, err := kafkapipe.NewForwarder(kcfg, a.store, cp, a.log)
	if err != nil {
		return err
	}
	owner := instanceID()
	goRun(func(ctx context.Context) { runUnderLease(ctx, a, jobs, forwarderLease, owner, fw.Run) })
	for _, p := range rs.live {
		goRun(func(ctx context.Context) {
			if err := kafkapipe.RunConsumer(ctx, kcfg, p, a.log); err != nil && ctx.Err() == nil {
				a.log.Error("projector consumer stopped", "projector", p.Name(), "err", err)
			}
		})
	}
	return nil
}

// runUnderLease runs f while this instance holds the named lease, renewing
// it; f's context ends when the lease is lost.
func runUnderLease(ctx context.Context, a *app, jobs *redisjobs.Store, lease, owner string, f func(context.Context) error) {
	const ttl = 15 * time.Second
	for ctx.Err() == nil {
		if ok, err := jobs.TryLease(ctx, lease, owner, ttl); err == nil && ok {
			lctx, cancel := context.WithCancel(ctx)
			done := make(chan error, 1)
			go func() { done <- f(lctx) }()
			t := time.NewTicker(ttl / 3)
		held:
			for {
				select {
				case err := <-done:
					if err != nil && ctx.Err() == nil {
						a.log.Error("leased task stopped", "lease", lease, "err", err)
					}
					break held
				case <-t.C:
					if ok, err := jobs.RenewLease(ctx, lease, owner, ttl); err != nil || !ok {
						a.log.Warn("lease lost", "lease", lease, "err", err)
						cancel()
						<-done
						break held
					}
				}
			}
			t.Stop()
			cancel()
			_ = jobs.ReleaseLease(context.WithoutCancel(ctx), lease, owner)
		}
		select {
		case <-ctx.Done():
		case <-time.After(ttl / 3):
		}
	}
}
