package httpapi

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func signed(t *testing.T, method jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAuthRejectsBadTokens(t *testing.T) {
	e := newEnv(t)
	now := e.clock.Now()
	exp := now.Add(time.Hour).Unix()
	valid := jwt.MapClaims{"sub": "boss", "role": "admin", "exp": exp}
	with := func(k string, v any) jwt.MapClaims {
		c := jwt.MapClaims{}
		for kk, vv := range valid {
			c[kk] = vv
		}
		if v == nil {
			delete(c, k)
		} else {
			c[k] = v
		}
		return c
	}
	expired, err := IssueToken(testSecret, "boss", RoleAdmin, time.Hour, now.Add(-2*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	// Tampered: alice's user token with its payload rewritten to role admin.
	parts := strings.Split(e.alice, ".")
	payload, _ := base64.RawURLEncoding.DecodeString(parts[1])
	var pc map[string]any
	_ = json.Unmarshal(payload, &pc)
	pc["role"] = "admin"
	forged, _ := json.Marshal(pc)
	tampered := parts[0] + "." + base64.RawURLEncoding.EncodeToString(forged) + "." + parts[2]
	// Tampered signature: one signature character changed.
	sig := []byte(parts[2])
	sig[5] ^= 0x01
	if sig[5] == '-' || sig[5] == '_' {
		sig[5] = 'A'
	}
	badSig := parts[0] + "." + parts[1] + "." + string(sig)

	cases := []struct {
		name, header string
	}{
		{"missing", ""},
		{"basic scheme", "Basic Ym9zczpwYXNz"},
		{"bearer without token", "Bearer "},
		{"malformed", "Bearer not-a-jwt"},
		{"malformed three parts", "Bearer a.b.c"},
		{"expired", "Bearer " + expired},
		{"tampered payload", "Bearer " + tampered},
		{"tampered signature", "Bearer " + badSig},
		{"alg none", "Bearer " + signed(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, valid)},
		{"alg HS512", "Bearer " + signed(t, jwt.SigningMethodHS512, testSecret, valid)},
		{"alg HS384", "Bearer " + signed(t, jwt.SigningMethodHS384, testSecret, valid)},
		{"no exp", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("exp", nil))},
		{"wrong secret", "Bearer " + signed(t, jwt.SigningMethodHS256, []byte("another-secret-another-secret-another"), valid)},
		{"no sub", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("sub", nil))},
		{"empty sub", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("sub", ""))},
		{"unknown role", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("role", "root"))},
		{"no role", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("role", nil))},
		{"not yet valid", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("nbf", now.Add(time.Hour).Unix()))},
		{"exp as string", "Bearer " + signed(t, jwt.SigningMethodHS256, testSecret, with("exp", "tomorrow"))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for _, rq := range []req{
				{Method: http.MethodGet, Path: "/v1/batches/nope"},
				{Method: http.MethodPost, Path: "/v1/batches", Body: batchBody(nil)},
				{Method: http.MethodPost, Path: "/v1/batches/nope/claim"},
				{Method: http.MethodPost, Path: "/v1/coupons/nope/lock", Body: `{"order_id":"o","user_id":"u"}`},
			} {
				rq.Headers = map[string]string{}
				if tc.header != "" {
					rq.Headers["Authorization"] = tc.header
				}
				r := e.do(rq)
				expectError(t, r, http.StatusUnauthorized, CodeUnauthenticated)
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("%s %s: WWW-Authenticate = %q", rq.Method, rq.Path, r.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}

	// The token's expiry follows the injected clock.
	tok, err := IssueToken(testSecret, "boss", RoleAdmin, time.Hour, e.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, e.get("/v1/batches/nope", tok), http.StatusNotFound, CodeNotFound)
	e.clock.Advance(time.Hour + time.Second)
	msg := expectError(t, e.get("/v1/batches/nope", tok), http.StatusUnauthorized, CodeUnauthenticated)
	if !strings.Contains(msg, "expired") {
		t.Errorf("message %q does not say expired", msg)
	}
	// Nothing was written by refused requests.
	if pos, err := e.repo.Store().LastPosition(t.Context()); err != nil || pos != 0 {
		t.Fatalf("event store position = %d, %v; want 0", pos, err)
	}
}

func TestRolesPerRouteGroup(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	admin, user, service := e.admin, e.alice, e.service
	lockBody := map[string]string{"order_id": "o1", "user_id": "alice"}
	cases := []struct {
		method, path string
		body         any
		denied       []string
	}{
		{http.MethodPost, "/v1/batches", batchBody(nil), []string{user, service}},
		{http.MethodGet, "/v1/batches/" + b.ID, nil, []string{user, service}},
		{http.MethodPatch, "/v1/batches/" + b.ID, batchBody(map[string]any{"total_stock": nil}), []string{user, service}},
		{http.MethodPost, "/v1/batches/" + b.ID + "/pause", nil, []string{user, service}},
		{http.MethodPost, "/v1/batches/" + b.ID + "/resume", nil, []string{user, service}},
		{http.MethodPost, "/v1/batches/" + b.ID + "/stop", nil, []string{user, service}},
		{http.MethodPost, "/v1/batches/" + b.ID + "/stock", map[string]int{"add": 1}, []string{user, service}},
		{http.MethodGet, "/v1/coupons/" + c.ID + "/events", nil, []string{user, service}},
		{http.MethodPost, "/v1/batches/" + b.ID + "/claim", nil, []string{admin, service}},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/lock", lockBody, []string{admin, user}},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/redeem", map[string]string{"order_id": "o1", "payment_id": "p"}, []string{admin, user}},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/unlock", map[string]string{"order_id": "o1"}, []string{admin, user}},
		{http.MethodPost, "/v1/coupons/" + c.ID + "/return", map[string]string{"order_id": "o1"}, []string{admin, user}},
	}
	for _, tc := range cases {
		for _, tok := range tc.denied {
			r := e.do(req{Method: tc.method, Path: tc.path, Token: tok, Body: tc.body})
			if r.Status != http.StatusForbidden {
				t.Errorf("%s %s: status %d, want 403: %s", tc.method, tc.path, r.Status, r.Body)
				continue
			}
			expectError(t, r, http.StatusForbidden, CodeForbidden)
		}
	}
	// The refused calls changed nothing.
	got := decode[BatchView](t, e.get("/v1/batches/"+b.ID, admin))
	if got.Status != "running" || got.TotalStock != 10 || got.Remaining != 9 || got.Version != b.Version {
		t.Fatalf("batch changed by refused calls: %+v", got)
	}
	if types := e.eventTypes(c.ID); len(types) != 1 {
		t.Fatalf("coupon changed by refused calls: %v", types)
	}
}

func TestIssueTokenValidates(t *testing.T) {
	now := time.Now()
	if _, err := IssueToken([]byte("short"), "a", RoleUser, time.Hour, now); err == nil {
		t.Error("short secret accepted")
	}
	if _, err := IssueToken(testSecret, "", RoleUser, time.Hour, now); err == nil {
		t.Error("empty sub accepted")
	}
	if _, err := IssueToken(testSecret, "a", "root", time.Hour, now); err == nil {
		t.Error("unknown role accepted")
	}
	if _, err := IssueToken(testSecret, "a", RoleUser, 0, now); err == nil {
		t.Error("zero ttl accepted")
	}
	tok, err := IssueToken(testSecret, "a", RoleService, time.Minute, now)
	if err != nil {
		t.Fatal(err)
	}
	var cl tokenClaims
	if _, err := jwt.ParseWithClaims(tok, &cl, func(*jwt.Token) (any, error) { return testSecret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(func() time.Time { return now })); err != nil {
		t.Fatal(err)
	}
	if cl.Subject != "a" || cl.Role != RoleService || cl.ExpiresAt == nil || !cl.ExpiresAt.Equal(now.Add(time.Minute).Truncate(time.Second)) {
		t.Fatalf("claims = %+v", cl)
	}
}
