package esdbtest

import (
	"encoding/binary"
	"errors"
	"io"
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/EventStore/EventStore-Client-Go/v4/protos/shared"
	"github.com/EventStore/EventStore-Client-Go/v4/protos/streams"
)

// readBatchSize is how many events a read or subscription takes from the
// log at a time (EventStoreDB's ReadBatchSize).
const readBatchSize = 32

type streamsService struct {
	streams.UnimplementedStreamsServer
	srv *Server
}

var (
	errInvalidPosition = status.Error(codes.InvalidArgument, "Trying to read from an invalid position.")
	errDropped         = status.Error(codes.Unavailable, "Server Is Not Ready")
)

// ---- Append ----

func (s *streamsService) Append(stream streams.Streams_AppendServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	opts := first.GetOptions()
	if opts == nil {
		return status.Error(codes.Unknown, "Exception was thrown by handler. InvalidOperationException: first message must be options")
	}
	name := string(opts.GetStreamIdentifier().GetStreamName())
	if name == "" {
		return status.Error(codes.InvalidArgument, "'streamName' is a required argument")
	}
	if name == "$all" {
		return status.Error(codes.InvalidArgument, "Cannot append to $all")
	}
	var expected int64
	switch rev := opts.GetExpectedStreamRevision().(type) {
	case *streams.AppendReq_Options_Revision:
		if rev.Revision > math.MaxInt64 {
			return status.Errorf(codes.InvalidArgument, "'%d' is not a valid revision", rev.Revision)
		}
		expected = int64(rev.Revision)
	case *streams.AppendReq_Options_NoStream:
		expected = expectNoStream
	case *streams.AppendReq_Options_Any:
		expected = expectAny
	case *streams.AppendReq_Options_StreamExists:
		expected = expectStreamExists
	default:
		return status.Errorf(codes.InvalidArgument, "'%v' is not a valid ExpectedStreamRevisionOneofCase", rev)
	}

	var evs []proposed
	size := 0
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		msg := req.GetProposedMessage()
		if msg == nil {
			return status.Error(codes.Unknown, "Exception was thrown by handler. InvalidOperationException: expected a proposed message")
		}
		typ, ok := msg.GetMetadata()["type"]
		if !ok {
			return status.Error(codes.InvalidArgument, "Required Metadata Property 'type' is missing")
		}
		ct, ok := msg.GetMetadata()["content-type"]
		if !ok {
			return status.Error(codes.InvalidArgument, "Required Metadata Property 'content-type' is missing")
		}
		id, err := fromProtoUUID(msg.GetId())
		if err != nil {
			return status.Errorf(codes.InvalidArgument, "invalid event id: %v", err)
		}
		size += len(typ) + len(msg.GetData()) + len(msg.GetCustomMetadata()) + 32
		if size > s.srv.opts.MaxAppendSize {
			return status.Errorf(codes.InvalidArgument, "Maximum Append Size of %d Exceeded.", s.srv.opts.MaxAppendSize)
		}
		evs = append(evs, proposed{id: id, typ: typ, contentType: ct, data: msg.GetData(), meta: msg.GetCustomMetadata()})
	}
	if err := stream.Context().Err(); err != nil {
		return status.FromContextError(err).Err()
	}

	res := s.srv.store.append(name, expected, evs, s.srv.ticks())
	switch res.decision {
	case decisionWrongExpectedVersion:
		return stream.SendAndClose(wrongExpectedVersion(opts, expected, res.current))
	case decisionIdempotent:
		last := res.events[len(res.events)-1]
		ok := &streams.AppendResp_Success{
			CurrentRevisionOption: &streams.AppendResp_Success_CurrentRevision{CurrentRevision: last.rev},
		}
		if s.srv.opts.IdempotentWithoutPosition {
			ok.PositionOption = &streams.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
		} else {
			ok.PositionOption = successPosition(last.pos)
		}
		return stream.SendAndClose(&streams.AppendResp{Result: &streams.AppendResp_Success_{Success: ok}})
	}
	ok := &streams.AppendResp_Success{}
	if len(res.events) == 0 { // nothing to write
		if res.current < 0 {
			ok.CurrentRevisionOption = &streams.AppendResp_Success_NoStream{NoStream: &shared.Empty{}}
		} else {
			ok.CurrentRevisionOption = &streams.AppendResp_Success_CurrentRevision{CurrentRevision: uint64(res.current)}
		}
		ok.PositionOption = &streams.AppendResp_Success_NoPosition{NoPosition: &shared.Empty{}}
	} else {
		last := res.events[len(res.events)-1]
		ok.CurrentRevisionOption = &streams.AppendResp_Success_CurrentRevision{CurrentRevision: last.rev}
		ok.PositionOption = successPosition(last.pos)
	}
	return stream.SendAndClose(&streams.AppendResp{Result: &streams.AppendResp_Success_{Success: ok}})
}

