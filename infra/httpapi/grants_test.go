package httpapi

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/infra/grantbus"
	"github.com/couponsd/couponsd/infra/redisjobs"
)

// grantJobFinished polls GET /v1/grant-jobs/{id} until the job is finished.
func (e *env) grantJobFinished(id string) commands.GrantJobStatus {
	e.t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r := e.get("/v1/grant-jobs/"+id, e.admin)
		expectStatus(e.t, r, http.StatusOK)
		st := decode[commands.GrantJobStatus](e.t, r)
		if st.JobID != id {
			e.t.Fatalf("job status of %s: %s", id, r.Body)
		}
		switch st.State {
		case commands.GrantJobFinished:
			return st
		case commands.GrantJobPending, commands.GrantJobRunning:
		default:
			e.t.Fatalf("job state %q", st.State)
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("grant job %s did not finish: %+v", id, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func (e *env) grant(batchID string, body any, headers ...string) GrantJobAccepted {
	e.t.Helper()
	r := e.post("/v1/batches/"+batchID+"/grants", e.admin, body, headers...)
	expectStatus(e.t, r, http.StatusAccepted)
	a := decode[GrantJobAccepted](e.t, r)
	if a.JobID == "" {
		e.t.Fatalf("no job id: %s", r.Body)
	}
	return a
}

func TestGrantJob(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"audience": "targeted", "total_stock": 4})

	acc := e.grant(b.ID, map[string]any{"user_ids": []string{"u1", "u2", "u1", "alice"}})
	if acc.Total != 4 {
		t.Fatalf("accepted = %+v", acc)
	}
	st := e.grantJobFinished(acc.JobID)
	if st.BatchID != b.ID || st.Total != 4 || st.Granted != 3 || st.Skipped != 1 || st.NotGranted != 0 || st.Failed != 0 ||
		st.Outcome != "completed" || st.FinishedAt.IsZero() {
		t.Fatalf("finished job = %+v", st)
	}
	// The granted coupon is alice's like a claimed one.
	l := e.list(fmt.Sprintf("/v1/me/coupons?min_position=%d", e.head()), e.alice)
	if len(l.Coupons) != 1 || l.Coupons[0].BatchID != b.ID {
		t.Fatalf("alice's coupons after the grant: %+v", l.Coupons)
	}

	// A second job: alice already holds the per-user limit (skipped); one
	// unit is left, so the list runs out of stock.
	acc = e.grant(b.ID, map[string]any{"user_ids": []string{"alice", "bob", "carol", "dave"}})
	st = e.grantJobFinished(acc.JobID)
	if st.Granted != 1 || st.Skipped != 1 || st.NotGranted != 2 || st.Outcome != "sold_out" || st.Total != 4 {
		t.Fatalf("sold-out job = %+v", st)
	}
	// Shards run in parallel: any one of the three eligible users got it.
	holders := 0
	for _, u := range []string{"bob", "carol", "dave"} {
		holders += len(e.list(fmt.Sprintf("/v1/users/%s/coupons?min_position=%d", u, e.head()), e.admin).Coupons)
	}
	if holders != 1 {
		t.Fatalf("%d of bob, carol and dave hold a coupon, want 1", holders)
	}

	expectError(t, e.get("/v1/grant-jobs/no-such-job", e.admin), http.StatusNotFound, CodeNotFound)
	expectError(t, e.get("/v1/grant-jobs/"+strings.Repeat("j", 600), e.admin), http.StatusBadRequest, CodeInvalidArgument)
}

func TestGrantJobFromCSV(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"audience": "targeted", "total_stock": 10})
	csvHeader := []string{"Content-Type", "text/csv; charset=utf-8"}
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"header and extra columns", "user_id,name\nu1,Ann\n\n u2 ,Bob\n", []string{"u1", "u2"}},
		{"no header, CRLF", "u3\r\nu4\r\n", []string{"u3", "u4"}},
		{"byte order mark", "\ufeffuser_id\r\nu5\r\n", []string{"u5"}},
		{"byte order mark without header", "\ufeffu6\nu7\n", []string{"u6", "u7"}},
		{"quoted", "\"user_id\"\n\"u8\"\n", []string{"u8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			acc := e.grant(b.ID, tc.body, csvHeader...)
			if acc.Total != len(tc.want) {
				t.Fatalf("total = %d, want %d", acc.Total, len(tc.want))
			}
			if st := e.grantJobFinished(acc.JobID); st.Granted != len(tc.want) {
				t.Fatalf("job = %+v", st)
			}
			e.sync()
			for _, u := range tc.want {
				if l := e.list("/v1/users/"+u+"/coupons", e.admin); len(l.Coupons) != 1 {
					t.Fatalf("user %q has %d coupons", u, len(l.Coupons))
				}
			}
		})
	}
	// The media type is case-insensitive.
	acc := e.grant(b.ID, "u9\n", "Content-Type", "Text/CSV")
	if acc.Total != 1 {
		t.Fatalf("Text/CSV: %+v", acc)
	}
	for _, body := range []string{"", "user_id\n", "\n\n", " ,x\n", "\"u1\n", "u1,\"x\n"} {
		msg := expectError(t, e.post("/v1/batches/"+b.ID+"/grants", e.admin, body, csvHeader...), http.StatusBadRequest, CodeInvalidArgument)
		if !strings.Contains(msg, "body") && !strings.Contains(msg, "user") {
			t.Errorf("CSV %q: message %q", body, msg)
		}
	}
	// A user id with control characters is refused.
	expectError(t, e.post("/v1/batches/"+b.ID+"/grants", e.admin, "ok\n\"bad\x01id\"\n", csvHeader...), http.StatusBadRequest, CodeInvalidArgument)
}

