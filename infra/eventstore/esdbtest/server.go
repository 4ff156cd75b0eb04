// Package esdbtest is an in-process test server speaking EventStoreDB's gRPC
// wire protocol (the services of the generated protos packages of
// github.com/EventStore/EventStore-Client-Go/v4), so the real esdb client,
// and adapters built on it, can be tested without a database.
//
// # What it implements
//
//   - streams.Streams/Append with expected revisions any, no_stream,
//     stream_exists and an exact revision, answered like EventStoreDB
//     (IndexWriter.CheckCommit): wrong_expected_version carries the current
//     and expected revisions (also in the *_20_6_0 fields); a retried append
//     with the same event ids is idempotent (success, nothing written,
//     reporting the stored events' revision and position); a partial match
//     is "corrupted idempotency", answered as wrong expected version.
//     Events need the "type" and "content-type" metadata; appends above
//     Options.MaxAppendSize are rejected with InvalidArgument.
//   - streams.Streams/Read: stream reads forwards and backwards (a missing
//     stream answers stream_not_found), $all reads forwards and backwards
//     (optionally filtered), catch-up subscriptions to a stream and to $all
//     (optionally filtered by stream name or event type, prefix or regex):
//     the confirmation first, then the stored events, a checkpoint (filtered
//     $all subscriptions) and caught_up, then live events, with checkpoints
//     every checkpointIntervalMultiplier x max-search-window considered
//     events. Subscriptions from a position or revision are exclusive.
//   - serverfeatures.ServerFeatures/GetSupportedMethods (the client calls it
//     on every (re)connection) and gossip.Gossip/Read (called when the
//     client uses discovery: esdb+discover:// or several gossip seeds).
//
// $all positions model byte offsets of a transaction file: every event has
// commit position == prepare position == the offset of its record, the
// first event is not at 0, and positions are strictly increasing but not
// contiguous. Reading $all from a position inside a record fails with
// InvalidArgument "Trying to read from an invalid position.", as it does on
// a real server.
//
// # What it does not implement
//
// Deletes and tombstones, stream metadata ($$ streams are plain streams
// here) and ACLs, authentication (any or no credentials are accepted), TLS,
// BatchAppend, persistent subscriptions, projections, users, operations,
// links (resolve_links is ignored), system events (the log holds only what
// clients append), leader/follower roles (requires-leader is ignored),
// scavenging, fell_behind (a slow subscriber just applies gRPC flow
// control), and of the messages gated by control_option.compatibility only
// last_stream_position (forwards stream reads) is sent. Idempotency is
// exact here; a real server only remembers recent event ids for appends
// with "any" / "stream_exists".
//
// Storage is in memory; Stop and Restart keep it, Close drops the server.
package esdbtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/gossip"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/serverfeatures"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
)

// DefaultVersion is the EventStoreDB version the server reports.
const DefaultVersion = "24.10.0"

// DefaultMaxAppendSize is EventStoreDB's default maximum append size.
const DefaultMaxAppendSize = 1 << 20

// Options tunes the server. The zero value is a current EventStoreDB.
type Options struct {
	// Version reported by GetSupportedMethods. Default DefaultVersion.
	Version string
	// MaxAppendSize bounds the size of one append. Default
	// DefaultMaxAppendSize.
	MaxAppendSize int
	// IdempotentWithoutPosition answers idempotent appends with no_position,
	// as EventStoreDB did before it looked up the position of the stored
	// events.
	IdempotentWithoutPosition bool
	// StreamReadsWithoutPosition leaves the $all position out of events read
	// from a stream (commit and prepare set to the max uint64, as the
	// client sees them from EventStoreDB before 22.6).
	StreamReadsWithoutPosition bool
	// Now stamps the created time of events. Default time.Now.
	Now func() time.Time
}

// Server is a running test server. It is safe for concurrent use.
type Server struct {
	opts  Options
	store *store
	addr  string // host:port, fixed for the server's life

	mu      sync.Mutex
	grpc    *grpc.Server
	lis     *trackingListener
	stopped bool
	closed  bool
	subs    map[*subscription]struct{}
	calls   map[string]int
	serveWG sync.WaitGroup
}

// New starts a server on a free port of 127.0.0.1.
func New() (*Server, error) { return NewWithOptions(Options{}) }

// NewWithOptions starts a server with opts on a free port of 127.0.0.1.
func NewWithOptions(opts Options) (*Server, error) {
	if opts.Version == "" {
		opts.Version = DefaultVersion
	}
	if opts.MaxAppendSize <= 0 {
		opts.MaxAppendSize = DefaultMaxAppendSize
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("esdbtest: listen: %w", err)
	}
	s := &Server{
		opts:  opts,
		store: newStore(),
		addr:  lis.Addr().String(),
		subs:  make(map[*subscription]struct{}),
		calls: make(map[string]int),
	}
	s.serve(lis)
	return s, nil
}

// Start starts a server for a test and closes it when the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	return StartWithOptions(t, Options{})
}

// StartWithOptions is Start with options.
func StartWithOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := NewWithOptions(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	return s
}

// URL is the connection string of the server:
// esdb://127.0.0.1:<port>?tls=false.
func (s *Server) URL() string { return "esdb://" + s.addr + "?tls=false" }

