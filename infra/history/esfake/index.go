package esfake

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

type fieldType string

const (
	typeKeyword      fieldType = "keyword"
	typeLong         fieldType = "long"
	typeInteger      fieldType = "integer"
	typeUnsignedLong fieldType = "unsigned_long"
	typeDate         fieldType = "date"
	typeDateNanos    fieldType = "date_nanos"
)

type field struct {
	typ     fieldType
	formats []string // dates: the accepted formats
}

func (f field) numeric() bool { return f.typ != typeKeyword }

type aliasProps struct {
	IsWriteIndex *bool `json:"is_write_index,omitempty"`
}

type index struct {
	name     string
	uuid     string
	created  time.Time
	dynamic  string
	fields   map[string]field
	mapping  json.RawMessage // as given, for GET
	shards   int64
	replicas int64
	aliases  map[string]aliasProps

	docs    map[string]*document // realtime view
	tombs   map[string]int64     // versions of deleted documents
	visible map[string]*document // searchable view, as of the last refresh
	dirty   map[string]bool      // ids changed since the last refresh
	seqNo   int64
	order   int64 // document order (Lucene doc ids)
}

type document struct {
	index   string
	id      string
	source  json.RawMessage
	values  map[string]value
	version int64
	seqNo   int64
	order   int64
}

// value is a typed field value: str for keywords; num for long, integer
// and dates (epoch nanoseconds; whole milliseconds for date); unum for
// unsigned_long.
type value struct {
	str  string
	num  int64
	unum uint64
}

func (f field) compare(a, b value) int {
	switch f.typ {
	case typeKeyword:
		return strings.Compare(a.str, b.str)
	case typeUnsignedLong:
		switch {
		case a.unum < b.unum:
			return -1
		case a.unum > b.unum:
			return 1
		}
		return 0
	}
	switch {
	case a.num < b.num:
		return -1
	case a.num > b.num:
		return 1
	}
	return 0
}

// output is the value as sort values and term keys show it.
func (f field) output(v value) any {
	switch f.typ {
	case typeKeyword:
		return v.str
	case typeUnsignedLong:
		return v.unum
	case typeDate:
		return v.num / 1e6
	}
	return v.num
}

// parse reads a JSON value (decoded with UseNumber) as a value of the
// field; ok is false when it does not fit.
func (f field) parse(v any) (value, string) {
	switch f.typ {
	case typeKeyword:
		switch v := v.(type) {
		case string:
			return value{str: v}, ""
		case json.Number:
			return value{str: v.String()}, ""
		case bool:
			return value{str: strconv.FormatBool(v)}, ""
		}
		return value{}, "not a string"
	case typeLong, typeInteger:
		n, okN := v.(json.Number)
		if !okN {
			return value{}, "not a number"
		}
		i, err := strconv.ParseInt(n.String(), 10, 64)
		if err != nil {
			return value{}, "not an integer in range"
		}
		if f.typ == typeInteger && (i < math.MinInt32 || i > math.MaxInt32) {
			return value{}, "out of range for integer"
		}
		return value{num: i}, ""
	case typeUnsignedLong:
		n, okN := v.(json.Number)
		if !okN {
			return value{}, "not a number"
		}
		u, err := strconv.ParseUint(n.String(), 10, 64)
		if err != nil {
			return value{}, "not an unsigned long"
		}
		return value{unum: u}, ""
	case typeDate, typeDateNanos:
		return f.parseDate(v)
	}
	return value{}, "unsupported type"
}

var dateLayouts = []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04", "2006-01-02"}