func TestGrantJobRefusals(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"audience": "targeted"})
	path := "/v1/batches/" + b.ID + "/grants"
	for _, tc := range []struct {
		name string
		body any
	}{
		{"empty list", map[string]any{"user_ids": []string{}}},
		{"no list", map[string]any{}},
		{"null list", `{"user_ids": null}`},
		{"empty body", ""},
		{"unknown field", map[string]any{"user_ids": []string{"u1"}, "note": "x"}},
		{"not a list", map[string]any{"user_ids": "u1,u2"}},
		{"empty id", map[string]any{"user_ids": []string{"u1", ""}}},
		{"long id", map[string]any{"user_ids": []string{strings.Repeat("u", 600)}}},
		{"malformed", `{"user_ids": [`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, e.post(path, e.admin, tc.body), http.StatusBadRequest, CodeInvalidArgument)
		})
	}
	expectError(t, e.post("/v1/batches/no-such-batch/grants", e.admin, map[string]any{"user_ids": []string{"u1"}}), http.StatusNotFound, CodeNotFound)
	// An id of 1 MiB is read (uploads have their own limit) and refused.
	big := `{"user_ids": ["` + strings.Repeat("u", 1<<20) + `"]}`
	expectError(t, e.post(path, e.admin, big), http.StatusBadRequest, CodeInvalidArgument)
	stopped := e.issue(map[string]any{"audience": "targeted"})
	expectStatus(t, e.post("/v1/batches/"+stopped.ID+"/stop", e.admin, nil), http.StatusOK)
	expectError(t, e.post("/v1/batches/"+stopped.ID+"/grants", e.admin, map[string]any{"user_ids": []string{"u1"}}), http.StatusConflict, CodeConflict)
}

