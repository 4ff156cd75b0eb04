package esdbstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// handlerError carries the handler's error out of an attempt.
type handlerError struct{ err error }

func (e handlerError) Error() string { return e.err.Error() }

// subMsg is what the pump of a subscription forwards.
type subMsg struct {
	ev          *esdb.ResolvedEvent
	established bool
	caughtUp    bool
	err         error
	setupErr    bool // err came from setting the subscription up
}

// Subscribe implements es.Store with a catch-up subscription to $all,
// filtered on the server by stream-name prefix (Namespace +
// Options.StreamPrefixes), starting after position after (from the start
// when 0).
//
// EventStoreDB subscriptions do not resume by themselves: when one ends
// with any error (connection lost, server restart, subscription dropped by
// the server, client replaced), Subscribe subscribes again from the last
// delivered position, with a backoff between Options.ResubscribeMin and
// ResubscribeMax, until ctx is done (it returns ctx.Err()), h fails (it
// returns h's error), or the store is closed (ErrClosed). Events at or
// before the last delivered position are skipped, so h sees every event
// once, in position order, with no gap.
//
// h runs on the caller's goroutine, with ctx.
func (s *Store) Subscribe(ctx context.Context, after uint64, h es.Handler) error {
	if h == nil {
		return domain.Invalid("handler", "required")
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return ErrClosed
	}
	floor := after // last delivered position: deliver only events above it
	from := after  // where the server starts (exclusive)
	backoff := s.opts.ResubscribeMin
	for {
		progressed, err := s.subscribeOnce(ctx, &from, &floor, h)
		var herr handlerError
		switch {
		case errors.As(err, &herr):
			return herr.err
		case ctx.Err() != nil:
			return ctx.Err()
		case s.ctx.Err() != nil:
			return ErrClosed
		}
		if progressed {
			backoff = s.opts.ResubscribeMin
		}
		if isInvalidPosition(err) && from > 0 {
			// from is not the start of a record: start at the last event
			// at or before it (floor still skips up to it).
			if p, rerr := s.resolvePosition(ctx, from); rerr == nil && p != from {
				s.opts.Logger.Info("esdbstore: subscription start is not an event position; starting from the previous event",
					"after", from, "from", p)
				from = p
				continue
			}
		}
		s.opts.Logger.Warn("esdbstore: subscription to $all ended; subscribing again",
			"after", floor, "retry_in", backoff, "error", err)
		wait := backoff/2 + rand.N(backoff/2+1)
		timer := time.NewTimer(wait)
		select {
		case <-timer.C:
		case <-ctx.Done():
			timer.Stop()
			return ctx.Err()
		case <-s.ctx.Done():
			timer.Stop()
			return ErrClosed
		}
		backoff = min(2*backoff, s.opts.ResubscribeMax)
	}
}

// subscribeOnce runs one subscription until it fails, h fails or ctx ends.
// It reports whether the subscription got anywhere (caught up or delivered
// an event), to reset the backoff.
//
// Setting a subscription up can block inside the client for good (see
// client.go): the attempt ends when its client is replaced, and a setup
// that takes longer than a discovery can marks the client failing, which
// gets it probed (and replaced if dead).
func (s *Store) subscribeOnce(ctx context.Context, from, floor *uint64, h es.Handler) (progressed bool, err error) {
	actx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.ctx, cancel)
	defer stop()
	ref, err := s.acquire()
	if err != nil {
		return false, err
	}
	stopRef := context.AfterFunc(ref.ctx, cancel) // client replaced
	defer stopRef()
	var start esdb.AllPosition = esdb.Start{}
	if *from > 0 {
		start = esdb.Position{Commit: *from, Prepare: *from}
	}
	msgs := make(chan subMsg)
	go s.pump(actx, ref, start, msgs)
	setup := time.NewTimer(s.stuckAfter)
	defer setup.Stop()
	for {
		var m subMsg
		select {
		case <-actx.Done():
			if ref.ctx.Err() != nil && ctx.Err() == nil {
				return progressed, errClientReplaced
			}
			return progressed, actx.Err()
		case <-setup.C:
			s.markFailing(ref)
			continue
		case m = <-msgs:
		}
		switch {
		case m.err != nil:
			// A dropped subscription says little about the connection; a
			// failed setup does.
			if isConnectionClosed(m.err) {
				s.renew(ref)
			} else if m.setupErr && actx.Err() == nil && transient(m.err) {
				s.markFailing(ref)
			}
			return progressed, m.err
		case m.established:
			setup.Stop()
			continue
		case m.caughtUp:
			progressed = true
			continue
		}
		pos := position(m.ev)
		if m.ev.Event == nil || pos == 0 || pos <= *floor {
			continue
		}
		*from = pos
		if !s.visible(m.ev.Event) {
			continue
		}
		ev, err := s.convert(m.ev)
		if err != nil {
			return progressed, err
		}
		if err := h(ctx, ev); err != nil {
			return progressed, handlerError{err}
		}
		*floor = pos
		progressed = true
		if err := ctx.Err(); err != nil {
			return progressed, err
		}
	}
}

// pump runs the client's subscription and forwards what it receives until
// it fails or ctx ends. Sub.Recv does not watch ctx by itself; cancelling
// ctx cancels the gRPC call, which ends Recv.
func (s *Store) pump(ctx context.Context, ref *clientRef, start esdb.AllPosition, out chan<- subMsg) {
	defer ref.users.Done()
	send := func(m subMsg) bool {
		select {
		case out <- m:
			return true
		case <-ctx.Done():
			return false
		}
	}
	defer func() {
		if p := recover(); p != nil {
			send(subMsg{err: panicError(p)})
		}
	}()
	// Setting up is where the client can block for good; an established
	// subscription only waits on its gRPC stream.
	ref.inside.Add(1)
	sub, err := func() (*esdb.Subscription, error) {
		defer ref.inside.Add(-1)
		return ref.client.SubscribeToAll(ctx, esdb.SubscribeToAllOptions{
			From:   start,
			Filter: &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: s.prefixes},
		})
	}()
	if err != nil {
		send(subMsg{err: err, setupErr: true})
		return
	}
	defer sub.Close()
	if !send(subMsg{established: true}) {
		return
	}
	for {
		e := sub.Recv()
		switch {
		case e.EventAppeared != nil:
			if !send(subMsg{ev: e.EventAppeared}) {
				return
			}
		case e.SubscriptionDropped != nil:
			err := e.SubscriptionDropped.Error
			if err == nil {
				err = errors.New("subscription dropped")
			}
			send(subMsg{err: err})
			return
		case e.CaughtUp != nil:
			if !send(subMsg{caughtUp: true}) {
				return
			}
		}
	}
}