func successPosition(pos uint64) *streams.AppendResp_Success_Position {
	return &streams.AppendResp_Success_Position{Position: &streams.AppendResp_Position{CommitPosition: pos, PreparePosition: pos}}
}

// wrongExpectedVersion builds the answer EventStoreDB gives (Streams.Append),
// filling both the current fields and the legacy *_20_6_0 ones.
func wrongExpectedVersion(opts *streams.AppendReq_Options, expected, current int64) *streams.AppendResp {
	w := &streams.AppendResp_WrongExpectedVersion{}
	empty := &shared.Empty{}
	switch opts.GetExpectedStreamRevision().(type) {
	case *streams.AppendReq_Options_Any:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedAny{ExpectedAny: empty}
		w.ExpectedRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_Any_20_6_0{Any_20_6_0: empty}
	case *streams.AppendReq_Options_StreamExists:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedStreamExists{ExpectedStreamExists: empty}
		w.ExpectedRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_StreamExists_20_6_0{StreamExists_20_6_0: empty}
	case *streams.AppendReq_Options_NoStream:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedNoStream{ExpectedNoStream: empty}
		w.ExpectedRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: math.MaxUint64}
	default:
		w.ExpectedRevisionOption = &streams.AppendResp_WrongExpectedVersion_ExpectedRevision{ExpectedRevision: uint64(expected)}
		w.ExpectedRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_ExpectedRevision_20_6_0{ExpectedRevision_20_6_0: uint64(expected)}
	}
	if current < 0 {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentNoStream{CurrentNoStream: empty}
		w.CurrentRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_NoStream_20_6_0{NoStream_20_6_0: empty}
	} else {
		w.CurrentRevisionOption = &streams.AppendResp_WrongExpectedVersion_CurrentRevision{CurrentRevision: uint64(current)}
		w.CurrentRevisionOption_20_6_0 = &streams.AppendResp_WrongExpectedVersion_CurrentRevision_20_6_0{CurrentRevision_20_6_0: uint64(current)}
	}
	return &streams.AppendResp{Result: &streams.AppendResp_WrongExpectedVersion_{WrongExpectedVersion: w}}
}

// ---- Read ----

// eventFilter is a server-side $all filter.
type eventFilter struct {
	byType   bool
	prefixes []string
	re       *regexp.Regexp
}

func (f *eventFilter) match(e *event) bool {
	if f == nil {
		return true
	}
	v := e.stream
	if f.byType {
		v = e.typ
	}
	if f.re != nil {
		return f.re.MatchString(v)
	}
	for _, p := range f.prefixes {
		if strings.HasPrefix(v, p) {
			return true
		}
	}
	return false
}

func parseFilter(fo *streams.ReadReq_Options_FilterOptions) (*eventFilter, error) {
	f := &eventFilter{}
	var expr *streams.ReadReq_Options_FilterOptions_Expression
	switch x := fo.GetFilter().(type) {
	case *streams.ReadReq_Options_FilterOptions_StreamIdentifier:
		expr = x.StreamIdentifier
	case *streams.ReadReq_Options_FilterOptions_EventType:
		expr, f.byType = x.EventType, true
	default:
		return nil, status.Errorf(codes.InvalidArgument, "'%v' is not a valid FilterOptions", fo)
	}
	if expr.GetRegex() != "" {
		re, err := regexp.Compile(expr.GetRegex())
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "invalid regex: %v", err)
		}
		f.re = re
	} else {
		f.prefixes = expr.GetPrefix()
	}
	return f, nil
}

type readSender struct {
	stream     streams.Streams_ReadServer
	uuidString bool
	positions  bool // stream reads: include the $all position
}

func (rs *readSender) event(e *event) error {
	return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_Event{Event: rs.toProto(e)}})
}

