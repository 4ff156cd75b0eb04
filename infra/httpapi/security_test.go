package httpapi

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Security tests through the real server. They add what auth_test.go,
// batches_test.go, coupons_test.go, grants_test.go and queries_test.go do
// not cover; every refused request is also checked to write nothing.

// refusedWritesNothing sends r, expects status and code, and checks that the
// event store did not move.
func (e *env) refusedWritesNothing(t *testing.T, r req, status int, code string) string {
	t.Helper()
	before := e.head()
	res := e.do(r)
	msg := expectError(t, res, status, code)
	if after := e.head(); after != before {
		t.Fatalf("%s %s refused with %d, yet the store moved from %d to %d", r.Method, r.Path, status, before, after)
	}
	return msg
}

// b64 builds token segments by hand.
func b64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// probeRoutes is one route per class, each called with a body it accepts.
func probeRoutes(batchID, couponID string) []req {
	return []req{
		{Method: http.MethodPost, Path: "/v1/batches", Body: batchBody(nil)},
		{Method: http.MethodGet, Path: "/v1/batches/" + batchID},
		{Method: http.MethodPost, Path: "/v1/batches/" + batchID + "/claim"},
		{Method: http.MethodPost, Path: "/v1/coupons/" + couponID + "/lock", Body: `{"order_id":"o-sec","user_id":"alice"}`},
		{Method: http.MethodGet, Path: "/v1/me/coupons"},
	}
}