func (f field) parseDate(v any) (value, string) {
	var t time.Time
	parsed := false
	switch v := v.(type) {
	case string:
		if slices.ContainsFunc(f.formats, func(s string) bool { return strings.HasPrefix(s, "strict_date_optional_time") }) {
			for _, l := range dateLayouts {
				if tt, err := time.Parse(l, v); err == nil {
					t, parsed = tt, true
					break
				}
			}
		}
		if !parsed && slices.Contains(f.formats, "epoch_millis") {
			if ms, err := strconv.ParseInt(v, 10, 64); err == nil {
				t, parsed = time.UnixMilli(ms), true
			}
		}
	case json.Number:
		if slices.Contains(f.formats, "epoch_millis") {
			if ms, err := strconv.ParseInt(v.String(), 10, 64); err == nil {
				t, parsed = time.UnixMilli(ms), true
			}
		}
	}
	if !parsed {
		return value{}, fmt.Sprintf("failed to parse date field [%v] with format [%s]", v, strings.Join(f.formats, "||"))
	}
	if f.typ == typeDateNanos {
		if t.Before(time.Unix(0, 0)) {
			return value{}, fmt.Sprintf("date[%s] is before the epoch in 1970 and cannot be stored in nanosecond resolution", t.Format(time.RFC3339Nano))
		}
		if t.After(time.Unix(0, math.MaxInt64)) {
			return value{}, fmt.Sprintf("date[%s] is after 2262-04-11T23:47:16.854775807 and cannot be stored in nanosecond resolution", t.Format(time.RFC3339Nano))
		}
		return value{num: t.UnixNano()}, ""
	}
	ms := t.UnixMilli()
	if ms > math.MaxInt64/1_000_000 || ms < math.MinInt64/1_000_000 {
		return value{}, "date out of the supported range"
	}
	return value{num: ms * 1e6}, ""
}

// ---- mappings and settings ----

func parseMapping(raw json.RawMessage) (dynamic string, fields map[string]field, e *apiError) {
	fields = map[string]field{}
	dynamic = "true"
	if raw == nil {
		return dynamic, fields, nil
	}
	m, e := object(raw, "mappings", "dynamic", "properties")
	if e != nil {
		return "", nil, errf(400, "mapper_parsing_exception", "Failed to parse mapping: %s", e.reason)
	}
	if d, has := m["dynamic"]; has {
		v, _ := decodeValue(d)
		switch v := v.(type) {
		case string:
			dynamic = v
		case bool:
			dynamic = strconv.FormatBool(v)
		default:
			return "", nil, errf(400, "mapper_parsing_exception", "Failed to parse mapping: dynamic must be a string or boolean")
		}
		if !slices.Contains([]string{"true", "false", "strict"}, dynamic) {
			return "", nil, errf(400, "mapper_parsing_exception", "Failed to parse mapping: esfake supports dynamic true, false and strict, got [%s]", dynamic)
		}
	}
	props, has := m["properties"]
	if !has {
		return dynamic, fields, nil
	}
	pm, e := object(props, "properties")
	if e != nil {
		return "", nil, errf(400, "mapper_parsing_exception", "Failed to parse mapping: %s", e.reason)
	}
	for name, def := range pm {
		if name == "" || strings.ContainsAny(name, ".") || strings.HasPrefix(name, "_") {
			return "", nil, errf(400, "mapper_parsing_exception", "esfake: field name [%s] not supported (no object fields, no metadata fields)", name)
		}
		dm, e := object(def, name)
		if e != nil {
			return "", nil, errf(400, "mapper_parsing_exception", "Failed to parse mapping: %s", e.reason)
		}
		tr, has := dm["type"]
		if !has {
			return "", nil, errf(400, "mapper_parsing_exception", "esfake: field [%s] has no type (object fields are not supported)", name)
		}
		ts, e := stringOf(tr, name+".type")
		if e != nil {
			return "", nil, errf(400, "mapper_parsing_exception", "%s", e.reason)
		}
		f := field{typ: fieldType(ts)}
		allowed := []string{"type"}
		switch f.typ {
		case typeKeyword, typeLong, typeInteger, typeUnsignedLong:
		case typeDate, typeDateNanos:
			allowed = append(allowed, "format")
			f.formats = []string{"strict_date_optional_time", "epoch_millis"}
			if fr, has := dm["format"]; has {
				fs, e := stringOf(fr, name+".format")
				if e != nil {
					return "", nil, errf(400, "mapper_parsing_exception", "%s", e.reason)
				}
				f.formats = strings.Split(fs, "||")
				for _, x := range f.formats {
					if !slices.Contains([]string{"strict_date_optional_time", "strict_date_optional_time_nanos", "epoch_millis"}, x) {
						return "", nil, errf(400, "mapper_parsing_exception", "esfake: date format [%s] of field [%s] is not supported", x, name)
					}
				}
			}
		default:
			return "", nil, errf(400, "mapper_parsing_exception", "No handler for type [%s] declared on field [%s] (esfake)", ts, name)
		}
		for k := range dm {
			if !slices.Contains(allowed, k) {
				return "", nil, errf(400, "mapper_parsing_exception", "unknown parameter [%s] on mapper [%s] of type [%s] (esfake)", k, name, ts)
			}
		}
		fields[name] = f
	}
	return dynamic, fields, nil
}

