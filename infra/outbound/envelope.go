// Package outbound publishes every stored domain event, and every
// notification, for other systems (orders, SMS/push, analytics): on Kafka
// topics (KafkaSink) or, in embedded mode, as signed webhooks (WebhookSink).
//
// Each event becomes an Envelope with a stable, versioned JSON schema (see
// docs/schemas, generated from the Go types by SchemaFiles). A Mapper routes
// an event to its topic and key; the Projector follows the event store,
// hands the mapped messages to a Sink and saves its checkpoint only once the
// sink accepted them, so delivery is at least once, in order per key, and
// consumers deduplicate by the envelope id.
package outbound

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// Source is the Envelope.Source of every message published by couponsd.
const Source = "couponsd"

// Default topic names. The .v1 suffix is the envelope's major version: it
// changes only with an incompatible envelope.
const (
	// DefaultCouponTopic carries coupon.* events, keyed by coupon id.
	DefaultCouponTopic = "couponsd.coupon-events.v1"
	// DefaultBatchTopic carries batch.* events, keyed by batch id.
	DefaultBatchTopic = "couponsd.batch-events.v1"
	// DefaultOtherTopic carries every other event, keyed by stream id.
	DefaultOtherTopic = "couponsd.other-events.v1"
	// DefaultNotificationsTopic carries notifications, keyed by recipient.
	DefaultNotificationsTopic = "couponsd.notifications.v1"
)

// Topics names the outbound topics. Zero fields take the defaults.
type Topics struct {
	// Coupon carries coupon.* events, keyed by coupon id.
	Coupon string
	// Batch carries batch.* events, keyed by batch id.
	Batch string
	// Other carries every other registered event, keyed by its stream's id.
	Other string
	// Notifications carries notifications (events implementing
	// domain.Notification), keyed by recipient user id.
	Notifications string
}

// WithDefaults returns t with every empty topic set to its default.
func (t Topics) WithDefaults() Topics {
	def := func(v *string, d string) {
		if *v == "" {
			*v = d
		}
	}
	def(&t.Coupon, DefaultCouponTopic)
	def(&t.Batch, DefaultBatchTopic)
	def(&t.Other, DefaultOtherTopic)
	def(&t.Notifications, DefaultNotificationsTopic)
	return t
}

// Validate reports topic names Kafka would refuse (empty names mean the
// defaults). The four topics must differ.
func (t Topics) Validate() error {
	var errs []error
	for field, name := range map[string]string{"Coupon": t.Coupon, "Batch": t.Batch, "Other": t.Other, "Notifications": t.Notifications} {
		if name == "" {
			continue
		}
		if len(name) > 249 || name == "." || name == ".." || strings.IndexFunc(name, func(r rune) bool {
			return (r < 'a' || r > 'z') && (r < 'A' || r > 'Z') && (r < '0' || r > '9') && r != '.' && r != '_' && r != '-'
		}) >= 0 {
			errs = append(errs, domain.Invalid(field, "%q is not a valid Kafka topic name", name))
		}
	}
	d := t.WithDefaults()
	seen := map[string]bool{}
	for _, name := range []string{d.Coupon, d.Batch, d.Other, d.Notifications} {
		if seen[name] {
			errs = append(errs, domain.Invalid("Topics", "topic %q is used twice", name))
		}
		seen[name] = true
	}
	return errors.Join(errs...)
}

// Envelope is the versioned JSON form of one published event or
// notification (docs/schemas/envelope.v1.json). Fields may be added, never
// removed or renamed.
type Envelope struct {
	// ID is the stored event's id; for a notification, a UUID v5 derived
	// from the event id (NotificationID). Consumers deduplicate by it.
	ID string `json:"id"`
	// Type is the registered, versioned event name (coupon.claimed.v1), or
	// the notification name for a notification.
	Type string `json:"type"`
	// Source is always "couponsd".
	Source string `json:"source"`
	// Key is the message key: coupon, batch, aggregate or recipient id.
	Key string `json:"key"`
	// Stream is the event store stream of the event (coupon-<id>, ...).
	Stream string `json:"stream"`
	// Revision is the event's 0-based revision within Stream.
	Revision uint64 `json:"revision"`
	// Position is the event's global position in the event store (> 0).
	Position uint64 `json:"position"`
	// OccurredAt is when the event was stored (UTC).
	OccurredAt time.Time `json:"occurred_at"`
	// Data is the event's stored JSON, unchanged; its schema is
	// docs/schemas/events/<type>.json (notifications/<type>.json).
	Data json.RawMessage `json:"data"`
}

