// Package esdbstore is the EventStoreDB adapter of the event store port
// (es.Store), on the official gRPC client
// github.com/EventStore/EventStore-Client-Go/v4/esdb.
//
// # Mapping
//
//   - A stream of the port is the server stream Namespace+stream; revisions
//     are the server's (0-based). Expected versions map one to one: Any ->
//     esdb.Any{}, NoStream -> esdb.NoStream{}, StreamExists ->
//     esdb.StreamExists{}, Exact(rev) -> esdb.Revision(rev).
//   - Event ids: EventData.ID (a UUID) is the server's event id, so an
//     append retried with the same ids and expected version is recognized
//     by the server and not written twice (it answers with the stored
//     events' revision). An empty ID gets a random one. Ids are read back in
//     canonical (lowercase) form.
//   - Positions are $all commit positions. Every gRPC append is
//     self-committed, so each event has its own commit position (== its
//     prepare position): strictly increasing, not contiguous, never 0.
//     Stream reads carry them from EventStoreDB 22.6 on; older servers get
//     ErrPositionUnavailable.
//   - RecordedAt is the server's created time (100 ns resolution).
//   - ReadAll, LastPosition and Subscribe only see events of streams
//     starting with Namespace+one of Options.StreamPrefixes, skipping
//     system streams and event types ($...). ReadAll and LastPosition filter
//     on the client (the client library cannot send read filters), so they
//     scan the events of other streams; Subscribe filters on the server.
//
// # Errors
//
// Wrong expected version matches domain.ErrConcurrency; connection
// problems, timeouts and a closed store match domain.ErrUnavailable; a
// cancelled or expired context matches ctx.Err(). Errors of the client stay
// reachable with errors.As (*esdb.Error). An append that failed for a
// connection problem or a cancelled context also matches ErrOutcomeUnknown.
//
// # Client pitfalls handled here (see also client.go)
//
//   - Calls can block inside the client regardless of their context, and
//     for good: the client serves connections from one goroutine over an
//     unbuffered channel, and that goroutine exits when a rediscovery
//     fails, closing the client for good (later calls fail with
//     ConnectionClosed) and leaving the calls that were waiting blocked.
//     Every call therefore runs on its own goroutine and is abandoned when
//     its context ends, the store is closed or the client is replaced;
//     Append copies the caller's buffers first. While the connection fails,
//     one call at a time goes into the client and the others fail at once
//     (domain.ErrUnavailable); a healer probes the client, replaces it when
//     it is dead, and clears the failure when the server answers.
//   - Closing the client while a call is inside it can make that call panic
//     (send on a closed channel): clients are closed only once nothing of
//     the store is inside; Close waits for that at most
//     Options.CloseTimeout and otherwise leaves the client open.
//   - Reading $all from a position that is not the start of a record fails
//     (InvalidArgument): ReadAll and Subscribe then find the last event at
//     or before the position by reading $all backwards, and start there.
//   - Subscriptions do not resume by themselves: Subscribe re-subscribes
//     from the last delivered position after any error (see Subscribe).
//   - esdb.FromError reports ok=true only for a nil error and does not look
//     through wrapping; errors are inspected with errors.As instead.
//   - ReadStream.Recv panics on read messages it does not know, and the
//     event conversion calls log.Fatalf when the "created" metadata is
//     missing: panics are recovered into errors (the Fatalf cannot be).
package esdbstore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	neturl "net/url"
	"strings"
	"sync"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// Store is an EventStoreDB event store. It is safe for concurrent use.
type Store struct {
	opts     Options
	conf     esdb.Configuration // template of every client
	prefixes []string           // server-side stream prefixes: Namespace + StreamPrefixes

	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	// stuckAfter is how long a probe may stay inside a failing client: the
	// client's longest discovery, plus a margin.
	stuckAfter time.Duration

	mu     sync.Mutex
	cur    *clientRef
	closed bool

	closeOnce sync.Once
}

var _ es.Store = (*Store)(nil)

