package esfake

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strconv"
	"strings"
)

// writeOp is one index, create, update or delete of a document.
type writeOp struct {
	action      string // index, create, update, delete
	target      string
	id          string
	version     int64
	hasVersion  bool
	versionType string // internal, external, external_gte
	source      json.RawMessage
	// update
	doc         json.RawMessage
	docAsUpsert bool
}

// validate checks what Elasticsearch checks before running an action
// (ActionRequestValidationException: the whole request fails).
func (op *writeOp) validate() string {
	switch op.versionType {
	case "", "internal":
		if op.hasVersion {
			return "internal versioning can not be used for optimistic concurrency control. Please use `if_seq_no` and `if_primary_term` instead"
		}
	case "external", "external_gte":
		if op.action == "create" {
			return "create operations only support internal versioning. use index instead"
		}
		if op.action == "update" {
			return "only internal versioning is supported for update requests"
		}
		if !op.hasVersion {
			return fmt.Sprintf("version type [%s] requires a version", op.versionType)
		}
		if op.version < 0 {
			return fmt.Sprintf("illegal version value [%d] for version type [%s]", op.version, strings.ToUpper(op.versionType))
		}
	default:
		return fmt.Sprintf("esfake: version_type [%s] is not supported", op.versionType)
	}
	if op.id == "" && op.action != "index" && op.action != "create" {
		return "id is missing"
	}
	if len(op.id) > 512 {
		return fmt.Sprintf("id [%s] is too long, must be no longer than 512 bytes but was: %d", op.id, len(op.id))
	}
	return ""
}

func itemErr(ix, id string, e *apiError) map[string]any {
	c := e.cause()
	c["index"] = ix
	return map[string]any{"_index": ix, "_id": id, "status": e.status, "error": c}
}

// parseDoc checks a source against the mapping and extracts its values.
func (ix *index) parseDoc(id string, src json.RawMessage) (map[string]value, *apiError) {
	m, e := object(src, "document")
	if e != nil {
		return nil, errf(400, "document_parsing_exception", "[1:1] failed to parse: %s", e.reason)
	}
	vals := make(map[string]value, len(m))
	for name, raw := range m {
		f, mapped := ix.fields[name]
		if !mapped {
			switch ix.dynamic {
			case "strict":
				return nil, errf(400, "strict_dynamic_mapping_exception", "[1:2] mapping set to strict, dynamic introduction of [%s] within [_doc] is not allowed", name)
			case "false":
				continue
			}
			return nil, badRequest("esfake: dynamic mapping is not supported (field [%s] of document [%s])", name, id)
		}
		v, err := decodeValue(raw)
		if err != nil {
			return nil, errf(400, "document_parsing_exception", "[1:2] failed to parse field [%s]: %v", name, err)
		}
		if v == nil {
			continue
		}
		switch v.(type) {
		case []any, map[string]any:
			return nil, errf(400, "document_parsing_exception", "esfake: [1:2] field [%s]: arrays and objects are not supported", name)
		}
		val, why := f.parse(v)
		if why != "" {
			return nil, errf(400, "document_parsing_exception", "[1:2] failed to parse field [%s] of type [%s] in document with id '%s'. Preview of field's value: '%v' (%s)", name, f.typ, id, v, why)
		}
		vals[name] = val
	}
	return vals, nil
}

