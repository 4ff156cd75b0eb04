package esdbtest

import (
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"github.com/google/uuid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
)

const (
	featuresMethod = "/event_store.client.server_features.ServerFeatures/GetSupportedMethods"
	gossipMethod   = "/event_store.client.gossip.Gossip/Read"
)

func ctxFor(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func client(t *testing.T, url string) *esdb.Client {
	t.Helper()
	conf, err := esdb.ParseConnectionString(url)
	if err != nil {
		t.Fatal(err)
	}
	conf.Logger = esdb.NoopLogging()
	c, err := esdb.NewClient(conf)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func ev(typ string) esdb.EventData {
	return esdb.EventData{EventID: uuid.New(), EventType: typ, ContentType: esdb.ContentTypeJson, Data: []byte(`{"a":1}`), Metadata: []byte(`{"m":2}`)}
}

func appendOK(t *testing.T, c *esdb.Client, stream string, exp esdb.ExpectedRevision, evs ...esdb.EventData) *esdb.WriteResult {
	t.Helper()
	res, err := c.AppendToStream(ctxFor(t), stream, esdb.AppendToStreamOptions{ExpectedRevision: exp}, evs...)
	if err != nil {
		t.Fatalf("append to %s: %v", stream, err)
	}
	return res
}

func wrongVersion(t *testing.T, c *esdb.Client, stream string, exp esdb.ExpectedRevision, want string, evs ...esdb.EventData) {
	t.Helper()
	_, err := c.AppendToStream(ctxFor(t), stream, esdb.AppendToStreamOptions{ExpectedRevision: exp}, evs...)
	var e *esdb.Error
	if !errors.As(err, &e) || e.Code() != esdb.ErrorCodeWrongExpectedVersion {
		t.Fatalf("append to %s with %#v: error %v, want WrongExpectedVersion", stream, exp, err)
	}
	if !strings.Contains(err.Error(), want) {
		t.Fatalf("error %q does not say %q", err, want)
	}
}

func readStream(t *testing.T, c *esdb.Client, stream string, opts esdb.ReadStreamOptions, count uint64) ([]*esdb.ResolvedEvent, error) {
	t.Helper()
	rs, err := c.ReadStream(ctxFor(t), stream, opts, count)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.ResolvedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func readAll(t *testing.T, c *esdb.Client, opts esdb.ReadAllOptions, count uint64) ([]*esdb.ResolvedEvent, error) {
	t.Helper()
	rs, err := c.ReadAll(ctxFor(t), opts, count)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []*esdb.ResolvedEvent
	for {
		e, err := rs.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, err
		}
		out = append(out, e)
	}
}

func TestConnectCallsServerFeaturesOnly(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	appendOK(t, c, "s", esdb.NoStream{}, ev("t"))
	appendOK(t, c, "s", esdb.Revision(0), ev("t"))
	if n := srv.Calls(featuresMethod); n != 1 {
		t.Fatalf("GetSupportedMethods called %d times, want once per connection", n)
	}
	if n := srv.Calls(gossipMethod); n != 0 {
		t.Fatalf("gossip called %d times for a single-node connection string", n)
	}
	// Discovery (gossip seeds / esdb+discover) reads the gossip first.
	d := client(t, "esdb+discover://"+srv.Addr()+"?tls=false")
	appendOK(t, d, "s", esdb.Revision(1), ev("t"))
	if n := srv.Calls(gossipMethod); n != 1 {
		t.Fatalf("gossip called %d times with discovery, want 1", n)
	}
}

func TestAppendExpectedRevisions(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())

	res := appendOK(t, c, "s", esdb.NoStream{}, ev("t"), ev("t"))
	if res.NextExpectedVersion != 1 || res.CommitPosition == 0 || res.CommitPosition != res.PreparePosition {
		t.Fatalf("first append = %+v", res)
	}
	wrongVersion(t, c, "s", esdb.NoStream{}, "expecting 'no_stream' but got '1'", ev("t"))
	wrongVersion(t, c, "s", esdb.Revision(0), "expecting '0' but got '1'", ev("t"))
	wrongVersion(t, c, "s", esdb.Revision(7), "expecting '7' but got '1'", ev("t"))
	wrongVersion(t, c, "missing", esdb.StreamExists{}, "expecting 'stream_exists' but got 'no_stream'", ev("t"))
	wrongVersion(t, c, "missing", esdb.Revision(0), "expecting '0' but got 'no_stream'", ev("t"))
	if r := appendOK(t, c, "s", esdb.StreamExists{}, ev("t")); r.NextExpectedVersion != 2 || r.CommitPosition <= res.CommitPosition {
		t.Fatalf("StreamExists append = %+v", r)
	}
	if r := appendOK(t, c, "s", esdb.Any{}, ev("t")); r.NextExpectedVersion != 3 {
		t.Fatalf("Any append = %+v", r)
	}
	if r := appendOK(t, c, "s", esdb.Revision(3), ev("t")); r.NextExpectedVersion != 4 {
		t.Fatalf("exact append = %+v", r)
	}
	if r := appendOK(t, c, "new", esdb.Any{}, ev("t")); r.NextExpectedVersion != 0 {
		t.Fatalf("Any on a new stream = %+v", r)
	}
}

// TestWrongExpectedVersionWire checks the raw answer, legacy fields
// included.
func TestWrongExpectedVersionWire(t *testing.T) {
	srv := Start(t)
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	sc := streams.NewStreamsClient(conn)
	send := func(exp *streams.AppendReq_Options) *streams.AppendResp {
		t.Helper()
		call, err := sc.Append(ctxFor(t))
		if err != nil {
			t.Fatal(err)
		}
		if err := call.Send(&streams.AppendReq{Content: &streams.AppendReq_Options_{Options: exp}}); err != nil {
			t.Fatal(err)
		}
		id := uuid.New()
		msg := &streams.AppendReq_ProposedMessage{
			Id:       &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}},
			Metadata: map[string]string{"type": "t", "content-type": "application/json"},
			Data:     []byte(`{}`),
		}
		if err := call.Send(&streams.AppendReq{Content: &streams.AppendReq_ProposedMessage_{ProposedMessage: msg}}); err != nil {
			t.Fatal(err)
		}
		resp, err := call.CloseAndRecv()
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	name := &shared.StreamIdentifier{StreamName: []byte("w")}
	send(&streams.AppendReq_Options{StreamIdentifier: name, ExpectedStreamRevision: &streams.AppendReq_Options_NoStream{NoStream: &shared.Empty{}}})
	resp := send(&streams.AppendReq_Options{StreamIdentifier: name, ExpectedStreamRevision: &streams.AppendReq_Options_NoStream{NoStream: &shared.Empty{}}})
	w := resp.GetWrongExpectedVersion()
	if w == nil || w.GetExpectedNoStream() == nil || w.GetCurrentRevision() != 0 || w.GetCurrentRevision_20_6_0() != 0 ||
		w.GetExpectedRevision_20_6_0() != ^uint64(0) {
		t.Fatalf("no_stream conflict answer = %v", resp)
	}
	resp = send(&streams.AppendReq_Options{StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte("none")},
		ExpectedStreamRevision: &streams.AppendReq_Options_Revision{Revision: 4}})
	w = resp.GetWrongExpectedVersion()
	if w == nil || w.GetExpectedRevision() != 4 || w.GetCurrentNoStream() == nil || w.GetNoStream_20_6_0() == nil {
		t.Fatalf("revision conflict answer = %v", resp)
	}
	// Missing metadata is refused.
	call, err := sc.Append(ctxFor(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = call.Send(&streams.AppendReq{Content: &streams.AppendReq_Options_{Options: &streams.AppendReq_Options{StreamIdentifier: name,
		ExpectedStreamRevision: &streams.AppendReq_Options_Any{Any: &shared.Empty{}}}}})
	_ = call.Send(&streams.AppendReq{Content: &streams.AppendReq_ProposedMessage_{ProposedMessage: &streams.AppendReq_ProposedMessage{
		Id: &shared.UUID{Value: &shared.UUID_String_{String_: uuid.NewString()}}, Metadata: map[string]string{"type": "t"}}}})
	if _, err := call.CloseAndRecv(); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("append without content-type: %v, want InvalidArgument", err)
	}
}

