package domain

import (
	"encoding/json"
	"fmt"
	"reflect"
)

// Event is a domain event. Its name is explicit and versioned
// (coupon.claimed.v1) and never derived from the Go type name.
type Event interface {
	EventName() string
}

// Registry maps stored event names to Go types and back. It is built by
// NewRegistry and passed through constructors; there is no global registry.
type Registry struct {
	byName map[string]reflect.Type
}

// NewRegistry returns a registry holding every event of this service.
func NewRegistry() *Registry {
	r := &Registry{byName: map[string]reflect.Type{}}
	for _, e := range allEvents() {
		r.Register(e)
	}
	return r
}

// Register adds one event type under its EventName. It panics on a duplicate
// name: that is a programming error caught at start-up.
func (r *Registry) Register(proto Event) {
	t := reflect.TypeOf(proto)
	if t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	name := proto.EventName()
	if _, dup := r.byName[name]; dup {
		panic("domain: duplicate event name " + name)
	}
	r.byName[name] = t
}

// Names lists the registered event names.
func (r *Registry) Names() []string {
	out := make([]string, 0, len(r.byName))
	for n := range r.byName {
		out = append(out, n)
	}
	return out
}

// Known tells whether name is a registered event name.
func (r *Registry) Known(name string) bool {
	_, ok := r.byName[name]
	return ok
}

// Marshal encodes e as (name, JSON). Unregistered events are refused.
func (r *Registry) Marshal(e Event) (string, []byte, error) {
	name := e.EventName()
	if _, ok := r.byName[name]; !ok {
		return "", nil, fmt.Errorf("domain: event %q not registered", name)
	}
	b, err := json.Marshal(e)
	return name, b, err
}

// Unmarshal decodes a stored event by its name.
func (r *Registry) Unmarshal(name string, data []byte) (Event, error) {
	t, ok := r.byName[name]
	if !ok {
		return nil, fmt.Errorf("domain: unknown event %q", name)
	}
	v := reflect.New(t)
	if err := json.Unmarshal(data, v.Interface()); err != nil {
		return nil, fmt.Errorf("domain: decode %s: %w", name, err)
	}
	return v.Interface().(Event), nil
}