// Addr is the server's host:port.
func (s *Server) Addr() string { return s.addr }

func (s *Server) serve(lis net.Listener) {
	g := grpc.NewServer(
		grpc.MaxRecvMsgSize(32<<20),
		// The client pings every 10 s, also without active calls; grpc-go's
		// default policy would answer with GOAWAY (too_many_pings).
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: time.Second, PermitWithoutStream: true}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			s.countCall(info.FullMethod)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			s.countCall(info.FullMethod)
			return h(srv, ss)
		}),
	)
	streams.RegisterStreamsServer(g, &streamsService{srv: s})
	serverfeatures.RegisterServerFeaturesServer(g, &featuresService{srv: s})
	gossip.RegisterGossipServer(g, &gossipService{srv: s})
	tl := &trackingListener{Listener: lis, conns: make(map[net.Conn]struct{})}
	s.mu.Lock()
	s.grpc, s.lis, s.stopped = g, tl, false
	s.mu.Unlock()
	s.serveWG.Add(1)
	go func() {
		defer s.serveWG.Done()
		_ = g.Serve(tl)
	}()
}

func (s *Server) countCall(method string) {
	s.mu.Lock()
	s.calls[method]++
	s.mu.Unlock()
}

// Calls tells how many times a method was called, by its full gRPC name,
// e.g. "/event_store.client.server_features.ServerFeatures/GetSupportedMethods".
func (s *Server) Calls(fullMethod string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[fullMethod]
}

// AllCalls returns the count of calls per full method name.
func (s *Server) AllCalls() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.calls))
	for k, v := range s.calls {
		out[k] = v
	}
	return out
}

// Stop shuts the server down like a crashed node: connections are closed,
// calls in progress fail, new connections are refused. The data is kept;
// Restart serves it again on the same address.
func (s *Server) Stop() {
	s.mu.Lock()
	g := s.grpc
	already := s.stopped
	s.stopped = true
	s.mu.Unlock()
	if already || g == nil {
		return
	}
	g.Stop()
	s.serveWG.Wait()
}

// Restart serves again, on the same address, after Stop.
func (s *Server) Restart() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errors.New("esdbtest: server closed")
	}
	if !s.stopped {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()
	var lis net.Listener
	var err error
	for range 50 { // the port may linger for a moment
		if lis, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("esdbtest: restart on %s: %w", s.addr, err)
	}
	s.serve(lis)
	return nil
}

// Close stops the server for good.
func (s *Server) Close() {
	s.Stop()
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
}

// DropSubscriptions ends every active subscription with an Unavailable
// error, as a server does when it stops serving them (e.g. a node leaving
// the leader role). Connections stay up. It returns how many were dropped.
func (s *Server) DropSubscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for sub := range s.subs {
		sub.drop()
		delete(s.subs, sub)
		n++
	}
	return n
}

// DropConnections closes every client connection (as a network failure
// would); calls in progress fail with Unavailable on the client, which
// reconnects. The server keeps listening.
func (s *Server) DropConnections() int {
	s.mu.Lock()
	lis := s.lis
	s.mu.Unlock()
	if lis == nil {
		return 0
	}
	return lis.closeAll()
}

// Subscriptions is the number of active subscriptions.
func (s *Server) Subscriptions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.subs)
}

// LastPosition is the position of the newest event, 0 when none.
func (s *Server) LastPosition() uint64 {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	if len(s.store.log) == 0 {
		return 0
	}
	return s.store.log[len(s.store.log)-1].pos
}

// EventCount is the number of events in $all.
func (s *Server) EventCount() int {
	s.store.mu.Lock()
	defer s.store.mu.Unlock()
	return len(s.store.log)
}

func (s *Server) register(sub *subscription) {
	s.mu.Lock()
	s.subs[sub] = struct{}{}
	s.mu.Unlock()
}

func (s *Server) unregister(sub *subscription) {
	s.mu.Lock()
	delete(s.subs, sub)
	s.mu.Unlock()
}

func (s *Server) ticks() int64 { return s.opts.Now().UnixNano() / 100 }

func (s *Server) hostPort() (string, uint32) {
	host, port, _ := net.SplitHostPort(s.addr)
	p, _ := strconv.ParseUint(port, 10, 16)
	return host, uint32(p)
}

type subscription struct {
	id      string
	dropped chan struct{}
	once    sync.Once
}

func newSubscription() *subscription {
	return &subscription{id: uuid.NewString(), dropped: make(chan struct{})}
}

func (sub *subscription) drop() { sub.once.Do(func() { close(sub.dropped) }) }

// trackingListener remembers accepted connections so DropConnections can
// close them.
type trackingListener struct {
	net.Listener
	mu    sync.Mutex
	conns map[net.Conn]struct{}
}

func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	l.conns[tc] = struct{}{}
	l.mu.Unlock()
	return tc, nil
}

func (l *trackingListener) closeAll() int {
	l.mu.Lock()
	conns := make([]net.Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
	return len(conns)
}

type trackedConn struct {
	net.Conn
	l    *trackingListener
	once sync.Once
}

func (c *trackedConn) Close() error {
	c.once.Do(func() {
		c.l.mu.Lock()
		delete(c.l.conns, c)
		c.l.mu.Unlock()
	})
	return c.Conn.Close()
}