func TestGrantJobIdempotencyKey(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"audience": "targeted", "total_stock": 10})
	body := map[string]any{"user_ids": []string{"u1", "u2"}}
	r1 := e.post("/v1/batches/"+b.ID+"/grants", e.admin, body, HeaderIdempotencyKey, "grant-1")
	expectStatus(t, r1, http.StatusAccepted)
	a1 := decode[GrantJobAccepted](t, r1)
	r2 := e.post("/v1/batches/"+b.ID+"/grants", e.admin, body, HeaderIdempotencyKey, "grant-1")
	expectStatus(t, r2, http.StatusAccepted)
	if a2 := decode[GrantJobAccepted](t, r2); a2 != a1 || r2.Header.Get(HeaderIdempotentReplayed) != "true" {
		t.Fatalf("replay = %+v (%q), first %+v", a2, r2.Header.Get(HeaderIdempotentReplayed), a1)
	}
	expectError(t, e.post("/v1/batches/"+b.ID+"/grants", e.admin, map[string]any{"user_ids": []string{"u3"}}, HeaderIdempotencyKey, "grant-1"),
		http.StatusConflict, CodeConflict)
	st := e.grantJobFinished(a1.JobID)
	if st.Granted != 2 {
		t.Fatalf("job = %+v", st)
	}
	// Another key is another job; its users already hold their coupon.
	a3 := e.grant(b.ID, body, HeaderIdempotencyKey, "grant-2")
	if a3.JobID == a1.JobID {
		t.Fatal("another key gave the same job")
	}
	if st := e.grantJobFinished(a3.JobID); st.Granted != 0 || st.Skipped != 2 {
		t.Fatalf("second job = %+v", st)
	}
	e.sync()
	var granted []string
	for _, u := range []string{"u1", "u2"} {
		l := e.list("/v1/users/"+u+"/coupons", e.admin)
		granted = append(granted, couponIDs(l.Coupons)...)
	}
	if len(granted) != 2 || slices.Contains(granted, "") {
		t.Fatalf("granted coupons = %v", granted)
	}
}

// attachGrants gives handlers the grant jobs (in-process shard bus, Redis
// tracker and leases); the returned run consumes shards until ctx ends.
func attachGrants(t testing.TB, handlers *commands.Handlers, d commands.Deps, jobs *redisjobs.Store, log *slog.Logger) func(ctx context.Context) {
	t.Helper()
	bus, err := grantbus.NewEmbedded(grantbus.Config{}, log)
	if err != nil {
		t.Fatal(err)
	}
	grants, err := commands.NewGrantJobs(d, commands.GrantJobsDeps{Bus: bus.Bus, Tracker: jobs, Leases: jobs}, commands.GrantJobsConfig{
		Upload:      commands.GrantUploadConfig{TempDir: t.TempDir()},
		Coordinator: commands.GrantCoordinatorConfig{Interval: 10 * time.Millisecond},
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.Consume(grants.Shard); err != nil {
		t.Fatal(err)
	}
	handlers.Grants = grants
	t.Cleanup(func() { _ = bus.Close() })
	return func(ctx context.Context) { _ = bus.Run(ctx) }
}

// A CSV far over the 1 MiB limit of other routes is streamed into a job
// (120,000 rows, about 1.8 MB), and the upload could extend its connection
// deadlines past the server's timeouts.
func TestGrantJobBigCSVUpload(t *testing.T) {
	e := newReadEnv(t)
	b := e.issue(map[string]any{"audience": "targeted", "total_stock": 10})
	var sb strings.Builder
	sb.WriteString("user_id\n")
	for i := range 120_000 {
		fmt.Fprintf(&sb, "shopper-%06d\n", i)
	}
	if sb.Len() <= 1<<20 {
		t.Fatalf("%d bytes is not over 1 MiB", sb.Len())
	}
	acc := e.grant(b.ID, sb.String(), "Content-Type", "text/csv")
	if acc.Total != 120_000 || acc.Duplicates != 0 || acc.Shards < 120 {
		t.Fatalf("accepted %+v", acc)
	}
	st := e.grantJobFinished(acc.JobID)
	if st.Granted != 10 || st.NotGranted != 120_000-10 || st.Outcome != "sold_out" || st.ShardsDone != acc.Shards {
		t.Fatalf("job %+v", st)
	}
	if strings.Contains(e.logBuf.String(), "cannot extend the connection deadlines") {
		t.Fatalf("the upload could not extend its deadlines:\n%s", e.logBuf.String())
	}
}
