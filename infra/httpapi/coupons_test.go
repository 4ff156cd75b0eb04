package httpapi

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

func TestClaim(t *testing.T) {
	e := newEnv(t)
	b := e.issue(map[string]any{"total_stock": 2})
	path := "/v1/batches/" + b.ID + "/claim"

	r := e.post(path, e.alice, nil)
	expectStatus(t, r, http.StatusCreated)
	c := decode[CouponView](t, r)
	if c.ID == "" || c.BatchID != b.ID || c.UserID != "alice" || c.Status != domain.CouponUsable || c.Source != "claimed" ||
		c.Kind != domain.KindDirect || c.AmountOff != 500 || c.Issuer != "platform" || c.Scope.Kind != "all" ||
		!c.ObtainedAt.Equal(t0) || !c.ValidFrom.Equal(t0) || !c.ValidUntil.Equal(t0.Add(30*24*time.Hour)) ||
		c.Position == 0 || c.Version != 0 || c.OrderID != "" || !c.HoldUntil.IsZero() {
		t.Fatalf("claimed coupon = %+v", c)
	}
	var raw map[string]any
	_ = json.Unmarshal(r.Body, &raw)
	for _, k := range []string{"id", "batch_id", "user_id", "status", "source", "kind", "issuer", "threshold", "amount_off",
		"percent_off", "max_discount", "scope", "exclusive", "valid_from", "valid_until", "obtained_at", "rule_version", "version", "position"} {
		if _, ok := raw[k]; !ok {
			t.Errorf("coupon JSON lacks %q: %s", k, r.Body)
		}
	}
	recs, _ := e.repo.Store().ReadStream(t.Context(), "coupon-"+c.ID, 0)
	if len(recs) != 1 || recs[0].Type != domain.EvCouponClaimed || recs[0].Position != c.Position {
		t.Fatalf("stored claim %+v does not match position %d", recs, c.Position)
	}

	// Per-user limit 1: alice again is 409 already_claimed.
	expectError(t, e.post(path, e.alice, nil), http.StatusConflict, CodeAlreadyClaimed)
	e.claim(b.ID, e.bob)
	// Stock 2 is gone: 410.
	expectError(t, e.post(path, e.token("carol", RoleUser), nil), http.StatusGone, CodeSoldOut)
	expectError(t, e.post("/v1/batches/nope/claim", e.alice, nil), http.StatusNotFound, CodeNotFound)
	// Claim takes no body but tolerates {}.
	expectError(t, e.post(path, e.alice, `{"user_id":"bob"}`), http.StatusBadRequest, CodeInvalidArgument)

	m := e.metrics()
	for _, want := range []string{
		`couponsd_claims_total{code="created"} 2`,
		`couponsd_claims_total{code="already_claimed"} 1`,
		`couponsd_claims_total{code="sold_out"} 1`,
		`couponsd_claims_total{code="not_found"} 1`,
		`couponsd_http_request_duration_seconds_count{method="POST",route="/v1/batches/:id/claim",status="201"} 2`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if strings.Contains(m, b.ID) {
		t.Error("metrics labels hold a raw URL")
	}
}

func TestClaimNotClaimable(t *testing.T) {
	e := newEnv(t)
	scheduled := e.issue(map[string]any{"claim_starts_at": t0.Add(time.Hour).Format(time.RFC3339)})
	targeted := e.issue(map[string]any{"audience": "targeted"})
	ending := e.issue(map[string]any{"claim_ends_at": t0.Add(time.Minute).Format(time.RFC3339)})
	for _, id := range []string{scheduled.ID, targeted.ID} {
		msg := expectError(t, e.post("/v1/batches/"+id+"/claim", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
		if !strings.Contains(msg, id) {
			t.Errorf("message %q does not name the batch", msg)
		}
	}
	e.clock.Advance(time.Minute)
	expectError(t, e.post("/v1/batches/"+ending.ID+"/claim", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	if !strings.Contains(e.metrics(), `couponsd_claims_total{code="not_claimable"} 3`) {
		t.Error("not_claimable claims not counted")
	}
}

func TestClaimReplay(t *testing.T) {
	e := newEnv(t)
	b := e.issue(map[string]any{"total_stock": 5, "per_user_limit": 3})
	path := "/v1/batches/" + b.ID + "/claim"
	r1 := e.post(path, e.alice, nil, HeaderIdempotencyKey, "claim-1")
	expectStatus(t, r1, http.StatusCreated)
	c1 := decode[CouponView](t, r1)
	r2 := e.post(path, e.alice, nil, HeaderIdempotencyKey, "claim-1")
	expectStatus(t, r2, http.StatusCreated)
	c2 := decode[CouponView](t, r2)
	if c2.ID != c1.ID || c2.Position != c1.Position || r2.Header.Get(HeaderIdempotentReplayed) != "true" {
		t.Fatalf("replay = %+v (header %q), first = %+v", c2, r2.Header.Get(HeaderIdempotentReplayed), c1)
	}
	// Concurrent retries of one key still take one unit.
	var wg sync.WaitGroup
	ids := make([]string, 6)
	for i := range ids {
		wg.Go(func() {
			r := e.post(path, e.alice, nil, HeaderIdempotencyKey, "claim-2")
			if r.Status != http.StatusCreated {
				t.Errorf("concurrent replay: %s", r)
				return
			}
			var c CouponView
			_ = json.Unmarshal(r.Body, &c)
			ids[i] = c.ID
		})
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] || id == c1.ID {
			t.Fatalf("concurrent claims with one key gave coupons %v", ids)
		}
	}
	// The key is the caller's: bob's "claim-1" is another coupon.
	cb := decode[CouponView](t, e.post(path, e.bob, nil, HeaderIdempotencyKey, "claim-1"))
	if cb.ID == c1.ID || cb.UserID != "bob" {
		t.Fatalf("bob's claim = %+v", cb)
	}
	v := decode[BatchView](t, e.get("/v1/batches/"+b.ID, e.admin))
	if v.Remaining != 2 || v.Reserved != 3 {
		t.Fatalf("stock taken %d times, want 3: %+v", v.Reserved, v)
	}
	if m := e.metrics(); !strings.Contains(m, `couponsd_claims_total{code="replayed"} 6`) || !strings.Contains(m, `couponsd_claims_total{code="created"} 3`) {
		t.Errorf("claim metrics:\n%s", grep(m, "couponsd_claims_total"))
	}
}

func grep(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func TestCouponTCC(t *testing.T) {
	e := newEnv(t)
	b := e.issue(map[string]any{"total_stock": 5})
	c := e.claim(b.ID, e.alice)
	p := "/v1/coupons/" + c.ID
	svc := e.service

	// lock
	r := e.post(p+"/lock", svc, map[string]string{"order_id": "o1", "user_id": "alice"})
	expectStatus(t, r, http.StatusOK)
	lc := decode[CouponView](t, r)
	if lc.Status != domain.CouponLockedSt || lc.OrderID != "o1" || !lc.HoldUntil.Equal(t0.Add(15*time.Minute)) || lc.Version != 1 || lc.Position == 0 {
		t.Fatalf("locked = %+v", lc)
	}
	// again for the same order: 200, nothing appended
	r = e.post(p+"/lock", svc, map[string]string{"order_id": "o1", "user_id": "alice"})
	expectStatus(t, r, http.StatusOK)
	if v := decode[CouponView](t, r); v.Version != 1 || v.Position != 0 {
		t.Fatalf("repeated lock appended: %+v", v)
	}
	expectError(t, e.post(p+"/lock", svc, map[string]string{"order_id": "o2", "user_id": "alice"}), http.StatusConflict, CodeConflict)
	expectError(t, e.post(p+"/lock", svc, map[string]string{"order_id": "o2", "user_id": "bob"}), http.StatusForbidden, CodeForbidden)
	expectError(t, e.post(p+"/redeem", svc, map[string]string{"order_id": "o2", "payment_id": "p"}), http.StatusConflict, CodeConflict)
	expectError(t, e.post(p+"/unlock", svc, map[string]string{"order_id": "o2"}), http.StatusConflict, CodeConflict)
	expectError(t, e.post(p+"/return", svc, map[string]string{"order_id": "o1"}), http.StatusConflict, CodeConflict)

	// redeem with a discount
	r = e.post(p+"/redeem", svc, map[string]any{"order_id": "o1", "payment_id": "pay1", "discount": 500})
	expectStatus(t, r, http.StatusOK)
	if v := decode[CouponView](t, r); v.Status != domain.CouponUsed || v.OrderID != "o1" {
		t.Fatalf("redeemed = %+v", v)
	}
	expectStatus(t, e.post(p+"/redeem", svc, map[string]any{"order_id": "o1", "payment_id": "pay1"}), http.StatusOK)
	expectError(t, e.post(p+"/unlock", svc, map[string]string{"order_id": "o1"}), http.StatusConflict, CodeConflict)
	expectError(t, e.post(p+"/lock", svc, map[string]string{"order_id": "o3", "user_id": "alice"}), http.StatusConflict, CodeConflict)

	// return: usable again
	r = e.post(p+"/return", svc, map[string]string{"order_id": "o1"})
	expectStatus(t, r, http.StatusOK)
	if v := decode[CouponView](t, r); v.Status != domain.CouponUsable || v.OrderID != "" {
		t.Fatalf("returned = %+v", v)
	}
	expectStatus(t, e.post(p+"/return", svc, map[string]string{"order_id": "o1"}), http.StatusOK)

	// lock and unlock
	expectStatus(t, e.post(p+"/lock", svc, map[string]string{"order_id": "o4", "user_id": "alice"}), http.StatusOK)
	r = e.post(p+"/unlock", svc, map[string]string{"order_id": "o4"})
	expectStatus(t, r, http.StatusOK)
	if v := decode[CouponView](t, r); v.Status != domain.CouponUsable {
		t.Fatalf("unlocked = %+v", v)
	}
	expectStatus(t, e.post(p+"/unlock", svc, map[string]string{"order_id": "o4"}), http.StatusOK)

	// bad bodies
	for _, tc := range []struct{ action, body, field string }{
		{"lock", `{"order_id":"o"}`, "user_id"},
		{"lock", `{"user_id":"alice"}`, "order_id"},
		{"lock", `{"order_id":"o","user_id":"alice","x":1}`, "x"},
		{"lock", `{"order_id":5,"user_id":"alice"}`, "order_id"},
		{"lock", ``, "body"},
		{"lock", `null`, "body"},
		{"redeem", `{"order_id":"o4","payment_id":"p","discount":-1}`, "discount"},
		{"redeem", `{"order_id":"o4","payment_id":"p","discount":1.5}`, "discount"},
		{"redeem", `{"order_id":"o4","payment_id":"p","discount":"1"}`, "discount"},
		{"redeem", `{"order_id":"o4"}`, "payment_id"},
		{"unlock", `{}`, "order_id"},
		{"return", `{"order_id":"o1"} x`, "after"},
	} {
		msg := expectError(t, e.post(p+"/"+tc.action, svc, tc.body), http.StatusBadRequest, CodeInvalidArgument)
		if !strings.Contains(msg, tc.field) {
			t.Errorf("%s %s: message %q does not name %s", tc.action, tc.body, msg, tc.field)
		}
	}
	// unknown coupon
	for a, body := range map[string]string{
		"lock":   `{"order_id":"o","user_id":"alice"}`,
		"redeem": `{"order_id":"o","payment_id":"p"}`,
		"unlock": `{"order_id":"o"}`,
		"return": `{"order_id":"o"}`,
	} {
		expectError(t, e.post("/v1/coupons/nope/"+a, svc, body), http.StatusNotFound, CodeNotFound)
	}

	// audit trail
	r = e.get(p+"/events", e.admin)
	expectStatus(t, r, http.StatusOK)
	ev := decode[CouponEventsView](t, r)
	var types []string
	for _, x := range ev.Events {
		types = append(types, x.Type)
	}
	want := []string{domain.EvCouponClaimed, domain.EvCouponLocked, domain.EvCouponRedeemed, domain.EvCouponReturned, domain.EvCouponLocked, domain.EvCouponUnlocked}
	if ev.CouponID != c.ID || !slices.Equal(types, want) || ev.Events[0].Position != c.Position || ev.Events[5].Revision != 5 {
		t.Fatalf("audit trail = %v (%+v)", types, ev)
	}
	expectError(t, e.get("/v1/coupons/nope/events", e.admin), http.StatusNotFound, CodeNotFound)
}

func TestLockOutsideValidity(t *testing.T) {
	e := newEnv(t)
	future := e.issue(map[string]any{"valid_days": nil,
		"valid_from": t0.Add(24 * time.Hour).Format(time.RFC3339), "valid_until": t0.Add(48 * time.Hour).Format(time.RFC3339)})
	c := e.claim(future.ID, e.alice)
	lock := func(order string) resp {
		return e.post("/v1/coupons/"+c.ID+"/lock", e.service, map[string]string{"order_id": order, "user_id": "alice"})
	}
	expectError(t, lock("o1"), http.StatusUnprocessableEntity, CodeOutsideValidity)
	e.clock.Advance(25 * time.Hour)
	expectStatus(t, lock("o1"), http.StatusOK)
	expectStatus(t, e.post("/v1/coupons/"+c.ID+"/unlock", e.service, map[string]string{"order_id": "o1"}), http.StatusOK)
	e.clock.Advance(24 * time.Hour)
	expectError(t, lock("o2"), http.StatusUnprocessableEntity, CodeOutsideValidity)
}

func TestLockRace(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	for round := range 5 {
		c := e.claim(b.ID, e.token("racer"+string(rune('a'+round)), RoleUser))
		statuses := make([]resp, 2)
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i := range statuses {
			wg.Go(func() {
				<-start
				statuses[i] = e.post("/v1/coupons/"+c.ID+"/lock", e.service,
					map[string]string{"order_id": "order-" + string(rune('A'+i)), "user_id": c.UserID})
			})
		}
		close(start)
		wg.Wait()
		ok, conflict := 0, 0
		for _, r := range statuses {
			switch r.Status {
			case http.StatusOK:
				ok++
			case http.StatusConflict:
				expectError(t, r, http.StatusConflict, CodeConflict)
				conflict++
			default:
				t.Fatalf("unexpected answer %s", r)
			}
		}
		if ok != 1 || conflict != 1 {
			t.Fatalf("round %d: %d OK and %d conflicts, want 1 and 1", round, ok, conflict)
		}
		if types := e.eventTypes(c.ID); !slices.Equal(types, []string{domain.EvCouponClaimed, domain.EvCouponLocked}) {
			t.Fatalf("events %v", types)
		}
	}
}

func TestRedeemConcurrentSameOrder(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	expectStatus(t, e.post("/v1/coupons/"+c.ID+"/lock", e.service, map[string]string{"order_id": "o1", "user_id": "alice"}), http.StatusOK)
	const n = 8
	answers := make([]resp, n)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			answers[i] = e.post("/v1/coupons/"+c.ID+"/redeem", e.service, map[string]any{"order_id": "o1", "payment_id": "pay-1", "discount": 500})
		})
	}
	close(start)
	wg.Wait()
	for _, r := range answers {
		expectStatus(t, r, http.StatusOK)
		if v := decode[CouponView](t, r); v.Status != domain.CouponUsed {
			t.Fatalf("redeem answered %+v", v)
		}
	}
	redeemed := 0
	for _, ty := range e.eventTypes(c.ID) {
		if ty == domain.EvCouponRedeemed {
			redeemed++
		}
	}
	if redeemed != 1 {
		t.Fatalf("%d coupon.redeemed.v1 events, want 1: %v", redeemed, e.eventTypes(c.ID))
	}
}
