package esfake

import (
	"encoding/json"
	"math"
	"slices"
	"strconv"
	"strings"
)

// matcher decides whether a document matches a query.
type matcher func(d *document) bool

// fieldOf finds the mapping of a field among the searched indices.
func fieldOf(ixs []*index, name string) (field, bool) {
	for _, ix := range ixs {
		if f, has := ix.fields[name]; has {
			return f, true
		}
	}
	return field{}, false
}

func (s *searcher) parseQuery(raw json.RawMessage) (matcher, *apiError) {
	kind, body, e := single(raw, "query")
	if e != nil {
		return nil, e
	}
	switch kind {
	case "match_all":
		if _, e := object(body, kind); e != nil {
			return nil, e
		}
		return func(*document) bool { return true }, nil
	case "term":
		name, v, e := single(body, kind)
		if e != nil {
			return nil, e
		}
		if m, e := object(v, "term."+name, "value"); e == nil {
			if v = m["value"]; v == nil {
				return nil, parsingErr("[term] query does not support an object without [value]")
			}
		}
		return s.termsMatcher(name, []json.RawMessage{v})
	case "terms":
		name, v, e := single(body, kind)
		if e != nil {
			return nil, e
		}
		var vals []json.RawMessage
		if err := json.Unmarshal(v, &vals); err != nil {
			return nil, parsingErr("[terms] query requires an array of values for field [%s]", name)
		}
		return s.termsMatcher(name, vals)
	case "range":
		name, v, e := single(body, kind)
		if e != nil {
			return nil, e
		}
		return s.rangeMatcher(name, v)
	case "exists":
		m, e := object(body, kind, "field")
		if e != nil {
			return nil, e
		}
		name, e := stringOf(m["field"], "exists.field")
		if e != nil {
			return nil, e
		}
		return func(d *document) bool { _, has := d.values[name]; return has }, nil
	case "ids":
		m, e := object(body, kind, "values")
		if e != nil {
			return nil, e
		}
		var ids []string
		if err := json.Unmarshal(m["values"], &ids); err != nil {
			return nil, parsingErr("[ids] requires an array of strings in [values]")
		}
		return func(d *document) bool { return slices.Contains(ids, d.id) }, nil
	case "bool":
		return s.boolMatcher(body)
	}
	return nil, parsingErr("unknown query [%s]", kind)
}

func (s *searcher) termsMatcher(name string, raws []json.RawMessage) (matcher, *apiError) {
	f, mapped := fieldOf(s.ixs, name)
	if !mapped {
		return func(*document) bool { return false }, nil
	}
	vals := make([]value, 0, len(raws))
	for _, raw := range raws {
		v, err := decodeValue(raw)
		if err != nil || v == nil {
			return nil, parsingErr("[term] value for field [%s] must not be null", name)
		}
		val, why := f.parse(v)
		if why != "" {
			return nil, errf(400, "query_shard_exception", "failed to create query: field [%s] of type [%s]: %s", name, f.typ, why)
		}
		vals = append(vals, val)
	}
	return func(d *document) bool {
		dv, has := d.values[name]
		if !has {
			return false
		}
		for _, v := range vals {
			if f.compare(dv, v) == 0 {
				return true
			}
		}
		return false
	}, nil
}

func (s *searcher) rangeMatcher(name string, raw json.RawMessage) (matcher, *apiError) {
	m, e := object(raw, "range."+name, "gt", "gte", "lt", "lte")
	if e != nil {
		return nil, e
	}
	f, mapped := fieldOf(s.ixs, name)
	if !mapped {
		return func(*document) bool { return false }, nil
	}
	type bound struct {
		op string
		v  value
	}
	var bounds []bound
	for op, r := range m {
		v, err := decodeValue(r)
		if err != nil {
			return nil, parsingErr("[range] bad value: %v", err)
		}
		if v == nil {
			continue // open bound
		}
		if f.typ == typeKeyword {
			return nil, badRequest("esfake: range on keyword field [%s] is not supported", name)
		}
		val, why := f.parse(v)
		if why != "" {
			return nil, errf(400, "parse_exception", "failed to parse [%v] for field [%s]: %s", v, name, why)
		}
		bounds = append(bounds, bound{op, val})
	}
	return func(d *document) bool {
		dv, has := d.values[name]
		if !has {
			return false
		}
		for _, b := range bounds {
			c := f.compare(dv, b.v)
			switch b.op {
			case "gt":
				if c <= 0 {
					return false
				}
			case "gte":
				if c < 0 {
					return false
				}
			case "lt":
				if c >= 0 {
					return false
				}
			case "lte":
				if c > 0 {
					return false
				}
			}
		}
		return true
	}, nil
}