func (rs *readSender) toProto(e *event) *streams.ReadResp_ReadEvent {
	commit, prepare := e.pos, e.pos
	if !rs.positions {
		commit, prepare = math.MaxUint64, math.MaxUint64
	}
	re := &streams.ReadResp_ReadEvent{
		Event: &streams.ReadResp_ReadEvent_RecordedEvent{
			Id:               toProtoUUID(e.id, rs.uuidString),
			StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(e.stream)},
			StreamRevision:   e.rev,
			PreparePosition:  prepare,
			CommitPosition:   commit,
			Metadata: map[string]string{
				"type":         e.typ,
				"created":      strconv.FormatInt(e.created, 10),
				"content-type": e.contentType,
			},
			CustomMetadata: e.meta,
			Data:           e.data,
		},
	}
	if rs.positions {
		re.Position = &streams.ReadResp_ReadEvent_CommitPosition{CommitPosition: e.pos}
	} else {
		re.Position = &streams.ReadResp_ReadEvent_NoPosition{NoPosition: &shared.Empty{}}
	}
	return re
}

func (s *streamsService) Read(req *streams.ReadReq, stream streams.Streams_ReadServer) error {
	o := req.GetOptions()
	if o == nil {
		return status.Error(codes.InvalidArgument, "'options' is a required argument")
	}
	if o.GetUuidOption() == nil {
		return status.Error(codes.InvalidArgument, "'uuidOption' is a required argument of type UUIDOption")
	}
	rs := &readSender{stream: stream, uuidString: o.GetUuidOption().GetString_() != nil, positions: true}
	var filter *eventFilter
	if fo := o.GetFilter(); fo != nil {
		var err error
		if filter, err = parseFilter(fo); err != nil {
			return err
		}
	}
	forwards := o.GetReadDirection() == streams.ReadReq_Options_Forwards
	_, subscribe := o.GetCountOption().(*streams.ReadReq_Options_Subscription)
	combination := func() error {
		return status.Errorf(codes.InvalidArgument, "The combination of (%T, %T, %v, filter=%v) is invalid.",
			o.GetStreamOption(), o.GetCountOption(), o.GetReadDirection(), filter != nil)
	}
	switch so := o.GetStreamOption().(type) {
	case *streams.ReadReq_Options_Stream:
		name := string(so.Stream.GetStreamIdentifier().GetStreamName())
		if filter != nil {
			return combination()
		}
		if subscribe {
			if !forwards {
				return combination()
			}
			return s.subscribeStream(rs, name, so.Stream)
		}
		rs.positions = !s.srv.opts.StreamReadsWithoutPosition
		return s.readStream(rs, name, so.Stream, o.GetCount(), forwards, o.GetControlOption().GetCompatibility())
	case *streams.ReadReq_Options_All:
		if subscribe {
			if !forwards {
				return combination()
			}
			return s.subscribeAll(rs, so.All, filter, o.GetFilter())
		}
		return s.readAll(rs, so.All, o.GetCount(), forwards, filter, o.GetFilter())
	default:
		return status.Errorf(codes.InvalidArgument, "'%v' is not a valid StreamOptionOneofCase", so)
	}
}

func (s *streamsService) readStream(rs *readSender, name string, so *streams.ReadReq_Options_StreamOptions, count uint64, forwards bool, compat uint32) error {
	st := s.srv.store
	st.mu.Lock()
	all := st.streams[name]
	var evs []*event
	found := len(all) > 0
	if found {
		n := uint64(len(all))
		if forwards {
			var from uint64
			switch r := so.GetRevisionOption().(type) {
			case *streams.ReadReq_Options_StreamOptions_Revision:
				from = r.Revision
			case *streams.ReadReq_Options_StreamOptions_End:
				from = n
			}
			for i := from; i < n && uint64(len(evs)) < count; i++ {
				evs = append(evs, all[i])
			}
		} else {
			from := int64(n) - 1
			if r, ok := so.GetRevisionOption().(*streams.ReadReq_Options_StreamOptions_Revision); ok {
				from = min(from, int64(min(r.Revision, math.MaxInt64)))
			} else if _, ok := so.GetRevisionOption().(*streams.ReadReq_Options_StreamOptions_Start); ok {
				from = min(from, 0)
			}
			for i := from; i >= 0 && uint64(len(evs)) < count; i-- {
				evs = append(evs, all[i])
			}
		}
	}
	last := uint64(len(all)) - 1
	st.mu.Unlock()

	if !found {
		return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_StreamNotFound_{
			StreamNotFound: &streams.ReadResp_StreamNotFound{StreamIdentifier: &shared.StreamIdentifier{StreamName: []byte(name)}},
		}})
	}
	for _, e := range evs {
		if err := rs.event(e); err != nil {
			return err
		}
	}
	if compat >= 1 && forwards { // only for clients that ask for it
		return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_LastStreamPosition{LastStreamPosition: last}})
	}
	return nil
}