func parseSettings(raw json.RawMessage) (shards, replicas int64, e *apiError) {
	shards, replicas = 1, 1
	if raw == nil {
		return shards, replicas, nil
	}
	m, e := object(raw, "settings")
	if e != nil {
		return 0, 0, e
	}
	flat := map[string]json.RawMessage{}
	for k, v := range m {
		if k == "index" {
			sub, e := object(v, "settings.index")
			if e != nil {
				return 0, 0, e
			}
			for sk, sv := range sub {
				flat["index."+sk] = sv
			}
			continue
		}
		if !strings.HasPrefix(k, "index.") {
			k = "index." + k
		}
		flat[k] = v
	}
	for k, v := range flat {
		switch k {
		case "index.number_of_shards":
			if shards, e = intOf(v, k); e != nil {
				return 0, 0, e
			}
			if shards < 1 {
				return 0, 0, badRequest("Failed to parse value [%d] for setting [%s] must be >= 1", shards, k)
			}
		case "index.number_of_replicas":
			if replicas, e = intOf(v, k); e != nil {
				return 0, 0, e
			}
			if replicas < 0 {
				return 0, 0, badRequest("Failed to parse value [%d] for setting [%s] must be >= 0", replicas, k)
			}
		case "index.refresh_interval":
			if _, e := stringOf(v, k); e != nil {
				return 0, 0, e
			}
		default:
			return 0, 0, badRequest("unknown setting [%s] please check that any required plugins are installed, or check the breaking changes documentation for removed settings", k)
		}
	}
	return shards, replicas, nil
}

func validIndexName(name string) *apiError {
	invalid := func(why string) *apiError {
		return &apiError{status: 400, typ: "invalid_index_name_exception", reason: fmt.Sprintf("Invalid index name [%s], %s", name, why),
			extra: map[string]any{"index": name, "index_uuid": "_na_"}}
	}
	switch {
	case name == "" || name == "." || name == "..":
		return invalid("must not be empty, '.' or '..'")
	case strings.ToLower(name) != name:
		return invalid("must be lowercase")
	case strings.ContainsAny(name, `\/*?"<>| ,#:`):
		return invalid(`must not contain the following characters [ , ", *, \, <, |, ,, >, /, ?, #, :]`)
	case strings.HasPrefix(name, "-") || strings.HasPrefix(name, "_") || strings.HasPrefix(name, "+"):
		return invalid("must not start with '_', '-', or '+'")
	case len(name) > 255:
		return invalid("index name is too long")
	}
	return nil
}

// ---- name resolution ----

// aliasIndices lists the indices an alias points at, sorted.
func (h *Handler) aliasIndices(alias string) []*index {
	var out []*index
	for _, ix := range h.indices {
		if _, has := ix.aliases[alias]; has {
			out = append(out, ix)
		}
	}
	slices.SortFunc(out, func(a, b *index) int { return strings.Compare(a.name, b.name) })
	return out
}

// resolveRead resolves a comma-separated expression of index and alias
// names ("" or _all: every index).
func (h *Handler) resolveRead(expr string) ([]*index, *apiError) {
	if expr == "" || expr == "_all" {
		out := slices.Collect(maps.Values(h.indices))
		slices.SortFunc(out, func(a, b *index) int { return strings.Compare(a.name, b.name) })
		return out, nil
	}
	seen := map[string]bool{}
	var out []*index
	for _, name := range strings.Split(expr, ",") {
		if strings.ContainsAny(name, "*?") || strings.HasPrefix(name, "-") {
			return nil, badRequest("esfake: wildcard and exclusion expressions are not supported [%s]", name)
		}
		var found []*index
		if ix, has := h.indices[name]; has {
			found = []*index{ix}
		} else {
			found = h.aliasIndices(name)
		}
		if len(found) == 0 {
			return nil, indexNotFound(name)
		}
		for _, ix := range found {
			if !seen[ix.name] {
				seen[ix.name] = true
				out = append(out, ix)
			}
		}
	}
	return out, nil
}