// TestTokenForgeries covers forged tokens auth_test.go does not: every
// single-character change of a valid token, algorithm swaps (RS256, ES256,
// none in any case), sub and role abuse, tokens outside the Authorization
// header. Each is a 401 on every route class and writes nothing.
func TestTokenForgeries(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	now := e.clock.Now()
	exp := now.Add(time.Hour).Unix()

	hs := func(claims jwt.MapClaims) string { return signed(t, jwt.SigningMethodHS256, testSecret, claims) }
	valid := jwt.MapClaims{"sub": "boss", "role": "admin", "exp": exp}
	adminTok := hs(valid)
	parts := strings.Split(adminTok, ".")
	hsHeader := parts[0]

	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	// The admin token's header swapped for RS256, payload and HS256 signature kept.
	rsHeader := b64(`{"alg":"RS256","typ":"JWT"}`)
	cases := map[string]string{
		"header says RS256, HS256 signature":   rsHeader + "." + parts[1] + "." + parts[2],
		"RS256, signed with an RSA key":        signed(t, jwt.SigningMethodRS256, rsaKey, valid),
		"PS256, signed with an RSA key":        signed(t, jwt.SigningMethodPS256, rsaKey, valid),
		"ES256, signed with an EC key":         signed(t, jwt.SigningMethodES256, ecKey, valid),
		"header says none, signature kept":     b64(`{"alg":"none","typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
		"header says HS256, signature dropped": hsHeader + "." + parts[1] + ".",
		"header without alg":                   b64(`{"typ":"JWT"}`) + "." + parts[1] + "." + parts[2],
		"a fourth segment":                     adminTok + ".x",
		"payload not JSON":                     hsHeader + "." + b64("admin") + "." + parts[2],
		"re-signed with another key, 32 bytes": signed(t, jwt.SigningMethodHS256, []byte("ffffffffffffffffffffffffffffffff"), valid),
		"sub with a control character":         hs(jwt.MapClaims{"sub": "boss\u0000", "role": "admin", "exp": exp}),
		"sub longer than 128 bytes":            hs(jwt.MapClaims{"sub": strings.Repeat("b", 129), "role": "admin", "exp": exp}),
		"sub as a number":                      hs(jwt.MapClaims{"sub": 7, "role": "admin", "exp": exp}),
		"role in capitals":                     hs(jwt.MapClaims{"sub": "boss", "role": "ADMIN", "exp": exp}),
		"role as a list":                       hs(jwt.MapClaims{"sub": "boss", "role": []string{"admin"}, "exp": exp}),
		"role with a space":                    hs(jwt.MapClaims{"sub": "boss", "role": "admin ", "exp": exp}),
		"expired a second ago":                 hs(jwt.MapClaims{"sub": "boss", "role": "admin", "exp": now.Add(-time.Second).Unix()}),
		"not valid for another second":         hs(jwt.MapClaims{"sub": "boss", "role": "admin", "exp": exp, "nbf": now.Add(time.Second).Unix()}),
		"exp zero":                             hs(jwt.MapClaims{"sub": "boss", "role": "admin", "exp": 0}),
		"exp negative":                         hs(jwt.MapClaims{"sub": "boss", "role": "admin", "exp": -1}),
		"exp null":                             hs(jwt.MapClaims{"sub": "boss", "role": "admin", "exp": nil}),
	}
	for _, alg := range []string{"none", "None", "NONE", "nOnE"} {
		cases["alg "+alg] = b64(`{"alg":"`+alg+`","typ":"JWT"}`) + "." + parts[1] + "."
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			for _, r := range probeRoutes(b.ID, c.ID) {
				r.Token = tok
				e.refusedWritesNothing(t, r, http.StatusUnauthorized, CodeUnauthenticated)
			}
		})
	}

	// Every single-character change of the token is a 401, even one that
	// decodes to the very same bytes (the unused low bits of the last base64
	// character of the signature): the parser decodes strictly, so a token
	// has exactly one spelling.
	alphabet := "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	lock := req{Method: http.MethodPost, Path: "/v1/batches", Body: batchBody(nil)}
	malleable := 0
	for i := range len(adminTok) {
		if adminTok[i] == '.' {
			continue
		}
		for _, repl := range []byte{alphabet[(strings.IndexByte(alphabet, adminTok[i])+1)%64], '.', '='} {
			forged := adminTok[:i] + string(repl) + adminTok[i+1:]
			if sameDecoded(adminTok, forged) {
				malleable++
			}
			lock.Token = forged
			before := e.head()
			res := e.do(lock)
			if res.Status != http.StatusUnauthorized {
				t.Fatalf("token with byte %d changed to %q: %s", i, repl, res)
			}
			if e.head() != before {
				t.Fatalf("forged token wrote events")
			}
		}
	}
	// The padding-bit spellings of the last character are refused too.
	last := adminTok[len(adminTok)-1]
	for _, ch := range []byte(alphabet) {
		forged := adminTok[:len(adminTok)-1] + string(ch)
		if ch == last || !sameDecoded(adminTok, forged) {
			continue
		}
		malleable++
		lock.Token = forged
		if res := e.do(lock); res.Status != http.StatusUnauthorized {
			t.Fatalf("padding-bit spelling %q of the signature accepted: %s", ch, res)
		}
	}
	if malleable == 0 {
		t.Fatal("found no padding-bit spelling to try")
	}

	// A token anywhere but the Authorization header is not looked at.
	q := url.Values{"token": {adminTok}, "access_token": {adminTok}, "jwt": {adminTok}, "auth": {adminTok}}
	e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: "/v1/batches?" + q.Encode(), Body: batchBody(nil),
		Headers: map[string]string{"Cookie": "token=" + adminTok + "; jwt=" + adminTok + "; Authorization=Bearer%20" + adminTok,
			"X-Authorization": "Bearer " + adminTok, "Proxy-Authorization": "Bearer " + adminTok}},
		http.StatusUnauthorized, CodeUnauthenticated)
	// Two bearer tokens in one header: refused, not "the first valid one".
	e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: "/v1/batches", Body: batchBody(nil),
		Headers: map[string]string{"Authorization": "Bearer " + e.alice + ", Bearer " + adminTok}}, http.StatusUnauthorized, CodeUnauthenticated)
	// The untampered token works, so the refusals above are about the forgery.
	expectStatus(t, e.do(req{Method: http.MethodPost, Path: "/v1/batches", Token: adminTok, Body: batchBody(nil)}), http.StatusCreated)
}

// sameDecoded tells whether two tokens decode to the same three segments.
func sameDecoded(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	if len(pa) != len(pb) {
		return false
	}
	for i := range pa {
		da, errA := base64.RawURLEncoding.DecodeString(pa[i])
		db, errB := base64.RawURLEncoding.DecodeString(pb[i])
		if errA != nil || errB != nil || string(da) != string(db) {
			return false
		}
	}
	// Same bytes: only the signature segment is allowed to differ in text
	// (header and payload are signed as text).
	return pa[0] == pb[0] && pa[1] == pb[1]
}

// routeRoles are the roles spec/api.md gives each route; nil is public.
var routeRoles = map[string][]string{
	"GET /healthz":                         nil,
	"GET /readyz":                          nil,
	"GET /metrics":                         nil,
	"GET /openapi.yaml":                    nil,
	"POST /v1/batches":                     admin,
	"GET /v1/batches/:id":                  admin,
	"PATCH /v1/batches/:id":                admin,
	"POST /v1/batches/:id/pause":           admin,
	"POST /v1/batches/:id/resume":          admin,
	"POST /v1/batches/:id/stop":            admin,
	"POST /v1/batches/:id/stock":           admin,
	"POST /v1/batches/:id/grants":          admin,
	"GET /v1/grant-jobs/:id":               admin,
	"GET /v1/coupons/:id/events":           admin,
	"GET /v1/users/:uid/coupons":           admin,
	"GET /v1/users/:uid/events":            admin,
	"GET /v1/reports/batches/:id":          admin,
	"GET /v1/reports/top-batches":          admin,
	"GET /v1/reports/top-users":            admin,
	"POST /v1/admin/replays":               admin,
	"GET /v1/admin/replays/:id":            admin,
	"POST /v1/admin/verify":                admin,
	"POST /v1/pricing/best":                {RoleAdmin, RoleService},
	"POST /v1/batches/:id/claim":           user,
	"POST /v1/batches/:id/reminders":       user,
	"GET /v1/me/coupons":                   user,
	"GET /v1/batches/claimable":            user,
	"GET /v1/products/:product_id/coupons": user,
	"POST /v1/checkout/quote":              user,
	"POST /v1/coupons/:id/lock":            service,
	"POST /v1/coupons/:id/redeem":          service,
	"POST /v1/coupons/:id/unlock":          service,
	"POST /v1/coupons/:id/return":          service,
}

// TestEveryRouteChecksRoles walks every registered route: public routes
// answer without a token; every other one is a 401 without a token and a
// 403 for each role spec/api.md does not give it (shopper on back office
// and order system routes, order system on back office and shopper routes,
// back office on shopper and order system routes), writing nothing. A route
// missing from routeRoles fails the test: decide who may call it.
func TestEveryRouteChecksRoles(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	tokens := map[string]string{RoleAdmin: e.admin, RoleUser: e.alice, RoleService: e.service}
	seen := map[string]bool{}
	for _, rt := range e.srv.Routes() {
		if !strings.HasPrefix(rt.Path, "/") {
			continue
		}
		key := rt.Method + " " + rt.Path
		seen[key] = true
		roles, known := routeRoles[key]
		if !known {
			t.Errorf("route %s is not in routeRoles: add it with the roles spec/api.md gives it", key)
			continue
		}
		path := strings.NewReplacer(":id", b.ID, ":uid", "alice", ":product_id", "p1").Replace(rt.Path)
		if strings.HasPrefix(rt.Path, "/v1/coupons/") {
			path = strings.Replace(rt.Path, ":id", c.ID, 1)
		}
		var body any
		if rt.Method != http.MethodGet {
			body = "{}"
		}
		t.Run(key, func(t *testing.T) {
			if roles == nil {
				r := e.do(req{Method: rt.Method, Path: path})
				if r.Status == http.StatusUnauthorized || r.Status == http.StatusForbidden {
					t.Fatalf("public route: %s", r)
				}
				return
			}
			e.refusedWritesNothing(t, req{Method: rt.Method, Path: path, Body: body}, http.StatusUnauthorized, CodeUnauthenticated)
			for role, tok := range tokens {
				if slices.Contains(roles, role) {
					continue
				}
				msg := e.refusedWritesNothing(t, req{Method: rt.Method, Path: path, Token: tok, Body: body,
					Headers: map[string]string{HeaderIdempotencyKey: "sec-" + role}}, http.StatusForbidden, CodeForbidden)
				if !strings.Contains(msg, role) {
					t.Errorf("403 message %q does not name the role %s", msg, role)
				}
			}
		})
	}
	for key := range routeRoles {
		if !seen[key] {
			t.Errorf("route %s (spec/api.md) is not registered", key)
		}
	}
}

// TestPathTricksDoNotBypassRoles: spellings of protected paths that a
// router might normalize never reach a handler with the wrong role.
func TestPathTricksDoNotBypassRoles(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	for _, tc := range []struct{ method, path string }{
		{http.MethodPost, "/V1/batches"},
		{http.MethodPost, "/v1/batches/"},
		{http.MethodPost, "/v1//batches"},
		{http.MethodPost, "/v1/./batches"},
		{http.MethodPost, "/v1/me/../batches"},
		{http.MethodPost, "/v1/%62atches"},
		{http.MethodPost, "/v1/batches%2f" + b.ID + "%2fstop"},
		{http.MethodPost, "/v1/batches/" + b.ID + "/stop/"},
		{http.MethodPost, "/v1/batches/" + b.ID + "/stop;x"},
		{http.MethodPost, "/v1/batches/" + b.ID + "/%73top"},
		{http.MethodPost, "/v1/admin/verify/"},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/lock/"},
		{http.MethodPut, "/v1/batches/" + b.ID},
		{http.MethodDelete, "/v1/batches/" + b.ID},
		{http.MethodGet, "/v1/users/alice/coupons/"},
		{http.MethodGet, "/v1/me/coupons/../../users/alice/coupons"},
	} {
		for _, tok := range []string{e.alice, e.bob} {
			before := e.head()
			u, err := url.Parse(e.ts.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			hr := &http.Request{Method: tc.method, URL: u, Header: http.Header{"Authorization": {"Bearer " + tok}}, Host: u.Host}
			if tc.method != http.MethodGet {
				hr.Body, hr.ContentLength = io.NopCloser(strings.NewReader("{}")), 2
			}
			res, err := e.ts.Client().Do(hr)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(res.Body)
			_ = res.Body.Close()
			r := resp{Status: res.StatusCode, Header: res.Header, Body: body}
			if !slices.Contains([]int{http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed}, r.Status) {
				t.Errorf("%s %s as a shopper: %s", tc.method, tc.path, r)
				continue
			}
			checkErrorShape(t, r)
			if e.head() != before {
				t.Fatalf("%s %s as a shopper wrote events", tc.method, tc.path)
			}
		}
	}
	// None of it stopped the batch or moved the coupon.
	if got := decode[BatchView](t, e.get("/v1/batches/"+b.ID, e.admin)); got.Status != "running" || got.Version != b.Version {
		t.Fatalf("batch after path tricks: %+v", got)
	}
}

// TestShoppersSeeOnlyTheirOwnCoupons: another shopper's listing and audit
// routes are admin-only (403), and nothing a shopper adds to
// GET /v1/me/coupons (query parameters, another shopper's cursor) shows
// coupons that are not the caller's.
func TestShoppersSeeOnlyTheirOwnCoupons(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 5, "total_stock": 20})
	var alices []string
	for range 4 {
		alices = append(alices, e.claim(b.ID, e.alice).ID)
		e.clock.Advance(time.Second)
	}
	bobs := e.claim(b.ID, e.bob).ID
	e.redeemFor(alices[0], "alice", "order-a", 100)
	e.redeemFor(alices[1], "alice", "order-b", 100)
	mp := fmt.Sprint(e.head())

	for _, path := range []string{
		"/v1/users/alice/coupons", "/v1/users/alice/coupons?status=used", "/v1/users/alice/coupons?as_of=2030-06-01T13:00:00Z",
		"/v1/users/bob/coupons", // even one's own: the route is the back office's
		"/v1/users/alice/events", "/v1/coupons/" + alices[0] + "/events",
	} {
		e.refusedWritesNothing(t, req{Method: http.MethodGet, Path: path, Token: e.bob}, http.StatusForbidden, CodeForbidden)
	}

	onlyBobs := func(t *testing.T, path string) {
		t.Helper()
		r := e.get(path, e.bob)
		if r.Status == http.StatusBadRequest {
			checkErrorShape(t, r)
			return
		}
		expectStatus(t, r, http.StatusOK)
		for _, it := range decode[CouponListPage](t, r).Coupons {
			if it.UserID != "bob" || it.ID != bobs {
				t.Fatalf("%s as bob lists %s of %s", path, it.ID, it.UserID)
			}
		}
	}
	for _, q := range []string{
		"", "user_id=alice", "uid=alice", "user=alice", "sub=alice", "owner=alice", "as_of=2030-06-01T13:00:00Z",
		"user_id=alice&user_id=bob", "status=used&user_id=alice", "status=usable&uid=alice",
	} {
		onlyBobs(t, "/v1/me/coupons?min_position="+mp+"&"+q)
	}
	// Alice's cursors, used by bob.
	for _, status := range []string{"usable", "used"} {
		l := e.list("/v1/me/coupons?limit=1&status="+status+"&min_position="+mp, e.alice)
		if l.NextCursor == "" {
			t.Fatalf("alice's %s listing has no next page: %+v", status, l)
		}
		onlyBobs(t, "/v1/me/coupons?limit=1&status="+status+"&cursor="+url.QueryEscape(l.NextCursor))
	}
}

// CouponListPage is the JSON of a coupon listing (readapi.CouponList).
type CouponListPage struct {
	Coupons []struct {
		ID     string `json:"id"`
		UserID string `json:"user_id"`
	} `json:"coupons"`
}

// TestOrderSystemCannotLockForAnotherUser: the lock names the coupon's
// owner; any other user id (case, spaces, lookalikes) is a 403 that writes
// nothing, and the coupon can still be locked for its owner afterwards.
func TestOrderSystemCannotLockForAnotherUser(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	path := "/v1/coupons/" + c.ID + "/lock"
	for _, uid := range []string{"bob", "Alice", "ALICE", "alice ", " alice", "alicе" /* Cyrillic е */, "alice\u200b", "boss", "orders"} {
		e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: path, Token: e.service,
			Body: map[string]string{"order_id": "o-1", "user_id": uid}}, http.StatusForbidden, CodeForbidden)
	}
	// With a key: the 403 is replayed, it does not turn into a lock later.
	for range 2 {
		e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: path, Token: e.service,
			Body: `{"order_id":"o-2","user_id":"bob"}`, Headers: map[string]string{HeaderIdempotencyKey: "lock-bob"}},
			http.StatusForbidden, CodeForbidden)
	}
	if got := e.eventTypes(c.ID); len(got) != 1 {
		t.Fatalf("coupon events after refused locks: %v", got)
	}
	expectStatus(t, e.post(path, e.service, map[string]string{"order_id": "o-1", "user_id": "alice"}), http.StatusOK)
}

// padTo pads a JSON object body with spaces to exactly n bytes.
func padTo(t *testing.T, body string, n int) string {
	t.Helper()
	if len(body) > n {
		t.Fatalf("body of %d bytes is over %d", len(body), n)
	}
	return body + strings.Repeat(" ", n-len(body))
}

// TestBodyLimitOnEveryRoute: exactly 1 MiB is read; one byte more is a 413
// with or without a Content-Length, on every route that reads a body, and
// writes nothing; a 413 does not use up the Idempotency-Key.
func TestBodyLimitOnEveryRoute(t *testing.T) {
	// Every route configured, so each reads its body; grant uploads have
	// their own limit (default 2 GiB), set to 1 MiB here.
	e := newReadEnv(t, withServerConfig(func(c *Config) { c.GrantUploadLimit = "1M" }))
	b := e.issue(map[string]any{"total_stock": 100})
	tb := e.issue(map[string]any{"audience": "targeted"})
	c := e.claim(b.ID, e.alice)
	const limit = 1 << 20
	routes := []struct {
		method, path, token string
		csv                 bool
		valid               string // a body the route accepts
		ok                  int    // 0: any answer but a 413 or a 5xx
	}{
		{http.MethodPost, "/v1/batches", e.admin, false, mustJSON(batchBody(nil)), http.StatusCreated},
		{http.MethodPatch, "/v1/batches/" + b.ID, e.admin, false, "{}", 0}, // read, then refused (running batch)
		{http.MethodPost, "/v1/batches/" + b.ID + "/stock", e.admin, false, `{"add":1}`, http.StatusOK},
		{http.MethodPost, "/v1/batches/" + tb.ID + "/grants", e.admin, false, `{"user_ids":["u1"]}`, http.StatusAccepted},
		{http.MethodPost, "/v1/batches/" + tb.ID + "/grants", e.admin, true, "u2\n", http.StatusAccepted},
		{http.MethodPost, "/v1/batches/" + b.ID + "/pause", e.admin, false, "{}", http.StatusOK},
		{http.MethodPost, "/v1/batches/" + b.ID + "/resume", e.admin, false, "{}", http.StatusOK},
		{http.MethodPost, "/v1/batches/" + b.ID + "/claim", e.bob, false, "{}", http.StatusCreated},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/lock", e.service, false, `{"order_id":"o1","user_id":"alice"}`, http.StatusOK},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/unlock", e.service, false, `{"order_id":"o1"}`, http.StatusOK},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/redeem", e.service, false, `{"order_id":"o9","payment_id":"p"}`, http.StatusConflict},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/return", e.service, false, `{"order_id":"o9"}`, http.StatusConflict},
		{http.MethodPost, "/v1/checkout/quote", e.alice, false, `{"items":[]}`, 0},
		{http.MethodPost, "/v1/pricing/best", e.service, false, `{"coupons":[]}`, 0},
		{http.MethodPost, "/v1/admin/replays", e.admin, false, `{"projection":"nope"}`, 0},
	}
	for _, rt := range routes {
		t.Run(rt.method+" "+rt.path, func(t *testing.T) {
			h := map[string]string{}
			if rt.csv {
				h["Content-Type"] = "text/csv"
			}
			over := padTo(t, rt.valid, limit+1)
			withKey := map[string]string{HeaderIdempotencyKey: "big-" + fmt.Sprint(rt.csv)}
			for k, v := range h {
				withKey[k] = v
			}
			for _, r := range []req{
				{Method: rt.method, Path: rt.path, Token: rt.token, Body: over, Headers: h},                                          // Content-Length
				{Method: rt.method, Path: rt.path, Token: rt.token, Body: io.MultiReader(strings.NewReader(over)), Headers: h},       // chunked
				{Method: rt.method, Path: rt.path, Token: rt.token, Body: over, Headers: withKey},                                    // idempotent path
				{Method: rt.method, Path: rt.path, Token: rt.token, Body: io.MultiReader(strings.NewReader(over)), Headers: withKey}, // both
				{Method: rt.method, Path: rt.path, Token: rt.token, Body: strings.Repeat("x", 8<<20), Headers: h},                    // far over
			} {
				e.refusedWritesNothing(t, r, http.StatusRequestEntityTooLarge, CodePayloadTooLarge)
			}
			// Exactly at the limit, chunked, with the same key: read and
			// handled as usual (the 413s did not record the key).
			r := e.do(req{Method: rt.method, Path: rt.path, Token: rt.token, Body: io.MultiReader(strings.NewReader(padTo(t, rt.valid, limit))), Headers: withKey})
			if rt.ok != 0 && r.Status != rt.ok || rt.ok == 0 && (r.Status == http.StatusRequestEntityTooLarge || r.Status >= 500) {
				t.Fatalf("body of exactly 1 MiB: %.300s, want %d", r, rt.ok)
			}
			if r.Status == http.StatusAccepted { // let the grant worker finish before the next route
				e.grantJobFinished(decode[GrantJobAccepted](t, r).JobID)
			}
		})
	}
}

// TestDeeplyNestedJSON: nesting far past encoding/json's depth limit, in
// the body or inside a field, is a 400 (not a stack overflow, not a hang)
// on every JSON route, and writes nothing.
func TestDeeplyNestedJSON(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	tb := e.issue(map[string]any{"audience": "targeted"})
	c := e.claim(b.ID, e.alice)
	nest := func(open, close string, n int, inner string) string {
		return strings.Repeat(open, n) + inner + strings.Repeat(close, n)
	}
	bodies := map[string]string{
		"10,000 [":                  nest("[", "]", 10_000, ""),
		"100,000 [ unclosed":        strings.Repeat("[", 100_000),
		"1,000,000 [ (under 1 MiB)": strings.Repeat("[", 1_000_000),
		"100,000 objects":           nest(`{"a":`, "}", 100_000, "1"),
		"in user_ids":               `{"user_ids":` + nest("[", "]", 20_000, `"u1"`) + `}`,
		"in scope":                  `{"scope":` + nest(`{"ids":`, "}", 20_000, "[]") + `}`,
		"in an unknown field":       `{"x":` + nest("[", "]", 20_000, "") + `}`,
		"in order_id":               `{"order_id":` + nest("[", "]", 50_000, "") + `,"user_id":"alice"}`,
		"160,000 mixed levels":      strings.Repeat(`[{"a":`, 80_000),
	}
	paths := []struct{ path, token string }{
		{"/v1/batches", e.admin},
		{"/v1/batches/" + tb.ID + "/grants", e.admin},
		{"/v1/batches/" + b.ID + "/stock", e.admin},
		{"/v1/coupons/" + c.ID + "/lock", e.service},
		{"/v1/coupons/" + c.ID + "/redeem", e.service},
		{"/v1/batches/" + b.ID + "/pause", e.admin},
	}
	for name, body := range bodies {
		if len(body) > 1<<20 {
			t.Fatalf("%s: %d bytes, over the limit", name, len(body))
		}
		t.Run(name, func(t *testing.T) {
			for _, p := range paths {
				start := time.Now()
				e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: p.path, Token: p.token, Body: body}, http.StatusBadRequest, CodeInvalidArgument)
				if d := time.Since(start); d > 5*time.Second {
					t.Errorf("%s took %v", p.path, d)
				}
			}
		})
	}
}

// TestHugeArrays: big lists with one bad element (wrong type, a bad id far
// down the list, too many scope ids) are refused with a 400 naming the
// field, and write nothing. (Grant lists are streamed: their size is bounded
// by the upload limit, see TestBodyLimitOnEveryRoute, and MaxGrantJobEntries.)
func TestHugeArrays(t *testing.T) {
	e := newEnv(t)
	tb := e.issue(map[string]any{"audience": "targeted", "total_stock": 1000})
	grants := "/v1/batches/" + tb.ID + "/grants"
	list := func(n int, elem func(i int) string) string {
		var sb strings.Builder
		sb.WriteString(`{"user_ids":[`)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString(elem(i))
		}
		sb.WriteString("]}")
		return sb.String()
	}
	for name, tc := range map[string]struct {
		body, field string
	}{
		"250,000 numbers":             {list(250_000, func(int) string { return "0" }), "user_ids"},
		"200,000 nulls":               {list(200_000, func(int) string { return "null" }), "user_ids"},
		"CSV of 500,000 ids, one bad": {strings.Repeat("u\n", 400_000) + "\"b\x01d\"\n" + strings.Repeat("u\n", 99_999), "user_ids"},
		"100,000 ids, last one bad":   {list(100_000, func(i int) string { return map[bool]string{true: `"\u0000"`, false: `"u"`}[i == 99_999] }), "user_ids"},
		"scope with 100,000 ids":      {mustJSON(batchBody(map[string]any{"scope": map[string]any{"kind": "product", "ids": manyIDs(100_000)}})), "scope.ids"},
		"scope with 1,001 ids":        {mustJSON(batchBody(map[string]any{"scope": map[string]any{"kind": "product", "ids": manyIDs(1001)}})), "scope.ids"},
		"150,000 unknown fields":      {"{" + strings.TrimSuffix(strings.Repeat(`"x":1,`, 150_000), ",") + "}", "x"},
		"one field 90,000 times":      {"{" + strings.TrimSuffix(strings.Repeat(`"name":"a",`, 90_000), ",") + "}", "duplicate field"},
		"a 1 MiB string as the name":  {mustJSON(batchBody(map[string]any{"name": strings.Repeat("n", 1<<20-400)})), "name"},
	} {
		t.Run(name, func(t *testing.T) {
			path, h := grants, map[string]string{}
			if strings.HasPrefix(name, "CSV") {
				h["Content-Type"] = "text/csv"
			}
			if strings.HasPrefix(name, "scope") || strings.Contains(name, "field") || strings.Contains(name, "name") {
				path = "/v1/batches"
			}
			if len(tc.body) > 1<<20 {
				t.Fatalf("%d bytes: over the limit", len(tc.body))
			}
			msg := e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: path, Token: e.admin, Body: tc.body, Headers: h}, http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, tc.field) {
				t.Errorf("message %.200q does not name %s", msg, tc.field)
			}
		})
	}

	// 100,000 user ids (about 0.8 MB) are accepted whole: one event per
	// shard of at most 1,000 users, then the job.
	before := e.head()
	r := e.post(grants, e.admin, list(100_000, func(i int) string { return fmt.Sprintf(`"u%d"`, i) }))
	expectStatus(t, r, http.StatusAccepted)
	acc := decode[GrantJobAccepted](t, r)
	if acc.Total != 100_000 || acc.Duplicates != 0 || acc.Shards < 100 || acc.Shards > 200 {
		t.Fatalf("accepted %+v", acc)
	}
	if after := e.head(); after != before+uint64(acc.Shards)+1 {
		t.Fatalf("the grant job appended %d events, want %d", after-before, acc.Shards+1)
	}
}

func manyIDs(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprint("p", i)
	}
	return out
}

// TestUnicodeInBodiesAndPaths: names may hold any valid UTF-8 (emoji
// included) and come back unchanged; ids with control characters, invalid
// UTF-8 (raw or in the path) or over 128 bytes are a 400 naming the field,
// and so is a body that is not valid UTF-8 at all.
func TestUnicodeInBodiesAndPaths(t *testing.T) {
	e := newEnv(t)
	name := "🎉 Double 11 — 双十一 ✨ Ünïcödé 👨‍👩‍👧"
	b := e.issue(map[string]any{"name": name, "scope": map[string]any{"kind": "merchant", "ids": []string{"店铺-1", "🏪"}}})
	if got := decode[BatchView](t, e.get("/v1/batches/"+b.ID, e.admin)); got.Rules.Name != name || got.Rules.Scope.IDs[1] != "🏪" {
		t.Fatalf("unicode did not round-trip: %+v", got.Rules)
	}
	tb := e.issue(map[string]any{"audience": "targeted"})
	c := e.claim(b.ID, e.alice)
	valid := mustJSON(batchBody(nil))

	type tc struct {
		name, path, token, body, field string
		csv                            bool
	}
	var cases []tc
	lock, redeem, grants := "/v1/coupons/"+c.ID+"/lock", "/v1/coupons/"+c.ID+"/redeem", "/v1/batches/"+tb.ID+"/grants"
	for _, bad := range []struct{ name, json string }{
		{"NUL", `"a\u0000b"`}, {"newline", `"a\nb"`}, {"ANSI escape", `"a\u001b[31mb"`}, {"DEL", `"a\u007fb"`},
		{"129 bytes", `"` + strings.Repeat("é", 65) + `"`},
	} {
		cases = append(cases,
			tc{bad.name + " in issuer", "/v1/batches", e.admin, strings.Replace(valid, `"issuer":"platform"`, `"issuer":`+bad.json, 1), "issuer", false},
			tc{bad.name + " in scope.ids", "/v1/batches", e.admin, strings.Replace(valid, `"scope":{"kind":"all"}`, `"scope":{"kind":"product","ids":[`+bad.json+`]}`, 1), "scope.ids", false},
			tc{bad.name + " in order_id", lock, e.service, `{"order_id":` + bad.json + `,"user_id":"alice"}`, "order_id", false},
			tc{bad.name + " in user_id", lock, e.service, `{"order_id":"o","user_id":` + bad.json + `}`, "user_id", false},
			tc{bad.name + " in payment_id", redeem, e.service, `{"order_id":"o","payment_id":` + bad.json + `}`, "payment_id", false},
			tc{bad.name + " in user_ids", grants, e.admin, `{"user_ids":["ok",` + bad.json + `]}`, "user_ids", false},
		)
	}
	// Raw invalid UTF-8: the body is refused, whatever the field (before the
	// fix in decode.go, encoding/json turned it into U+FFFD and stored it).
	for _, raw := range []struct{ name, bytes string }{
		{"0xff", "\xff"}, {"truncated sequence", "\xc3\x28"}, {"UTF-16 surrogate", "\xed\xa0\x80"},
		{"over U+10FFFF", "\xf4\x90\x80\x80"}, {"overlong /", "\xc0\xaf"},
	} {
		cases = append(cases,
			tc{raw.name + " in issuer", "/v1/batches", e.admin, strings.Replace(valid, `"issuer":"platform"`, `"issuer":"plat`+raw.bytes+`form"`, 1), "UTF-8", false},
			tc{raw.name + " in name", "/v1/batches", e.admin, strings.Replace(valid, `"name":"flash 5 off"`, `"name":"flash`+raw.bytes+`"`, 1), "UTF-8", false},
			tc{raw.name + " in order_id", lock, e.service, `{"order_id":"o` + raw.bytes + `","user_id":"alice"}`, "UTF-8", false},
			tc{raw.name + " in user_id", lock, e.service, `{"order_id":"o","user_id":"alice` + raw.bytes + `"}`, "UTF-8", false},
			tc{raw.name + " in user_ids", grants, e.admin, `{"user_ids":["u` + raw.bytes + `"]}`, "UTF-8", false},
			tc{raw.name + " in a CSV user id", grants, e.admin, "ok\nu" + raw.bytes + "\n", "user_ids", true},
		)
	}
	for _, k := range cases {
		t.Run(k.name, func(t *testing.T) {
			h := map[string]string{}
			if k.csv {
				h["Content-Type"] = "text/csv"
			}
			msg := e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: k.path, Token: k.token, Body: k.body, Headers: h},
				http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, k.field) {
				t.Errorf("message %q does not name %s", msg, k.field)
			}
		})
	}
	// Ids in the path.
	for _, id := range []string{"%00", "a%0Ab", "%1B", "%7F", "%FF", "%C3%28", "%ED%A0%80", strings.Repeat("x", 129)} {
		for _, r := range []req{
			{Method: http.MethodGet, Path: "/v1/batches/" + id, Token: e.admin},
			{Method: http.MethodPost, Path: "/v1/batches/" + id + "/claim", Token: e.alice},
			{Method: http.MethodPost, Path: "/v1/batches/" + id + "/stock", Token: e.admin, Body: `{"add":1}`},
			{Method: http.MethodPost, Path: "/v1/batches/" + id + "/pause", Token: e.admin},
			{Method: http.MethodPost, Path: "/v1/coupons/" + id + "/lock", Token: e.service, Body: `{"order_id":"o","user_id":"alice"}`},
			{Method: http.MethodGet, Path: "/v1/coupons/" + id + "/events", Token: e.admin},
		} {
			res := e.do(r)
			if res.Status != http.StatusBadRequest {
				t.Errorf("%s %s: %s, want 400", r.Method, r.Path, res)
				continue
			}
			checkErrorShape(t, res)
		}
	}
	if pos := e.head(); pos != 3 {
		t.Fatalf("store at %d, want 3 (two batches, one claim)", pos)
	}
}

// TestHostileNumbers: every integer field refuses negative, fractional,
// exponent, overflowing and non-numeric values with a 400 naming the field,
// writing nothing.
func TestHostileNumbers(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	expectStatus(t, e.post("/v1/coupons/"+c.ID+"/lock", e.service, map[string]string{"order_id": "o1", "user_id": "alice"}), http.StatusOK)
	percent := map[string]any{"kind": "percent", "amount_off": nil, "percent_off": 10, "max_discount": 100}
	threshold := map[string]any{"kind": "threshold", "threshold": 1000}
	type field struct {
		path, token, name string
		base              map[string]any // the valid body the value goes into
		negativeIsValid   bool
	}
	fields := []field{
		{"/v1/batches", e.admin, "amount_off", batchBody(nil), false},
		{"/v1/batches", e.admin, "threshold", batchBody(threshold), false},
		{"/v1/batches", e.admin, "max_discount", batchBody(percent), false},
		{"/v1/batches", e.admin, "percent_off", batchBody(percent), false},
		{"/v1/batches", e.admin, "total_stock", batchBody(nil), false},
		{"/v1/batches", e.admin, "per_user_limit", batchBody(nil), false},
		{"/v1/batches", e.admin, "valid_days", batchBody(nil), false},
		{"/v1/batches/" + b.ID + "/stock", e.admin, "add", map[string]any{}, false},
		{"/v1/coupons/" + c.ID + "/redeem", e.service, "discount", map[string]any{"order_id": "o1", "payment_id": "p1"}, false},
	}
	values := []string{"-1", "1e30", "-1e30", "9223372036854775808", "-9223372036854775809", "18446744073709551616",
		"1.5", "0.1", "1e3", "1E2", "-0.0", "100000000000000000000000000000000000000", "\"500\"", "true", "[1]", "{}"}
	for _, f := range fields {
		for _, v := range values {
			t.Run(f.name+"="+v, func(t *testing.T) {
				body := map[string]json.RawMessage{}
				for k, x := range f.base {
					body[k] = json.RawMessage(mustJSON(x))
				}
				body[f.name] = json.RawMessage(v)
				msg := e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: f.path, Token: f.token, Body: mustJSON(body)},
					http.StatusBadRequest, CodeInvalidArgument)
				if !strings.Contains(msg, f.name) {
					t.Errorf("message %q does not name %s", msg, f.name)
				}
			})
		}
	}
	// Bare NaN and Infinity are not JSON: refused as malformed.
	for _, v := range []string{"NaN", "Infinity", "-Infinity", "0x10", "+1", "01"} {
		body := strings.Replace(mustJSON(batchBody(nil)), `"amount_off":500`, `"amount_off":`+v, 1)
		e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: "/v1/batches", Token: e.admin, Body: body}, http.StatusBadRequest, CodeInvalidArgument)
	}
	// Money just inside the bounds is fine; one over is refused by name.
	expectStatus(t, e.post("/v1/coupons/"+c.ID+"/redeem", e.service, map[string]any{"order_id": "o1", "payment_id": "p1", "discount": 1_000_000_000_000}), http.StatusOK)
	for _, over := range []map[string]any{
		{"amount_off": 1_000_000_000_001}, {"kind": "threshold", "threshold": 1_000_000_000_001},
		{"kind": "percent", "amount_off": nil, "percent_off": 10, "max_discount": 1_000_000_000_001},
		{"kind": "percent", "amount_off": nil, "percent_off": 100}, {"total_stock": 1_000_000_001}, {"per_user_limit": 1001}, {"valid_days": 3651},
	} {
		e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: "/v1/batches", Token: e.admin, Body: batchBody(over)}, http.StatusBadRequest, CodeInvalidArgument)
	}
	// Times the stored events could not hold (RFC 3339 years 0..9999 once in UTC).
	for _, ts := range []map[string]any{
		{"claim_starts_at": "0000-01-01T00:00:00+01:00"},
		{"claim_ends_at": "9999-12-31T23:59:59-01:00"},
		{"claim_ends_at": "9999-12-31T00:00:00Z"}, // a coupon valid 30 days from a claim then would end in 10000
		{"valid_days": nil, "valid_from": t0.Format(time.RFC3339), "valid_until": "9999-12-31T23:59:59-23:59"},
	} {
		msg := e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: "/v1/batches", Token: e.admin, Body: batchBody(ts)}, http.StatusBadRequest, CodeInvalidArgument)
		if !strings.Contains(msg, "_at") && !strings.Contains(msg, "valid_") {
			t.Errorf("message %q does not name the time field", msg)
		}
	}
}

// TestDuplicateNamesAreRefused: encoding/json keeps the last of duplicate
// names and matches names without regard to case, so a body could say one
// thing to a proxy or an audit log reading the first name and another to
// the service. Such bodies are a 400 naming the field (the fix in decode.go).
func TestDuplicateNamesAreRefused(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	tb := e.issue(map[string]any{"audience": "targeted"})
	c := e.claim(b.ID, e.alice)
	valid := mustJSON(batchBody(nil))
	for name, tc := range map[string]struct{ path, token, body, field string }{
		"audience twice":           {"/v1/batches", e.admin, strings.Replace(valid, `"audience":"public"`, `"audience":"public","audience":"targeted"`, 1), "audience"},
		"audience in another case": {"/v1/batches", e.admin, strings.Replace(valid, `"audience":"public"`, `"audience":"public","Audience":"targeted"`, 1), "Audience"},
		"kind with a Kelvin sign":  {"/v1/batches", e.admin, strings.Replace(valid, `"kind":"direct"`, `"kind":"direct","\u212aind":"percent"`, 1), "ind"},
		"nested in scope":          {"/v1/batches", e.admin, strings.Replace(valid, `"scope":{"kind":"all"}`, `"scope":{"kind":"all","KIND":"product"}`, 1), "KIND"},
		"amount_off twice":         {"/v1/batches", e.admin, strings.Replace(valid, `"amount_off":500`, `"amount_off":1,"amount_off":500`, 1), "amount_off"},
		"user_id twice":            {"/v1/coupons/" + c.ID + "/lock", e.service, `{"order_id":"o","user_id":"alice","user_id":"bob"}`, "user_id"},
		"user_ids twice":           {"/v1/batches/" + tb.ID + "/grants", e.admin, `{"user_ids":["a"],"user_ids":["b"]}`, "user_ids"},
		"discount twice":           {"/v1/coupons/" + c.ID + "/redeem", e.service, `{"order_id":"o","payment_id":"p","discount":1,"DISCOUNT":2}`, "DISCOUNT"},
		"add twice":                {"/v1/batches/" + b.ID + "/stock", e.admin, `{"add":1,"add":1000000}`, "add"},
		"in an object in an array": {"/v1/batches/" + tb.ID + "/grants", e.admin, `{"user_ids":[{"a":1,"a":2}]}`, ""},
	} {
		t.Run(name, func(t *testing.T) {
			msg := e.refusedWritesNothing(t, req{Method: http.MethodPost, Path: tc.path, Token: tc.token, Body: tc.body}, http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, tc.field) {
				t.Errorf("message %q does not name %s", msg, tc.field)
			}
		})
	}
	// The same name in different objects is fine ("kind" of the batch and of its scope).
	expectStatus(t, e.post("/v1/batches", e.admin, valid), http.StatusCreated)
}
