package httpapi

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestIssueAndGetBatch(t *testing.T) {
	e := newEnv(t)
	r := e.post("/v1/batches", e.admin, batchBody(map[string]any{
		"kind": "percent", "amount_off": nil, "percent_off": 15, "max_discount": 3000,
		"scope":     map[string]any{"kind": "merchant", "ids": []string{"m1", "m2"}},
		"exclusive": true, "per_user_limit": 2, "valid_days": nil,
		"valid_from": t0.Format(time.RFC3339), "valid_until": t0.Add(72 * time.Hour).Format(time.RFC3339),
	}))
	expectStatus(t, r, http.StatusCreated)
	b := decode[BatchView](t, r)
	if b.ID == "" || b.Status != "running" || b.TotalStock != 10 || b.Remaining != 10 || b.Reserved != 0 ||
		b.Rules.Kind != "percent" || b.Rules.PercentOff != 15 || b.Rules.MaxDiscount != 3000 || !b.Rules.Exclusive ||
		b.Rules.Scope.Kind != "merchant" || len(b.Rules.Scope.IDs) != 2 || b.Rules.PerUserLimit != 2 ||
		!b.Rules.ValidUntil.Equal(t0.Add(72*time.Hour)) || b.Version != 0 || !b.IssuedAt.Equal(t0) {
		t.Fatalf("issued batch = %+v", b)
	}
	g := e.get("/v1/batches/"+b.ID, e.admin)
	expectStatus(t, g, http.StatusOK)
	if got := decode[BatchView](t, g); got.ID != b.ID || got.Remaining != 10 || got.Rules.Name != "flash 5 off" {
		t.Fatalf("GET = %+v", got)
	}
	// Times are RFC 3339 in the JSON.
	if !bytes.Contains(g.Body, []byte(`"claim_starts_at":"2030-06-01T11:00:00Z"`)) {
		t.Fatalf("times not RFC 3339: %s", g.Body)
	}
	expectError(t, e.get("/v1/batches/nope", e.admin), http.StatusNotFound, CodeNotFound)
	expectError(t, e.get("/v1/batches/"+strings.Repeat("x", 200), e.admin), http.StatusBadRequest, CodeInvalidArgument)
}

func TestIssueBatchRejectsBadBodies(t *testing.T) {
	e := newEnv(t)
	valid := batchBody(nil)
	cases := []struct {
		name  string
		body  any
		field string // the message names it
	}{
		{"empty body", "", "body"},
		{"whitespace body", "  \n ", "body"},
		{"null body", "null", "null"},
		{"array body", "[]", "object"},
		{"string body", `"x"`, "object"},
		{"malformed JSON", `{"name": "x",`, "malformed"},
		{"malformed JSON 2", `{"name" "x"}`, "malformed"},
		{"unknown field", batchBody(map[string]any{"colour": "red"}), "colour"},
		{"unknown nested field", batchBody(map[string]any{"scope": map[string]any{"kind": "all", "x": 1}}), "x"},
		{"trailing garbage", mustJSON(valid) + "garbage", "after"},
		{"trailing object", mustJSON(valid) + `{}`, "after"},
		{"string for a number", batchBody(map[string]any{"amount_off": "500"}), "amount_off"},
		{"float money", batchBody(map[string]any{"amount_off": 1.5}), "amount_off"},
		{"float stock", batchBody(map[string]any{"total_stock": 2.5}), "total_stock"},
		{"huge number", batchBody(map[string]any{"amount_off": 1e30}), "amount_off"},
		{"number for a string", batchBody(map[string]any{"name": 7}), "name"},
		{"object for a string", batchBody(map[string]any{"kind": map[string]any{}}), "kind"},
		{"string for ids", batchBody(map[string]any{"scope": map[string]any{"kind": "merchant", "ids": "m1"}}), "scope.ids"},
		{"string for bool", batchBody(map[string]any{"exclusive": "yes"}), "exclusive"},
		{"negative money", batchBody(map[string]any{"amount_off": -1}), "amount_off"},
		{"negative threshold", batchBody(map[string]any{"kind": "threshold", "threshold": -5}), "threshold"},
		{"too much money", batchBody(map[string]any{"amount_off": 1_000_000_000_001}), "amount_off"},
		{"missing name", batchBody(map[string]any{"name": nil}), "name"},
		{"missing kind", batchBody(map[string]any{"kind": nil}), "kind"},
		{"missing issuer", batchBody(map[string]any{"issuer": nil}), "issuer"},
		{"missing scope", batchBody(map[string]any{"scope": nil}), "scope.kind"},
		{"missing stock", batchBody(map[string]any{"total_stock": nil}), "total_stock"},
		{"zero stock", batchBody(map[string]any{"total_stock": 0}), "total_stock"},
		{"missing per-user limit", batchBody(map[string]any{"per_user_limit": nil}), "per_user_limit"},
		{"missing claim start", batchBody(map[string]any{"claim_starts_at": nil}), "claim_starts_at"},
		{"missing validity", batchBody(map[string]any{"valid_days": nil}), "valid_days"},
		{"both validities", batchBody(map[string]any{"valid_from": t0.Format(time.RFC3339), "valid_until": t0.Add(time.Hour).Format(time.RFC3339)}), "valid_days"},
		{"bad time", batchBody(map[string]any{"claim_ends_at": "tomorrow"}), "claim_ends_at"},
		{"time without zone", batchBody(map[string]any{"claim_ends_at": "2030-06-02T00:00:00"}), "claim_ends_at"},
		{"number for a time", batchBody(map[string]any{"claim_ends_at": 1700000000}), "claim_ends_at"},
		{"ended window", batchBody(map[string]any{"claim_ends_at": t0.Add(-time.Minute).Format(time.RFC3339)}), "claim_ends_at"},
		{"bad audience", batchBody(map[string]any{"audience": "vip"}), "audience"},
		{"bad kind", batchBody(map[string]any{"kind": "free"}), "kind"},
		{"percent out of range", batchBody(map[string]any{"kind": "percent", "amount_off": nil, "percent_off": 100}), "percent_off"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := e.post("/v1/batches", e.admin, tc.body)
			msg := expectError(t, r, http.StatusBadRequest, CodeInvalidArgument)
			t.Log(msg)
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message %q does not name %q", msg, tc.field)
			}
		})
	}
	if pos, _ := e.repo.Store().LastPosition(t.Context()); pos != 0 {
		t.Fatalf("refused requests appended events (position %d)", pos)
	}
}