// resolveWrite resolves a name to the index written through it: the index
// itself, or the write index of an alias. requireAlias refuses index names.
func (h *Handler) resolveWrite(name string, requireAlias bool) (*index, *apiError) {
	if ix, has := h.indices[name]; has {
		if requireAlias {
			e := indexNotFound(name)
			e.reason = fmt.Sprintf("no such index [%s] and [require_alias] request flag is [true] and [%s] is not an alias", name, name)
			return nil, e
		}
		return ix, nil
	}
	ixs := h.aliasIndices(name)
	if len(ixs) == 0 {
		e := indexNotFound(name)
		if requireAlias {
			e.reason = fmt.Sprintf("no such index [%s] and [require_alias] request flag is [true] and [%s] is not an alias", name, name)
		}
		return nil, e
	}
	if len(ixs) == 1 {
		if w := ixs[0].aliases[name].IsWriteIndex; w == nil || *w {
			return ixs[0], nil
		}
	}
	for _, ix := range ixs {
		if w := ix.aliases[name].IsWriteIndex; w != nil && *w {
			return ix, nil
		}
	}
	return nil, badRequest("no write index is defined for alias [%s]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index", name)
}

// resolveSingle resolves a name for a single-document read.
func (h *Handler) resolveSingle(name string) (*index, *apiError) {
	if ix, has := h.indices[name]; has {
		return ix, nil
	}
	ixs := h.aliasIndices(name)
	switch len(ixs) {
	case 0:
		return nil, indexNotFound(name)
	case 1:
		return ixs[0], nil
	}
	names := make([]string, len(ixs))
	for i, ix := range ixs {
		names[i] = ix.name
	}
	return nil, badRequest("alias [%s] has more than one index associated with it [%s], can't execute a single index op", name, strings.Join(names, ", "))
}

// ---- index endpoints ----

func (h *Handler) createIndex(q *request, name string) response {
	if e := q.allowParams("wait_for_active_shards", "timeout", "master_timeout"); e != nil {
		return fail(e)
	}
	if e := validIndexName(name); e != nil {
		return fail(e)
	}
	if ix, has := h.indices[name]; has {
		return fail(&apiError{status: 400, typ: "resource_already_exists_exception",
			reason: fmt.Sprintf("index [%s/%s] already exists", name, ix.uuid), extra: map[string]any{"index": name, "index_uuid": ix.uuid}})
	}
	if len(h.aliasIndices(name)) > 0 {
		return fail(&apiError{status: 400, typ: "invalid_index_name_exception",
			reason: fmt.Sprintf("Invalid index name [%s], already exists as alias", name), extra: map[string]any{"index": name, "index_uuid": "_na_"}})
	}
	body := q.body
	if len(strings.TrimSpace(string(body))) == 0 {
		body = []byte("{}")
	}
	m, e := object(body, "create index", "settings", "mappings", "aliases")
	if e != nil {
		return fail(e)
	}
	shards, replicas, e := parseSettings(m["settings"])
	if e != nil {
		return fail(e)
	}
	dynamic, fields, e := parseMapping(m["mappings"])
	if e != nil {
		return fail(e)
	}
	aliases := map[string]aliasProps{}
	if raw, has := m["aliases"]; has {
		am, e := object(raw, "aliases")
		if e != nil {
			return fail(e)
		}
		for alias, props := range am {
			if e := h.checkAliasName(alias); e != nil {
				return fail(e)
			}
			if alias == name {
				return fail(errf(400, "invalid_alias_name_exception", "Invalid alias name [%s]: an index or data stream exists with the same name as the alias", alias))
			}
			pm, e := object(props, "aliases."+alias, "is_write_index")
			if e != nil {
				return fail(e)
			}
			var p aliasProps
			if w, has := pm["is_write_index"]; has {
				b, e := boolOf(w, "is_write_index")
				if e != nil {
					return fail(e)
				}
				p.IsWriteIndex = &b
			}
			aliases[alias] = p
		}
	}
	mapping := m["mappings"]
	if mapping == nil {
		mapping = json.RawMessage(`{}`)
	}
	h.seq++
	h.indices[name] = &index{
		name: name, uuid: fmt.Sprintf("esfake-%06d", h.seq), created: time.Now(),
		dynamic: dynamic, fields: fields, mapping: mapping, shards: shards, replicas: replicas, aliases: aliases,
		docs: map[string]*document{}, tombs: map[string]int64{}, visible: map[string]*document{}, dirty: map[string]bool{},
	}
	return ok(map[string]any{"acknowledged": true, "shards_acknowledged": true, "index": name})
}

