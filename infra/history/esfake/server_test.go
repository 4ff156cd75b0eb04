package esfake

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/elastic/go-elasticsearch/v8"
)

type fixture struct {
	t   *testing.T
	srv *Server
}

func newFixture(t *testing.T) *fixture {
	srv := NewServer()
	t.Cleanup(srv.Close)
	return &fixture{t: t, srv: srv}
}

// do sends a request and decodes the JSON answer (nil for an empty body).
func (f *fixture) do(method, path, body string) (int, map[string]any) {
	f.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, _ := http.NewRequest(method, f.srv.URL+path, rd)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer res.Body.Close()
	if res.Header.Get("X-Elastic-Product") != "Elasticsearch" {
		f.t.Fatalf("%s %s: no X-Elastic-Product header", method, path)
	}
	b, _ := io.ReadAll(res.Body)
	if len(bytes.TrimSpace(b)) == 0 {
		return res.StatusCode, nil
	}
	var m map[string]any
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	if err := dec.Decode(&m); err != nil {
		f.t.Fatalf("%s %s: body %q: %v", method, path, b, err)
	}
	return res.StatusCode, m
}

func (f *fixture) must(status int, method, path, body string) map[string]any {
	f.t.Helper()
	got, m := f.do(method, path, body)
	if got != status {
		f.t.Fatalf("%s %s = %d %v, want %d", method, path, got, m, status)
	}
	return m
}

func bodyErrType(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	if e == nil {
		return ""
	}
	if _, ok := e["root_cause"].([]any); !ok {
		return "malformed error body"
	}
	return e["type"].(string)
}