func (s *searcher) boolMatcher(raw json.RawMessage) (matcher, *apiError) {
	m, e := object(raw, "bool", "filter", "must", "must_not", "should", "minimum_should_match")
	if e != nil {
		return nil, e
	}
	clauses := func(key string) ([]matcher, *apiError) {
		var out []matcher
		if m[key] == nil {
			return nil, nil
		}
		for _, c := range list(m[key]) {
			q, e := s.parseQuery(c)
			if e != nil {
				return nil, e
			}
			out = append(out, q)
		}
		return out, nil
	}
	var must, mustNot, should []matcher
	for _, k := range []string{"filter", "must"} {
		c, e := clauses(k)
		if e != nil {
			return nil, e
		}
		must = append(must, c...)
	}
	if mustNot, e = clauses("must_not"); e != nil {
		return nil, e
	}
	if should, e = clauses("should"); e != nil {
		return nil, e
	}
	minShould := int64(0)
	if len(should) > 0 && len(must) == 0 {
		minShould = 1
	}
	if raw, has := m["minimum_should_match"]; has {
		if minShould, e = intOf(raw, "minimum_should_match"); e != nil {
			return nil, badRequest("esfake: minimum_should_match must be an integer")
		}
	}
	return func(d *document) bool {
		for _, q := range must {
			if !q(d) {
				return false
			}
		}
		for _, q := range mustNot {
			if q(d) {
				return false
			}
		}
		n := int64(0)
		for _, q := range should {
			if q(d) {
				n++
			}
		}
		return n >= minShould
	}, nil
}

// ---- sort ----

type sortKey struct {
	name         string
	f            field
	desc         bool
	missingFirst bool
}

// key is the document's sort value as Elasticsearch computes it: a missing
// number becomes Long.MIN_VALUE or MAX_VALUE so that it sorts first or last.
func (k sortKey) key(d *document) (value, bool) {
	v, has := d.values[k.name]
	if has {
		return v, true
	}
	if k.f.typ == typeKeyword {
		return value{}, false
	}
	low := k.missingFirst != k.desc // the missing value is the minimum
	switch {
	case k.f.typ == typeUnsignedLong && low:
		return value{unum: 0}, true
	case k.f.typ == typeUnsignedLong:
		return value{unum: math.MaxUint64}, true
	case low:
		return value{num: math.MinInt64}, true
	}
	return value{num: math.MaxInt64}, true
}

// compare orders two sort values (present: false for a missing keyword).
func (k sortKey) compare(a value, aok bool, b value, bok bool) int {
	if !aok || !bok {
		switch {
		case aok == bok:
			return 0
		case !aok == k.missingFirst:
			return -1
		}
		return 1
	}
	c := k.f.compare(a, b)
	if k.desc {
		c = -c
	}
	return c
}

func (s *searcher) parseSort(raw json.RawMessage) ([]sortKey, *apiError) {
	var out []sortKey
	for _, item := range list(raw) {
		var name string
		k := sortKey{}
		if err := json.Unmarshal(item, &name); err != nil {
			n, spec, e := single(item, "sort")
			if e != nil {
				return nil, e
			}
			name = n
			var dir string
			if json.Unmarshal(spec, &dir) == nil { // {"field": "desc"}
				spec = json.RawMessage(`{"order":` + strconv.Quote(dir) + `}`)
			}
			m, e := object(spec, "sort."+name, "order", "missing")
			if e != nil {
				return nil, e
			}
			if raw, has := m["order"]; has {
				dir, e := stringOf(raw, "order")
				if e != nil {
					return nil, e
				}
				switch dir {
				case "asc":
				case "desc":
					k.desc = true
				default:
					return nil, badRequest("Unknown SortOrder [%s]", dir)
				}
			}
			if raw, has := m["missing"]; has {
				miss, e := stringOf(raw, "missing")
				if e != nil || (miss != "_last" && miss != "_first") {
					return nil, badRequest("esfake: sort missing must be _last or _first")
				}
				k.missingFirst = miss == "_first"
			}
		}
		if strings.HasPrefix(name, "_") {
			return nil, badRequest("esfake: sorting on [%s] is not supported", name)
		}
		f, mapped := fieldOf(s.ixs, name)
		if !mapped {
			return nil, errf(400, "query_shard_exception", "No mapping found for [%s] in order to sort on", name)
		}
		k.name, k.f = name, f
		out = append(out, k)
	}
	return out, nil
}

