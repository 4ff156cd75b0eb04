package esdbstore

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"

	"github.com/couponsd/couponsd/domain"
)

// This file keeps the esdb client usable through outages. The client
// (v4.1.0) serves connections from one goroutine over an unbuffered
// channel. When a call fails with Unavailable, the next call makes that
// goroutine rediscover the server; calls arriving meanwhile wait at the
// channel, ignoring their contexts. If the discovery fails, the goroutine
// exits, the client is closed for good (later calls fail with
// ConnectionClosed), and the calls that were waiting stay blocked forever.
//
// So:
//   - every call runs on its own goroutine and is abandoned when its
//     context ends, the store closes or its client is replaced (call);
//   - after a call fails with a connection problem, the client is
//     "failing": one call at a time goes in (a probe: when the server is
//     back, it simply succeeds), the others fail at once with
//     domain.ErrUnavailable instead of piling up inside it, and a healer
//     probes it too (heal), in case no call comes or all are stuck. A
//     successful call or probe makes it usable again; a dead client
//     (ConnectionClosed, or a probe stuck longer than a discovery can take)
//     is replaced (renew), which releases the calls stuck in it;
//   - a replaced client is closed once nothing of ours is inside it any
//     more: closing it earlier could make a call stuck in it panic (send on
//     a closed channel).

// clientRef is one client, the goroutines using it, and its state.
type clientRef struct {
	client *esdb.Client
	users  sync.WaitGroup // every goroutine that may be inside the client
	inside atomic.Int32   // calls and subscriptions (not probes) inside
	// ctx ends (cause errClientReplaced or ErrClosed) when the client is
	// replaced or the store closed, releasing what waits on it.
	ctx     context.Context
	cancel  context.CancelCauseFunc
	failing atomic.Bool
	probing atomic.Bool // a call is in as the probe of a failing client
	healing atomic.Bool // the healer runs
}

// errClientReplaced ends the calls and subscriptions of a replaced client.
var errClientReplaced = errors.New("client replaced")

// errNotAdmitted is the cause of calls refused while the client is
// failing: they were not sent.
var errNotAdmitted = errors.New("reconnecting, call not sent")

// healInterval is how often a failing client is probed.
const healInterval = 50 * time.Millisecond

func (s *Store) newRef(failing bool) *clientRef {
	conf := s.conf
	c, _ := esdb.NewClient(&conf) // never fails
	r := &clientRef{client: c}
	r.ctx, r.cancel = context.WithCancelCause(context.Background())
	if failing {
		s.markFailing(r)
	}
	return r
}

// acquire returns the current client, counting the caller as a user (it
// must call ref.users.Done).
func (s *Store) acquire() (*clientRef, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	s.cur.users.Add(1)
	return s.cur, nil
}

// renew replaces old (closed for good, or hopeless) with a new client,
// which starts as failing so that only the healer's probe tries it first.
// It reports whether a retry makes sense.
func (s *Store) renew(old *clientRef) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	if s.cur == old {
		old.cancel(errClientReplaced)
		s.cur = s.newRef(true)
		s.opts.Logger.Warn("esdbstore: replaced the EventStoreDB client (it gave up reconnecting, or hangs)")
		go func() {
			old.users.Wait() // forever if something is stuck in old for good
			_ = old.client.Close()
		}()
	}
	return true
}

// markFailing marks ref failing and makes sure its healer runs.
func (s *Store) markFailing(ref *clientRef) {
	if ref.failing.CompareAndSwap(false, true) {
		s.opts.Logger.Warn("esdbstore: EventStoreDB unavailable; probing it")
	}
	if !ref.healing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		for {
			s.heal(ref)
			ref.healing.Store(false)
			// Failing again while the healer was leaving: heal again.
			if !ref.failing.Load() || ref.ctx.Err() != nil || !ref.healing.CompareAndSwap(false, true) {
				return
			}
		}
	}()
}

// heal probes a failing client until a probe succeeds (the client is
// usable again), the client turns out dead (replaced), or it is replaced
// or closed otherwise. Probes go one at a time, except while calls are
// stuck inside the client: then one more every healInterval (up to a few),
// so that its death is seen right after its failed discovery.
func (s *Store) heal(ref *clientRef) {
	const maxPending = 3
	results := make(chan error, maxPending)
	var pending []time.Time // start of the probes in flight
	ticker := time.NewTicker(healInterval)
	defer ticker.Stop()
	for {
		select {
		case <-ref.ctx.Done():
			return
		case err := <-results:
			pending = pending[1:]
			switch {
			case err == nil:
				ref.failing.Store(false)
				s.opts.Logger.Info("esdbstore: EventStoreDB available again")
				return
			case isConnectionClosed(err):
				s.renew(ref)
				return
			}
		case now := <-ticker.C:
			if !ref.failing.Load() { // a call got through
				return
			}
			if len(pending) > 0 && now.Sub(pending[0]) > s.stuckAfter {
				s.renew(ref) // longer than any discovery: stuck for good
				return
			}
			if len(pending) == 0 || (ref.inside.Load() > 0 && len(pending) < maxPending) {
				if !s.probe(ref, results) {
					return
				}
				pending = append(pending, now)
			}
		}
	}
}