func mustJSON(v any) string {
	b, err := jsonMarshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func TestBodyLimit(t *testing.T) {
	e := newEnv(t)
	big := `{"name":"` + strings.Repeat("x", 1<<20) + `"}`
	// With a Content-Length.
	expectError(t, e.post("/v1/batches", e.admin, big), http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
	// Chunked, without a Content-Length: the limit applies while reading.
	r := e.do(req{Method: http.MethodPost, Path: "/v1/batches", Token: e.admin, Body: io.MultiReader(strings.NewReader(big))})
	expectError(t, r, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
	// On the idempotent path too (the middleware reads the body first).
	r = e.post("/v1/batches", e.admin, big, HeaderIdempotencyKey, "k-big")
	expectError(t, r, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
	r = e.do(req{Method: http.MethodPost, Path: "/v1/coupons/c/lock", Token: e.service, Body: io.MultiReader(strings.NewReader(big)),
		Headers: map[string]string{HeaderIdempotencyKey: "k-big"}})
	expectError(t, r, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
	// Just under the limit is decoded (and refused for its content, not its size).
	under := `{"name":"` + strings.Repeat("x", (1<<20)-20) + `"}`
	expectError(t, e.post("/v1/batches", e.admin, under), http.StatusBadRequest, CodeInvalidArgument)
}

func TestIssueBatchIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	body := batchBody(nil)
	r1 := e.post("/v1/batches", e.admin, body, HeaderIdempotencyKey, "issue-1")
	expectStatus(t, r1, http.StatusCreated)
	b1 := decode[BatchView](t, r1)
	if b1.ID != BatchIDFor("boss", "issue-1") {
		t.Fatalf("batch id %s is not derived from the key", b1.ID)
	}
	r2 := e.post("/v1/batches", e.admin, body, HeaderIdempotencyKey, "issue-1")
	expectStatus(t, r2, http.StatusCreated)
	if r2.Header.Get(HeaderIdempotentReplayed) != "true" || !bytes.Equal(r1.Body, r2.Body) {
		t.Fatalf("replay: header %q, body %s vs %s", r2.Header.Get(HeaderIdempotentReplayed), r2.Body, r1.Body)
	}
	// Same key, another body: 409.
	msg := expectError(t, e.post("/v1/batches", e.admin, batchBody(map[string]any{"name": "other"}), HeaderIdempotencyKey, "issue-1"),
		http.StatusConflict, CodeConflict)
	if !strings.Contains(msg, "Idempotency-Key") {
		t.Errorf("message %q", msg)
	}
	// Another admin with the same key issues another batch (keys are per caller).
	r3 := e.post("/v1/batches", e.token("boss2", RoleAdmin), body, HeaderIdempotencyKey, "issue-1")
	expectStatus(t, r3, http.StatusCreated)
	if decode[BatchView](t, r3).ID == b1.ID {
		t.Fatal("two callers' keys collide")
	}
	// Without a key, each POST is a new batch.
	a, b := e.issue(nil), e.issue(nil)
	if a.ID == b.ID {
		t.Fatal("two issues without a key share an id")
	}
	if pos, _ := e.repo.Store().LastPosition(t.Context()); pos != 4 {
		t.Fatalf("position %d, want 4 events (one per distinct batch)", pos)
	}
}

func TestBadIdempotencyKey(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	for name, key := range map[string]string{
		"too long":  strings.Repeat("k", 256),
		"non-ASCII": "clé",
		"control":   "a\tb",
		"empty":     "",
	} {
		t.Run(name, func(t *testing.T) {
			for _, rq := range []req{
				{Method: http.MethodPost, Path: "/v1/batches", Token: e.admin, Body: batchBody(nil)},
				{Method: http.MethodPost, Path: "/v1/batches/" + b.ID + "/claim", Token: e.bob},
				{Method: http.MethodPost, Path: "/v1/batches/" + b.ID + "/stock", Token: e.admin, Body: `{"add":1}`},
				{Method: http.MethodPost, Path: "/v1/coupons/" + c.ID + "/lock", Token: e.service, Body: `{"order_id":"o","user_id":"alice"}`},
			} {
				hr, _ := http.NewRequest(rq.Method, e.ts.URL+rq.Path, strings.NewReader(fmt.Sprint(bodyString(rq.Body))))
				hr.Header.Set("Authorization", "Bearer "+rq.Token)
				hr.Header[HeaderIdempotencyKey] = []string{key} // raw, even when empty
				res, err := e.ts.Client().Do(hr)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(res.Body)
				_ = res.Body.Close()
				r := resp{Status: res.StatusCode, Header: res.Header, Body: body}
				msg := expectError(t, r, http.StatusBadRequest, CodeInvalidArgument)
				if !strings.Contains(msg, HeaderIdempotencyKey) {
					t.Errorf("%s: message %q", rq.Path, msg)
				}
			}
		})
	}
	// 255 printable bytes are fine.
	expectStatus(t, e.post("/v1/batches", e.admin, batchBody(nil), HeaderIdempotencyKey, strings.Repeat("~", 255)), http.StatusCreated)
	// Nothing else was written: the first batch, its claim and the last batch.
	if pos, _ := e.repo.Store().LastPosition(t.Context()); pos != 3 {
		t.Fatalf("position %d, want 3", pos)
	}
}

func bodyString(b any) string {
	switch v := b.(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		return mustJSON(v)
	}
}

func TestBatchActivity(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	path := "/v1/batches/" + b.ID
	act := func(a string, body any) resp { return e.post(path+"/"+a, e.admin, body) }

	r := act("pause", nil)
	expectStatus(t, r, http.StatusOK)
	if v := decode[BatchView](t, r); v.Status != "paused" || v.ID != b.ID {
		t.Fatalf("after pause: %+v", v)
	}
	expectStatus(t, act("pause", "{}"), http.StatusOK) // no-op, empty object body accepted
	expectError(t, e.post(path+"/claim", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	expectError(t, act("pause", `{"why":"x"}`), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, act("pause", `null`), http.StatusBadRequest, CodeInvalidArgument)

	r = act("resume", nil)
	expectStatus(t, r, http.StatusOK)
	if v := decode[BatchView](t, r); v.Status != "running" {
		t.Fatalf("after resume: %+v", v)
	}
	e.claim(b.ID, e.alice)

	r = act("stop", nil)
	expectStatus(t, r, http.StatusOK)
	if v := decode[BatchView](t, r); v.Status != "stopped" {
		t.Fatalf("after stop: %+v", v)
	}
	expectStatus(t, act("stop", nil), http.StatusOK) // stopping again changes nothing
	expectError(t, e.post(path+"/claim", e.bob, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	expectError(t, act("resume", nil), http.StatusConflict, CodeConflict)
	expectError(t, act("pause", nil), http.StatusConflict, CodeConflict)
	expectError(t, e.post(path+"/stock", e.admin, map[string]int{"add": 1}), http.StatusConflict, CodeConflict)

	for _, a := range []string{"pause", "resume", "stop"} {
		expectError(t, e.post("/v1/batches/nope/"+a, e.admin, nil), http.StatusNotFound, CodeNotFound)
	}
}

func TestAddStock(t *testing.T) {
	e := newEnv(t)
	b := e.issue(map[string]any{"total_stock": 1})
	path := "/v1/batches/" + b.ID + "/stock"
	e.claim(b.ID, e.alice)
	expectError(t, e.post("/v1/batches/"+b.ID+"/claim", e.bob, nil), http.StatusGone, CodeSoldOut)

	r := e.post(path, e.admin, map[string]int{"add": 2}, HeaderIdempotencyKey, "stock-1")
	expectStatus(t, r, http.StatusOK)
	if v := decode[BatchView](t, r); v.TotalStock != 3 || v.Remaining != 2 || v.Reserved != 1 {
		t.Fatalf("after adding: %+v", v)
	}
	// A retry with the same key adds nothing.
	r2 := e.post(path, e.admin, map[string]int{"add": 2}, HeaderIdempotencyKey, "stock-1")
	expectStatus(t, r2, http.StatusOK)
	if r2.Header.Get(HeaderIdempotentReplayed) != "true" {
		t.Fatal("retry not marked as a replay")
	}
	if v := decode[BatchView](t, e.get("/v1/batches/"+b.ID, e.admin)); v.TotalStock != 3 || v.Remaining != 2 {
		t.Fatalf("after the retry: %+v", v)
	}
	e.claim(b.ID, e.bob)

	for name, body := range map[string]any{
		"zero":     `{"add":0}`,
		"negative": `{"add":-3}`,
		"float":    `{"add":1.5}`,
		"string":   `{"add":"2"}`,
		"missing":  `{}`,
		"unknown":  `{"add":1,"more":2}`,
		"empty":    ``,
		"too much": `{"add":1000000000}`,
	} {
		msg := expectError(t, e.post(path, e.admin, body), http.StatusBadRequest, CodeInvalidArgument)
		if name != "empty" && name != "unknown" && !strings.Contains(msg, "add") {
			t.Errorf("%s: message %q does not name add", name, msg)
		}
	}
	expectError(t, e.post("/v1/batches/nope/stock", e.admin, `{"add":1}`), http.StatusNotFound, CodeNotFound)
}

func TestChangeRules(t *testing.T) {
	e := newEnv(t)
	later := map[string]any{
		"claim_starts_at": t0.Add(time.Hour).Format(time.RFC3339),
		"claim_ends_at":   t0.Add(48 * time.Hour).Format(time.RFC3339),
	}
	b := e.issue(later)
	if b.Status != "scheduled" {
		t.Fatalf("status %s", b.Status)
	}
	patch := func(id string, body any) resp {
		return e.do(req{Method: http.MethodPatch, Path: "/v1/batches/" + id, Token: e.admin, Body: body})
	}
	rules := batchBody(later)
	delete(rules, "total_stock")
	rules["amount_off"] = 800
	r := patch(b.ID, rules)
	expectStatus(t, r, http.StatusOK)
	if v := decode[BatchView](t, r); v.RuleVersion != 1 || v.Rules.AmountOff != 800 || v.Version != 1 {
		t.Fatalf("after PATCH: %+v", v)
	}
	expectError(t, e.post("/v1/batches/"+b.ID+"/claim", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)

	// total_stock is not a rule.
	withStock := batchBody(later)
	expectError(t, patch(b.ID, withStock), http.StatusBadRequest, CodeInvalidArgument)
	bad := batchBody(later)
	delete(bad, "total_stock")
	bad["amount_off"] = -1
	expectError(t, patch(b.ID, bad), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, patch(b.ID, ""), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, patch("nope", rules), http.StatusNotFound, CodeNotFound)

	// Once started, the rules are fixed.
	e.clock.Advance(2 * time.Hour)
	expectError(t, patch(b.ID, rules), http.StatusConflict, CodeConflict)
	c := e.claim(b.ID, e.alice)
	if c.AmountOff != 800 || c.RuleVersion != 1 {
		t.Fatalf("coupon terms %+v", c)
	}
}