func (f *fixture) mustErr(status int, typ, method, path, body string) {
	f.t.Helper()
	m := f.must(status, method, path, body)
	if got := bodyErrType(m); got != typ {
		f.t.Fatalf("%s %s: error type %q (%v), want %q", method, path, got, m, typ)
	}
	if m["status"] != json.Number(itoa(status)) {
		f.t.Fatalf("%s %s: status field %v", method, path, m["status"])
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }

const mapping = `{"mappings":{"dynamic":"strict","properties":{
	"k":{"type":"keyword"},"n":{"type":"long"},"t":{"type":"date_nanos","format":"strict_date_optional_time_nanos"}}},
	"settings":{"index":{"number_of_shards":1,"number_of_replicas":0}}}`

func ids(m map[string]any) []string {
	var out []string
	for _, h := range m["hits"].(map[string]any)["hits"].([]any) {
		out = append(out, h.(map[string]any)["_id"].(string))
	}
	return out
}

func TestClientInfoAndProductCheck(t *testing.T) {
	f := newFixture(t)
	c, err := elasticsearch.NewClient(elasticsearch.Config{Addresses: []string{f.srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	res, err := c.Info(c.Info.WithContext(context.Background()))
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var info struct {
		Version struct{ Number string } `json:"version"`
	}
	if err := json.NewDecoder(res.Body).Decode(&info); err != nil || !strings.HasPrefix(info.Version.Number, "8.") {
		t.Fatalf("info = %+v, %v", info, err)
	}
}

func TestRejectsWhatItDoesNotUnderstand(t *testing.T) {
	f := newFixture(t)
	f.must(200, "PUT", "/i", mapping)
	f.mustErr(400, "parsing_exception", "POST", "/i/_search", `{"query":{"match":{"k":"x"}}}`)
	f.mustErr(400, "parsing_exception", "POST", "/i/_search", `{"aggs":{"a":{"avg":{"field":"n"}}}}`)
	f.mustErr(400, "parsing_exception", "POST", "/i/_search", `{"highlight":{}}`)
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_search?scroll=1m", `{}`)
	f.mustErr(400, "x_content_parse_exception", "POST", "/i/_search", `{"query":{"range":{"n":{"gte":1,"format":"x"}}}}`)
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_search", `{"sort":["_score"]}`)
	f.mustErr(400, "mapper_parsing_exception", "PUT", "/j", `{"mappings":{"properties":{"x":{"type":"text"}}}}`)
	f.mustErr(400, "mapper_parsing_exception", "PUT", "/j", `{"mappings":{"properties":{"x":{"type":"keyword","ignore_above":10}}}}`)
	f.mustErr(400, "illegal_argument_exception", "PUT", "/j", `{"settings":{"analysis":{}}}`)
	f.mustErr(400, "invalid_index_name_exception", "PUT", "/Upper", ``)
	if status, m := f.do("GET", "/i/_unknown", ""); status != 400 || !strings.Contains(m["error"].(string), "no handler") {
		t.Fatalf("unknown endpoint: %d %v", status, m)
	}
	if status, _ := f.do("DELETE", "/i/_search", ""); status != 405 {
		t.Fatalf("wrong method: %d", status)
	}
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_bulk", `{"index":{"_id":"1"}}`+"\n"+`{"k":"a"}`)
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_bulk", `{"index":{"_id":"1","routing":"x"}}`+"\n"+`{"k":"a"}`+"\n")
	f.mustErr(400, "action_request_validation_exception", "POST", "/i/_bulk", `{"create":{"_id":"1","version":2,"version_type":"external"}}`+"\n"+`{"k":"a"}`+"\n")
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_bulk?refresh=maybe", `{"index":{"_id":"1"}}`+"\n"+`{"k":"a"}`+"\n")
}

func TestBulkExternalVersionsAndMapping(t *testing.T) {
	f := newFixture(t)
	f.must(200, "PUT", "/i", mapping)
	body := strings.Join([]string{
		`{"index":{"_id":"a","version":5,"version_type":"external"}}`, `{"k":"v5"}`,
		`{"index":{"_id":"a","version":3,"version_type":"external"}}`, `{"k":"v3"}`,
		`{"index":{"_id":"a","version":5,"version_type":"external"}}`, `{"k":"v5 again"}`,
		`{"index":{"_id":"b","version":1,"version_type":"external"}}`, `{"k":"b","extra":1}`,
		`{"index":{"_id":"c","version":1,"version_type":"external"}}`, `{"t":"1969-12-31T23:59:59Z"}`,
		`{"index":{"_id":"d","version":1,"version_type":"external"}}`, `{"n":"12"}`,
		`{"delete":{"_id":"zz"}}`,
		``}, "\n")
	m := f.must(200, "POST", "/i/_bulk", body)
	if m["errors"] != true {
		t.Fatalf("errors = %v", m["errors"])
	}
	var statuses []string
	var types []string
	for _, it := range m["items"].([]any) {
		for _, v := range it.(map[string]any) {
			r := v.(map[string]any)
			statuses = append(statuses, string(r["status"].(json.Number)))
			if e, ok := r["error"].(map[string]any); ok {
				types = append(types, e["type"].(string))
			}
		}
	}
	if want := []string{"201", "409", "409", "400", "400", "400", "404"}; !slices.Equal(statuses, want) {
		t.Fatalf("item statuses %v, want %v", statuses, want)
	}
	if want := []string{"version_conflict_engine_exception", "version_conflict_engine_exception", "strict_dynamic_mapping_exception", "document_parsing_exception", "document_parsing_exception"}; !slices.Equal(types, want) {
		t.Fatalf("item errors %v, want %v", types, want)
	}
	doc := f.must(200, "GET", "/i/_doc/a", "")
	if doc["_version"] != json.Number("5") || doc["_source"].(map[string]any)["k"] != "v5" {
		t.Fatalf("doc a = %v", doc)
	}
	// Deleting keeps the version: an older external write still conflicts.
	f.must(200, "DELETE", "/i/_doc/a?version=6&version_type=external", "")
	m = f.must(200, "POST", "/i/_bulk", `{"index":{"_id":"a","version":6,"version_type":"external"}}`+"\n"+`{"k":"x"}`+"\n")
	if m["errors"] != true {
		t.Fatal("a write at the tombstone's version succeeded")
	}
	f.must(404, "GET", "/i/_doc/a", "")
}

func TestRefreshAndRealtime(t *testing.T) {
	f := newFixture(t)
	f.must(200, "PUT", "/i", mapping)
	f.must(200, "POST", "/i/_bulk", `{"index":{"_id":"1"}}`+"\n"+`{"k":"a"}`+"\n")
	search := `{"query":{"term":{"k":"a"}}}`
	if got := ids(f.must(200, "POST", "/i/_search", search)); len(got) != 0 {
		t.Fatalf("unrefreshed write visible to search: %v", got)
	}
	f.must(200, "GET", "/i/_doc/1", "") // realtime get sees it
	m := f.must(200, "POST", "/i/_mget", `{"ids":["1","2"]}`)
	docs := m["docs"].([]any)
	if docs[0].(map[string]any)["found"] != true || docs[1].(map[string]any)["found"] != false {
		t.Fatalf("mget = %v", m)
	}
	f.must(200, "POST", "/i/_refresh", "")
	if got := ids(f.must(200, "POST", "/i/_search", search)); !slices.Equal(got, []string{"1"}) {
		t.Fatalf("after refresh: %v", got)
	}
	f.must(200, "POST", "/i/_bulk?refresh=wait_for", `{"delete":{"_id":"1"}}`+"\n")
	if got := ids(f.must(200, "POST", "/i/_search", search)); len(got) != 0 {
		t.Fatalf("deleted document still found: %v", got)
	}
}

func TestAliases(t *testing.T) {
	f := newFixture(t)
	f.must(200, "PUT", "/v1", `{"aliases":{"a":{}}}`)
	f.must(200, "PUT", "/v2", ``)
	m := f.must(200, "GET", "/_alias/a", "")
	if _, ok := m["v1"]; !ok || len(m) != 1 {
		t.Fatalf("alias a = %v", m)
	}
	f.must(404, "GET", "/_alias/missing", "")
	// Atomic: the failing second action leaves the first one undone.
	f.mustErr(404, "aliases_not_found_exception", "POST", "/_aliases",
		`{"actions":[{"add":{"index":"v2","alias":"a"}},{"remove":{"index":"v2","alias":"b","must_exist":true}}]}`)
	if m := f.must(200, "GET", "/_alias/a", ""); len(m) != 1 {
		t.Fatalf("failed _aliases request changed aliases: %v", m)
	}
	// Writes through an alias with two indices and no write index fail;
	// reads search both; single-document reads refuse.
	f.must(200, "POST", "/_aliases", `{"actions":[{"add":{"index":"v2","alias":"a"}}]}`)
	m = f.must(200, "POST", "/a/_mget", `{"ids":["x"]}`) // per-item failure, as Elasticsearch
	if e := m["docs"].([]any)[0].(map[string]any)["error"]; e == nil || e.(map[string]any)["type"] != "illegal_argument_exception" {
		t.Fatalf("mget through a two-index alias = %v", m)
	}
	m = f.must(200, "POST", "/a/_bulk", `{"index":{"_id":"x"}}`+"\n"+`{}`+"\n")
	if m["errors"] != true {
		t.Fatal("write through a two-index alias succeeded")
	}
	f.must(200, "POST", "/a/_search", `{}`)
	// Flip and drop in one request.
	f.must(200, "POST", "/_aliases", `{"actions":[{"remove":{"index":"v1","alias":"a","must_exist":true}},{"remove_index":{"index":"v1"}}]}`)
	if got := f.srv.Handler.Indices(); !slices.Equal(got, []string{"v2"}) {
		t.Fatalf("indices = %v", got)
	}
	f.mustErr(400, "illegal_argument_exception", "DELETE", "/a", "")
	f.mustErr(400, "illegal_argument_exception", "DELETE", "/v*", "")
	// require_alias refuses index names; writes never create indices.
	m = f.must(200, "POST", "/v2/_bulk?require_alias=true", `{"index":{"_id":"y"}}`+"\n"+`{}`+"\n")
	if m["errors"] != true {
		t.Fatal("require_alias accepted an index name")
	}
	m = f.must(200, "POST", "/nope/_bulk", `{"index":{"_id":"y"}}`+"\n"+`{}`+"\n")
	if m["errors"] != true || len(f.srv.Handler.Indices()) != 1 {
		t.Fatal("a write to a missing index created it")
	}
	f.mustErr(400, "resource_already_exists_exception", "PUT", "/v2", "")
	f.mustErr(400, "invalid_index_name_exception", "PUT", "/a", "")
}

func TestSearchSortAndAggregations(t *testing.T) {
	f := newFixture(t)
	f.must(200, "PUT", "/i", mapping)
	f.must(200, "POST", "/i/_bulk?refresh=true", strings.Join([]string{
		`{"index":{"_id":"1"}}`, `{"k":"x","n":10,"t":"2026-01-01T00:00:00.000000002Z"}`,
		`{"index":{"_id":"2"}}`, `{"k":"x","n":20,"t":"2026-01-01T00:00:00.000000001Z"}`,
		`{"index":{"_id":"3"}}`, `{"k":"y","n":5}`,
		`{"index":{"_id":"4"}}`, `{"k":"z","n":15,"t":"2026-01-01T00:00:00.000000002Z"}`,
		``}, "\n"))
	sort := `"sort":[{"t":{"order":"desc","missing":"_last"}},{"k":{"order":"desc"}}]`
	m := f.must(200, "POST", "/i/_search", `{`+sort+`}`)
	if got := ids(m); !slices.Equal(got, []string{"4", "1", "2", "3"}) {
		t.Fatalf("sorted ids %v", got)
	}
	last := m["hits"].(map[string]any)["hits"].([]any)[3].(map[string]any)["sort"].([]any)
	if last[0] != json.Number("-9223372036854775808") || last[1] != "y" {
		t.Fatalf("sort values of a missing date = %v", last)
	}
	m = f.must(200, "POST", "/i/_search", `{`+sort+`,"search_after":[1767225600000000002,"x"]}`)
	if got := ids(m); !slices.Equal(got, []string{"2", "3"}) {
		t.Fatalf("search_after ids %v", got)
	}
	m = f.must(200, "POST", "/i/_search", `{"size":0,"query":{"range":{"n":{"gte":10,"lt":20}}},
		"aggs":{"by":{"terms":{"field":"k","size":1,"order":[{"_count":"desc"},{"s":"desc"}]},"aggs":{"s":{"sum":{"field":"n"}}}},
		"f":{"filter":{"exists":{"field":"t"}}}}}`)
	aggs := m["aggregations"].(map[string]any)
	by := aggs["by"].(map[string]any)
	b0 := by["buckets"].([]any)[0].(map[string]any)
	// x and z tie on count (1 each in range); z wins on the sum (15 > 10).
	if b0["key"] != "z" || b0["doc_count"] != json.Number("1") || by["sum_other_doc_count"] != json.Number("1") ||
		b0["s"].(map[string]any)["value"] != json.Number("15.0") {
		t.Fatalf("terms = %v", by)
	}
	if aggs["f"].(map[string]any)["doc_count"] != json.Number("2") {
		t.Fatalf("filter = %v", aggs["f"])
	}
	// Sums print as doubles, as Elasticsearch does.
	req, _ := http.NewRequest("POST", f.srv.URL+"/i/_search", strings.NewReader(`{"size":0,"aggs":{"s":{"sum":{"field":"n"}}}}`))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if !strings.Contains(string(raw), `"value":50.0`) {
		t.Fatalf("sum rendered as %s", raw)
	}
	f.mustErr(400, "illegal_argument_exception", "POST", "/i/_search", `{`+sort+`,"search_after":[1]}`)
	f.mustErr(400, "query_shard_exception", "POST", "/i/_search", `{"sort":[{"nope":"asc"}]}`)
	f.mustErr(400, "aggregation_execution_exception", "POST", "/i/_search", `{"aggs":{"by":{"terms":{"field":"k","order":{"nope":"desc"}}}}}`)
	f.mustErr(404, "index_not_found_exception", "POST", "/missing/_search", `{}`)
}
