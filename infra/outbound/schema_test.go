package outbound

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/couponsd/couponsd/domain"
)

var update = flag.Bool("update", false, "rewrite docs/schemas from the Go types")

// schemaDir is docs/schemas of the module.
const schemaDir = "../../docs/schemas"

// checkedIn reads every generated-kind .json file under schemaDir.
func checkedIn(t *testing.T) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, dir := range []string{"", "events", "notifications"} { // every .json file there is generated
		entries, err := os.ReadDir(filepath.Join(schemaDir, dir))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".json") {
				continue
			}
			rel := filepath.ToSlash(filepath.Join(dir, e.Name()))
			b, err := os.ReadFile(filepath.Join(schemaDir, rel))
			if err != nil {
				t.Fatal(err)
			}
			out[rel] = b
		}
	}
	return out
}

// TestSchemasUpToDate fails when docs/schemas differs from what the Go
// types generate; run with -update to rewrite the files.
func TestSchemasUpToDate(t *testing.T) {
	want, err := SchemaFiles(domain.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	have := checkedIn(t)
	var diff []string
	for path, b := range want {
		if old, ok := have[path]; !ok {
			diff = append(diff, path+" (missing)")
		} else if !bytes.Equal(old, b) {
			diff = append(diff, path+" (differs)")
		}
	}
	for path := range have {
		if _, ok := want[path]; !ok {
			diff = append(diff, path+" (not generated: stale)")
		}
	}
	sort.Strings(diff)
	if len(diff) == 0 {
		return
	}
	if !*update {
		t.Fatalf("docs/schemas is out of date; run `go test ./infra/outbound -run TestSchemasUpToDate -update`:\n  %s",
			strings.Join(diff, "\n  "))
	}
	for path := range have {
		if _, ok := want[path]; !ok {
			if err := os.Remove(filepath.Join(schemaDir, path)); err != nil {
				t.Fatal(err)
			}
		}
	}
	for path, b := range want {
		full := filepath.Join(schemaDir, path)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	t.Logf("rewrote docs/schemas:\n  %s", strings.Join(diff, "\n  "))
}

func TestSchemaFilesCoverTheRegistry(t *testing.T) {
	reg := testRegistry()
	files, err := SchemaFiles(reg)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range reg.Names() {
		if _, ok := files[EventSchemaFile(name)]; !ok {
			t.Errorf("no schema for event %s", name)
		}
	}
	if _, ok := files[NotificationSchemaFile("test.coupon_expiring.v1")]; !ok {
		t.Errorf("no schema for the test notification; files: %v", keys(files))
	}
	if _, ok := files[EnvelopeSchemaFile]; !ok {
		t.Error("no envelope schema")
	}
	again, err := SchemaFiles(reg)
	if err != nil {
		t.Fatal(err)
	}
	for path, b := range files {
		if !bytes.Equal(b, again[path]) {
			t.Errorf("%s is not generated deterministically", path)
		}
	}
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// strict closes every object schema that lists properties and leaves
// additionalProperties open, so a JSON field the schema does not name (a
// renamed Go field) fails validation.
func strict(v any) {
	switch v := v.(type) {
	case map[string]any:
		if _, ok := v["properties"]; ok {
			if _, set := v["additionalProperties"]; !set {
				v["additionalProperties"] = false
			}
		}
		for _, c := range v {
			strict(c)
		}
	case []any:
		for _, c := range v {
			strict(c)
		}
	}
}

// schemaSet compiles schema files (relative path → JSON), strictly.
type schemaSet struct {
	t     testing.TB
	c     *jsonschema.Compiler
	cache map[string]*jsonschema.Schema
}

func newSchemaSet(t testing.TB, files map[string][]byte) *schemaSet {
	t.Helper()
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	for path, b := range files {
		doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(b))
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		strict(doc)
		if err := c.AddResource(SchemaBaseURL+path, doc); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
	}
	return &schemaSet{t: t, c: c, cache: map[string]*jsonschema.Schema{}}
}

// validate checks doc (JSON) against the schema file path.
func (s *schemaSet) validate(path string, doc []byte) error {
	s.t.Helper()
	sch, ok := s.cache[path]
	if !ok {
		var err error
		if sch, err = s.c.Compile(SchemaBaseURL + path); err != nil {
			s.t.Fatalf("compile %s: %v", path, err)
		}
		s.cache[path] = sch
	}
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		s.t.Fatalf("decode %s: %v", doc, err)
	}
	return sch.Validate(v)
}

// sampleMessages maps one non-zero sample of every registered event.
func sampleMessages(t *testing.T, reg *domain.Registry) []Message {
	t.Helper()
	m := mustMapper(t, reg)
	names := reg.Names()
	slices.Sort(names)
	var out []Message
	for i, name := range names {
		category, _, _ := strings.Cut(name, ".")
		rec := recorded(t, reg, category+"-id"+name, uint64(i), uint64(i+1), sampleEvent(t, reg, name))
		msgs, err := m.Map(rec)
		if err != nil {
			t.Fatal(err)
		}
		if len(msgs) == 0 {
			t.Fatalf("registered event %s mapped to nothing", name)
		}
		out = append(out, msgs...)
	}
	return out
}

// TestEnvelopesMatchCheckedInSchemas validates marshalled envelopes of every
// registered event (and notification) against the files in docs/schemas.
func TestEnvelopesMatchCheckedInSchemas(t *testing.T) {
	reg := domain.NewRegistry()
	files := checkedIn(t)
	if _, ok := files[EnvelopeSchemaFile]; !ok {
		t.Fatalf("no checked-in %s (run the -update)", EnvelopeSchemaFile)
	}
	set := newSchemaSet(t, files)
	notifs, err := Notifications(reg)
	if err != nil {
		t.Fatal(err)
	}
	msgs := sampleMessages(t, reg)
	for _, m := range msgs {
		b, err := m.Envelope.Encode()
		if err != nil {
			t.Fatal(err)
		}
		if err := set.validate(EnvelopeSchemaFile, b); err != nil {
			t.Errorf("%s envelope: %v", m.Envelope.Type, err)
		}
		file := EventSchemaFile(m.Envelope.Type)
		if m.Topic == DefaultNotificationsTopic {
			file = NotificationSchemaFile(m.Envelope.Type)
		}
		if _, ok := files[file]; !ok {
			t.Errorf("%s: no checked-in schema %s (run the -update)", m.Envelope.Type, file)
			continue
		}
		if err := set.validate(file, m.Envelope.Data); err != nil {
			t.Errorf("%s data does not match %s: %v", m.Envelope.Type, file, err)
		}
	}
	if want := len(reg.Names()) + len(notifs); len(msgs) != want {
		t.Errorf("%d messages, want %d (events + notifications)", len(msgs), want)
	}
}

// TestSchemaValidationCatchesRenames shows the schema check above fails
// when a Go field's JSON name changes without the schema: a renamed
// required field, or a renamed optional one, or a changed type.
func TestSchemaValidationCatchesRenames(t *testing.T) {
	reg := domain.NewRegistry()
	files, err := SchemaFiles(reg)
	if err != nil {
		t.Fatal(err)
	}
	set := newSchemaSet(t, files)
	ev := sampleEvent(t, reg, domain.EvCouponClaimed)
	_, data, err := reg.Marshal(ev)
	if err != nil {
		t.Fatal(err)
	}
	file := EventSchemaFile(domain.EvCouponClaimed)
	if err := set.validate(file, data); err != nil {
		t.Fatalf("the sample itself fails: %v", err)
	}
	for name, mutate := range map[string]func(map[string]any){
		"required field renamed": func(m map[string]any) { m["couponId"] = m["coupon_id"]; delete(m, "coupon_id") },
		"optional field renamed": func(m map[string]any) { m["idem_key"] = m["idempotency_key"]; delete(m, "idempotency_key") },
		"nested field renamed": func(m map[string]any) {
			terms := m["terms"].(map[string]any)
			terms["batch"] = terms["batch_id"]
			delete(terms, "batch_id")
		},
		"type changed":     func(m map[string]any) { m["user_id"] = 42 },
		"time not RFC3339": func(m map[string]any) { m["at"] = "yesterday" },
	} {
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		mutate(doc)
		b, _ := json.Marshal(doc)
		if err := set.validate(file, b); err == nil {
			t.Errorf("%s: validation passed: %s", name, b)
		}
	}
	env := Envelope{ID: "e", Type: domain.EvCouponClaimed, Source: Source, Key: "k", Stream: "coupon-k", Position: 1, Data: data}
	b, _ := env.Encode()
	b = bytes.Replace(b, []byte(`"occurred_at"`), []byte(`"occurredAt"`), 1)
	if err := set.validate(EnvelopeSchemaFile, b); err == nil {
		t.Errorf("renamed envelope field passed: %s", b)
	}
}