// Encode returns the envelope's JSON (no HTML escaping, so Data keeps its
// stored bytes; no trailing newline).
func (e Envelope) Encode() ([]byte, error) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(e); err != nil {
		return nil, fmt.Errorf("outbound: encode envelope %s: %w", e.ID, err)
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// Message is one envelope bound for one topic under one key.
type Message struct {
	// Topic is the Kafka topic (see Topics).
	Topic string
	// Key is the Kafka record key: one key stays in one partition, in order.
	Key string
	// Envelope is the payload.
	Envelope Envelope
}

// notificationNamespace is the UUID v5 namespace of notification ids.
func notificationNamespace() uuid.UUID {
	return uuid.NewSHA1(uuid.NameSpaceURL, []byte("https://github.com/couponsd/couponsd/outbound/notification"))
}

// NotificationID is the id of the notification derived from the event with
// id eventID: UUID v5 (namespace: v5 of the URL namespace and
// "https://github.com/couponsd/couponsd/outbound/notification") of
// eventID + "/notification". It is the same on every redelivery.
func NotificationID(eventID string) string {
	return uuid.NewSHA1(notificationNamespace(), []byte(eventID+"/notification")).String()
}

// Mapper turns stored events into outbound messages.
type Mapper struct {
	reg    *domain.Registry
	topics Topics
}

// NewMapper routes events decoded with reg to the topics of cfg (zero
// fields take the defaults). It fails on a nil registry or invalid topics.
func NewMapper(reg *domain.Registry, cfg Topics) (*Mapper, error) {
	if reg == nil {
		return nil, errors.New("outbound: NewMapper needs a registry")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("outbound: topics: %w", err)
	}
	return &Mapper{reg: reg, topics: cfg.WithDefaults()}, nil
}

// Topics returns the mapper's topics (defaults applied).
func (m *Mapper) Topics() Topics { return m.topics }

// Map returns the messages of one stored event, in order:
//
//   - coupon.* events on Topics.Coupon keyed by coupon id (from the stream
//     coupon-<id>, else the data's coupon_id);
//   - batch.* events on Topics.Batch keyed by batch id (stream batch-<id>,
//     else the data's batch_id);
//   - any other registered event on Topics.Other keyed by its stream's id
//     part (grantjob-<id> → <id>);
//   - and, when the event implements domain.Notification, a second message
//     on Topics.Notifications keyed by Recipient(), with type
//     NotificationName() and id NotificationID(event id).
//
// Events whose type is not in the registry are skipped: Map returns nil and
// no error (they are not part of the published contract). Data is published
// unchanged. A registered event whose data cannot be decoded is an error.
func (m *Mapper) Map(rec es.RecordedEvent) ([]Message, error) {
	if !m.reg.Known(rec.Type) {
		return nil, nil
	}
	ev, err := m.reg.Unmarshal(rec.Type, rec.Data)
	if err != nil {
		return nil, fmt.Errorf("outbound: map event %s at position %d: %w", rec.ID, rec.Position, err)
	}
	if rec.ID == "" {
		return nil, fmt.Errorf("outbound: event at position %d (%s) has no id", rec.Position, rec.Type)
	}
	category, _, _ := strings.Cut(rec.Type, ".")
	var topic, key string
	switch category {
	case "coupon":
		topic, key = m.topics.Coupon, aggregateKey(rec, "coupon")
	case "batch":
		topic, key = m.topics.Batch, aggregateKey(rec, "batch")
	default:
		topic, key = m.topics.Other, streamID(rec.StreamID)
	}
	env := Envelope{
		ID: rec.ID, Type: rec.Type, Source: Source, Key: key, Stream: rec.StreamID,
		Revision: rec.Revision, Position: rec.Position, OccurredAt: rec.RecordedAt.UTC(), Data: json.RawMessage(rec.Data),
	}
	out := []Message{{Topic: topic, Key: key, Envelope: env}}
	if n, ok := ev.(domain.Notification); ok {
		ne := env
		ne.ID = NotificationID(rec.ID)
		ne.Type = n.NotificationName()
		ne.Key = n.Recipient()
		out = append(out, Message{Topic: m.topics.Notifications, Key: ne.Key, Envelope: ne})
	}
	return out, nil
}

// aggregateKey is the id of stream <category>-<id>, else the data's
// <category>_id field, else the stream's id part.
func aggregateKey(rec es.RecordedEvent, category string) string {
	if id, ok := strings.CutPrefix(rec.StreamID, category+"-"); ok && id != "" {
		return id
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(rec.Data, &fields) == nil {
		var id string
		if json.Unmarshal(fields[category+"_id"], &id) == nil && id != "" {
			return id
		}
	}
	return streamID(rec.StreamID)
}

// streamID is the id part of a stream name: "grantjob-<id>" → "<id>"; a
// stream without a category is its own id.
func streamID(stream string) string {
	if _, id, ok := strings.Cut(stream, "-"); ok && id != "" {
		return id
	}
	return stream
}