func TestIdempotentAppends(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	a, b := ev("t"), ev("t")
	first := appendOK(t, c, "s", esdb.NoStream{}, a, b)
	for _, exp := range []esdb.ExpectedRevision{esdb.NoStream{}, esdb.Any{}, esdb.StreamExists{}} {
		again := appendOK(t, c, "s", exp, a, b)
		if *again != *first {
			t.Fatalf("retry with %#v = %+v, want %+v", exp, again, first)
		}
	}
	// The tail of the write alone, at its own expected revision.
	if r := appendOK(t, c, "s", esdb.Revision(0), b); r.NextExpectedVersion != 1 || r.CommitPosition != first.CommitPosition {
		t.Fatalf("retry of the second event = %+v", r)
	}
	// Corrupted idempotency: a known event followed by a new one.
	wrongVersion(t, c, "s", esdb.NoStream{}, "but got '1'", a, ev("t"))
	wrongVersion(t, c, "s", esdb.Any{}, "expecting 'any' but got '1'", a, ev("t"))
	// An id known in another stream is not a retry there.
	if r := appendOK(t, c, "other", esdb.Any{}, a); r.NextExpectedVersion != 0 {
		t.Fatalf("same id in another stream = %+v", r)
	}
	if n := srv.EventCount(); n != 3 {
		t.Fatalf("%d events stored, want 3", n)
	}

	old := StartWithOptions(t, Options{IdempotentWithoutPosition: true})
	oc := client(t, old.URL())
	appendOK(t, oc, "s", esdb.NoStream{}, a)
	if r := appendOK(t, oc, "s", esdb.NoStream{}, a); r.CommitPosition != 0 || r.NextExpectedVersion != 0 {
		t.Fatalf("legacy idempotent answer = %+v, want no position", r)
	}
}

