// Package esfake is an in-process Elasticsearch 8 for tests: an HTTP
// handler speaking the subset of the REST API that infra/history/esindex
// uses, faithfully enough to run the history conformance suite, and
// refusing (HTTP 400, Elasticsearch's error shape) whatever it does not
// implement so that a divergence cannot pass silently.
//
// # Implemented
//
//   - GET/HEAD / (cluster info, version 8.x). Every response carries
//     X-Elastic-Product: Elasticsearch, which the v8 client requires.
//   - Indices: PUT /{index} (settings number_of_shards, number_of_replicas,
//     refresh_interval; mappings with dynamic strict|false and properties
//     of type keyword, long, integer, unsigned_long, date, date_nanos with
//     an optional format; aliases), GET/HEAD /{index}, GET
//     /{index}/_mapping, DELETE /{index} (concrete names only, as with
//     action.destructive_requires_name).
//   - Aliases: GET/HEAD /_alias/{name}, GET /_alias, GET /_aliases, GET
//     /{index}/_alias, PUT/POST/DELETE /{index}/_alias/{name}, POST
//     /_aliases with add, remove (must_exist) and remove_index actions
//     applied atomically. Reads resolve aliases to their indices; writes
//     and single-document reads to the alias's only (or write) index.
//   - Documents: _bulk (NDJSON; index, create, update with doc and
//     doc_as_upsert, delete; version_type internal, external and
//     external_gte with per-item 409 version_conflict_engine_exception;
//     require_alias), PUT/POST/GET/HEAD/DELETE /{index}/_doc/{id}, _mget
//     (ids or docs). Deleted documents keep their version as a tombstone.
//   - Refresh: searches see documents as of the last refresh of their
//     index (refresh=true|wait_for on a write, or _refresh); get and mget
//     are realtime.
//   - _search: query (match_all, term, terms, range gt/gte/lt/lte, exists,
//     ids, bool filter/must/must_not/should/minimum_should_match), size,
//     from, sort (fields, order, missing _last/_first; sort values as
//     Elasticsearch returns them, Long.MIN/MAX_VALUE for missing numbers),
//     search_after, track_total_hits, _source true/false, aggs (terms with
//     size and order by _count, _key or a sub-aggregation, sum, filter, with
//     sub-aggregations).
//
// # Deliberately not implemented
//
// Analysis and text fields, scoring (hits without sort come in index
// order), dynamic mapping, automatic index creation on write (the cluster
// behaves as with action.auto_create_index=false), periodic refresh
// (refresh_interval is accepted and ignored: only explicit refreshes make
// writes searchable, which is stricter than a real cluster), wildcards and
// date math, routing, shards (every index behaves as one shard, so terms
// aggregations are exact), optimistic concurrency with if_seq_no, scripts,
// ingest pipelines, scroll and point in time, tombstone expiry
// (index.gc_deletes), coercion of numbers from strings or floats, array
// values. Unknown request parameters, body keys, query types and
// aggregation types are answered with 400.
package esfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
)

// Version is the Elasticsearch version the fake reports.
const Version = "8.19.0"

// Server is a Handler served by an httptest.Server.
type Server struct {
	*httptest.Server
	Handler *Handler
}

// NewServer starts a fake cluster; Close it when done.
func NewServer() *Server {
	h := NewHandler()
	return &Server{Server: httptest.NewServer(h), Handler: h}
}

// Handler is the fake cluster. It is safe for concurrent use; requests are
// applied one at a time.
type Handler struct {
	mu      sync.Mutex
	indices map[string]*index
	seq     int64 // for uuids and auto ids
}

// NewHandler returns an empty cluster.
func NewHandler() *Handler {
	return &Handler{indices: map[string]*index{}}
}