// Open connects to the EventStoreDB at url, a connection string such as
// esdb://localhost:2113?tls=false (see the client's documentation for the
// settings: tls, tlsCAFile, maxDiscoverAttempts, discoveryInterval,
// gossipTimeout, keepAliveInterval, defaultDeadline, ...). It checks the
// connection with one read of $all and fails with an error matching
// domain.ErrUnavailable when the server cannot be reached.
//
// Note that the client only sends the credentials of the URL over TLS.
func Open(ctx context.Context, url string, opts Options) (*Store, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	opts = opts.withDefaults()
	conf, err := esdb.ParseConnectionString(url)
	if err != nil {
		msg := err.Error()
		if u, perr := neturl.Parse(url); perr == nil && u.User != nil {
			if pw, ok := u.User.Password(); ok && pw != "" {
				msg = strings.ReplaceAll(msg, pw, "xxxxx")
			}
		}
		return nil, domain.Invalid("url", "%s", msg)
	}
	logger := opts.Logger
	conf.Logger = func(level esdb.LogLevel, format string, args ...any) {
		// The client sometimes passes its arguments as one slice.
		if len(args) == 1 {
			if inner, ok := args[0].([]any); ok {
				args = inner
			}
		}
		logger.Debug("esdb client: "+fmt.Sprintf(format, args...), "level", level)
	}
	s := &Store{opts: opts, conf: *conf}
	discovery := time.Duration(max(1, conf.MaxDiscoverAttempts)) *
		(time.Duration(conf.GossipTimeout)*time.Second + time.Duration(conf.DiscoveryInterval)*time.Millisecond)
	s.stuckAfter = min(opts.RequestTimeout, discovery+time.Second)
	for _, p := range opts.StreamPrefixes {
		s.prefixes = append(s.prefixes, opts.Namespace+p)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	s.cur = s.newRef(false)
	if err := s.ping(ctx); err != nil {
		_ = s.Close()
		return nil, err
	}
	return s, nil
}

// ping reads one event of $all.
func (s *Store) ping(ctx context.Context) error {
	_, err := scanAll(s, ctx, "connect", esdb.Backwards, esdb.End{},
		func(*struct{}, *esdb.ResolvedEvent, uint64) (bool, error) { return true, nil })
	return err
}

// Close stops the subscriptions, cancels the calls in progress and closes
// the connection (waiting at most Options.CloseTimeout for calls stuck
// inside the client, see the package doc). Calls after Close fail with
// ErrClosed. It always returns nil.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		cur := s.cur
		s.mu.Unlock()
		s.cancel()
		cur.cancel(ErrClosed)
		done := make(chan struct{})
		go func() {
			cur.users.Wait()
			close(done)
		}()
		timer := time.NewTimer(s.opts.CloseTimeout)
		defer timer.Stop()
		select {
		case <-done:
			_ = cur.client.Close()
		case <-timer.C:
			// Closing now could panic them; close when they are out, if ever.
			s.opts.Logger.Warn("esdbstore: calls still stuck inside the EventStoreDB client; closing it in the background")
			go func() {
				<-done
				_ = cur.client.Close()
			}()
		}
	})
	return nil
}

// maxCount is the count of a read that goes on until the end (what the
// .NET client asks for by default).
const maxCount = math.MaxInt64

// scanAll reads $all from start in direction dir, calling visit for each
// event (with its position, 0 if unknown) until visit says stop or $all
// ends. The server streams the events as they are read; stopping closes
// the call. It returns what visit collected.
func scanAll[T any](s *Store, ctx context.Context, op string, dir esdb.Direction, start esdb.AllPosition,
	visit func(acc *T, re *esdb.ResolvedEvent, pos uint64) (stop bool, err error)) (T, error) {
	return call(s, ctx, op, func(ctx context.Context, c *esdb.Client) (T, error) {
		var acc T
		rs, err := c.ReadAll(ctx, esdb.ReadAllOptions{Direction: dir, From: start}, maxCount)
		if err != nil {
			return acc, err
		}
		defer rs.Close()
		for {
			re, err := rs.Recv()
			if errors.Is(err, io.EOF) {
				return acc, nil
			}
			if err != nil {
				return acc, err
			}
			if re.Event == nil {
				continue
			}
			stop, err := visit(&acc, re, position(re))
			if err != nil || stop {
				return acc, err
			}
		}
	})
}

// ---- conversions ----

func (s *Store) validateStream(stream string) error {
	if stream == "" {
		return domain.Invalid("stream", "required")
	}
	if strings.HasPrefix(s.opts.Namespace+stream, "$") {
		return domain.Invalid("stream", "%q: system streams are not supported", stream)
	}
	return nil
}