// probe reads one event of $all with ref's client, in the background; the
// outcome goes to results. It reports false when the store is closed or
// ref replaced (whose users must not grow any more: see renew).
func (s *Store) probe(ref *clientRef, results chan<- error) bool {
	s.mu.Lock()
	if s.closed || s.cur != ref {
		s.mu.Unlock()
		return false
	}
	ref.users.Add(1)
	s.mu.Unlock()
	go func() {
		defer ref.users.Done()
		var err error
		defer func() {
			if p := recover(); p != nil {
				err = panicError(p)
			}
			results <- err // buffered: never blocks
		}()
		ctx, cancel := context.WithTimeout(ref.ctx, s.stuckAfter)
		defer cancel()
		rs, err := ref.client.ReadAll(ctx, esdb.ReadAllOptions{Direction: esdb.Backwards, From: esdb.End{}}, 1)
		if err != nil {
			return
		}
		defer rs.Close()
		if _, err = rs.Recv(); errors.Is(err, io.EOF) {
			err = nil
		}
	}()
	return true
}

// callCtx derives the context of one call on ref: it ends with ctx, with
// the store (cause ErrClosed), when ref's client is replaced (cause
// errClientReplaced), and after Options.RequestTimeout when ctx has no
// deadline (cause errRequestTimeout).
func (s *Store) callCtx(ctx context.Context, ref *clientRef) (context.Context, context.CancelFunc) {
	cctx, cancel := context.WithCancelCause(ctx)
	stopStore := context.AfterFunc(s.ctx, func() { cancel(ErrClosed) })
	stopRef := context.AfterFunc(ref.ctx, func() { cancel(context.Cause(ref.ctx)) })
	tcancel := context.CancelFunc(func() {})
	if _, ok := ctx.Deadline(); !ok {
		cctx, tcancel = context.WithTimeoutCause(cctx, s.opts.RequestTimeout, errRequestTimeout)
	}
	return cctx, func() {
		tcancel()
		stopStore()
		stopRef()
		cancel(nil)
	}
}

type result[T any] struct {
	v   T
	err error
}

// call runs fn with the current client on its own goroutine and returns
// when fn does, or when ctx ends, the store is closed or the client is
// replaced (abandoning fn, which may be stuck inside the client). While
// the client is failing, call fails at once. A client found closed for good
// is replaced and fn retried once. Errors are mapped (see mapErr).
func call[T any](s *Store, ctx context.Context, op string, fn func(context.Context, *esdb.Client) (T, error)) (T, error) {
	var zero T
	for attempt := 0; ; attempt++ {
		ref, err := s.acquire()
		if err != nil {
			return zero, err
		}
		probe := false
		if ref.failing.Load() {
			if probe = ref.probing.CompareAndSwap(false, true); !probe {
				ref.users.Done()
				return zero, &Error{Msg: "esdbstore: " + op + ": event store unavailable", Kinds: []error{domain.ErrUnavailable}, Cause: errNotAdmitted}
			}
		}
		cctx, cancel := s.callCtx(ctx, ref)
		done := make(chan result[T], 1)
		ref.inside.Add(1)
		go func() {
			defer ref.users.Done()
			defer cancel()
			var r result[T]
			defer func() {
				if p := recover(); p != nil {
					r = result[T]{err: panicError(p)}
				}
				ref.inside.Add(-1)
				switch {
				case cctx.Err() != nil: // cut short: tells nothing
				case r.err == nil || !transient(r.err):
					ref.failing.Store(false) // the server answered
				default:
					s.markFailing(ref)
				}
				if probe {
					ref.probing.Store(false)
				}
				done <- r
			}()
			r.v, r.err = fn(cctx, ref.client)
		}()
		var r result[T]
		select {
		case r = <-done:
		case <-cctx.Done():
			select {
			case r = <-done: // finished at the same time: keep its result
			default:
				r.err = context.Cause(cctx)
			}
		}
		if r.err != nil && isConnectionClosed(r.err) && attempt == 0 && s.renew(ref) {
			continue
		}
		if r.err != nil {
			return zero, s.mapErr(ctx, op, r.err)
		}
		return r.v, nil
	}
}