// allStart resolves the start of a $all read: the index of the first event
// to consider. Forwards reads include an event at the position itself
// (when commit >= prepare), backwards reads start strictly before it.
func (s *streamsService) allStart(ao *streams.ReadReq_Options_AllOptions, forwards, exclusive bool) (int, error) {
	st := s.srv.store
	st.mu.Lock()
	defer st.mu.Unlock()
	switch x := ao.GetAllOption().(type) {
	case *streams.ReadReq_Options_AllOptions_Start:
		if forwards {
			return 0, nil
		}
		return -1, nil
	case *streams.ReadReq_Options_AllOptions_End:
		if forwards {
			return len(st.log), nil
		}
		return len(st.log) - 1, nil
	case *streams.ReadReq_Options_AllOptions_Position:
		c, p := x.Position.GetCommitPosition(), x.Position.GetPreparePosition()
		if !st.validPosition(c) {
			return 0, errInvalidPosition
		}
		if forwards {
			return st.firstAfter(c, !exclusive && p <= c), nil
		}
		return st.firstAfter(c, true) - 1, nil
	default:
		return 0, status.Errorf(codes.InvalidArgument, "'%v' is not a valid AllOptionOneofCase", x)
	}
}

func (s *streamsService) readAll(rs *readSender, ao *streams.ReadReq_Options_AllOptions, count uint64, forwards bool, filter *eventFilter, fo *streams.ReadReq_Options_FilterOptions) error {
	i, err := s.allStart(ao, forwards, false)
	if err != nil {
		return err
	}
	window := uint64(math.MaxUint64) // events considered
	if filter != nil {
		if m, ok := fo.GetWindow().(*streams.ReadReq_Options_FilterOptions_Max); ok && m.Max > 0 {
			window = uint64(m.Max)
		}
	}
	st := s.srv.store
	var sent, considered uint64
	for sent < count && considered < window {
		st.mu.Lock()
		var e *event
		if i >= 0 && i < len(st.log) {
			e = st.log[i]
		}
		st.mu.Unlock()
		if e == nil {
			return nil
		}
		if forwards {
			i++
		} else {
			i--
		}
		considered++
		if !filter.match(e) {
			continue
		}
		if err := rs.event(e); err != nil {
			return err
		}
		sent++
	}
	return nil
}

func (s *streamsService) confirm(rs *readSender, sub *subscription) error {
	return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_Confirmation{
		Confirmation: &streams.ReadResp_SubscriptionConfirmation{SubscriptionId: sub.id},
	}})
}

func (s *streamsService) caughtUp(rs *readSender) error {
	return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_CaughtUp_{CaughtUp: &streams.ReadResp_CaughtUp{}}})
}

func (s *streamsService) checkpoint(rs *readSender, pos uint64) error {
	return rs.stream.Send(&streams.ReadResp{Content: &streams.ReadResp_Checkpoint_{
		Checkpoint: &streams.ReadResp_Checkpoint{CommitPosition: pos, PreparePosition: pos},
	}})
}

// wait blocks until the log changes, the subscription is dropped or the
// call ends.
func (s *streamsService) wait(rs *readSender, sub *subscription, changed chan struct{}) error {
	select {
	case <-changed:
		return nil
	case <-sub.dropped:
		return errDropped
	case <-rs.stream.Context().Done():
		return status.FromContextError(rs.stream.Context().Err()).Err()
	}
}