// ---- search ----

type searcher struct {
	ixs []*index
}

type hit struct {
	d     *document
	keys  []value
	oks   []bool
	index int
}

func (h *Handler) search(q *request, target string) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	ixs, e := h.resolveRead(target)
	if e != nil {
		return fail(e)
	}
	s := &searcher{ixs: ixs}
	body := q.body
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	m, e := object(body, "search", "query", "size", "from", "sort", "search_after", "aggs", "aggregations", "track_total_hits", "_source")
	if e != nil {
		return fail(parsingErr("%s", e.reason))
	}
	match := matcher(func(*document) bool { return true })
	if raw, has := m["query"]; has {
		if match, e = s.parseQuery(raw); e != nil {
			return fail(e)
		}
	}
	size, from := int64(10), int64(0)
	if raw, has := m["size"]; has {
		if size, e = intOf(raw, "size"); e != nil {
			return fail(e)
		}
		if size < 0 {
			return fail(badRequest("[size] parameter cannot be negative, found [%d]", size))
		}
	}
	if raw, has := m["from"]; has {
		if from, e = intOf(raw, "from"); e != nil {
			return fail(e)
		}
		if from < 0 {
			return fail(badRequest("[from] parameter cannot be negative, found [%d]", from))
		}
	}
	if from+size > 10000 {
		return fail(badRequest("Result window is too large, from + size must be less than or equal to: [10000] but was [%d].", from+size))
	}
	var sorts []sortKey
	if raw, has := m["sort"]; has {
		if sorts, e = s.parseSort(raw); e != nil {
			return fail(e)
		}
	}
	var after []json.RawMessage
	if raw, has := m["search_after"]; has {
		if err := json.Unmarshal(raw, &after); err != nil {
			return fail(parsingErr("[search_after] must be an array"))
		}
		if len(sorts) == 0 {
			return fail(badRequest("Sort must contain at least one field."))
		}
		if len(after) != len(sorts) {
			return fail(badRequest("search_after has %d value(s) but sort has %d.", len(after), len(sorts)))
		}
		if from > 0 {
			return fail(badRequest("[from] parameter must be set to 0 when [search_after] is used"))
		}
	}
	withSource := true
	if raw, has := m["_source"]; has {
		if withSource, e = boolOf(raw, "_source"); e != nil {
			return fail(badRequest("esfake: only _source true or false is supported"))
		}
	}
	trackTotal := any(int64(10000))
	if raw, has := m["track_total_hits"]; has {
		var b bool
		if json.Unmarshal(raw, &b) == nil {
			trackTotal = b
		} else if n, e := intOf(raw, "track_total_hits"); e == nil {
			trackTotal = n
		} else {
			return fail(e)
		}
	}
	var aggs []*agg
	for _, key := range []string{"aggs", "aggregations"} {
		if raw, has := m[key]; has {
			if aggs, e = s.parseAggs(raw); e != nil {
				return fail(e)
			}
		}
	}

	// Collect matches from the searchable views, in index then doc order.
	var matched []*document
	for _, ix := range ixs {
		docs := make([]*document, 0, len(ix.visible))
		for _, d := range ix.visible {
			if match(d) {
				docs = append(docs, d)
			}
		}
		slices.SortFunc(docs, func(a, b *document) int { return int(a.order - b.order) })
		matched = append(matched, docs...)
	}

	hits := make([]hit, len(matched))
	for i, d := range matched {
		hits[i] = hit{d: d, index: i}
		for _, k := range sorts {
			v, has := k.key(d)
			hits[i].keys, hits[i].oks = append(hits[i].keys, v), append(hits[i].oks, has)
		}
	}
	cmpHits := func(a, b hit) int {
		for i, k := range sorts {
			if c := k.compare(a.keys[i], a.oks[i], b.keys[i], b.oks[i]); c != 0 {
				return c
			}
		}
		return a.index - b.index
	}
	slices.SortFunc(hits, cmpHits)
	if after != nil {
		keys := make([]value, len(sorts))
		oks := make([]bool, len(sorts))
		for i, k := range sorts {
			v, err := decodeValue(after[i])
			if err != nil {
				return fail(parsingErr("[search_after] bad value"))
			}
			if v == nil {
				if k.f.typ != typeKeyword {
					return fail(badRequest("esfake: null search_after value for numeric field [%s]", k.name))
				}
				continue
			}
			val, ok2 := searchAfterValue(k.f, v)
			if !ok2 {
				return fail(badRequest("Failed to parse search_after value for field [%s].", k.name))
			}
			keys[i], oks[i] = val, true
		}
		kept := hits[:0]
		for _, h := range hits {
			c := 0
			for i, k := range sorts {
				if c = k.compare(h.keys[i], h.oks[i], keys[i], oks[i]); c != 0 {
					break
				}
			}
			if c > 0 { // strictly after (ties are before: doc id is +inf)
				kept = append(kept, h)
			}
		}
		hits = kept
	}
	total := len(hits)
	page := hits[min(int(from), len(hits)):]
	page = page[:min(int(size), len(page))]
	outHits := make([]any, 0, len(page))
	for _, h := range page {
		oh := map[string]any{"_index": h.d.index, "_id": h.d.id}
		if withSource {
			oh["_source"] = h.d.source
		}
		if len(sorts) > 0 {
			oh["_score"] = nil
			vals := make([]any, len(sorts))
			for i, k := range sorts {
				if h.oks[i] {
					vals[i] = k.f.output(h.keys[i])
				}
			}
			oh["sort"] = vals
		} else {
			oh["_score"] = floatValue(0)
		}
		outHits = append(outHits, oh)
	}
	hitsBody := map[string]any{"max_score": nil, "hits": outHits}
	switch t := trackTotal.(type) {
	case bool:
		if t {
			hitsBody["total"] = map[string]any{"value": total, "relation": "eq"}
		}
	case int64:
		if int64(total) > t {
			hitsBody["total"] = map[string]any{"value": t, "relation": "gte"}
		} else {
			hitsBody["total"] = map[string]any{"value": total, "relation": "eq"}
		}
	}
	res := map[string]any{
		"took": 1, "timed_out": false,
		"_shards": map[string]any{"total": len(ixs), "successful": len(ixs), "skipped": 0, "failed": 0},
		"hits":    hitsBody,
	}
	if aggs != nil {
		// Aggregations run on every match of the query, not on the page
		// (search_after and size limit the hits only).
		res["aggregations"] = runAggs(aggs, matched)
	}
	return ok(res)
}