func TestReadStream(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	if _, err := readStream(t, c, "missing", esdb.ReadStreamOptions{}, 10); err == nil {
		t.Fatal("reading a missing stream succeeded")
	} else if e, ok := err.(*esdb.Error); !ok || e.Code() != esdb.ErrorCodeResourceNotFound {
		t.Fatalf("reading a missing stream: %v, want ResourceNotFound", err)
	}
	in := []esdb.EventData{ev("a"), ev("b"), ev("c"), ev("d")}
	res := appendOK(t, c, "s", esdb.NoStream{}, in...)
	start := time.Now()

	fw, err := readStream(t, c, "s", esdb.ReadStreamOptions{From: esdb.Revision(1)}, 2)
	if err != nil || len(fw) != 2 || fw[0].Event.EventNumber != 1 || fw[1].Event.EventType != "c" {
		t.Fatalf("forwards read = %v, %v", fw, err)
	}
	e := fw[0].Event
	if e.EventID != in[1].EventID || string(e.Data) != `{"a":1}` || string(e.UserMetadata) != `{"m":2}` ||
		e.ContentType != "application/json" || e.StreamID != "s" {
		t.Fatalf("event = %+v", e)
	}
	if d := start.Sub(e.CreatedDate); d < -time.Second || d > time.Second {
		t.Fatalf("created %v, now %v", e.CreatedDate, start)
	}
	bw, err := readStream(t, c, "s", esdb.ReadStreamOptions{Direction: esdb.Backwards, From: esdb.End{}}, 10)
	if err != nil || len(bw) != 4 || bw[0].Event.EventNumber != 3 || bw[3].Event.EventNumber != 0 {
		t.Fatalf("backwards read = %v, %v", bw, err)
	}
	if bw[0].Event.Position.Commit != res.CommitPosition {
		t.Fatalf("last event position %d, append said %d", bw[0].Event.Position.Commit, res.CommitPosition)
	}
	if past, err := readStream(t, c, "s", esdb.ReadStreamOptions{From: esdb.Revision(10)}, 10); err != nil || len(past) != 0 {
		t.Fatalf("read past the end = %v, %v", past, err)
	}
}