// Indices lists the names of the indices, sorted.
func (h *Handler) Indices() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	names := make([]string, 0, len(h.indices))
	for n := range h.indices {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// ---- responses and errors ----

// apiError is an error answered in Elasticsearch's shape.
type apiError struct {
	status int
	typ    string
	reason string
	extra  map[string]any
}

func (e *apiError) Error() string { return e.typ + ": " + e.reason }

func (e *apiError) cause() map[string]any {
	c := map[string]any{"type": e.typ, "reason": e.reason}
	for k, v := range e.extra {
		c[k] = v
	}
	return c
}

func (e *apiError) body() map[string]any {
	c := e.cause()
	full := map[string]any{"root_cause": []any{e.cause()}}
	for k, v := range c {
		full[k] = v
	}
	return map[string]any{"error": full, "status": e.status}
}

func errf(status int, typ, format string, args ...any) *apiError {
	return &apiError{status: status, typ: typ, reason: fmt.Sprintf(format, args...)}
}

func badRequest(format string, args ...any) *apiError {
	return errf(400, "illegal_argument_exception", format, args...)
}

func parsingErr(format string, args ...any) *apiError {
	return errf(400, "parsing_exception", format, args...)
}

func indexNotFound(name string) *apiError {
	return &apiError{status: 404, typ: "index_not_found_exception", reason: "no such index [" + name + "]",
		extra: map[string]any{"index": name, "resource.type": "index_or_alias", "resource.id": name, "index_uuid": "_na_"}}
}

// response is a status and a JSON body (nil: none).
type response struct {
	status int
	body   any
}

func ok(body any) response { return response{status: 200, body: body} }

func fail(e *apiError) response { return response{status: e.status, body: e.body()} }

// floatValue marshals like Java's Double.toString for the values sums
// produce ("30.0"), so that a client decoding an integer would fail here as
// it would against Elasticsearch.
type floatValue float64

func (f floatValue) MarshalJSON() ([]byte, error) {
	s := strconv.FormatFloat(float64(f), 'f', -1, 64)
	if !strings.ContainsAny(s, ".eE") {
		s += ".0"
	}
	return []byte(s), nil
}

// ---- request plumbing ----

type request struct {
	r      *http.Request
	method string
	path   string
	segs   []string
	query  url.Values
	body   []byte
}

func (q *request) param(name string) string { return q.query.Get(name) }

// allowParams rejects query parameters other than names (and the
// formatting ones every endpoint takes).
func (q *request) allowParams(names ...string) *apiError {
	for k := range q.query {
		if slices.Contains(names, k) || k == "pretty" || k == "error_trace" || k == "human" {
			continue
		}
		return badRequest("request [%s] contains unrecognized parameter: [%s]", q.path, k)
	}
	return nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	q := &request{r: r, method: r.Method, path: r.URL.EscapedPath(), query: r.URL.Query(), body: body}
	for _, s := range strings.Split(strings.Trim(q.path, "/"), "/") {
		if s == "" {
			continue
		}
		u, err := url.PathUnescape(s)
		if err != nil {
			h.write(w, r, fail(badRequest("invalid path segment [%s]", s)))
			return
		}
		q.segs = append(q.segs, u)
	}
	h.mu.Lock()
	res := h.route(q)
	h.mu.Unlock()
	h.write(w, r, res)
}

func (h *Handler) write(w http.ResponseWriter, r *http.Request, res response) {
	w.Header().Set("X-Elastic-Product", "Elasticsearch")
	ct := "application/json"
	if strings.Contains(r.Header.Get("Accept"), "compatible-with=8") {
		ct = "application/vnd.elasticsearch+json;compatible-with=8"
	}
	w.Header().Set("Content-Type", ct)
	if res.body == nil || r.Method == http.MethodHead {
		w.WriteHeader(res.status)
		return
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(res.body); err != nil {
		w.WriteHeader(500)
		fmt.Fprintf(w, `{"error":{"type":"esfake_exception","reason":%q},"status":500}`, err.Error())
		return
	}
	w.WriteHeader(res.status)
	_, _ = w.Write(buf.Bytes())
}

type route struct {
	methods []string
	fn      func(*request) response
}

func (h *Handler) route(q *request) response {
	s := q.segs
	var rt route
	switch {
	case len(s) == 0:
		rt = route{[]string{"GET", "HEAD"}, h.root}
	case s[0] == "_bulk" && len(s) == 1:
		rt = route{[]string{"POST", "PUT"}, func(q *request) response { return h.bulk(q, "") }}
	case s[0] == "_mget" && len(s) == 1:
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.mget(q, "") }}
	case s[0] == "_search" && len(s) == 1:
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.search(q, "") }}
	case s[0] == "_refresh" && len(s) == 1:
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.refresh(q, "") }}
	case s[0] == "_aliases" && len(s) == 1:
		if q.method == "POST" {
			rt = route{[]string{"POST"}, h.updateAliases}
		} else {
			rt = route{[]string{"GET"}, func(q *request) response { return h.getAliases(q, "", "") }}
		}
	case s[0] == "_alias" && len(s) <= 2:
		name := ""
		if len(s) == 2 {
			name = s[1]
		}
		rt = route{[]string{"GET", "HEAD"}, func(q *request) response { return h.getAliases(q, "", name) }}
	case strings.HasPrefix(s[0], "_"):
		return h.noHandler(q)
	case len(s) == 1:
		rt = route{[]string{"PUT", "GET", "HEAD", "DELETE"}, func(q *request) response {
			switch q.method {
			case "PUT":
				return h.createIndex(q, s[0])
			case "DELETE":
				return h.deleteIndex(q, s[0])
			}
			return h.getIndex(q, s[0])
		}}
	case len(s) == 2 && s[1] == "_bulk":
		rt = route{[]string{"POST", "PUT"}, func(q *request) response { return h.bulk(q, s[0]) }}
	case len(s) == 2 && s[1] == "_mget":
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.mget(q, s[0]) }}
	case len(s) == 2 && s[1] == "_search":
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.search(q, s[0]) }}
	case len(s) == 2 && s[1] == "_refresh":
		rt = route{[]string{"GET", "POST"}, func(q *request) response { return h.refresh(q, s[0]) }}
	case len(s) == 2 && s[1] == "_mapping":
		rt = route{[]string{"GET"}, func(q *request) response { return h.getMapping(q, s[0]) }}
	case len(s) == 2 && s[1] == "_alias":
		rt = route{[]string{"GET"}, func(q *request) response { return h.getAliases(q, s[0], "") }}
	case len(s) == 3 && s[1] == "_alias":
		rt = route{[]string{"PUT", "POST", "DELETE"}, func(q *request) response { return h.putDeleteAlias(q, s[0], s[2]) }}
	case len(s) == 2 && s[1] == "_doc":
		rt = route{[]string{"POST"}, func(q *request) response { return h.indexDoc(q, s[0], "") }}
	case len(s) == 3 && s[1] == "_doc":
		rt = route{[]string{"GET", "HEAD", "PUT", "POST", "DELETE"}, func(q *request) response {
			switch q.method {
			case "PUT", "POST":
				return h.indexDoc(q, s[0], s[2])
			case "DELETE":
				return h.deleteDoc(q, s[0], s[2])
			}
			return h.getDoc(q, s[0], s[2])
		}}
	default:
		return h.noHandler(q)
	}
	if !slices.Contains(rt.methods, q.method) {
		return response{status: 405, body: map[string]any{
			"error":  fmt.Sprintf("Incorrect HTTP method for uri [%s] and method [%s], allowed: %v", q.path, q.method, rt.methods),
			"status": 405,
		}}
	}
	return rt.fn(q)
}