// inPrefixes tells whether a server stream name is one of the service's.
func (s *Store) inPrefixes(name string) bool {
	for _, p := range s.prefixes {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// visible tells whether an event of $all belongs to the store.
func (s *Store) visible(e *esdb.RecordedEvent) bool {
	return !strings.HasPrefix(e.StreamID, "$") && !strings.HasPrefix(e.EventType, "$") && s.inPrefixes(e.StreamID)
}

// position is the $all commit position of an event, 0 when unknown.
func position(re *esdb.ResolvedEvent) uint64 {
	if e := re.Event; e != nil && e.Position.Commit != math.MaxUint64 {
		return e.Position.Commit
	}
	if re.Commit != nil && *re.Commit != math.MaxUint64 {
		return *re.Commit
	}
	return 0
}

func (s *Store) convert(re *esdb.ResolvedEvent) (es.RecordedEvent, error) {
	e := re.Event
	pos := position(re)
	if pos == 0 {
		return es.RecordedEvent{}, ErrPositionUnavailable
	}
	return es.RecordedEvent{
		StreamID:   strings.TrimPrefix(e.StreamID, s.opts.Namespace),
		Revision:   e.EventNumber,
		Position:   pos,
		ID:         e.EventID.String(),
		Type:       e.EventType,
		Data:       e.Data,
		Metadata:   e.UserMetadata,
		RecordedAt: e.CreatedDate,
	}, nil
}

func expectedRevision(v es.ExpectedVersion) (esdb.ExpectedRevision, error) {
	switch {
	case v == es.Any:
		return esdb.Any{}, nil
	case v == es.NoStream:
		return esdb.NoStream{}, nil
	case v == es.StreamExists:
		return esdb.StreamExists{}, nil
	case v >= 0:
		return esdb.Revision(uint64(v)), nil
	}
	return nil, domain.Invalid("expected", "unknown expected version %d", v)
}

func describeExpected(v es.ExpectedVersion) string {
	switch v {
	case es.Any:
		return "any"
	case es.NoStream:
		return "no stream"
	case es.StreamExists:
		return "stream exists"
	}
	return fmt.Sprintf("revision %d", v)
}

// ---- es.Store ----

// Append implements es.Store. It needs at least one event, each with a Type
// (not starting with $) and an ID that is empty or a UUID, and a stream
// under one of Options.StreamPrefixes. Retrying an append that failed with
// ErrOutcomeUnknown with the same events and expected version returns the
// original result if it had been written.
func (s *Store) Append(ctx context.Context, stream string, expected es.ExpectedVersion, events ...es.EventData) (es.AppendResult, error) {
	if err := s.validateStream(stream); err != nil {
		return es.AppendResult{}, err
	}
	name := s.opts.Namespace + stream
	if !s.inPrefixes(name) {
		return es.AppendResult{}, domain.Invalid("stream", "%q is not under the store's stream prefixes %q", stream, s.opts.StreamPrefixes)
	}
	exp, err := expectedRevision(expected)
	if err != nil {
		return es.AppendResult{}, err
	}
	if len(events) == 0 {
		return es.AppendResult{}, domain.Invalid("events", "at least one event required")
	}
	evs := make([]esdb.EventData, len(events))
	for i, ev := range events {
		if ev.Type == "" || strings.HasPrefix(ev.Type, "$") {
			return es.AppendResult{}, domain.Invalid("events", "event %d: type %q: required, and must not start with $", i, ev.Type)
		}
		id := uuid.New()
		if ev.ID != "" {
			if id, err = uuid.Parse(ev.ID); err != nil {
				return es.AppendResult{}, domain.Invalid("events", "event %d: id %q is not a UUID", i, ev.ID)
			}
		}
		// Copies: the call may outlive Append (see call).
		evs[i] = esdb.EventData{
			EventID:     id,
			EventType:   ev.Type,
			ContentType: esdb.ContentTypeJson,
			Data:        bytes.Clone(ev.Data),
			Metadata:    bytes.Clone(ev.Metadata),
		}
	}
	if err := ctx.Err(); err != nil {
		return es.AppendResult{}, err // nothing sent
	}
	op := fmt.Sprintf("append to %q (expected %s)", stream, describeExpected(expected))
	wr, err := call(s, ctx, op, func(ctx context.Context, c *esdb.Client) (*esdb.WriteResult, error) {
		return c.AppendToStream(ctx, name, esdb.AppendToStreamOptions{ExpectedRevision: exp}, evs...)
	})
	if err != nil {
		var se *Error
		if errors.As(err, &se) && !errors.Is(err, errNotAdmitted) && (errors.Is(err, domain.ErrUnavailable) || ctx.Err() != nil) {
			se.Kinds = append(se.Kinds, ErrOutcomeUnknown)
		}
		return es.AppendResult{}, err
	}
	res := es.AppendResult{NextExpected: wr.NextExpectedVersion, Position: wr.CommitPosition}
	if res.Position == 0 {
		// An idempotent retry, answered without a position by servers
		// before 23.x: look the stored event up.
		pos, err := s.positionOf(ctx, name, res.NextExpected)
		if err != nil {
			return es.AppendResult{}, fmt.Errorf("esdbstore: %s: written (idempotent retry), but reading its position failed: %w", op, err)
		}
		res.Position = pos
	}
	return res, nil
}

// positionOf reads the $all position of the event at revision rev of the
// server stream name.
func (s *Store) positionOf(ctx context.Context, name string, rev uint64) (uint64, error) {
	return call(s, ctx, "read position", func(ctx context.Context, c *esdb.Client) (uint64, error) {
		rs, err := c.ReadStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(rev)}, 1)
		if err != nil {
			return 0, err
		}
		defer rs.Close()
		re, err := rs.Recv()
		if err != nil {
			return 0, err
		}
		if p := position(re); p != 0 {
			return p, nil
		}
		return 0, ErrPositionUnavailable
	})
}