// apply runs a validated op on ix and returns the bulk item body and its
// status.
func (h *Handler) apply(ix *index, op *writeOp) (map[string]any, int) {
	if op.id == "" {
		h.seq++
		op.id = fmt.Sprintf("esfake-auto-%d", h.seq)
	}
	cur := ix.docs[op.id]
	base, exists := int64(0), cur != nil
	if exists {
		base = cur.version
	} else if v, has := ix.tombs[op.id]; has {
		base = v
	}
	_, hasBase := ix.tombs[op.id]
	hasBase = hasBase || exists
	conflict := func() (map[string]any, int) {
		e := &apiError{status: 409, typ: "version_conflict_engine_exception",
			reason: fmt.Sprintf("[%s]: version conflict, current version [%d] is higher or equal to the one provided [%d]", op.id, base, op.version),
			extra:  map[string]any{"index_uuid": ix.uuid, "shard": "0"}}
		if op.versionType == "external_gte" {
			e.reason = fmt.Sprintf("[%s]: version conflict, current version [%d] is higher than the one provided [%d]", op.id, base, op.version)
		}
		return itemErr(ix.name, op.id, e), 409
	}
	next := base + 1
	switch op.versionType {
	case "external":
		if hasBase && op.version <= base {
			return conflict()
		}
		next = op.version
	case "external_gte":
		if hasBase && op.version < base {
			return conflict()
		}
		next = op.version
	}
	if next > math.MaxInt64-1 {
		return itemErr(ix.name, op.id, badRequest("version overflow")), 400
	}

	result, status := "updated", 200
	var src json.RawMessage
	switch op.action {
	case "create":
		if exists {
			e := &apiError{status: 409, typ: "version_conflict_engine_exception",
				reason: fmt.Sprintf("[%s]: version conflict, document already exists (current version [%d])", op.id, base),
				extra:  map[string]any{"index_uuid": ix.uuid, "shard": "0"}}
			return itemErr(ix.name, op.id, e), 409
		}
		src, result, status = op.source, "created", 201
	case "index":
		src = op.source
		if !exists {
			result, status = "created", 201
		}
	case "update":
		switch {
		case exists:
			merged, e := mergeSource(cur.source, op.doc)
			if e != nil {
				return itemErr(ix.name, op.id, e), e.status
			}
			src = merged
		case op.docAsUpsert:
			src, result, status = op.doc, "created", 201
		default:
			e := &apiError{status: 404, typ: "document_missing_exception", reason: fmt.Sprintf("[%s]: document missing", op.id),
				extra: map[string]any{"index_uuid": ix.uuid, "shard": "0"}}
			return itemErr(ix.name, op.id, e), 404
		}
	case "delete":
		ix.seqNo++
		if !exists {
			if op.versionType != "" && op.versionType != "internal" {
				ix.tombs[op.id] = next
			}
			return map[string]any{"_index": ix.name, "_id": op.id, "_version": next, "result": "not_found",
				"_shards": shards(), "_seq_no": ix.seqNo, "_primary_term": 1, "status": 404}, 404
		}
		delete(ix.docs, op.id)
		ix.tombs[op.id] = next
		ix.dirty[op.id] = true
		return map[string]any{"_index": ix.name, "_id": op.id, "_version": next, "result": "deleted",
			"_shards": shards(), "_seq_no": ix.seqNo, "_primary_term": 1, "status": 200}, 200
	}
	vals, e := ix.parseDoc(op.id, src)
	if e != nil {
		return itemErr(ix.name, op.id, e), e.status
	}
	if op.action == "update" && exists && bytes.Equal(cur.source, src) {
		return map[string]any{"_index": ix.name, "_id": op.id, "_version": base, "result": "noop",
			"_shards": map[string]any{"total": 0, "successful": 0, "failed": 0}, "_seq_no": cur.seqNo, "_primary_term": 1, "status": 200}, 200
	}
	ix.seqNo++
	ix.order++
	ix.docs[op.id] = &document{index: ix.name, id: op.id, source: bytes.Clone(src), values: vals, version: next, seqNo: ix.seqNo, order: ix.order}
	delete(ix.tombs, op.id)
	ix.dirty[op.id] = true
	return map[string]any{"_index": ix.name, "_id": op.id, "_version": next, "result": result,
		"_shards": shards(), "_seq_no": ix.seqNo, "_primary_term": 1, "status": status}, status
}

func shards() map[string]any { return map[string]any{"total": 1, "successful": 1, "failed": 0} }

func mergeSource(old, partial json.RawMessage) (json.RawMessage, *apiError) {
	var a, b map[string]json.RawMessage
	if json.Unmarshal(old, &a) != nil {
		return nil, errf(400, "document_parsing_exception", "stored source is not an object")
	}
	if json.Unmarshal(partial, &b) != nil {
		return nil, errf(400, "document_parsing_exception", "[doc] is not an object")
	}
	for k, v := range b {
		a[k] = v
	}
	out, _ := json.Marshal(a)
	return out, nil
}

// refreshPolicy reads the refresh parameter.
func refreshPolicy(q *request) (bool, *apiError) {
	v, has := q.query["refresh"]
	if !has {
		return false, nil
	}
	switch v[0] {
	case "", "true", "wait_for":
		return true, nil
	case "false":
		return false, nil
	}
	return false, badRequest("Unknown value for refresh: [%s].", v[0])
}

func paramBool(q *request, name string) (bool, *apiError) {
	v, has := q.query[name]
	if !has {
		return false, nil
	}
	switch v[0] {
	case "", "true":
		return true, nil
	case "false":
		return false, nil
	}
	return false, badRequest("Failed to parse value [%s] as only [true] or [false] are allowed.", v[0])
}

// ---- _bulk ----

var bulkMetaKeys = []string{"_index", "_id", "version", "version_type", "require_alias"}