// searchAfterValue reads a search_after value the way Elasticsearch does
// for the sort field: numbers for numeric and date fields (the raw sort
// value), strings for keywords.
func searchAfterValue(f field, v any) (value, bool) {
	switch f.typ {
	case typeKeyword:
		s, ok := v.(string)
		return value{str: s}, ok
	case typeUnsignedLong:
		n, ok := v.(json.Number)
		if !ok {
			return value{}, false
		}
		u, err := strconv.ParseUint(n.String(), 10, 64)
		return value{unum: u}, err == nil
	}
	var i int64
	var err error
	switch v := v.(type) {
	case json.Number:
		i, err = strconv.ParseInt(v.String(), 10, 64)
	case string:
		i, err = strconv.ParseInt(v, 10, 64)
	default:
		return value{}, false
	}
	if err != nil {
		return value{}, false
	}
	if f.typ == typeDate && i != math.MinInt64 && i != math.MaxInt64 {
		if i > math.MaxInt64/1_000_000 || i < math.MinInt64/1_000_000 {
			return value{}, false
		}
		i *= 1e6 // date sort values are milliseconds
	}
	return value{num: i}, true
}

// ---- aggregations ----

type orderKey struct {
	path string // _count, _key, or a sub-aggregation path
	desc bool
}

type agg struct {
	name   string
	kind   string // terms, sum, filter
	field  string
	f      field
	mapped bool
	size   int64
	order  []orderKey
	filter matcher
	subs   []*agg
}

