package main

import (
	"context"
	"fmt"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/grantbus"
	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
)

// grantShardGroup is the Kafka consumer group of the shard consumers: never
// change it (a new group would re-read the topic).
const grantShardGroup = "couponsd-" + grantbus.HandlerName

// openGrants wires the grant jobs: the shard bus (Kafka when
// COUPONS_KAFKA_BROKERS is set, else in process), its consumer, and the
// handlers (a.handlers.Grants). Run the returned transport to consume.
func (a *app) openGrants(ctx context.Context) (*grantbus.Transport, error) {
	bcfg := grantbus.Config{Concurrency: a.cfg.GrantConcurrency}
	var t *grantbus.Transport
	var err error
	if a.cfg.KafkaBrokers == "" {
		t, err = grantbus.NewEmbedded(bcfg, a.log)
	} else {
		t, err = a.kafkaGrantTransport(ctx, bcfg)
	}
	if err != nil {
		return nil, fmt.Errorf("grant shard bus: %w", err)
	}
	a.closers = append(a.closers, t.Close)
	deps := commands.Deps{Repo: a.repo, Guard: a.guard, Clock: a.clock}
	grants, err := commands.NewGrantJobs(deps, commands.GrantJobsDeps{Bus: t.Bus, Tracker: a.jobs, Leases: a.jobs},
		commands.GrantJobsConfig{
			Upload: commands.GrantUploadConfig{TempDir: a.cfg.GrantTempDir, ShardSize: a.cfg.GrantShardSize},
			Shard:  commands.GrantShardConfig{Owner: instanceID()},
		})
	if err != nil {
		return nil, err
	}
	if err := t.Consume(grants.Shard); err != nil {
		return nil, err
	}
	a.handlers.Grants = grants
	return t, nil
}

func (a *app) kafkaGrantTransport(ctx context.Context, bcfg grantbus.Config) (*grantbus.Transport, error) {
	bcfg = bcfg.WithDefaults()
	kcfg := kafkapipe.Config{Brokers: kafkapipe.ParseBrokers(a.cfg.KafkaBrokers), Topic: bcfg.Topic}.WithDefaults()
	if err := kcfg.Validate(); err != nil {
		return nil, err
	}
	tctx, cancel := context.WithTimeout(ctx, time.Minute)
	_, err := kafkapipe.EnsureTopic(tctx, kcfg)
	cancel()
	if err != nil {
		return nil, fmt.Errorf("kafka topic %s: %w", kcfg.Topic, err)
	}
	pub, err := kafkapipe.NewPublisher(kcfg, a.log)
	if err != nil {
		return nil, err
	}
	sub, err := kafkapipe.NewSubscriber(kcfg, grantShardGroup, a.log)
	if err != nil {
		_ = pub.Close()
		return nil, err
	}
	return grantbus.NewTransport(pub, sub, func() error { _ = sub.Close(); return pub.Close() }, bcfg, a.log)
}
