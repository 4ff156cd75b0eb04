package boltstore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/couponsd/couponsd/domain/es"
)

// Record layout (value of the events bucket, keyed by big-endian position):
//
//	[0]      format (recordFormat)
//	[1:9]    revision, big-endian uint64
//	[9:17]   recorded at, unix nanoseconds, big-endian
//	uvarint  len(stream), len(id), len(type), len(data), len(metadata)
//	bytes    stream id type data metadata
//
// Revision and time sit at fixed offsets so the caller can encode the record
// before it is queued and the committer only patches them in place.
const (
	recordFormat   = 1
	offRevision    = 1
	offRecordedAt  = 9
	fixedHeaderLen = 17
)

var errCorrupt = errors.New("boltstore: corrupt record")

// appendRecord encodes ev of stream onto dst with a zero revision and time.
func appendRecord(dst []byte, stream string, ev *es.EventData) []byte {
	dst = append(dst, recordFormat)
	dst = append(dst, make([]byte, fixedHeaderLen-1)...)
	dst = binary.AppendUvarint(dst, uint64(len(stream)))
	dst = binary.AppendUvarint(dst, uint64(len(ev.ID)))
	dst = binary.AppendUvarint(dst, uint64(len(ev.Type)))
	dst = binary.AppendUvarint(dst, uint64(len(ev.Data)))
	dst = binary.AppendUvarint(dst, uint64(len(ev.Metadata)))
	dst = append(dst, stream...)
	dst = append(dst, ev.ID...)
	dst = append(dst, ev.Type...)
	dst = append(dst, ev.Data...)
	dst = append(dst, ev.Metadata...)
	return dst
}

// recordSize is the encoded size of ev, to size buffers.
func recordSize(stream string, ev *es.EventData) int {
	return fixedHeaderLen + 5*binary.MaxVarintLen32 + len(stream) + len(ev.ID) + len(ev.Type) + len(ev.Data) + len(ev.Metadata)
}

// patchRecord sets the revision and time of an encoded record.
func patchRecord(rec []byte, rev uint64, nanos int64) {
	binary.BigEndian.PutUint64(rec[offRevision:], rev)
	binary.BigEndian.PutUint64(rec[offRecordedAt:], uint64(nanos))
}

// decodeRecord decodes v, which may be memory owned by bolt: the result
// shares nothing with it.
func decodeRecord(pos uint64, v []byte) (es.RecordedEvent, error) {
	if len(v) < fixedHeaderLen || v[0] != recordFormat {
		return es.RecordedEvent{}, fmt.Errorf("%w at position %d", errCorrupt, pos)
	}
	var lens [5]uint64
	off := fixedHeaderLen
	for i := range lens {
		n, k := binary.Uvarint(v[off:])
		if k <= 0 || n > uint64(len(v)) {
			return es.RecordedEvent{}, fmt.Errorf("%w at position %d", errCorrupt, pos)
		}
		lens[i] = n
		off += k
	}
	strLen := lens[0] + lens[1] + lens[2]
	if uint64(len(v)-off) != strLen+lens[3]+lens[4] {
		return es.RecordedEvent{}, fmt.Errorf("%w at position %d", errCorrupt, pos)
	}
	// One allocation for the three strings, one for both payloads.
	strs := string(v[off : off+int(strLen)])
	off += int(strLen)
	a, b := int(lens[0]), int(lens[0]+lens[1])
	ev := es.RecordedEvent{
		StreamID:   strs[:a],
		Revision:   binary.BigEndian.Uint64(v[offRevision:]),
		Position:   pos,
		ID:         strs[a:b],
		Type:       strs[b:],
		RecordedAt: time.Unix(0, int64(binary.BigEndian.Uint64(v[offRecordedAt:]))).UTC(),
	}
	if payload := lens[3] + lens[4]; payload > 0 {
		buf := make([]byte, payload)
		copy(buf, v[off:])
		d := int(lens[3])
		if d > 0 {
			ev.Data = buf[:d:d]
		}
		if len(buf) > d {
			ev.Metadata = buf[d:]
		}
	}
	return ev, nil
}

// streamPrefix is the key prefix of stream's entries in the streams bucket:
// uvarint length then the id, so that no stream's prefix is a prefix of
// another's.
func appendStreamPrefix(dst []byte, stream string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(stream)))
	return append(dst, stream...)
}