func (s *searcher) parseAggs(raw json.RawMessage) ([]*agg, *apiError) {
	m, e := object(raw, "aggs")
	if e != nil {
		return nil, e
	}
	names := make([]string, 0, len(m))
	for n := range m {
		names = append(names, n)
	}
	slices.Sort(names)
	var out []*agg
	for _, name := range names {
		if strings.ContainsAny(name, "[]>") || name == "" {
			return nil, parsingErr("Invalid aggregation name [%s]. Aggregation names can contain any character except '[', ']', and '>'", name)
		}
		def, e := object(m[name], "aggs."+name)
		if e != nil {
			return nil, e
		}
		a := &agg{name: name}
		for k, v := range def {
			switch k {
			case "aggs", "aggregations":
				if a.subs, e = s.parseAggs(v); e != nil {
					return nil, e
				}
			default:
				if a.kind != "" {
					return nil, parsingErr("Found two aggregation type definitions in [%s]: [%s] and [%s]", name, a.kind, k)
				}
				a.kind = k
				if e := s.parseAggBody(a, v); e != nil {
					return nil, e
				}
			}
		}
		if a.kind == "" {
			return nil, parsingErr("Missing definition for aggregation [%s]", name)
		}
		if a.kind == "sum" && len(a.subs) > 0 {
			return nil, errf(400, "aggregation_initialization_exception", "Aggregator [%s] of type [sum] cannot accept sub-aggregations", name)
		}
		if a.kind == "terms" {
			for _, o := range a.order {
				if o.path != "_count" && o.path != "_key" && !validOrderPath(a, o.path) {
					return nil, errf(400, "aggregation_execution_exception", "Invalid aggregation order path [%s]. The provided aggregation [%s] either does not exist, or is a pipeline aggregation and cannot be used to sort the buckets.", o.path, o.path)
				}
			}
		}
		out = append(out, a)
	}
	return out, nil
}

func (s *searcher) parseAggBody(a *agg, raw json.RawMessage) *apiError {
	switch a.kind {
	case "filter":
		var e *apiError
		a.filter, e = s.parseQuery(raw)
		return e
	case "sum":
		m, e := object(raw, "sum", "field")
		if e != nil {
			return e
		}
		if a.field, e = stringOf(m["field"], "sum.field"); e != nil {
			return e
		}
		a.f, a.mapped = fieldOf(s.ixs, a.field)
		if a.mapped && !a.f.numeric() {
			return badRequest("Field [%s] of type [%s] is not supported for aggregation [sum]", a.field, a.f.typ)
		}
		return nil
	case "terms":
		m, e := object(raw, "terms", "field", "size", "order")
		if e != nil {
			return e
		}
		if a.field, e = stringOf(m["field"], "terms.field"); e != nil {
			return e
		}
		a.f, a.mapped = fieldOf(s.ixs, a.field)
		if a.mapped && (a.f.typ == typeDate || a.f.typ == typeDateNanos) {
			return badRequest("esfake: terms aggregation on date field [%s] is not supported", a.field)
		}
		a.size = 10
		if raw, has := m["size"]; has {
			if a.size, e = intOf(raw, "size"); e != nil {
				return e
			}
			if a.size <= 0 {
				return badRequest("[size] must be greater than 0. Found [%d] in [%s]", a.size, a.name)
			}
		}
		if raw, has := m["order"]; has {
			for _, o := range list(raw) {
				path, dirRaw, e := single(o, "order")
				if e != nil {
					return e
				}
				dir, e := stringOf(dirRaw, "order."+path)
				if e != nil {
					return e
				}
				if dir != "asc" && dir != "desc" {
					return parsingErr("Unknown terms order direction [%s]", dir)
				}
				a.order = append(a.order, orderKey{path: path, desc: dir == "desc"})
			}
		} else {
			a.order = []orderKey{{path: "_count", desc: true}}
		}
		if !slices.ContainsFunc(a.order, func(o orderKey) bool { return o.path == "_key" }) {
			a.order = append(a.order, orderKey{path: "_key"}) // Elasticsearch's tie-break
		}
		return nil
	}
	return parsingErr("Unknown aggregation type [%s]", a.kind)
}

