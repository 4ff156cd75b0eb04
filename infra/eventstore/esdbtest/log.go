package esdbtest

import (
	"sort"
	"sync"

	"github.com/google/uuid"
)

// Expected versions as the server encodes them (EventStoreDB's
// ExpectedVersion constants).
const (
	expectAny          int64 = -2
	expectNoStream     int64 = -1
	expectStreamExists int64 = -4
)

// basePosition is where the first event lands: a real database starts with
// system records (the epoch), so no event sits at position 0.
const basePosition = 256

// recordOverhead approximates the fixed size of a prepare log record, so
// positions look like byte offsets of a transaction file.
const recordOverhead = 100

// event is one stored event. Positions model byte offsets in the
// transaction log: pos is where the record starts (its commit and prepare
// position: every write is self-committed), end where it ends (the next
// record's position).
type event struct {
	id          uuid.UUID
	stream      string
	rev         uint64
	pos, end    uint64
	typ         string
	contentType string
	created     int64 // .NET ticks (100 ns) since the Unix epoch
	data, meta  []byte
}

type proposed struct {
	id          uuid.UUID
	typ         string
	contentType string
	data, meta  []byte
}

// decision is the outcome of the expected-version and idempotency check,
// after EventStoreDB's IndexWriter.CheckCommit.
type decision int

const (
	decisionOK decision = iota
	decisionWrongExpectedVersion
	decisionIdempotent
)

type commitResult struct {
	decision decision
	current  int64 // stream's last revision before the write, -1 for none
	// For decisionOK: the written events. For decisionIdempotent: the
	// already stored ones.
	events []*event
}

// store is the in-memory log: $all plus a per-stream index.
type store struct {
	mu      sync.Mutex
	log     []*event
	byPos   map[uint64]*event
	streams map[string][]*event
	ids     map[uuid.UUID]*event // every committed event id (EventStoreDB keeps a bounded cache)
	end     uint64               // writer checkpoint: where the next record goes
	changed chan struct{}        // closed and replaced after every write
}

func newStore() *store {
	return &store{
		byPos:   make(map[uint64]*event),
		streams: make(map[string][]*event),
		ids:     make(map[uuid.UUID]*event),
		end:     basePosition,
		changed: make(chan struct{}),
	}
}

// lastRevision is the stream's last revision, -1 when it does not exist.
// Call with mu held.
func (s *store) lastRevision(stream string) int64 {
	return int64(len(s.streams[stream])) - 1
}

// check decides an append the way EventStoreDB does (IndexWriter.CheckCommit):
//
//   - Any / StreamExists: if the first event id is already in the stream,
//     every id must be (idempotent retry: success, nothing written);
//     a partial match is "corrupted idempotency", answered as wrong expected
//     version. Otherwise the events are appended (StreamExists requiring
//     the stream to exist).
//   - NoStream / exact revision below the current one: the ids must match
//     the stored events right after the expected revision (idempotent
//     retry), else wrong expected version.
//   - Above the current revision: wrong expected version.
//   - Equal: append.
//
// Call with mu held.
func (s *store) check(stream string, expected int64, evs []proposed) commitResult {
	cur := s.lastRevision(stream)
	wev := commitResult{decision: decisionWrongExpectedVersion, current: cur}
	if expected == expectStreamExists && cur < 0 {
		return wev
	}
	if expected == expectAny || expected == expectStreamExists {
		var stored []*event
		for i, p := range evs {
			e, ok := s.ids[p.id]
			if !ok || e.stream != stream {
				if i == 0 {
					return commitResult{decision: decisionOK, current: cur}
				}
				return wev // corrupted idempotency
			}
			stored = append(stored, e)
		}
		if len(stored) == 0 {
			return commitResult{decision: decisionOK, current: cur}
		}
		return commitResult{decision: decisionIdempotent, current: cur, events: stored}
	}
	if expected < cur {
		existing := s.streams[stream]
		var stored []*event
		n := expected
		for _, p := range evs {
			n++
			if n <= cur && existing[n].id == p.id {
				stored = append(stored, existing[n])
				continue
			}
			return wev // first event differs, or corrupted idempotency
		}
		if len(stored) == 0 {
			return wev
		}
		return commitResult{decision: decisionIdempotent, current: cur, events: stored}
	}
	if expected > cur {
		return wev
	}
	return commitResult{decision: decisionOK, current: cur}
}

// append checks and, when accepted, writes evs to stream.
func (s *store) append(stream string, expected int64, evs []proposed, created int64) commitResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	res := s.check(stream, expected, evs)
	if res.decision != decisionOK || len(evs) == 0 {
		return res
	}
	rev := uint64(res.current + 1)
	for i, p := range evs {
		size := uint64(recordOverhead + len(stream) + len(p.typ) + len(p.data) + len(p.meta))
		e := &event{
			id:          p.id,
			stream:      stream,
			rev:         rev + uint64(i),
			pos:         s.end,
			end:         s.end + size,
			typ:         p.typ,
			contentType: p.contentType,
			created:     created,
			data:        p.data,
			meta:        p.meta,
		}
		s.end = e.end
		s.log = append(s.log, e)
		s.byPos[e.pos] = e
		s.streams[stream] = append(s.streams[stream], e)
		if _, dup := s.ids[p.id]; !dup {
			s.ids[p.id] = e
		}
		res.events = append(res.events, e)
	}
	close(s.changed)
	s.changed = make(chan struct{})
	return res
}

// validPosition tells whether a read of $all may start at pos: the start of
// the log, a record boundary, or at/after the end. Anything else points
// inside a record, which EventStoreDB rejects ("Trying to read from an
// invalid position"). Call with mu held.
func (s *store) validPosition(pos uint64) bool {
	if pos == 0 || pos >= s.end {
		return true
	}
	_, ok := s.byPos[pos]
	return ok
}

// firstAfter is the index in log of the first event whose position is
// above pos (or equal to it when inclusive). Call with mu held.
func (s *store) firstAfter(pos uint64, inclusive bool) int {
	return sort.Search(len(s.log), func(i int) bool {
		if inclusive {
			return s.log[i].pos >= pos
		}
		return s.log[i].pos > pos
	})
}

// snapshot returns up to max events of log from index i, the current end
// and the channel closed by the next write.
func (s *store) snapshot(i, max int) ([]*event, uint64, chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	j := min(len(s.log), i+max)
	var out []*event
	if i < j {
		out = append(out, s.log[i:j]...)
	}
	return out, s.end, s.changed
}
