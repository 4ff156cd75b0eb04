package esfake

import (
	"encoding/json"
	"maps"
	"slices"
	"strings"
)

// getAliases answers GET /_alias[/{name}], GET /_aliases and GET
// /{index}/_alias.
func (h *Handler) getAliases(q *request, target, name string) response {
	if e := q.allowParams(); e != nil {
		return fail(e)
	}
	var ixs []*index
	if target != "" {
		var e *apiError
		if ixs, e = h.resolveRead(target); e != nil {
			return fail(e)
		}
	} else {
		ixs, _ = h.resolveRead("")
	}
	var names []string
	if name != "" {
		names = strings.Split(name, ",")
		for _, n := range names {
			if strings.ContainsAny(n, "*?") {
				return fail(badRequest("esfake: alias wildcards are not supported [%s]", n))
			}
		}
	}
	out := map[string]any{}
	found := map[string]bool{}
	for _, ix := range ixs {
		aliases := map[string]any{}
		for a, p := range ix.aliases {
			if names == nil || slices.Contains(names, a) {
				aliases[a] = p
				found[a] = true
			}
		}
		if names == nil || len(aliases) > 0 {
			out[ix.name] = map[string]any{"aliases": aliases}
		}
	}
	if names != nil {
		var missing []string
		for _, n := range names {
			if !found[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) > 0 {
			msg := "alias [" + strings.Join(missing, ",") + "] missing"
			if len(missing) > 1 {
				msg = "aliases [" + strings.Join(missing, ",") + "] missing"
			}
			if len(out) == 0 {
				return response{status: 404, body: map[string]any{"error": msg, "status": 404}}
			}
			out["error"], out["status"] = msg, 404
			return response{status: 404, body: out}
		}
	}
	return ok(out)
}

// aliasState is the alias table being changed by one _aliases request.
type aliasState struct {
	aliases map[string]map[string]aliasProps // index -> alias -> props
	removed map[string]bool                  // indices removed by remove_index
}

func (h *Handler) snapshotAliases() *aliasState {
	st := &aliasState{aliases: map[string]map[string]aliasProps{}, removed: map[string]bool{}}
	for n, ix := range h.indices {
		st.aliases[n] = maps.Clone(ix.aliases)
	}
	return st
}

func (st *aliasState) exists(ix string) bool {
	_, has := st.aliases[ix]
	return has && !st.removed[ix]
}

func (st *aliasState) isAlias(name string) bool {
	for ix, as := range st.aliases {
		if _, has := as[name]; has && !st.removed[ix] {
			return true
		}
	}
	return false
}

func (h *Handler) commitAliases(st *aliasState) {
	for n := range st.removed {
		delete(h.indices, n)
	}
	for n, as := range st.aliases {
		if ix, has := h.indices[n]; has {
			ix.aliases = as
		}
	}
}

func (h *Handler) updateAliases(q *request) response {
	if e := q.allowParams("timeout", "master_timeout"); e != nil {
		return fail(e)
	}
	m, e := object(q.body, "aliases", "actions")
	if e != nil {
		return fail(e)
	}
	var actions []json.RawMessage
	if err := json.Unmarshal(m["actions"], &actions); err != nil || len(actions) == 0 {
		return fail(errf(400, "action_request_validation_exception", "Validation Failed: 1: No action specified;"))
	}
	st := h.snapshotAliases()
	for _, raw := range actions {
		kind, body, e := single(raw, "actions")
		if e != nil {
			return fail(e)
		}
		if e := h.aliasAction(st, kind, body); e != nil {
			return fail(e)
		}
	}
	h.commitAliases(st)
	return ok(map[string]any{"acknowledged": true, "errors": false})
}

func (h *Handler) aliasAction(st *aliasState, kind string, body json.RawMessage) *apiError {
	var allowed []string
	switch kind {
	case "add":
		allowed = []string{"index", "alias", "is_write_index"}
	case "remove":
		allowed = []string{"index", "alias", "must_exist"}
	case "remove_index":
		allowed = []string{"index"}
	default:
		return errf(400, "x_content_parse_exception", "[aliases] unknown field [%s] (esfake supports add, remove, remove_index)", kind)
	}
	m, e := object(body, kind, allowed...)
	if e != nil {
		return e
	}
	str := func(k string) (string, *apiError) {
		raw, has := m[k]
		if !has {
			return "", errf(400, "action_request_validation_exception", "Validation Failed: 1: [%s] is unsupported for [%s] or missing;", k, kind)
		}
		return stringOf(raw, k)
	}
	ixName, e := str("index")
	if e != nil {
		return e
	}
	if strings.ContainsAny(ixName, "*?,") {
		return badRequest("esfake: wildcards and lists are not supported in alias actions [%s]", ixName)
	}
	if !st.exists(ixName) {
		if kind == "remove_index" && st.isAlias(ixName) {
			return badRequest("The provided expression [%s] matches an alias, specify the corresponding concrete indices instead.", ixName)
		}
		return indexNotFound(ixName)
	}
	if kind == "remove_index" {
		st.removed[ixName] = true
		return nil
	}
	alias, e := str("alias")
	if e != nil {
		return e
	}
	switch kind {
	case "add":
		if e := h.checkAliasName(alias); e != nil {
			return e
		}
		var p aliasProps
		if raw, has := m["is_write_index"]; has {
			b, e := boolOf(raw, "is_write_index")
			if e != nil {
				return e
			}
			p.IsWriteIndex = &b
		}
		st.aliases[ixName][alias] = p
	case "remove":
		mustExist := true // unset: Elasticsearch 8 answers 404 for a missing alias too
		if raw, has := m["must_exist"]; has {
			if mustExist, e = boolOf(raw, "must_exist"); e != nil {
				return e
			}
		}
		if _, has := st.aliases[ixName][alias]; !has {
			if mustExist {
				return errf(404, "aliases_not_found_exception", "aliases [%s] missing", alias)
			}
			return nil
		}
		delete(st.aliases[ixName], alias)
	}
	return nil
}

// putDeleteAlias answers PUT/POST/DELETE /{index}/_alias/{name}.
func (h *Handler) putDeleteAlias(q *request, ixName, alias string) response {
	if e := q.allowParams("timeout", "master_timeout"); e != nil {
		return fail(e)
	}
	st := h.snapshotAliases()
	var e *apiError
	if q.method == "DELETE" {
		e = h.aliasAction(st, "remove", mustMarshal(map[string]any{"index": ixName, "alias": alias}))
	} else {
		if len(strings.TrimSpace(string(q.body))) > 0 {
			if _, e := object(q.body, "alias"); e != nil {
				return fail(e)
			}
			if string(q.body) != "{}" {
				return fail(badRequest("esfake: alias properties in PUT /{index}/_alias are not supported"))
			}
		}
		e = h.aliasAction(st, "add", mustMarshal(map[string]any{"index": ixName, "alias": alias}))
	}
	if e != nil {
		return fail(e)
	}
	h.commitAliases(st)
	return ok(map[string]any{"acknowledged": true})
}

func mustMarshal(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}
