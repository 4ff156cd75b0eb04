package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
	"github.com/couponsd/couponsd/readapi"
)

// withReminders returns a copy of e served by a second server on the same
// back ends whose Deps.Reminders is a real subscribe handler.
func withReminders(t *testing.T, e *env) *env {
	t.Helper()
	sub, err := commands.NewSubscribeReminderHandler(e.repo, e.clock)
	if err != nil {
		t.Fatal(err)
	}
	handlers, err := commands.NewHandlers(commands.Deps{Repo: e.repo, Guard: e.guard, Clock: e.clock}, 15*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	batches, err := readapi.NewBatches(e.repo, e.guard, zeroCounts{}, e.clock)
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{JWTSecret: testSecret}, Deps{
		Commands: handlers, Batches: batches, Repo: e.repo, Idempotency: idempotency.NewMemory(e.clock.Now),
		Metrics: NewMetrics(reg), Registry: reg, Clock: e.clock, Reminders: sub,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Echo())
	t.Cleanup(ts.Close)
	e2 := *e
	e2.srv, e2.ts, e2.reg = srv, ts, reg
	return &e2
}

// scheduled is a public batch whose claims open a day after t0.
func scheduled(over map[string]any) map[string]any {
	b := map[string]any{
		"claim_starts_at": t0.Add(24 * time.Hour).Format(time.RFC3339),
		"claim_ends_at":   t0.Add(72 * time.Hour).Format(time.RFC3339),
	}
	for k, v := range over {
		b[k] = v
	}
	return batchBody(b)
}

func TestSubscribeReminderRoute(t *testing.T) {
	e := withReminders(t, newEnv(t))
	batch := e.issue(scheduled(nil))
	path := "/v1/batches/" + batch.ID + "/reminders"

	r := e.post(path, e.alice, nil)
	expectStatus(t, r, http.StatusCreated)
	first := decode[ReminderView](t, r)
	want := ReminderView{BatchID: batch.ID, UserID: "alice", OpensAt: t0.Add(24 * time.Hour)}
	if !first.OpensAt.Equal(want.OpensAt) || first.BatchID != want.BatchID || first.UserID != want.UserID {
		t.Fatalf("subscription %+v, want %+v", first, want)
	}
	r = e.post(path, e.alice, nil)
	expectStatus(t, r, http.StatusOK)
	if string(r.Body) != string(e.post(path, e.alice, "{}").Body) || decode[ReminderView](t, r) != first {
		t.Fatalf("repeat answered %s, want the first subscription", r.Body)
	}
	expectStatus(t, e.post(path, e.bob, nil), http.StatusCreated)
	if got := len(e.reminderEvents(t, batch.ID, "alice")); got != 1 {
		t.Fatalf("alice's reminder stream holds %d events, want 1", got)
	}

	// The generic Idempotency-Key replay applies.
	e.clock.Advance(time.Second)
	key := []string{HeaderIdempotencyKey, "sub-carol-1"}
	carol := e.token("carol", RoleUser)
	r = e.post(path, carol, nil, key...)
	expectStatus(t, r, http.StatusCreated)
	r = e.post(path, carol, nil, key...)
	expectStatus(t, r, http.StatusCreated)
	if r.Header.Get(HeaderIdempotentReplayed) != "true" {
		t.Fatal("a retry with the same Idempotency-Key was not replayed")
	}

	// Refusals.
	expectError(t, e.post("/v1/batches/nope/reminders", e.alice, nil), http.StatusNotFound, CodeNotFound)
	open := e.issue(nil) // running at t0
	expectError(t, e.post("/v1/batches/"+open.ID+"/reminders", e.alice, nil), http.StatusConflict, CodeConflict)
	targeted := e.issue(scheduled(map[string]any{"audience": "targeted"}))
	expectError(t, e.post("/v1/batches/"+targeted.ID+"/reminders", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	stopped := e.issue(scheduled(nil))
	expectStatus(t, e.post("/v1/batches/"+stopped.ID+"/stop", e.admin, nil), http.StatusOK)
	expectError(t, e.post("/v1/batches/"+stopped.ID+"/reminders", e.alice, nil), http.StatusUnprocessableEntity, CodeNotClaimable)
	expectError(t, e.post(path, e.alice, `{"x":1}`), http.StatusBadRequest, CodeInvalidArgument)
	expectError(t, e.post(path, "", nil), http.StatusUnauthorized, CodeUnauthenticated)
	expectError(t, e.post(path, "not-a-token", nil), http.StatusUnauthorized, CodeUnauthenticated)
	expectError(t, e.post(path, e.admin, nil), http.StatusForbidden, CodeForbidden)
	expectError(t, e.post(path, e.service, nil), http.StatusForbidden, CodeForbidden)

	// Once the batch opens, a new subscription is a conflict.
	e.clock.Advance(24 * time.Hour)
	expectError(t, e.post(path, e.token("dave", RoleUser), nil), http.StatusConflict, CodeConflict)
}

func (e *env) reminderEvents(t *testing.T, batchID, userID string) []string {
	t.Helper()
	recs, err := e.repo.Store().ReadStream(t.Context(), commands.ReminderStream(batchID, userID), 0)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.Type
	}
	return out
}

// Without Deps.Reminders the route exists and answers 503.
func TestSubscribeReminderRouteUnconfigured(t *testing.T) {
	e := newEnv(t)
	batch := e.issue(scheduled(nil))
	expectError(t, e.post("/v1/batches/"+batch.ID+"/reminders", e.alice, nil), http.StatusServiceUnavailable, CodeUnavailable)
	expectError(t, e.post("/v1/batches/"+batch.ID+"/reminders", "", nil), http.StatusUnauthorized, CodeUnauthenticated)
}
