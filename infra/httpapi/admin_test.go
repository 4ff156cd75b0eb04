package httpapi

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/readapi"
)

// blockingProjector is a replay target whose Handle waits for release, then
// fails with fail (nil: succeeds).
type blockingProjector struct {
	name    string
	entered chan struct{}
	release chan struct{}
	once    sync.Once
	fail    error
}

func newBlockingProjector(t *testing.T, name string, fail error) *blockingProjector {
	p := &blockingProjector{name: name, entered: make(chan struct{}), release: make(chan struct{}), fail: fail}
	t.Cleanup(p.unblock)
	return p
}

func (p *blockingProjector) unblock() {
	select {
	case <-p.release:
	default:
		close(p.release)
	}
}

func (p *blockingProjector) Name() string                               { return p.name }
func (p *blockingProjector) Checkpoint(context.Context) (uint64, error) { return 0, nil }
func (p *blockingProjector) Handle(ctx context.Context, _ es.RecordedEvent) error {
	p.once.Do(func() { close(p.entered) })
	select {
	case <-p.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	return p.fail
}

// replayDone polls GET /v1/admin/replays/{id} until the replay ended.
func (e *env) replayDone(id string) readapi.ReplayStatus {
	e.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		r := e.get("/v1/admin/replays/"+id, e.admin)
		expectStatus(e.t, r, http.StatusOK)
		st := decode[readapi.ReplayStatus](e.t, r)
		if st.ID != id {
			e.t.Fatalf("status of %s: %s", id, r.Body)
		}
		if st.State != "running" {
			return st
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("replay %s did not end: %+v", id, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) startReplay(body any) readapi.ReplayStatus {
	e.t.Helper()
	r := e.post("/v1/admin/replays", e.admin, body)
	expectStatus(e.t, r, http.StatusAccepted)
	return decode[readapi.ReplayStatus](e.t, r)
}

func TestReplayRebuildsTheViewWhileServing(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 10})
	var want []string
	for range 3 {
		e.clock.Advance(time.Second)
		want = slices.Insert(want, 0, e.claim(b.ID, e.alice).ID)
	}
	e.sync()
	head := e.head()
	st := e.startReplay(map[string]any{"projection": "view"})
	if st.ID == "" || st.Projection != "view" || st.Mode != "rebuild" || (st.State != "running" && st.State != "finished") || st.Started.IsZero() {
		t.Fatalf("started = %+v", st)
	}
	st = e.replayDone(st.ID)
	if st.State != "finished" || st.Error != "" || st.Done < head || st.Position < head || st.Finished.IsZero() {
		t.Fatalf("finished = %+v (head %d)", st, head)
	}
	if g := e.view.Generation(); g != 1 {
		t.Fatalf("view generation = %d, want 1 after the rebuild", g)
	}
	// The rebuilt view serves the same listing and keeps being fed.
	if l := e.list("/v1/me/coupons", e.alice); !slices.Equal(couponIDs(l.Coupons), want) {
		t.Fatalf("after rebuild = %v, want %v", couponIDs(l.Coupons), want)
	}
	e.clock.Advance(time.Second)
	c := e.claim(b.ID, e.alice)
	if l := e.list(fmt.Sprintf("/v1/me/coupons?min_position=%d", c.Position), e.alice); len(l.Coupons) != 4 || l.Coupons[0].ID != c.ID {
		t.Fatalf("claim after rebuild not listed: %v", couponIDs(l.Coupons))
	}
	if got := e.claimable(e.alice); len(got) != 1 || !got[0].ClaimedByMe || got[0].ClaimedCount != 4 {
		t.Fatalf("claimable after rebuild = %+v", got)
	}

	// Re-apply from a position through the live projector.
	st = e.startReplay(map[string]any{"projection": "history", "from": 2})
	if st.Mode != "reapply" {
		t.Fatalf("reapply started = %+v", st)
	}
	if st = e.replayDone(st.ID); st.State != "finished" || st.Done != e.head()-2 {
		t.Fatalf("reapply = %+v", st)
	}
}

func TestReplayRejectsBadRequests(t *testing.T) {
	e := newReadEnv(t)
	for _, tc := range []struct {
		name  string
		body  any
		field string
	}{
		{"unknown projection", map[string]any{"projection": "nope"}, "view"}, // the message lists the known ones
		{"no projection", map[string]any{}, "projection"},
		{"empty body", "", "body"},
		{"unknown field", map[string]any{"projection": "view", "force": true}, "force"},
		{"negative from", map[string]any{"projection": "view", "from": -1}, "from"},
		{"string from", map[string]any{"projection": "view", "from": "0"}, "from"},
		{"not rebuildable", map[string]any{"projection": "grant-jobs"}, "from"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			msg := expectError(t, e.post("/v1/admin/replays", e.admin, tc.body), http.StatusBadRequest, CodeInvalidArgument)
			if !strings.Contains(msg, tc.field) {
				t.Fatalf("message %q does not name %q", msg, tc.field)
			}
		})
	}
	expectError(t, e.get("/v1/admin/replays/no-such-replay", e.admin), http.StatusNotFound, CodeNotFound)
}

