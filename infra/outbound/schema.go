package outbound

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"sort"

	"github.com/invopop/jsonschema"

	"github.com/couponsd/couponsd/domain"
)

// SchemaBaseURL is the base of the $id of every generated schema; the rest
// is the file's path under docs/schemas.
const SchemaBaseURL = "https://github.com/couponsd/couponsd/docs/schemas/"

// Schema file paths, relative to docs/schemas.
const (
	EnvelopeSchemaFile = "envelope.v1.json"
	eventSchemaDir     = "events/"
	notifSchemaDir     = "notifications/"
)

// EventSchemaFile is the schema file (relative to docs/schemas) of the data
// of the event named name.
func EventSchemaFile(name string) string { return eventSchemaDir + name + ".json" }

// NotificationSchemaFile is the schema file (relative to docs/schemas) of
// the data of the notification named name.
func NotificationSchemaFile(name string) string { return notifSchemaDir + name + ".json" }

// Notifications maps every notification name of reg to the event name that
// carries it. It finds them by decoding "{}" as each registered event and
// checking for domain.Notification.
func Notifications(reg *domain.Registry) (map[string]string, error) {
	if reg == nil {
		return nil, errors.New("outbound: Notifications needs a registry")
	}
	out := map[string]string{}
	for _, name := range reg.Names() {
		ev, err := reg.Unmarshal(name, []byte("{}"))
		if err != nil {
			return nil, fmt.Errorf("outbound: probe event %s: %w", name, err)
		}
		n, ok := ev.(domain.Notification)
		if !ok {
			continue
		}
		if prev, dup := out[n.NotificationName()]; dup && prev != name {
			return nil, fmt.Errorf("outbound: notification %s is carried by both %s and %s", n.NotificationName(), prev, name)
		}
		out[n.NotificationName()] = name
	}
	return out, nil
}

// SchemaFiles generates the JSON Schemas (draft 2020-12) of the outbound
// contract from the Go types, keyed by path relative to docs/schemas:
// EnvelopeSchemaFile, EventSchemaFile(name) for every registered event and
// NotificationSchemaFile(name) for every notification. Objects accept
// additional properties (fields may be added to a version); fields without
// omitempty/omitzero are required. The output is deterministic.
func SchemaFiles(reg *domain.Registry) (map[string][]byte, error) {
	if reg == nil {
		return nil, errors.New("outbound: SchemaFiles needs a registry")
	}
	files := map[string][]byte{}

	env := reflector().Reflect(&Envelope{})
	env.ID = jsonschema.ID(SchemaBaseURL + EnvelopeSchemaFile)
	env.Title = "couponsd outbound envelope v1"
	env.Description = "One event or notification published by couponsd on Kafka or as a webhook. " +
		"data is the event's JSON, described by events/TYPE.json (notifications/TYPE.json on the notifications topic)."
	if err := describeEnvelope(env); err != nil {
		return nil, err
	}
	b, err := encodeSchema(env)
	if err != nil {
		return nil, err
	}
	files[EnvelopeSchemaFile] = b

	names := reg.Names()
	sort.Strings(names)
	for _, name := range names {
		t, err := eventType(reg, name)
		if err != nil {
			return nil, err
		}
		s := reflector().ReflectFromType(t)
		s.ID = jsonschema.ID(SchemaBaseURL + EventSchemaFile(name))
		s.Title = name
		s.Description = fmt.Sprintf("data of the %s event (Go type domain.%s), published unchanged as stored.", name, t.Name())
		if b, err = encodeSchema(s); err != nil {
			return nil, err
		}
		files[EventSchemaFile(name)] = b
	}

	notifs, err := Notifications(reg)
	if err != nil {
		return nil, err
	}
	for notif, event := range notifs {
		t, err := eventType(reg, event)
		if err != nil {
			return nil, err
		}
		s := reflector().ReflectFromType(t)
		s.ID = jsonschema.ID(SchemaBaseURL + NotificationSchemaFile(notif))
		s.Title = notif
		s.Description = fmt.Sprintf("data of the %s notification: the JSON of the %s event that carries it (Go type domain.%s).", notif, event, t.Name())
		if b, err = encodeSchema(s); err != nil {
			return nil, err
		}
		files[NotificationSchemaFile(notif)] = b
	}
	return files, nil
}

// reflector is the schema generator: open objects, inlined root, fixed ids.
func reflector() *jsonschema.Reflector {
	return &jsonschema.Reflector{
		AllowAdditionalProperties: true,
		ExpandedStruct:            true,
		Mapper: func(t reflect.Type) *jsonschema.Schema {
			if t == reflect.TypeFor[json.RawMessage]() {
				return &jsonschema.Schema{Type: "object"}
			}
			return nil
		},
	}
}

// describeEnvelope adds the field descriptions of the envelope schema.
func describeEnvelope(s *jsonschema.Schema) error {
	desc := map[string]string{
		"id":          "Unique id: the stored event's id (a notification's is a UUID v5 of it). Deduplicate by it.",
		"type":        "Registered, versioned event name (coupon.claimed.v1) or notification name.",
		"source":      "Always couponsd.",
		"key":         "Message key: coupon id, batch id, the stream's id, or the recipient user id for a notification.",
		"stream":      "Event store stream of the event (coupon-ID, batch-ID, ...).",
		"revision":    "0-based revision of the event within its stream.",
		"position":    "Global position of the event in the event store.",
		"occurred_at": "When the event was stored (RFC 3339, UTC).",
		"data":        "The event's JSON, unchanged; see events/TYPE.json.",
	}
	for name, d := range desc {
		p, ok := s.Properties.Get(name)
		if !ok {
			return fmt.Errorf("outbound: envelope schema has no property %q", name)
		}
		p.Description = d
	}
	src, _ := s.Properties.Get("source")
	src.Const = Source
	for name, min := range map[string]string{"revision": "0", "position": "1"} {
		p, _ := s.Properties.Get(name)
		p.Minimum = json.Number(min)
	}
	for _, name := range []string{"id", "type", "stream"} {
		p, _ := s.Properties.Get(name)
		p.MinLength = ptr(uint64(1))
	}
	return nil
}

func ptr[T any](v T) *T { return &v }

// eventType is the Go struct type registered under name.
func eventType(reg *domain.Registry, name string) (reflect.Type, error) {
	ev, err := reg.Unmarshal(name, []byte("{}"))
	if err != nil {
		return nil, fmt.Errorf("outbound: event type of %s: %w", name, err)
	}
	t := reflect.TypeOf(ev)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t, nil
}

// encodeSchema is the indented JSON of s with a trailing newline.
func encodeSchema(s *jsonschema.Schema) ([]byte, error) {
	b, err := json.Marshal(s)
	if err != nil {
		return nil, fmt.Errorf("outbound: encode schema %s: %w", s.ID, err)
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return nil, fmt.Errorf("outbound: indent schema %s: %w", s.ID, err)
	}
	out.WriteByte('\n')
	return out.Bytes(), nil
}