// subscribeAll serves a catch-up subscription to $all: confirmation, stored
// events after the start, then live ones. Catch-up and live read the same
// append-only log through one cursor, so nothing is skipped or repeated.
func (s *streamsService) subscribeAll(rs *readSender, ao *streams.ReadReq_Options_AllOptions, filter *eventFilter, fo *streams.ReadReq_Options_FilterOptions) error {
	sub := newSubscription()
	s.srv.register(sub)
	defer s.srv.unregister(sub)
	if err := s.confirm(rs, sub); err != nil {
		return err
	}
	i, err := s.allStart(ao, true, true)
	if err != nil {
		return err
	}
	// A start beyond the end skips the live events up to it, too.
	var after uint64
	if p := ao.GetPosition(); p != nil {
		after = p.GetCommitPosition()
	}
	interval := uint64(0) // checkpoint every interval considered events
	if filter != nil {
		window := uint64(readBatchSize)
		if m, ok := fo.GetWindow().(*streams.ReadReq_Options_FilterOptions_Max); ok && m.Max > 0 {
			window = uint64(m.Max)
		}
		interval = max(1, uint64(fo.GetCheckpointIntervalMultiplier())) * window
	}
	var considered, lastSent uint64
	live := false
	for {
		select {
		case <-sub.dropped:
			return errDropped
		default:
		}
		batch, end, changed := s.srv.store.snapshot(i, readBatchSize)
		if len(batch) == 0 {
			if !live {
				if filter != nil {
					if err := s.checkpoint(rs, max(lastSent, end)); err != nil {
						return err
					}
				}
				if err := s.caughtUp(rs); err != nil {
					return err
				}
				live = true
			}
			if err := s.wait(rs, sub, changed); err != nil {
				return err
			}
			continue
		}
		for _, e := range batch {
			i++
			considered++
			if e.pos > after && filter.match(e) {
				if err := rs.event(e); err != nil {
					return err
				}
				lastSent = e.pos
			}
			if interval > 0 && considered%interval == 0 {
				if err := s.checkpoint(rs, e.end); err != nil {
					return err
				}
			}
		}
	}
}

// subscribeStream serves a catch-up subscription to one stream. The stream
// need not exist yet.
func (s *streamsService) subscribeStream(rs *readSender, name string, so *streams.ReadReq_Options_StreamOptions) error {
	sub := newSubscription()
	s.srv.register(sub)
	defer s.srv.unregister(sub)
	if err := s.confirm(rs, sub); err != nil {
		return err
	}
	st := s.srv.store
	st.mu.Lock()
	var next uint64 // next revision to send
	switch r := so.GetRevisionOption().(type) {
	case *streams.ReadReq_Options_StreamOptions_Revision:
		next = r.Revision + 1 // exclusive
	case *streams.ReadReq_Options_StreamOptions_End:
		next = uint64(len(st.streams[name]))
	}
	st.mu.Unlock()
	live := false
	for {
		st.mu.Lock()
		all := st.streams[name]
		var batch []*event
		for j := next; j < uint64(len(all)) && len(batch) < readBatchSize; j++ {
			batch = append(batch, all[j])
		}
		changed := st.changed
		st.mu.Unlock()
		select {
		case <-sub.dropped:
			return errDropped
		default:
		}
		if len(batch) == 0 {
			if !live {
				if err := s.caughtUp(rs); err != nil {
					return err
				}
				live = true
			}
			if err := s.wait(rs, sub, changed); err != nil {
				return err
			}
			continue
		}
		for _, e := range batch {
			if err := rs.event(e); err != nil {
				return err
			}
			next = e.rev + 1
		}
	}
}

// ---- UUIDs ----

func fromProtoUUID(u *shared.UUID) (uuid.UUID, error) {
	switch v := u.GetValue().(type) {
	case *shared.UUID_Structured_:
		var b [16]byte
		binary.BigEndian.PutUint64(b[:8], uint64(v.Structured.GetMostSignificantBits()))
		binary.BigEndian.PutUint64(b[8:], uint64(v.Structured.GetLeastSignificantBits()))
		return uuid.UUID(b), nil
	case *shared.UUID_String_:
		return uuid.Parse(v.String_)
	default:
		return uuid.Nil, errors.New("missing")
	}
}

func toProtoUUID(id uuid.UUID, asString bool) *shared.UUID {
	if asString {
		return &shared.UUID{Value: &shared.UUID_String_{String_: id.String()}}
	}
	return &shared.UUID{Value: &shared.UUID_Structured_{Structured: &shared.UUID_Structured{
		MostSignificantBits:  int64(binary.BigEndian.Uint64(id[:8])),
		LeastSignificantBits: int64(binary.BigEndian.Uint64(id[8:])),
	}}}
}