func TestReadAllPositions(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	if all, err := readAll(t, c, esdb.ReadAllOptions{}, 10); err != nil || len(all) != 0 {
		t.Fatalf("empty $all = %v, %v", all, err)
	}
	appendOK(t, c, "a", esdb.Any{}, ev("t"), ev("t"))
	appendOK(t, c, "b", esdb.Any{}, ev("t"))
	last := appendOK(t, c, "a", esdb.Any{}, ev("t"))
	all, err := readAll(t, c, esdb.ReadAllOptions{}, 100)
	if err != nil || len(all) != 4 {
		t.Fatalf("$all = %v, %v", all, err)
	}
	var prev uint64
	for i, e := range all {
		p := e.Event.Position
		if p.Commit == 0 || p.Commit != p.Prepare || p.Commit <= prev || (i > 0 && p.Commit == prev+1) {
			t.Fatalf("event %d position %+v after %d: want strictly increasing, non-contiguous, commit == prepare", i, p, prev)
		}
		prev = p.Commit
	}
	if prev != last.CommitPosition {
		t.Fatalf("last position %d, append said %d", prev, last.CommitPosition)
	}
	// Forwards from a position includes the event there.
	from, err := readAll(t, c, esdb.ReadAllOptions{From: all[2].Event.Position}, 10)
	if err != nil || len(from) != 2 || from[0].Event.Position != all[2].Event.Position {
		t.Fatalf("forwards from the 3rd = %v, %v", from, err)
	}
	// Backwards from a position starts before it.
	back, err := readAll(t, c, esdb.ReadAllOptions{Direction: esdb.Backwards, From: all[2].Event.Position}, 10)
	if err != nil || len(back) != 2 || back[0].Event.Position != all[1].Event.Position {
		t.Fatalf("backwards from the 3rd = %v, %v", back, err)
	}
	// Inside a record: refused.
	inside := esdb.Position{Commit: all[2].Event.Position.Commit - 1, Prepare: all[2].Event.Position.Commit - 1}
	if _, err := readAll(t, c, esdb.ReadAllOptions{From: inside}, 10); status.Code(err) != codes.InvalidArgument ||
		!strings.Contains(err.Error(), "invalid position") {
		t.Fatalf("read from inside a record: %v, want InvalidArgument", err)
	}
	// Past the end: nothing.
	if end, err := readAll(t, c, esdb.ReadAllOptions{From: esdb.Position{Commit: 1 << 40, Prepare: 1 << 40}}, 10); err != nil || len(end) != 0 {
		t.Fatalf("read past the end = %v, %v", end, err)
	}
}