func (h *Handler) checkAliasName(alias string) *apiError {
	if e := validIndexName(alias); e != nil {
		return errf(400, "invalid_alias_name_exception", "Invalid alias name [%s]: %s", alias, e.reason)
	}
	if _, has := h.indices[alias]; has {
		return errf(400, "invalid_alias_name_exception", "Invalid alias name [%s]: an index or data stream exists with the same name as the alias", alias)
	}
	return nil
}

func (h *Handler) deleteIndex(q *request, expr string) response {
	if e := q.allowParams("timeout", "master_timeout"); e != nil {
		return fail(e)
	}
	var del []string
	for _, name := range strings.Split(expr, ",") {
		if strings.ContainsAny(name, "*?") || name == "_all" {
			return fail(badRequest("Wildcard expressions or all indices are not allowed"))
		}
		if _, has := h.indices[name]; !has {
			if len(h.aliasIndices(name)) > 0 {
				return fail(badRequest("The provided expression [%s] matches an alias, specify the corresponding concrete indices instead.", name))
			}
			return fail(indexNotFound(name))
		}
		del = append(del, name)
	}
	for _, name := range del {
		delete(h.indices, name)
	}
	return ok(map[string]any{"acknowledged": true})
}

func (h *Handler) indexInfo(ix *index) map[string]any {
	aliases := map[string]any{}
	for a, p := range ix.aliases {
		aliases[a] = p
	}
	return map[string]any{
		"aliases":  aliases,
		"mappings": ix.mapping,
		"settings": map[string]any{"index": map[string]any{
			"number_of_shards":   strconv.FormatInt(ix.shards, 10),
			"number_of_replicas": strconv.FormatInt(ix.replicas, 10),
			"uuid":               ix.uuid,
			"provided_name":      ix.name,
			"creation_date":      strconv.FormatInt(ix.created.UnixMilli(), 10),
		}},
	}
}

func (h *Handler) getIndex(q *request, expr string) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	ixs, e := h.resolveRead(expr)
	if e != nil {
		if q.method == "HEAD" {
			return response{status: 404}
		}
		return fail(e)
	}
	out := map[string]any{}
	for _, ix := range ixs {
		out[ix.name] = h.indexInfo(ix)
	}
	return ok(out)
}

func (h *Handler) getMapping(q *request, expr string) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	ixs, e := h.resolveRead(expr)
	if e != nil {
		return fail(e)
	}
	out := map[string]any{}
	for _, ix := range ixs {
		out[ix.name] = map[string]any{"mappings": ix.mapping}
	}
	return ok(out)
}

func (h *Handler) refresh(q *request, expr string) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	ixs, e := h.resolveRead(expr)
	if e != nil {
		return fail(e)
	}
	for _, ix := range ixs {
		ix.refresh()
	}
	n := len(ixs)
	return ok(map[string]any{"_shards": map[string]any{"total": n, "successful": n, "failed": 0}})
}

// refresh makes the writes since the last refresh searchable.
func (ix *index) refresh() {
	for id := range ix.dirty {
		if d, has := ix.docs[id]; has {
			ix.visible[id] = d
		} else {
			delete(ix.visible, id)
		}
	}
	clear(ix.dirty)
}
