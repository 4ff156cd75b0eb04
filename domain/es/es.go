// Package es is the event store port: the types and the interface every
// event store adapter (embedded bbolt, EventStoreDB) implements.
//
// Revisions are per stream and start at 0, like EventStoreDB. Positions are
// global, strictly increasing, and start above 0: position 0 means "before
// the first event".
package es

import (
	"context"
	"errors"
	"time"
)

// ExpectedVersion is the optimistic concurrency check of an append.
// A value >= 0 is the exact revision of the stream's last event.
type ExpectedVersion int64

const (
	// Any skips the check.
	Any ExpectedVersion = -2
	// NoStream requires the stream not to exist yet.
	NoStream ExpectedVersion = -1
	// StreamExists requires the stream to have at least one event.
	StreamExists ExpectedVersion = -4
)

// Exact expects the stream's last revision to be rev.
func Exact(rev uint64) ExpectedVersion { return ExpectedVersion(rev) }

// EventData is an event about to be appended.
type EventData struct {
	ID       string // unique event id (UUID); a retried append reuses it
	Type     string // registered, versioned name, e.g. coupon.claimed.v1
	Data     []byte // JSON
	Metadata []byte // JSON, optional
}

// RecordedEvent is an event as stored.
type RecordedEvent struct {
	StreamID   string
	Revision   uint64 // 0-based, per stream
	Position   uint64 // global, > 0
	ID         string
	Type       string
	Data       []byte
	Metadata   []byte
	RecordedAt time.Time
}

// AppendResult tells where an append landed.
type AppendResult struct {
	NextExpected uint64 // revision of the last appended event
	Position     uint64 // global position of the last appended event
}

// Handler receives subscribed events in position order. Returning an error
// stops the subscription with that error.
type Handler func(ctx context.Context, ev RecordedEvent) error

// Store is the event store port.
type Store interface {
	// Append writes events atomically to stream if its current version matches
	// expected; otherwise it returns an error matching domain.ErrConcurrency.
	Append(ctx context.Context, stream string, expected ExpectedVersion, events ...EventData) (AppendResult, error)
	// ReadStream returns the stream's events from revision from on; a missing
	// stream is empty, not an error.
	ReadStream(ctx context.Context, stream string, from uint64) ([]RecordedEvent, error)
	// ReadAll returns up to limit events with Position > after, in order.
	ReadAll(ctx context.Context, after uint64, limit int) ([]RecordedEvent, error)
	// Subscribe calls h for every event with Position > after, first the
	// stored ones, then new ones as they are appended, until ctx is done
	// (returns ctx.Err()) or h fails (returns its error).
	Subscribe(ctx context.Context, after uint64, h Handler) error
	// LastPosition is the position of the newest event (0 when empty).
	LastPosition(ctx context.Context) (uint64, error)
	// Close releases resources.
	Close() error
}

// ErrStopScan, returned by a Scan callback, ends the scan without error.
var ErrStopScan = errors.New("es: stop scan")

// Scan calls fn for every event with Position > after, in order, reading
// pages of pageSize, until the store is exhausted or fn returns an error
// (ErrStopScan ends the scan cleanly).
func Scan(ctx context.Context, s Store, after uint64, pageSize int, fn func(RecordedEvent) error) error {
	for {
		recs, err := s.ReadAll(ctx, after, pageSize)
		if err != nil {
			return err
		}
		for _, rec := range recs {
			if err := fn(rec); err != nil {
				if errors.Is(err, ErrStopScan) {
					return nil
				}
				return err
			}
			after = rec.Position
		}
		if len(recs) < pageSize {
			return nil
		}
	}
}