// ReadStream implements es.Store.
func (s *Store) ReadStream(ctx context.Context, stream string, from uint64) ([]es.RecordedEvent, error) {
	if err := s.validateStream(stream); err != nil {
		return nil, err
	}
	name := s.opts.Namespace + stream
	return call(s, ctx, fmt.Sprintf("read stream %q", stream), func(ctx context.Context, c *esdb.Client) ([]es.RecordedEvent, error) {
		rs, err := c.ReadStream(ctx, name, esdb.ReadStreamOptions{Direction: esdb.Forwards, From: esdb.Revision(from)}, maxCount)
		if err != nil {
			return nil, err
		}
		defer rs.Close()
		var out []es.RecordedEvent
		for {
			re, err := rs.Recv()
			switch {
			case errors.Is(err, io.EOF):
				return out, nil
			case isStreamNotFound(err):
				return nil, nil
			case err != nil:
				return nil, err
			case re.Event == nil:
				continue
			}
			ev, err := s.convert(re)
			if err != nil {
				return nil, err
			}
			out = append(out, ev)
		}
	})
}

// ReadAll implements es.Store. It reads $all from after on, skipping the
// events of other streams, until limit events are found or $all ends.
func (s *Store) ReadAll(ctx context.Context, after uint64, limit int) ([]es.RecordedEvent, error) {
	if limit <= 0 {
		return nil, domain.Invalid("limit", "must be positive, got %d", limit)
	}
	from := after // where the read starts (inclusive)
	for attempt := 0; ; attempt++ {
		var start esdb.AllPosition = esdb.Start{}
		if from > 0 {
			start = esdb.Position{Commit: from, Prepare: from}
		}
		out, err := scanAll(s, ctx, "read $all", esdb.Forwards, start,
			func(out *[]es.RecordedEvent, re *esdb.ResolvedEvent, pos uint64) (bool, error) {
				switch {
				case pos == 0:
					return true, ErrPositionUnavailable
				case pos <= after || !s.visible(re.Event):
					return false, nil
				}
				ev, err := s.convert(re)
				if err != nil {
					return true, err
				}
				*out = append(*out, ev)
				return len(*out) == limit, nil
			})
		if err != nil && attempt == 0 && from > 0 && isInvalidPosition(err) {
			// after is not the start of a record: start at the last event
			// at or before it instead.
			if from, err = s.resolvePosition(ctx, from); err == nil {
				continue
			}
		}
		if err != nil {
			return nil, err
		}
		return out, nil
	}
}

// resolvePosition finds the position of the last event at or before pos
// (0 when none), reading $all backwards: a valid place to start reading
// $all from.
func (s *Store) resolvePosition(ctx context.Context, pos uint64) (uint64, error) {
	return scanAll(s, ctx, "find a position in $all", esdb.Backwards, esdb.End{},
		func(found *uint64, _ *esdb.ResolvedEvent, p uint64) (bool, error) {
			if p != 0 && p <= pos {
				*found = p
				return true, nil
			}
			return false, nil
		})
}

// LastPosition implements es.Store: the position of the newest event of
// the store's streams, found by reading $all backwards.
func (s *Store) LastPosition(ctx context.Context) (uint64, error) {
	return scanAll(s, ctx, "read the last position", esdb.Backwards, esdb.End{},
		func(last *uint64, re *esdb.ResolvedEvent, p uint64) (bool, error) {
			if p != 0 && s.visible(re.Event) {
				*last = p
				return true, nil
			}
			return false, nil
		})
}