// TestSubscriptionConfirmationFirst checks the raw message order of a
// filtered $all subscription.
func TestSubscriptionConfirmationFirst(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	appendOK(t, c, "coupon-1", esdb.Any{}, ev("t"))
	appendOK(t, c, "other-1", esdb.Any{}, ev("t"))
	conn, err := grpc.NewClient(srv.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithCancel(ctxFor(t))
	defer cancel()
	call, err := streams.NewStreamsClient(conn).Read(ctx, &streams.ReadReq{Options: &streams.ReadReq_Options{
		StreamOption: &streams.ReadReq_Options_All{All: &streams.ReadReq_Options_AllOptions{
			AllOption: &streams.ReadReq_Options_AllOptions_Start{Start: &shared.Empty{}}}},
		CountOption: &streams.ReadReq_Options_Subscription{Subscription: &streams.ReadReq_Options_SubscriptionOptions{}},
		FilterOption: &streams.ReadReq_Options_Filter{Filter: &streams.ReadReq_Options_FilterOptions{
			Filter: &streams.ReadReq_Options_FilterOptions_StreamIdentifier{StreamIdentifier: &streams.ReadReq_Options_FilterOptions_Expression{
				Prefix: []string{"coupon-"}}},
			Window:                       &streams.ReadReq_Options_FilterOptions_Max{Max: 32},
			CheckpointIntervalMultiplier: 1,
		}},
		UuidOption: &streams.ReadReq_Options_UUIDOption{Content: &streams.ReadReq_Options_UUIDOption_String_{String_: &shared.Empty{}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for len(kinds) < 4 {
		m, err := call.Recv()
		if err != nil {
			t.Fatal(err)
		}
		switch x := m.GetContent().(type) {
		case *streams.ReadResp_Confirmation:
			kinds = append(kinds, "confirmation")
		case *streams.ReadResp_Event:
			kinds = append(kinds, "event:"+string(x.Event.GetEvent().GetStreamIdentifier().GetStreamName()))
			if x.Event.GetEvent().GetId().GetString_() == "" {
				t.Fatal("string UUID asked, not given")
			}
		case *streams.ReadResp_Checkpoint_:
			kinds = append(kinds, "checkpoint")
		case *streams.ReadResp_CaughtUp_:
			kinds = append(kinds, "caught_up")
		}
	}
	if got := strings.Join(kinds, ","); got != "confirmation,event:coupon-1,checkpoint,caught_up" {
		t.Fatalf("messages = %s", got)
	}
}

func TestSubscriptions(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	appendOK(t, c, "coupon-1", esdb.NoStream{}, ev("t"), ev("t"))
	appendOK(t, c, "other-1", esdb.NoStream{}, ev("t"))

	all, err := c.SubscribeToAll(ctxFor(t), esdb.SubscribeToAllOptions{From: esdb.Start{},
		Filter: &esdb.SubscriptionFilter{Type: esdb.StreamFilterType, Prefixes: []string{"coupon-"}}})
	if err != nil {
		t.Fatal(err)
	}
	defer all.Close()
	one, err := c.SubscribeToStream(ctxFor(t), "coupon-1", esdb.SubscribeToStreamOptions{From: esdb.Revision(0)})
	if err != nil {
		t.Fatal(err)
	}
	defer one.Close()
	if srv.Subscriptions() != 2 {
		t.Fatalf("%d subscriptions", srv.Subscriptions())
	}
	appendOK(t, c, "other-1", esdb.Revision(0), ev("t"))
	appendOK(t, c, "coupon-1", esdb.Revision(1), ev("t"))

	next := func(sub *esdb.Subscription) *esdb.RecordedEvent {
		t.Helper()
		for {
			e := sub.Recv()
			switch {
			case e.EventAppeared != nil:
				return e.EventAppeared.Event
			case e.SubscriptionDropped != nil:
				t.Fatalf("dropped: %v", e.SubscriptionDropped.Error)
			}
		}
	}
	for i := range 3 { // two stored, one live
		if e := next(all); e.StreamID != "coupon-1" || e.EventNumber != uint64(i) {
			t.Fatalf("$all event %d = %s@%d", i, e.StreamID, e.EventNumber)
		}
	}
	for i := 1; i <= 2; i++ { // exclusive of revision 0
		if e := next(one); e.EventNumber != uint64(i) {
			t.Fatalf("stream event = @%d, want @%d", e.EventNumber, i)
		}
	}
	if n := srv.DropSubscriptions(); n != 2 {
		t.Fatalf("dropped %d subscriptions", n)
	}
	for _, sub := range []*esdb.Subscription{all, one} {
		for {
			e := sub.Recv()
			if e.SubscriptionDropped != nil {
				if status.Code(e.SubscriptionDropped.Error) != codes.Unavailable {
					t.Fatalf("drop error = %v", e.SubscriptionDropped.Error)
				}
				break
			}
		}
	}
}

func TestStopRestartKeepsData(t *testing.T) {
	srv := Start(t)
	c := client(t, srv.URL())
	res := appendOK(t, c, "s", esdb.NoStream{}, ev("t"))
	srv.Stop()
	if _, err := c.AppendToStream(ctxFor(t), "s", esdb.AppendToStreamOptions{}, ev("t")); err == nil {
		t.Fatal("append to a stopped server succeeded")
	}
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	c2 := client(t, srv.URL())
	got, err := readStream(t, c2, "s", esdb.ReadStreamOptions{}, 10)
	if err != nil || len(got) != 1 || got[0].Event.Position.Commit != res.CommitPosition {
		t.Fatalf("after restart = %v, %v", got, err)
	}
}
