package grantbus

import (
	"context"
	"errors"
	"log/slog"
	"sync/atomic"

	"github.com/ThreeDotsLabs/watermill"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/pubsub/gochannel"
)

// Transport is a bus and the router that consumes it: in process
// (NewEmbedded) or on any Watermill publisher and subscriber (NewTransport).
type Transport struct {
	Bus    *Bus
	router *message.Router
	sub    message.Subscriber
	cfg    Config
	log    *slog.Logger
	closer func() error
	ran    atomic.Bool
}

// NewEmbedded is the in-process transport: a Watermill GoChannel. Messages
// in flight are lost in a crash; the job's coordinator sends stalled shards
// again.
func NewEmbedded(cfg Config, log *slog.Logger) (*Transport, error) {
	if log == nil {
		return nil, errors.New("grantbus: NewEmbedded needs a logger")
	}
	ps := gochannel.NewGoChannel(gochannel.Config{OutputChannelBuffer: 1024}, watermill.NewSlogLogger(log))
	return NewTransport(ps, ps, ps.Close, cfg, log)
}

// NewTransport builds a transport on pub and sub; closer (may be nil) runs
// on Close after the router stopped.
func NewTransport(pub message.Publisher, sub message.Subscriber, closer func() error, cfg Config, log *slog.Logger) (*Transport, error) {
	if pub == nil || sub == nil || log == nil {
		return nil, errors.New("grantbus: NewTransport needs a publisher, a subscriber and a logger")
	}
	bus, err := NewBus(pub, cfg, log)
	if err != nil {
		return nil, err
	}
	router, err := message.NewRouter(message.RouterConfig{}, watermill.NewSlogLogger(log))
	if err != nil {
		return nil, err
	}
	return &Transport{Bus: bus, router: router, sub: sub, cfg: cfg, log: log, closer: closer}, nil
}

// Consume registers h as the shard consumer (before Run).
func (t *Transport) Consume(h ShardHandler) error {
	return AddConsumer(t.router, t.sub, h, t.cfg, t.log)
}

// Run consumes until ctx is done.
func (t *Transport) Run(ctx context.Context) error {
	t.ran.Store(true)
	err := t.router.Run(ctx)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// Running is closed once the router consumes.
func (t *Transport) Running() chan struct{} { return t.router.Running() }

// Close stops the router and closes the transport.
func (t *Transport) Close() error {
	var err error
	if t.ran.Load() { // closing a router that never ran waits for its close timeout
		err = t.router.Close()
	}
	if t.closer != nil {
		err = errors.Join(err, t.closer())
	}
	return err
}