func (h *Handler) bulk(q *request, pathIndex string) response {
	if e := q.allowParams("refresh", "require_alias", "timeout", "wait_for_active_shards"); e != nil {
		return fail(e)
	}
	refresh, e := refreshPolicy(q)
	if e != nil {
		return fail(e)
	}
	requireAlias, e := paramBool(q, "require_alias")
	if e != nil {
		return fail(e)
	}
	if len(q.body) == 0 {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"))
	}
	if q.body[len(q.body)-1] != '\n' {
		return fail(badRequest("The bulk request must be terminated by a newline [\\n]"))
	}
	lines := bytes.Split(q.body[:len(q.body)-1], []byte("\n"))
	type item struct {
		op           writeOp
		requireAlias bool
	}
	var items []item
	for i := 0; i < len(lines); i++ {
		if len(bytes.TrimSpace(lines[i])) == 0 {
			continue
		}
		action, metaRaw, e := single(lines[i], fmt.Sprintf("action line %d", i+1))
		if e != nil {
			return fail(badRequest("Malformed action/metadata line [%d], %s", i+1, e.reason))
		}
		if !slices.Contains([]string{"index", "create", "update", "delete"}, action) {
			return fail(badRequest("Malformed action/metadata line [%d], expected field [create], [delete], [index] or [update] but found [%s]", i+1, action))
		}
		meta, e := object(metaRaw, action)
		if e != nil {
			return fail(badRequest("Malformed action/metadata line [%d], %s", i+1, e.reason))
		}
		it := item{op: writeOp{action: action, target: pathIndex}, requireAlias: requireAlias}
		for k, v := range meta {
			switch k {
			case "_index":
				it.op.target, e = stringOf(v, k)
			case "_id":
				it.op.id, e = stringOf(v, k)
			case "version":
				it.op.version, e = intOf(v, k)
				it.op.hasVersion = true
			case "version_type":
				it.op.versionType, e = stringOf(v, k)
			case "require_alias":
				it.requireAlias, e = boolOf(v, k)
			default:
				return fail(badRequest("Action/metadata line [%d] contains an unknown parameter [%s]", i+1, k))
			}
			if e != nil {
				return fail(e)
			}
		}
		if it.op.target == "" {
			return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: index is missing;"))
		}
		if action != "delete" {
			i++
			if i >= len(lines) || len(bytes.TrimSpace(lines[i])) == 0 {
				return fail(badRequest("The bulk request must be terminated by a newline [\\n]"))
			}
			if action == "update" {
				um, e := object(lines[i], "update", "doc", "doc_as_upsert")
				if e != nil {
					return fail(e)
				}
				if um["doc"] == nil {
					return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: script or doc is missing;"))
				}
				it.op.doc = um["doc"]
				if raw, has := um["doc_as_upsert"]; has {
					if it.op.docAsUpsert, e = boolOf(raw, "doc_as_upsert"); e != nil {
						return fail(e)
					}
				}
			} else {
				it.op.source = bytes.Clone(lines[i])
			}
		}
		if msg := it.op.validate(); msg != "" {
			return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: %s;", msg))
		}
		items = append(items, it)
	}
	if len(items) == 0 {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: no requests added;"))
	}
	out := make([]any, 0, len(items))
	errors := false
	touched := map[*index]bool{}
	for _, it := range items {
		ix, e := h.resolveWrite(it.op.target, it.requireAlias)
		if e != nil {
			errors = true
			out = append(out, map[string]any{it.op.action: itemErr(it.op.target, it.op.id, e)})
			continue
		}
		res, status := h.apply(ix, &it.op)
		if status >= 300 && !(it.op.action == "delete" && status == 404) {
			errors = true
		}
		touched[ix] = true
		out = append(out, map[string]any{it.op.action: res})
	}
	if refresh {
		for ix := range touched {
			ix.refresh()
		}
	}
	return ok(map[string]any{"took": 1, "errors": errors, "items": out})
}

// ---- single documents ----

func (h *Handler) indexDoc(q *request, target, id string) response {
	if e := q.allowParams("refresh", "version", "version_type", "op_type", "require_alias", "timeout"); e != nil {
		return fail(e)
	}
	refresh, e := refreshPolicy(q)
	if e != nil {
		return fail(e)
	}
	requireAlias, e := paramBool(q, "require_alias")
	if e != nil {
		return fail(e)
	}
	op := writeOp{action: "index", target: target, id: id, source: q.body, versionType: q.param("version_type")}
	switch q.param("op_type") {
	case "", "index":
	case "create":
		op.action = "create"
	default:
		return fail(badRequest("opType must be 'create' or 'index', found: [%s]", q.param("op_type")))
	}
	if v := q.param("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fail(badRequest("failed to parse version [%s]", v))
		}
		op.version, op.hasVersion = n, true
	}
	if msg := op.validate(); msg != "" {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: %s;", msg))
	}
	ix, e := h.resolveWrite(target, requireAlias)
	if e != nil {
		return fail(e)
	}
	res, status := h.apply(ix, &op)
	if status >= 300 {
		return response{status: status, body: (&apiError{status: status, typ: errType(res), reason: errReason(res)}).body()}
	}
	if refresh {
		ix.refresh()
	}
	delete(res, "status")
	return response{status: status, body: res}
}