func (h *Handler) noHandler(q *request) response {
	return response{status: 400, body: map[string]any{
		"error":  fmt.Sprintf("no handler found for uri [%s] and method [%s]", q.path, q.method),
		"status": 400,
	}}
}

func (h *Handler) root(q *request) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	return ok(map[string]any{
		"name":         "esfake",
		"cluster_name": "esfake",
		"cluster_uuid": "esfake-cluster",
		"version": map[string]any{
			"number":                              Version,
			"build_flavor":                        "default",
			"build_type":                          "docker",
			"lucene_version":                      "9.12.0",
			"minimum_wire_compatibility_version":  "7.17.0",
			"minimum_index_compatibility_version": "7.0.0",
		},
		"tagline": "You Know, for Search",
	})
}

// ---- JSON helpers ----

// object decodes raw as a JSON object (numbers as json.Number) and
// rejects keys outside allowed (when given).
func object(raw []byte, where string, allowed ...string) (map[string]json.RawMessage, *apiError) {
	var m map[string]json.RawMessage
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, parsingErr("[%s] expected an object", where)
	}
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, errf(400, "x_content_parse_exception", "[%s] %v", where, err)
	}
	if allowed != nil {
		for k := range m {
			if !slices.Contains(allowed, k) {
				return nil, errf(400, "x_content_parse_exception", "[%s] unknown field [%s]", where, k)
			}
		}
	}
	return m, nil
}

// single decodes an object with exactly one key.
func single(raw []byte, where string) (string, json.RawMessage, *apiError) {
	m, e := object(raw, where)
	if e != nil {
		return "", nil, e
	}
	if len(m) != 1 {
		return "", nil, parsingErr("[%s] expected exactly one key, got %d", where, len(m))
	}
	for k, v := range m {
		return k, v, nil
	}
	panic("unreachable")
}

func decodeValue(raw json.RawMessage) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

func intOf(raw json.RawMessage, where string) (int64, *apiError) {
	v, err := decodeValue(raw)
	if err == nil {
		switch v := v.(type) {
		case json.Number:
			if i, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
				return i, nil
			}
		case string:
			if i, err := strconv.ParseInt(v, 10, 64); err == nil {
				return i, nil
			}
		}
	}
	return 0, parsingErr("[%s] expected an integer, got %s", where, raw)
}

func stringOf(raw json.RawMessage, where string) (string, *apiError) {
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", parsingErr("[%s] expected a string, got %s", where, raw)
	}
	return s, nil
}

func boolOf(raw json.RawMessage, where string) (bool, *apiError) {
	var b bool
	if err := json.Unmarshal(raw, &b); err != nil {
		return false, parsingErr("[%s] expected a boolean, got %s", where, raw)
	}
	return b, nil
}

// list decodes an array, or a single value as a one-element list.
func list(raw json.RawMessage) []json.RawMessage {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '[' {
		var l []json.RawMessage
		if json.Unmarshal(raw, &l) == nil {
			return l
		}
	}
	return []json.RawMessage{raw}
}
