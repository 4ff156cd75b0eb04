package main

import (
	"context"
	"sync"
	"time"

	"github.com/couponsd/couponsd/infra/pipeline"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
)

// wipeWatch notices that Redis lost its data while the service runs: an
// epoch key written at start-up disappears. The Redis projections are then
// dropped and replayed from the first event (a projection that went on
// from its old checkpoint on an empty Redis would silently miss everything
// before), and the stock guard recovers through its keeper.
type wipeWatch struct {
	a     *app
	key   string
	mu    sync.Mutex
	wiped chan struct{}
}

func newWipeWatch(ctx context.Context, a *app) (*wipeWatch, error) {
	w := &wipeWatch{a: a, key: a.redis.Prefix + "epoch", wiped: make(chan struct{})}
	return w, a.redis.Client.SetNX(ctx, w.key, instanceID(), 0).Err()
}

// signal is closed at the next wipe.
func (w *wipeWatch) signal() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.wiped
}

func (w *wipeWatch) run(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := w.a.redis.Client.Exists(ctx, w.key).Result()
		if err != nil || n == 1 {
			continue
		}
		w.a.log.Warn("redis lost its data: replaying the Redis projections from the first event")
		_ = w.a.redis.Client.SetNX(ctx, w.key, instanceID(), 0).Err()
		w.mu.Lock()
		close(w.wiped)
		w.wiped = make(chan struct{})
		w.mu.Unlock()
		_ = w.a.keeper.Check(ctx)
	}
}

// supervise runs one projector on the embedded pipeline; after a Redis
// wipe it stops it, resets its projection (reset may be nil for a
// projection not kept in Redis) and starts it again from its checkpoint.
func (w *wipeWatch) supervise(ctx context.Context, p projections.Projector, name string, reset func(context.Context) error, progress *projections.Progress) {
	for ctx.Err() == nil {
		sig := w.signal()
		pctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- pipeline.RunEmbedded(pctx, w.a.store, p, w.a.log) }()
		select {
		case <-ctx.Done():
			cancel()
			<-done
			return
		case err := <-done:
			cancel()
			if ctx.Err() == nil {
				w.a.log.Error("projector pipeline stopped; restarting", "projector", name, "err", err)
				time.Sleep(time.Second)
			}
			continue
		case <-sig:
		}
		cancel()
		<-done
		if reset == nil {
			continue
		}
		if d, ok := p.(interface{ Discard() }); ok {
			d.Discard() // buffered events must not land after the reset
		}
		for ctx.Err() == nil {
			if err := reset(ctx); err != nil {
				w.a.log.Error("projection reset failed; retrying", "projector", name, "err", err)
				time.Sleep(time.Second)
				continue
			}
			progress.Reset(name)
			break
		}
	}
}

// redisResets are the resets of the Redis projections, by projector name.
func (rs *readSide) redisResets(a *app) map[string]func(context.Context) error {
	del := func(keys ...string) func(context.Context) error {
		return func(ctx context.Context) error { return a.redis.Client.Del(ctx, keys...).Err() }
	}
	return map[string]func(context.Context) error{
		"ops": func(ctx context.Context) error {
			return redisx.DeletePrefix(ctx, a.redis.Client, a.redis.Prefix+"ops:")
		},
		"view":       rs.view.Reset,
		"guard-sync": del(a.redis.Prefix + "guard-sync:checkpoint"),
		"grant-jobs": del(rs.jobs.ActiveKey(), rs.jobs.CheckpointKey()),
		"reminders": func(ctx context.Context) error {
			return redisx.DeletePrefix(ctx, a.redis.Client, rs.reminders.Key(""))
		},
	}
}