// validOrderPath accepts "sub", "sub.value" (sum) and "a>b" paths to
// single-value metrics or single-bucket aggregations.
func validOrderPath(a *agg, path string) bool {
	head, rest, nested := strings.Cut(path, ">")
	name, metric, hasMetric := strings.Cut(head, ".")
	for _, s := range a.subs {
		if s.name != name {
			continue
		}
		switch {
		case nested:
			return s.kind == "filter" && !hasMetric && validOrderPath(s, rest)
		case hasMetric:
			return s.kind == "sum" && metric == "value"
		}
		return s.kind == "sum" || s.kind == "filter"
	}
	return false
}

// orderValue evaluates an order path on a bucket's documents.
func orderValue(a *agg, path string, docs []*document) float64 {
	head, rest, nested := strings.Cut(path, ">")
	name, _, _ := strings.Cut(head, ".")
	for _, s := range a.subs {
		if s.name != name {
			continue
		}
		switch s.kind {
		case "sum":
			return sumOf(s, docs)
		case "filter":
			in := filterDocs(s, docs)
			if nested {
				return orderValue(s, rest, in)
			}
			return float64(len(in))
		}
	}
	return 0
}

func sumOf(a *agg, docs []*document) float64 {
	total := 0.0
	if !a.mapped {
		return 0
	}
	for _, d := range docs {
		if v, has := d.values[a.field]; has {
			if a.f.typ == typeUnsignedLong {
				total += float64(v.unum)
			} else {
				total += float64(v.num)
			}
		}
	}
	return total
}

func filterDocs(a *agg, docs []*document) []*document {
	var out []*document
	for _, d := range docs {
		if a.filter(d) {
			out = append(out, d)
		}
	}
	return out
}

func runAggs(aggs []*agg, docs []*document) map[string]any {
	out := map[string]any{}
	for _, a := range aggs {
		out[a.name] = runAgg(a, docs)
	}
	return out
}

func withSubs(m map[string]any, a *agg, docs []*document) map[string]any {
	for k, v := range runAggs(a.subs, docs) {
		m[k] = v
	}
	return m
}

func runAgg(a *agg, docs []*document) map[string]any {
	switch a.kind {
	case "sum":
		return map[string]any{"value": floatValue(sumOf(a, docs))}
	case "filter":
		in := filterDocs(a, docs)
		return withSubs(map[string]any{"doc_count": len(in)}, a, in)
	}
	// terms
	type bucket struct {
		key  value
		docs []*document
	}
	var buckets []*bucket
	if a.mapped {
		byKey := map[value]*bucket{}
		for _, d := range docs {
			v, has := d.values[a.field]
			if !has {
				continue
			}
			b := byKey[v]
			if b == nil {
				b = &bucket{key: v}
				byKey[v] = b
				buckets = append(buckets, b)
			}
			b.docs = append(b.docs, d)
		}
	}
	vals := make(map[*bucket][]float64, len(buckets))
	for _, b := range buckets {
		for _, o := range a.order {
			switch o.path {
			case "_count", "_key":
				vals[b] = append(vals[b], 0)
			default:
				vals[b] = append(vals[b], orderValue(a, o.path, b.docs))
			}
		}
	}
	slices.SortFunc(buckets, func(x, y *bucket) int {
		for i, o := range a.order {
			var c int
			switch o.path {
			case "_count":
				c = len(x.docs) - len(y.docs)
			case "_key":
				c = a.f.compare(x.key, y.key)
			default:
				switch xv, yv := vals[x][i], vals[y][i]; {
				case xv < yv:
					c = -1
				case xv > yv:
					c = 1
				}
			}
			if o.desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return 0
	})
	other := 0
	if int64(len(buckets)) > a.size {
		for _, b := range buckets[a.size:] {
			other += len(b.docs)
		}
		buckets = buckets[:a.size]
	}
	out := make([]any, 0, len(buckets))
	for _, b := range buckets {
		out = append(out, withSubs(map[string]any{"key": a.f.output(b.key), "doc_count": len(b.docs)}, a, b.docs))
	}
	return map[string]any{"doc_count_error_upper_bound": 0, "sum_other_doc_count": other, "buckets": out}
}