func errType(item map[string]any) string {
	if e, has := item["error"].(map[string]any); has {
		return fmt.Sprint(e["type"])
	}
	return ""
}

func errReason(item map[string]any) string {
	if e, has := item["error"].(map[string]any); has {
		return fmt.Sprint(e["reason"])
	}
	return ""
}

func (h *Handler) deleteDoc(q *request, target, id string) response {
	if e := q.allowParams("refresh", "version", "version_type", "timeout"); e != nil {
		return fail(e)
	}
	refresh, e := refreshPolicy(q)
	if e != nil {
		return fail(e)
	}
	op := writeOp{action: "delete", target: target, id: id, versionType: q.param("version_type")}
	if v := q.param("version"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fail(badRequest("failed to parse version [%s]", v))
		}
		op.version, op.hasVersion = n, true
	}
	if msg := op.validate(); msg != "" {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: %s;", msg))
	}
	ix, e := h.resolveWrite(target, false)
	if e != nil {
		return fail(e)
	}
	res, status := h.apply(ix, &op)
	if _, isErr := res["error"]; isErr {
		return response{status: status, body: (&apiError{status: status, typ: errType(res), reason: errReason(res)}).body()}
	}
	if refresh {
		ix.refresh()
	}
	delete(res, "status")
	return response{status: status, body: res}
}

func docBody(ix *index, id string, d *document, withSource bool) map[string]any {
	if d == nil {
		return map[string]any{"_index": ix.name, "_id": id, "found": false}
	}
	out := map[string]any{"_index": ix.name, "_id": id, "_version": d.version, "_seq_no": d.seqNo, "_primary_term": 1, "found": true}
	if withSource {
		out["_source"] = d.source
	}
	return out
}

func (h *Handler) getDoc(q *request, target, id string) response {
	if e := q.allowParams("realtime", "_source"); e != nil {
		return fail(e)
	}
	withSource := true
	if v, has := q.query["_source"]; has {
		switch v[0] {
		case "true":
		case "false":
			withSource = false
		default:
			return fail(badRequest("esfake: _source filtering is not supported"))
		}
	}
	realtime := true
	if v, has := q.query["realtime"]; has && v[0] == "false" {
		realtime = false
	}
	ix, e := h.resolveSingle(target)
	if e != nil {
		return fail(e)
	}
	d := ix.docs[id]
	if !realtime {
		d = ix.visible[id]
	}
	if d == nil {
		return response{status: http.StatusNotFound, body: docBody(ix, id, nil, false)}
	}
	return ok(docBody(ix, id, d, withSource))
}

// ---- _mget ----

func (h *Handler) mget(q *request, target string) response {
	if e := q.allowParams("realtime"); e != nil {
		return fail(e)
	}
	m, e := object(q.body, "mget", "ids", "docs")
	if e != nil {
		return fail(e)
	}
	type ref struct{ index, id string }
	var refs []ref
	if raw, has := m["ids"]; has {
		if target == "" {
			return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: index is missing for doc 0;"))
		}
		var ids []string
		if err := json.Unmarshal(raw, &ids); err != nil {
			return fail(parsingErr("[ids] expected an array of strings"))
		}
		for _, id := range ids {
			refs = append(refs, ref{target, id})
		}
	}
	if raw, has := m["docs"]; has {
		var docs []json.RawMessage
		if err := json.Unmarshal(raw, &docs); err != nil {
			return fail(parsingErr("[docs] expected an array"))
		}
		for i, d := range docs {
			dm, e := object(d, "docs", "_index", "_id")
			if e != nil {
				return fail(e)
			}
			r := ref{index: target}
			if v, has := dm["_index"]; has {
				if r.index, e = stringOf(v, "_index"); e != nil {
					return fail(e)
				}
			}
			if v, has := dm["_id"]; has {
				if r.id, e = stringOf(v, "_id"); e != nil {
					return fail(e)
				}
			}
			if r.index == "" {
				return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: index is missing for doc %d;", i))
			}
			if r.id == "" {
				return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: id is missing for doc %d;", i))
			}
			refs = append(refs, r)
		}
	}
	if len(refs) == 0 {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: no documents to get;"))
	}
	out := make([]any, 0, len(refs))
	for _, r := range refs {
		ix, e := h.resolveSingle(r.index)
		if e != nil {
			c := e.cause()
			out = append(out, map[string]any{"_index": r.index, "_id": r.id, "error": c})
			continue
		}
		out = append(out, docBody(ix, r.id, ix.docs[r.id], true))
	}
	return ok(map[string]any{"docs": out})
}
