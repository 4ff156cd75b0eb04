// Package pipeline carries stored events to the projectors through
// Watermill: in process (GoChannel) when embedded, over Kafka in production.
package pipeline

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/couponsd/couponsd/domain/es"
)

// Topic is the Watermill/Kafka topic carrying every domain event.
const Topic = "couponsd.events.v1"

// Metadata keys of an event message.
const (
	MetaStream     = "stream"
	MetaType       = "type"
	MetaRevision   = "revision"
	MetaPosition   = "position"
	MetaRecordedAt = "recorded_at"
	MetaKey        = "partition_key"
)

// AggregateID is the partition key of a stream: the id after the category
// ("coupon-<id>" → "<id>"), so one coupon's events stay in one partition.
func AggregateID(stream string) string {
	if _, id, ok := strings.Cut(stream, "-"); ok {
		return id
	}
	return stream
}

// ToMessage encodes a stored event; the message UUID is the event id, so
// consumers can deduplicate by it.
func ToMessage(rec es.RecordedEvent) *message.Message {
	m := message.NewMessage(rec.ID, rec.Data)
	m.Metadata.Set(MetaStream, rec.StreamID)
	m.Metadata.Set(MetaType, rec.Type)
	m.Metadata.Set(MetaRevision, strconv.FormatUint(rec.Revision, 10))
	m.Metadata.Set(MetaPosition, strconv.FormatUint(rec.Position, 10))
	m.Metadata.Set(MetaRecordedAt, rec.RecordedAt.UTC().Format(time.RFC3339Nano))
	m.Metadata.Set(MetaKey, AggregateID(rec.StreamID))
	return m
}

// FromMessage decodes an event message.
func FromMessage(m *message.Message) (es.RecordedEvent, error) {
	rev, err1 := strconv.ParseUint(m.Metadata.Get(MetaRevision), 10, 64)
	pos, err2 := strconv.ParseUint(m.Metadata.Get(MetaPosition), 10, 64)
	at, err3 := time.Parse(time.RFC3339Nano, m.Metadata.Get(MetaRecordedAt))
	if err1 != nil || err2 != nil || err3 != nil || m.Metadata.Get(MetaStream) == "" || m.Metadata.Get(MetaType) == "" {
		return es.RecordedEvent{}, fmt.Errorf("pipeline: malformed event message %s", m.UUID)
	}
	return es.RecordedEvent{StreamID: m.Metadata.Get(MetaStream), Type: m.Metadata.Get(MetaType), Revision: rev,
		Position: pos, ID: m.UUID, Data: m.Payload, RecordedAt: at}, nil
}