func TestReplayConflictsAndFailures(t *testing.T) {
	blocker := newBlockingProjector(t, "slow", nil)
	failing := newBlockingProjector(t, "broken", errors.New("disk on fire"))
	failing.unblock()
	e := newReadEnv(t, withReplayTarget("slow", blocker), withReplayTarget("broken", failing))
	e.claim(e.issue(nil).ID, e.alice)
	// One replay per projection at a time.
	st := e.startReplay(map[string]any{"projection": "slow", "from": 0})
	<-blocker.entered
	expectError(t, e.post("/v1/admin/replays", e.admin, map[string]any{"projection": "slow", "from": 0}), http.StatusConflict, CodeConflict)
	r := e.get("/v1/admin/replays/"+st.ID, e.admin)
	expectStatus(t, r, http.StatusOK)
	if cur := decode[readapi.ReplayStatus](t, r); cur.State != "running" {
		t.Fatalf("blocked replay = %+v", cur)
	}
	// Another projection may replay meanwhile.
	other := e.startReplay(map[string]any{"projection": "view", "from": 0})
	blocker.unblock()
	if st := e.replayDone(st.ID); st.State != "finished" {
		t.Fatalf("unblocked replay = %+v", st)
	}
	if st := e.replayDone(other.ID); st.State != "finished" {
		t.Fatalf("concurrent replay = %+v", st)
	}
	// Done: it may run again.
	e.replayDone(e.startReplay(map[string]any{"projection": "slow", "from": 0}).ID)

	// A failing replay reports why.
	st = e.replayDone(e.startReplay(map[string]any{"projection": "broken", "from": 0}).ID)
	if st.State != "failed" || !strings.Contains(st.Error, "disk on fire") || st.Finished.IsZero() {
		t.Fatalf("failed replay = %+v", st)
	}
}

func TestVerify(t *testing.T) {
	var calls atomic.Int32
	e := newReadEnv(t, withVerify(func(context.Context) (any, error) {
		switch calls.Add(1) {
		case 1, 2:
			return map[string]any{"ok": false, "checked": 12, "differences": []string{"view: coupon c1 missing"}}, nil
		case 3:
			return nil, domain.Errorf(domain.ErrUnavailable, "redis is down")
		default:
			return nil, errors.New("secret internal detail")
		}
	}))
	r := e.post("/v1/admin/verify", e.admin, nil)
	expectStatus(t, r, http.StatusOK)
	rep := decode[map[string]any](t, r)
	if rep["ok"] != false || rep["checked"] != float64(12) || len(rep["differences"].([]any)) != 1 {
		t.Fatalf("report = %s", r.Body)
	}
	expectStatus(t, e.post("/v1/admin/verify", e.admin, "{}"), http.StatusOK)
	expectError(t, e.post("/v1/admin/verify", e.admin, map[string]any{"deep": true}), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, e.post("/v1/admin/verify", e.admin, nil), http.StatusServiceUnavailable, CodeUnavailable)
	msg := expectError(t, e.post("/v1/admin/verify", e.admin, nil), http.StatusInternalServerError, CodeInternal)
	if strings.Contains(msg, "secret") {
		t.Fatalf("internal error leaked: %q", msg)
	}
	if n := calls.Load(); n != 4 {
		t.Fatalf("verify ran %d times, want 4 (the refused body must not run it)", n)
	}
}

func TestUserEvents(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"per_user_limit": 3})
	c1 := e.claim(b.ID, e.alice)
	e.claim(b.ID, e.bob)
	e.clock.Advance(time.Minute)
	c2 := e.claim(b.ID, e.alice)
	e.lockFor(c1.ID, "alice", "order-1")
	expectStatus(t, e.post("/v1/coupons/"+c1.ID+"/unlock", e.service, map[string]any{"order_id": "order-1"}), http.StatusOK)

	r := e.get("/v1/users/alice/events", e.admin)
	expectStatus(t, r, http.StatusOK)
	got := decode[struct {
		UserID string                   `json:"user_id"`
		Events []readapi.UserAuditEvent `json:"events"`
	}](t, r)
	var trail []string
	for i, ev := range got.Events {
		trail = append(trail, ev.CouponID+":"+ev.Type)
		if i > 0 && ev.Position <= got.Events[i-1].Position {
			t.Fatalf("events not in store order: %s", r.Body)
		}
		if ev.RecordedAt.IsZero() || len(ev.Data) == 0 {
			t.Fatalf("event %+v", ev)
		}
	}
	want := []string{c1.ID + ":" + domain.EvCouponClaimed, c2.ID + ":" + domain.EvCouponClaimed,
		c1.ID + ":" + domain.EvCouponLocked, c1.ID + ":" + domain.EvCouponUnlocked}
	if got.UserID != "alice" || !slices.Equal(trail, want) {
		t.Fatalf("alice's trail = %v\nwant %v", trail, want)
	}
	if r := e.get("/v1/users/nobody/events", e.admin); r.Status != http.StatusOK || !strings.Contains(string(r.Body), `"events":[]`) {
		t.Fatalf("unknown user: %s", r)
	}
	expectError(t, e.get("/v1/users/"+strings.Repeat("u", 600)+"/events", e.admin), http.StatusBadRequest, CodeInvalidArgument)
}
