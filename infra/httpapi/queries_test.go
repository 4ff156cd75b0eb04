package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/readapi"
)

// head is the event store's last position.
func (e *env) head() uint64 {
	e.t.Helper()
	pos, err := e.repo.Store().LastPosition(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return pos
}

// list GETs a coupon listing and decodes it (200 expected).
func (e *env) list(path, token string) readapi.CouponList {
	e.t.Helper()
	r := e.get(path, token)
	expectStatus(e.t, r, http.StatusOK)
	return decode[readapi.CouponList](e.t, r)
}

func couponIDs(items []readapi.CouponItem) []string {
	out := make([]string, len(items))
	for i, c := range items {
		out[i] = c.ID
	}
	return out
}

// lockFor locks a coupon for order (role service).
func (e *env) lockFor(couponID, userID, order string) {
	e.t.Helper()
	expectStatus(e.t, e.post("/v1/coupons/"+couponID+"/lock", e.service, map[string]any{"order_id": order, "user_id": userID}), http.StatusOK)
}

// redeemFor locks then redeems a coupon with a discount.
func (e *env) redeemFor(couponID, userID, order string, discount int64) CouponView {
	e.t.Helper()
	e.lockFor(couponID, userID, order)
	r := e.post("/v1/coupons/"+couponID+"/redeem", e.service, map[string]any{"order_id": order, "payment_id": "pay-" + order, "discount": discount})
	expectStatus(e.t, r, http.StatusOK)
	return decode[CouponView](e.t, r)
}

func rfc(t time.Time) string { return url.QueryEscape(t.Format(time.RFC3339Nano)) }

// readRoutes are the GET routes of queries.go, grants.go and admin.go with
// the roles allowed on them.
var readRoutes = []struct {
	path  string
	roles []string
}{
	{"/v1/me/coupons", user},
	{"/v1/batches/claimable", user},
	{"/v1/users/alice/coupons", admin},
	{"/v1/users/alice/coupons?as_of=2030-06-01T12:00:00Z", admin},
	{"/v1/users/alice/events", admin},
	{"/v1/reports/batches/b1", admin},
	{"/v1/reports/top-batches", admin},
	{"/v1/reports/top-users", admin},
	{"/v1/grant-jobs/j1", admin},
	{"/v1/admin/replays/r1", admin},
}

var writeRoutes = []struct {
	path string
	body any
}{
	{"/v1/batches/b1/grants", map[string]any{"user_ids": []string{"alice"}}},
	{"/v1/admin/replays", map[string]any{"projection": "view"}},
	{"/v1/admin/verify", nil},
}

func TestReadRoutesNeedTokenAndRole(t *testing.T) {
	e := newReadEnv(t)
	tokens := map[string]string{RoleUser: e.alice, RoleAdmin: e.admin, RoleService: e.service}
	for _, rt := range readRoutes {
		t.Run("GET "+rt.path, func(t *testing.T) {
			expectError(t, e.get(rt.path, ""), http.StatusUnauthorized, CodeUnauthenticated)
			expectError(t, e.get(rt.path, "garbage"), http.StatusUnauthorized, CodeUnauthenticated)
			for role, tok := range tokens {
				if !slices.Contains(rt.roles, role) {
					expectError(t, e.get(rt.path, tok), http.StatusForbidden, CodeForbidden)
				}
			}
		})
	}
	for _, rt := range writeRoutes {
		t.Run("POST "+rt.path, func(t *testing.T) {
			expectError(t, e.post(rt.path, "", rt.body), http.StatusUnauthorized, CodeUnauthenticated)
			expectError(t, e.post(rt.path, e.alice, rt.body), http.StatusForbidden, CodeForbidden)
			expectError(t, e.post(rt.path, e.service, rt.body), http.StatusForbidden, CodeForbidden)
		})
	}
	// Refused requests changed nothing.
	if pos := e.head(); pos != 0 {
		t.Fatalf("refused requests appended events (position %d)", pos)
	}
}

func TestReadyz(t *testing.T) {
	e := newReadEnv(t)
	r := e.get("/readyz", "")
	expectStatus(t, r, http.StatusOK)
	if string(r.Body) != "{\"status\":\"ready\"}\n" {
		t.Fatalf("readyz body %q", r.Body)
	}
	e.setReady(errors.New("projection view is 12000 events behind"))
	msg := expectError(t, e.get("/readyz", ""), http.StatusServiceUnavailable, CodeUnavailable)
	if !strings.Contains(msg, "view is 12000 events behind") {
		t.Fatalf("message %q does not say what is not ready", msg)
	}
	e.setReady(nil)
	expectStatus(t, e.get("/readyz", ""), http.StatusOK)
	// Without a read side there is nothing to wait for.
	expectStatus(t, newEnv(t).get("/readyz", ""), http.StatusOK)
}

// TestReadSideNotConfigured: without Deps.Queries (and Deps.Admin) the
// read-model routes answer 503; those reading the event store still work.
func TestReadSideNotConfigured(t *testing.T) {
	e := newEnv(t)
	b := e.issue(nil)
	e.claim(b.ID, e.alice)
	for _, rq := range []struct{ path, token string }{
		{"/v1/me/coupons", e.alice},
		{"/v1/me/coupons?status=used", e.alice},
		{"/v1/batches/claimable", e.alice},
		{"/v1/users/alice/coupons", e.admin},
		{"/v1/reports/batches/" + b.ID, e.admin},
		{"/v1/reports/top-batches", e.admin},
		{"/v1/reports/top-users", e.admin},
		{"/v1/admin/replays/r1", e.admin},
	} {
		expectError(t, e.get(rq.path, rq.token), http.StatusServiceUnavailable, CodeUnavailable)
	}
	expectError(t, e.post("/v1/admin/replays", e.admin, map[string]any{"projection": "view"}), http.StatusServiceUnavailable, CodeUnavailable)
	expectError(t, e.post("/v1/admin/verify", e.admin, nil), http.StatusServiceUnavailable, CodeUnavailable)
	// Time travel and the user audit read the event store itself.
	r := e.get("/v1/users/alice/coupons?as_of="+rfc(t0.Add(time.Minute)), e.admin)
	expectStatus(t, r, http.StatusOK)
	if got := decode[struct{ Coupons []readapi.CouponItem }](t, r); len(got.Coupons) != 1 {
		t.Fatalf("as_of without read side: %s", r.Body)
	}
	expectStatus(t, e.get("/v1/users/alice/events", e.admin), http.StatusOK)
}

func TestMyCouponsListsNewestFirstByStatus(t *testing.T) {
	e := newReadEnv(t)
	window := map[string]any{"valid_days": nil, "valid_from": t0.Format(time.RFC3339), "valid_until": t0.Add(2 * time.Hour).Format(time.RFC3339)}
	b1 := e.issue(nil)
	b2 := e.issue(map[string]any{"per_user_limit": 5})
	b3 := e.issue(window)
	c1 := e.claim(b1.ID, e.alice)
	e.clock.Advance(time.Second)
	c2 := e.claim(b2.ID, e.alice)
	e.clock.Advance(time.Second)
	c3 := e.claim(b2.ID, e.alice)
	e.clock.Advance(time.Second)
	c4 := e.claim(b3.ID, e.alice)
	e.clock.Advance(time.Second)
	c5 := e.claim(b2.ID, e.alice)
	bobs := e.claim(b1.ID, e.bob)

	e.lockFor(c2.ID, "alice", "order-2")
	e.clock.Advance(time.Minute)
	e.redeemFor(c3.ID, "alice", "order-3", 450)
	e.clock.Advance(time.Minute)
	e.redeemFor(c5.ID, "alice", "order-5", 500)
	e.clock.Advance(3 * time.Hour) // c4's window is over
	if _, err := e.handlers.Expire.Handle(t.Context(), commands.ExpireCoupon{CouponID: c4.ID}); err != nil {
		t.Fatal(err)
	}
	mp := fmt.Sprint(e.head())

	usable := e.list("/v1/me/coupons?min_position="+mp, e.alice)
	if got := couponIDs(usable.Coupons); !slices.Equal(got, []string{c1.ID}) || usable.NextCursor != "" {
		t.Fatalf("usable = %v (next %q), want [%s]", got, usable.NextCursor, c1.ID)
	}
	it := usable.Coupons[0]
	if it.Status != "usable" || it.BatchID != b1.ID || it.UserID != "alice" || it.AmountOff != 500 || it.Kind != "direct" ||
		!it.ObtainedAt.Equal(t0) || !it.ValidUntil.Equal(t0.Add(30*24*time.Hour)) || it.Scope.Kind != "all" {
		t.Fatalf("usable item = %+v", it)
	}
	if got := e.list("/v1/me/coupons?status=usable&min_position="+mp, e.alice); !slices.Equal(couponIDs(got.Coupons), []string{c1.ID}) {
		t.Fatalf("status=usable = %v", couponIDs(got.Coupons))
	}
	locked := e.list("/v1/me/coupons?status=locked&min_position="+mp, e.alice)
	if len(locked.Coupons) != 1 || locked.Coupons[0].ID != c2.ID || locked.Coupons[0].Status != "locked" ||
		locked.Coupons[0].OrderID != "order-2" || !locked.Coupons[0].HoldUntil.Equal(t0.Add(4*time.Second+15*time.Minute)) {
		t.Fatalf("locked = %+v", locked.Coupons)
	}
	used := e.list("/v1/me/coupons?status=used&min_position="+mp, e.alice)
	if got := couponIDs(used.Coupons); !slices.Equal(got, []string{c5.ID, c3.ID}) {
		t.Fatalf("used = %v, want newest redemption first [%s %s]", got, c5.ID, c3.ID)
	}
	if u := used.Coupons[0]; u.Status != "used" || u.Discount != 500 || u.OrderID != "order-5" ||
		!u.RedeemedAt.Equal(t0.Add(4*time.Second+2*time.Minute)) {
		t.Fatalf("used item = %+v", u)
	}
	expired := e.list("/v1/me/coupons?status=expired&min_position="+mp, e.alice)
	if len(expired.Coupons) != 1 || expired.Coupons[0].ID != c4.ID || expired.Coupons[0].Status != "expired" || expired.Coupons[0].ExpiredAt.IsZero() {
		t.Fatalf("expired = %+v", expired.Coupons)
	}
	// Bob sees only his own; the admin sees anyone's with the same filters.
	if got := e.list("/v1/me/coupons?min_position="+mp, e.bob); !slices.Equal(couponIDs(got.Coupons), []string{bobs.ID}) {
		t.Fatalf("bob's = %v", couponIDs(got.Coupons))
	}
	if got := e.list("/v1/users/alice/coupons?status=used&min_position="+mp, e.admin); !slices.Equal(couponIDs(got.Coupons), []string{c5.ID, c3.ID}) {
		t.Fatalf("admin view of alice's used = %v", couponIDs(got.Coupons))
	}
	if got := e.list("/v1/users/bob/coupons", e.admin); !slices.Equal(couponIDs(got.Coupons), []string{bobs.ID}) {
		t.Fatalf("admin view of bob's = %v", couponIDs(got.Coupons))
	}
	if r := e.get("/v1/users/nobody/coupons?status=used", e.admin); r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"coupons":[]`) {
		t.Fatalf("unknown user's used coupons: %s", r)
	}
}

func TestCouponListingRejectsBadParams(t *testing.T) {
	e := newReadEnv(t)
	e.claim(e.issue(nil).ID, e.alice)
	e.sync() // (an empty usable view answers 503: see TestEmptyUsableListing)
	for _, base := range []string{"/v1/me/coupons", "/v1/users/alice/coupons"} {
		tok := e.alice
		if strings.HasPrefix(base, "/v1/users") {
			tok = e.admin
		}
		for _, tc := range []struct{ query, names string }{
			{"status=redeemed", "status"},
			{"status=all", "status"},
			{"limit=-1", "limit"},
			{"limit=201", "limit"},
			{"limit=ten", "limit"},
			{"limit=1.5", "limit"},
			{"cursor=not-a-cursor!", "cursor"},
			{"status=used&cursor=%25%25%25", "cursor"},
			{"status=expired&cursor=bm9wZQ", "cursor"},
			{"min_position=-1", "min_position"},
			{"min_position=abc", "min_position"},
			{"min_position=99999999999999999999", "min_position"},
		} {
			t.Run(base+"?"+tc.query, func(t *testing.T) {
				msg := expectError(t, e.get(base+"?"+tc.query, tok), http.StatusBadRequest, CodeInvalidArgument)
				if !strings.Contains(msg, tc.names) {
					t.Fatalf("message %q does not name %q", msg, tc.names)
				}
			})
		}
	}
	expectError(t, e.get("/v1/users/"+strings.Repeat("u", 600)+"/coupons", e.admin), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, e.get("/v1/batches/claimable?min_position=-3", e.alice), http.StatusBadRequest, CodeInvalidArgument)
	// limit 0 is the default page size, 200 the largest.
	expectStatus(t, e.get("/v1/me/coupons?limit=0", e.alice), http.StatusOK)
	expectStatus(t, e.get("/v1/me/coupons?limit=200", e.alice), http.StatusOK)
}

// TestCouponListingPagesWhileClaiming pages through a listing while new
// claims land between the page fetches: every coupon present at the first
// fetch is seen exactly once, in order, and the new ones only on a fresh
// listing (they are newer, so before the first page).
func TestCouponListingPagesWhileClaiming(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"total_stock": 100, "per_user_limit": 50})
	claim := func(token string) string {
		e.clock.Advance(time.Second)
		return e.claim(b.ID, token).ID
	}
	var want []string // newest first
	for range 7 {
		want = slices.Insert(want, 0, claim(e.alice))
	}
	var seen, added []string
	cursor := ""
	for page := 0; ; page++ {
		q := fmt.Sprintf("/v1/me/coupons?limit=3&min_position=%d", e.head())
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		got := e.list(q, e.alice)
		if len(got.Coupons) > 3 {
			t.Fatalf("page %d holds %d coupons", page, len(got.Coupons))
		}
		seen = append(seen, couponIDs(got.Coupons)...)
		if got.NextCursor == "" {
			break
		}
		if page > 5 {
			t.Fatal("paging does not end")
		}
		cursor = got.NextCursor
		// New claims (and another user's) between the fetches.
		added = slices.Insert(added, 0, claim(e.alice))
		added = slices.Insert(added, 0, claim(e.alice))
		claim(e.bob)
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("paged listing = %v\nwant            %v", seen, want)
	}
	// A fresh listing starts with the newer claims.
	all := e.list(fmt.Sprintf("/v1/me/coupons?limit=200&min_position=%d", e.head()), e.alice)
	if got := couponIDs(all.Coupons); !slices.Equal(got, append(slices.Clone(added), want...)) {
		t.Fatalf("fresh listing = %v, want %v then %v", got, added, want)
	}
}

// TestCouponListingTies: coupons obtained at the same instant page without
// duplicates or gaps (ties by coupon id, descending).
func TestCouponListingTies(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 10})
	var ids []string
	for range 4 {
		ids = append(ids, e.claim(b.ID, e.alice).ID)
	}
	slices.Sort(ids)
	slices.Reverse(ids)
	var seen []string
	cursor := ""
	for range 10 {
		q := fmt.Sprintf("/v1/me/coupons?limit=3&min_position=%d", e.head())
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		got := e.list(q, e.alice)
		seen = append(seen, couponIDs(got.Coupons)...)
		if cursor = got.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(seen, ids) {
		t.Fatalf("same-instant pages = %v, want %v", seen, ids)
	}
}

// TestUsedListingPages pages the history-backed listing.
func TestUsedListingPages(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 10})
	var want []string
	for i := range 5 {
		c := e.claim(b.ID, e.alice)
		e.clock.Advance(time.Minute)
		e.redeemFor(c.ID, "alice", fmt.Sprint("order-", i), 100)
		want = slices.Insert(want, 0, c.ID)
	}
	var seen []string
	cursor := ""
	for range 10 {
		q := fmt.Sprintf("/v1/me/coupons?status=used&limit=2&min_position=%d", e.head())
		if cursor != "" {
			q += "&cursor=" + url.QueryEscape(cursor)
		}
		got := e.list(q, e.alice)
		seen = append(seen, couponIDs(got.Coupons)...)
		if cursor = got.NextCursor; cursor == "" {
			break
		}
	}
	if !slices.Equal(seen, want) {
		t.Fatalf("used pages = %v, want %v", seen, want)
	}
}

// TestReadYourWrites: a claim's position passed as min_position makes the
// listing wait for the view to hold it.
func TestReadYourWrites(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 10})
	// The view lags: the listing waits for it instead of answering without the claim.
	first := e.claim(b.ID, e.alice)
	e.sync()
	e.paused["view"].pause()
	c := e.claim(b.ID, e.alice)
	done := make(chan readapi.CouponList, 1)
	go func() {
		r := e.do(req{Method: http.MethodGet, Path: fmt.Sprintf("/v1/me/coupons?min_position=%d", c.Position), Token: e.alice})
		var l readapi.CouponList
		if r.Status != http.StatusOK || json.Unmarshal(r.Body, &l) != nil {
			t.Errorf("listing with min_position: %s", r)
		}
		done <- l
	}()
	select {
	case l := <-done:
		t.Fatalf("answered %v before the view caught up", couponIDs(l.Coupons))
	case <-time.After(150 * time.Millisecond):
	}
	if l := e.list("/v1/me/coupons", e.alice); !slices.Equal(couponIDs(l.Coupons), []string{first.ID}) {
		t.Fatalf("without min_position the lagging view has %v, want [%s]", couponIDs(l.Coupons), first.ID)
	}
	e.paused["view"].resume()
	select {
	case l := <-done:
		if !slices.Equal(couponIDs(l.Coupons), []string{c.ID, first.ID}) {
			t.Fatalf("after the wait: %v, want [%s %s]", couponIDs(l.Coupons), c.ID, first.ID)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the listing did not answer once the view caught up")
	}
	// Claim, then read at once: always visible.
	for range 5 {
		c := e.claim(b.ID, e.alice)
		l := e.list(fmt.Sprintf("/v1/me/coupons?min_position=%d", c.Position), e.alice)
		if len(l.Coupons) == 0 || l.Coupons[0].ID != c.ID {
			t.Fatalf("claim %s (position %d) not visible: %v", c.ID, c.Position, couponIDs(l.Coupons))
		}
	}
	// Redeemed: the history listing waits for the history projector.
	e.sync()
	e.paused["history"].pause()
	red := e.redeemFor(c.ID, "alice", "o-ryw", 10)
	go func() {
		r := e.do(req{Method: http.MethodGet, Path: fmt.Sprintf("/v1/me/coupons?status=used&min_position=%d", red.Position), Token: e.alice})
		var l readapi.CouponList
		_ = json.Unmarshal(r.Body, &l)
		done <- l
	}()
	time.Sleep(50 * time.Millisecond)
	e.paused["history"].resume()
	if l := <-done; !slices.Equal(couponIDs(l.Coupons), []string{c.ID}) {
		t.Fatalf("used after redeem = %v", couponIDs(l.Coupons))
	}
}

// TestMinPositionNotReached: past the wait bound the answer is a retryable 503.
func TestMinPositionNotReached(t *testing.T) {
	e := newReadEnv(t, withMaxWait(100*time.Millisecond))
	b := e.issue(nil)
	c := e.claim(b.ID, e.alice)
	far := c.Position + 1000
	for _, path := range []string{
		fmt.Sprintf("/v1/me/coupons?min_position=%d", far),
		fmt.Sprintf("/v1/me/coupons?status=expired&min_position=%d", far),
		fmt.Sprintf("/v1/batches/claimable?min_position=%d", far),
	} {
		start := time.Now()
		msg := expectError(t, e.get(path, e.alice), http.StatusServiceUnavailable, CodeUnavailable)
		if d := time.Since(start); d < 100*time.Millisecond || d > 2*time.Second {
			t.Errorf("%s answered after %v, want about the 100ms bound", path, d)
		}
		if !strings.Contains(msg, fmt.Sprint(far)) {
			t.Errorf("message %q does not name the position", msg)
		}
	}
	expectError(t, e.get(fmt.Sprintf("/v1/users/alice/coupons?min_position=%d", far), e.admin), http.StatusServiceUnavailable, CodeUnavailable)
	// A paused projector: its listing is 503, the other one answers.
	e.sync()
	e.paused["history"].pause()
	c2 := e.claim(b.ID, e.bob)
	expectError(t, e.get(fmt.Sprintf("/v1/me/coupons?status=used&min_position=%d", c2.Position), e.bob), http.StatusServiceUnavailable, CodeUnavailable)
	if l := e.list(fmt.Sprintf("/v1/me/coupons?min_position=%d", c2.Position), e.bob); len(l.Coupons) != 1 {
		t.Fatalf("usable listing = %v", couponIDs(l.Coupons))
	}
}

type claimableBatch struct {
	ID           string         `json:"id"`
	Rules        map[string]any `json:"rules"`
	TotalStock   int64          `json:"total_stock"`
	ClaimedByMe  bool           `json:"claimed_by_me"`
	ClaimedCount int64          `json:"claimed_count"`
}

func (e *readEnv) claimable(token string) []claimableBatch {
	e.t.Helper()
	r := e.get(fmt.Sprintf("/v1/batches/claimable?min_position=%d", e.head()), token)
	expectStatus(e.t, r, http.StatusOK)
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &raw); err != nil || len(raw) != 1 || raw["batches"] == nil {
		e.t.Fatalf("claimable body %s", r.Body)
	}
	return decode[struct{ Batches []claimableBatch }](e.t, r).Batches
}

func TestClaimable(t *testing.T) {
	e := newReadEnv(t)
	hour := func(h int) string { return t0.Add(time.Duration(h) * time.Hour).Format(time.RFC3339) }
	soon := e.issue(map[string]any{"name": "soon", "claim_ends_at": hour(2), "per_user_limit": 3, "total_stock": 7})
	later := e.issue(map[string]any{"name": "later", "claim_ends_at": hour(5)})
	e.issue(map[string]any{"name": "targeted", "audience": "targeted"})
	e.issue(map[string]any{"name": "scheduled", "claim_starts_at": hour(1)})
	paused := e.issue(map[string]any{"name": "paused"})
	expectStatus(t, e.post("/v1/batches/"+paused.ID+"/pause", e.admin, nil), http.StatusOK)
	stopped := e.issue(map[string]any{"name": "stopped"})
	expectStatus(t, e.post("/v1/batches/"+stopped.ID+"/stop", e.admin, nil), http.StatusOK)
	e.claim(soon.ID, e.alice)
	e.claim(soon.ID, e.alice)

	got := e.claimable(e.alice)
	if len(got) != 2 || got[0].ID != soon.ID || got[1].ID != later.ID {
		t.Fatalf("claimable = %+v, want [soon later] (soonest end first)", got)
	}
	if !got[0].ClaimedByMe || got[0].ClaimedCount != 2 || got[0].TotalStock != 7 || got[0].Rules["name"] != "soon" ||
		got[0].Rules["audience"] != "public" || got[0].Rules["per_user_limit"] != float64(3) {
		t.Fatalf("soon for alice = %+v", got[0])
	}
	if got[1].ClaimedByMe || got[1].ClaimedCount != 0 {
		t.Fatalf("later for alice = %+v", got[1])
	}
	for _, b := range e.claimable(e.bob) {
		if b.ClaimedByMe || b.ClaimedCount != 0 {
			t.Fatalf("bob claimed nothing: %+v", b)
		}
	}
	// Time passes: soon's window ends; the scheduled one starts.
	e.clock.Advance(2 * time.Hour)
	names := []string{}
	for _, b := range e.claimable(e.token("carol", RoleUser)) {
		names = append(names, b.Rules["name"].(string))
	}
	if !slices.Equal(names, []string{"later", "scheduled"}) {
		t.Fatalf("claimable at t0+2h = %v", names)
	}
	// Resumed: listed again.
	expectStatus(t, e.post("/v1/batches/"+paused.ID+"/resume", e.admin, nil), http.StatusOK)
	if got := e.claimable(e.alice); len(got) != 3 {
		t.Fatalf("after resume: %+v", got)
	}
}

// TestUserCouponsAsOf: time travel shows each coupon in the state it had.
func TestUserCouponsAsOf(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 5})
	c1 := e.claim(b.ID, e.alice) // t0
	e.claim(b.ID, e.bob)
	e.clock.Advance(time.Hour)
	e.lockFor(c1.ID, "alice", "order-1") // t0+1h
	e.clock.Advance(time.Hour)
	expectStatus(t, e.post("/v1/coupons/"+c1.ID+"/redeem", e.service, map[string]any{"order_id": "order-1", "payment_id": "p1", "discount": 500}), http.StatusOK) // t0+2h
	e.clock.Advance(time.Hour)
	c2 := e.claim(b.ID, e.alice) // t0+3h

	type asOf struct {
		AsOf    time.Time            `json:"as_of"`
		Coupons []readapi.CouponItem `json:"coupons"`
	}
	at := func(when time.Time, extra string) asOf {
		t.Helper()
		r := e.get("/v1/users/alice/coupons?as_of="+rfc(when)+extra, e.admin)
		expectStatus(t, r, http.StatusOK)
		v := decode[asOf](t, r)
		if !v.AsOf.Equal(when) {
			t.Fatalf("as_of echoed %v, want %v", v.AsOf, when)
		}
		if !strings.Contains(string(r.Body), `"coupons":[`) {
			t.Fatalf("coupons is not an array: %s", r.Body)
		}
		return v
	}
	state := func(v asOf) string {
		var s []string
		for _, c := range v.Coupons {
			s = append(s, c.ID+"="+c.Status)
		}
		return strings.Join(s, ",")
	}
	for _, tc := range []struct {
		when  time.Time
		extra string
		want  string
	}{
		{t0.Add(-time.Minute), "", ""},
		{t0, "", c1.ID + "=usable"},
		{t0.Add(30 * time.Minute), "", c1.ID + "=usable"},
		{t0.Add(90 * time.Minute), "", c1.ID + "=locked"},
		{t0.Add(90 * time.Minute), "&status=locked", c1.ID + "=locked"},
		{t0.Add(90 * time.Minute), "&status=usable", ""},
		{t0.Add(150 * time.Minute), "", c1.ID + "=used"},
		{t0.Add(4 * time.Hour), "", c2.ID + "=usable," + c1.ID + "=used"},
		{t0.Add(4 * time.Hour), "&status=used", c1.ID + "=used"},
	} {
		if got := state(at(tc.when, tc.extra)); got != tc.want {
			t.Errorf("as_of %v%s = %q, want %q", tc.when.Sub(t0), tc.extra, got, tc.want)
		}
	}
	if v := at(t0.Add(90*time.Minute), ""); v.Coupons[0].OrderID != "order-1" || v.Coupons[0].HoldUntil.IsZero() {
		t.Errorf("locked as of t0+90m = %+v", v.Coupons[0])
	}
	// An offset time is the same instant.
	if got := state(at(t0.Add(90*time.Minute).In(time.FixedZone("X", 2*3600)), "")); got != c1.ID+"=locked" {
		t.Errorf("as_of with an offset = %q", got)
	}
	// Now (no as_of) the read model has the current state.
	e.sync()
	if l := e.list("/v1/users/alice/coupons", e.admin); !slices.Equal(couponIDs(l.Coupons), []string{c2.ID}) {
		t.Fatalf("current usable = %v", couponIDs(l.Coupons))
	}
	for _, q := range []string{"as_of=yesterday", "as_of=2030-06-01", "as_of=2030-06-01T12:00:00", "as_of=" + rfc(t0) + "&status=bogus"} {
		msg := expectError(t, e.get("/v1/users/alice/coupons?"+q, e.admin), http.StatusBadRequest, CodeInvalidArgument)
		if !strings.Contains(msg, "as_of") && !strings.Contains(msg, "status") {
			t.Errorf("%s: message %q", q, msg)
		}
	}
}

type batchReport struct {
	BatchID        string    `json:"batch_id"`
	Claimed        int64     `json:"claimed"`
	Redeemed       int64     `json:"redeemed"`
	Expired        int64     `json:"expired"`
	TotalDiscount  int64     `json:"total_discount"`
	RedemptionRate float64   `json:"redemption_rate"`
	From           time.Time `json:"from"`
	To             time.Time `json:"to"`
}

func TestReports(t *testing.T) {
	e := newReadEnv(t)
	x := e.issue(map[string]any{"name": "x"})
	y := e.issue(map[string]any{"name": "y"})
	alice, bob := e.claim(x.ID, e.alice), e.claim(x.ID, e.bob)
	e.claim(x.ID, e.token("carol", RoleUser))
	dave := e.claim(y.ID, e.token("dave", RoleUser))
	e.clock.Advance(time.Hour)
	e.redeemFor(alice.ID, "alice", "o-a", 300) // t0+1h
	e.clock.Advance(time.Hour)
	e.redeemFor(dave.ID, "dave", "o-d", 100) // t0+2h
	e.clock.Advance(time.Hour)
	e.redeemFor(bob.ID, "bob", "o-b", 200) // t0+3h
	e.sync()

	get := func(path string) resp {
		t.Helper()
		r := e.get(path, e.admin)
		expectStatus(t, r, http.StatusOK)
		return r
	}
	rep := decode[batchReport](t, get("/v1/reports/batches/"+x.ID))
	if rep.BatchID != x.ID || rep.Claimed != 3 || rep.Redeemed != 2 || rep.TotalDiscount != 500 ||
		rep.RedemptionRate < 0.66 || rep.RedemptionRate > 0.67 || !rep.From.IsZero() || !rep.To.IsZero() {
		t.Fatalf("open report = %+v", rep)
	}
	from, to := t0.Add(30*time.Minute), t0.Add(2*time.Hour)
	rep = decode[batchReport](t, get("/v1/reports/batches/"+x.ID+"?from="+rfc(from)+"&to="+rfc(to)))
	if rep.Claimed != 0 || rep.Redeemed != 1 || rep.TotalDiscount != 300 || rep.RedemptionRate != 0 || !rep.From.Equal(from) || !rep.To.Equal(to) {
		t.Fatalf("report in [30m, 2h) = %+v", rep)
	}
	rep = decode[batchReport](t, get("/v1/reports/batches/"+x.ID+"?to="+rfc(t0.Add(time.Hour))))
	if rep.Claimed != 3 || rep.Redeemed != 0 { // to is exclusive
		t.Fatalf("report before 1h = %+v", rep)
	}
	if rep := decode[batchReport](t, get("/v1/reports/batches/nope")); rep.BatchID != "nope" || rep.Claimed != 0 {
		t.Fatalf("unknown batch = %+v", rep)
	}

	type topBatches struct{ Batches []batchReport }
	tb := decode[topBatches](t, get("/v1/reports/top-batches?from="+rfc(t0)+"&to="+rfc(t0.Add(150*time.Minute))))
	if len(tb.Batches) != 2 || tb.Batches[0].BatchID != x.ID || tb.Batches[0].Redeemed != 1 || tb.Batches[0].TotalDiscount != 300 ||
		tb.Batches[1].BatchID != y.ID || tb.Batches[1].RedemptionRate != 1 {
		t.Fatalf("top batches in [0, 2.5h) = %+v", tb.Batches)
	}
	if tb := decode[topBatches](t, get("/v1/reports/top-batches")); len(tb.Batches) != 2 || tb.Batches[0].BatchID != x.ID || tb.Batches[0].Redeemed != 2 {
		t.Fatalf("top batches = %+v", tb.Batches)
	}
	if tb := decode[topBatches](t, get("/v1/reports/top-batches?limit=1")); len(tb.Batches) != 1 {
		t.Fatalf("top batches limit 1 = %+v", tb.Batches)
	}
	if r := get("/v1/reports/top-batches?from=" + rfc(t0.Add(10*time.Hour))); !strings.Contains(string(r.Body), `"batches":[]`) {
		t.Fatalf("no redemption in range: %s", r.Body)
	}
	type topUsers struct {
		Users []struct {
			UserID        string `json:"user_id"`
			Redeemed      int64  `json:"redeemed"`
			TotalDiscount int64  `json:"total_discount"`
		}
	}
	tu := decode[topUsers](t, get("/v1/reports/top-users"))
	var order []string
	for _, u := range tu.Users {
		order = append(order, fmt.Sprintf("%s:%d:%d", u.UserID, u.Redeemed, u.TotalDiscount))
	}
	if !slices.Equal(order, []string{"alice:1:300", "bob:1:200", "dave:1:100"}) {
		t.Fatalf("top users = %v", order)
	}
	tu = decode[topUsers](t, get("/v1/reports/top-users?from="+rfc(t0.Add(90*time.Minute))+"&limit=1"))
	if len(tu.Users) != 1 || tu.Users[0].UserID != "bob" {
		t.Fatalf("top users from 1.5h, limit 1 = %+v", tu.Users)
	}

	for _, path := range []string{"/v1/reports/batches/" + x.ID, "/v1/reports/top-batches", "/v1/reports/top-users"} {
		for _, q := range []string{
			"from=yesterday", "to=2030-13-01T00:00:00Z", "from=1700000000",
			"from=" + rfc(t0) + "&to=" + rfc(t0), // empty range
			"from=" + rfc(t0.Add(time.Hour)) + "&to=" + rfc(t0),
		} {
			expectError(t, e.get(path+"?"+q, e.admin), http.StatusBadRequest, CodeInvalidArgument)
		}
	}
	for _, q := range []string{"limit=-1", "limit=many"} {
		expectError(t, e.get("/v1/reports/top-batches?"+q, e.admin), http.StatusBadRequest, CodeInvalidArgument)
		expectError(t, e.get("/v1/reports/top-users?"+q, e.admin), http.StatusBadRequest, CodeInvalidArgument)
	}
	expectError(t, e.get("/v1/reports/batches/"+strings.Repeat("b", 600), e.admin), http.StatusBadRequest, CodeInvalidArgument)
}

// TestEmptyUsableListing: a user without coupons, and the page after an
// exactly full last page, are empty pages (200), not errors.
func TestEmptyUsableListing(t *testing.T) {
	e := newReadEnv(t)
	r := e.get("/v1/me/coupons", e.alice)
	expectStatus(t, r, http.StatusOK)
	if string(r.Body) != "{\"coupons\":[]}\n" {
		t.Fatalf("empty listing body %s", r.Body)
	}
	b := e.issue(map[string]any{"per_user_limit": 5})
	e.claim(b.ID, e.alice)
	e.clock.Advance(time.Second)
	e.claim(b.ID, e.alice)
	l := e.list(fmt.Sprintf("/v1/me/coupons?limit=2&min_position=%d", e.head()), e.alice)
	if len(l.Coupons) != 2 {
		t.Fatalf("full page = %+v", l)
	}
	if l.NextCursor != "" {
		r := e.get("/v1/me/coupons?limit=2&cursor="+url.QueryEscape(l.NextCursor), e.alice)
		expectStatus(t, r, http.StatusOK)
		if rest := decode[readapi.CouponList](t, r); len(rest.Coupons) != 0 || rest.NextCursor != "" {
			t.Fatalf("after the last coupon: %+v", rest)
		}
	}
}
