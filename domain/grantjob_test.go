package domain_test

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

func userList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u%06d", i)
	}
	return out
}

func TestCreateGrantJob(t *testing.T) {
	live := issued(t, "b-1", baseRules(), 100)
	hist, err := domain.IssueBatch("b-1", baseRules(), 100, "admin-1", t0)
	wantErr(t, err, nil)
	st := domain.NewBatchFromHistory("b-1", hist.Changes())
	wantErr(t, st.Stop("admin-1", t0), nil)
	stopped := storedBatch(hist.Changes(), st)
	short := windowRules() // valid [t0+2d, t0+5d), claims until t0+11d
	short.ValidUntil = at(5 * day)
	shortLived := issued(t, "b-1", short, 100)

	cases := []struct {
		name  string
		id    string
		batch *domain.Batch
		users []string
		at    int // days after t0
		kind  error
		field string
	}{
		{name: "one user", id: "job-1", batch: live, users: []string{"u1"}},
		{name: "scheduled batch takes grants", id: "job-1", batch: live, users: userList(3)},
		{name: "running batch", id: "job-1", batch: live, users: userList(3), at: 2},
		{name: "duplicates are kept", id: "job-1", batch: live, users: []string{"u1", "u2", "u1"}},
		{name: "the maximum", id: "job-1", batch: live, users: userList(domain.MaxGrantJobUsers)},
		{name: "one over the maximum", id: "job-1", batch: live, users: userList(domain.MaxGrantJobUsers + 1), kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "empty list", id: "job-1", batch: live, users: nil, kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "empty user id", id: "job-1", batch: live, users: []string{"u1", ""}, kind: domain.ErrInvalidArgument, field: "user_ids[1]"},
		{name: "control character", id: "job-1", batch: live, users: []string{"u\x01"}, kind: domain.ErrInvalidArgument, field: "user_ids[0]"},
		{name: "too long user id", id: "job-1", batch: live, users: []string{strings.Repeat("u", domain.MaxIDLen+1)}, kind: domain.ErrInvalidArgument, field: "user_ids[0]"},
		{name: "no job id", id: "", batch: live, users: userList(1), kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "bad job id", id: "j\x7f", batch: live, users: userList(1), kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "bad batch id", id: "job-1", batch: domain.NewBatchFromHistory("", nil), users: userList(1), kind: domain.ErrInvalidArgument, field: "batch_id"},
		{name: "unknown batch", id: "job-1", batch: domain.NewBatchFromHistory("nope", nil), users: userList(1), kind: domain.ErrNotFound},
		{name: "stopped batch", id: "job-1", batch: stopped, users: userList(1), kind: domain.ErrConflict},
		{name: "ended batch", id: "job-1", batch: live, users: userList(1), at: 11, kind: domain.ErrConflict},
		{name: "coupons still valid", id: "job-1", batch: shortLived, users: userList(1), at: 4},
		{name: "coupons born expired", id: "job-1", batch: shortLived, users: userList(1), at: 5, kind: domain.ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := at(time.Duration(tc.at) * day)
			j, err := domain.CreateGrantJob(tc.id, tc.batch, tc.users, "admin-1", now)
			if tc.kind != nil {
				wantErr(t, err, tc.kind)
				if tc.field != "" && !strings.HasPrefix(err.Error(), tc.field+":") {
					t.Fatalf("error %q does not name field %s", err, tc.field)
				}
				return
			}
			wantErr(t, err, nil)
			wantNames(t, j.Changes(), domain.EvGrantJobCreated)
			e := j.Changes()[0].(*domain.GrantJobCreated)
			if e.JobID != tc.id || e.BatchID != tc.batch.ID || !reflect.DeepEqual(e.UserIDs, tc.users) || e.By != "admin-1" || !e.At.Equal(now) {
				t.Fatalf("created = %+v", e)
			}
			if !j.Exists() || j.Finished || j.Total() != len(tc.users) || j.BaseVersion() != -1 || j.Version() != 0 {
				t.Fatalf("job = exists %v finished %v total %d base %d version %d", j.Exists(), j.Finished, j.Total(), j.BaseVersion(), j.Version())
			}
		})
	}
}

func TestCreateGrantJobCopiesTheList(t *testing.T) {
	users := []string{"u1", "u2"}
	j, err := domain.CreateGrantJob("job-1", issued(t, "b-1", baseRules(), 10), users, "admin-1", t0)
	wantErr(t, err, nil)
	users[0] = "changed"
	if j.UserIDs[0] != "u1" {
		t.Fatal("the job shares the caller's slice")
	}
}

func stored(t *testing.T, users ...string) *domain.GrantJob {
	t.Helper()
	j, err := domain.CreateGrantJob("job-1", issued(t, "b-1", baseRules(), 10), users, "admin-1", t0)
	wantErr(t, err, nil)
	return domain.NewGrantJobFromHistory("job-1", j.Changes())
}

func TestGrantJobFinish(t *testing.T) {
	cases := []struct {
		name    string
		counts  domain.GrantCounts
		outcome string
		kind    error
	}{
		{"all granted", domain.GrantCounts{Total: 4, Granted: 4}, domain.GrantJobCompleted, nil},
		{"mixed", domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, Failed: 2}, domain.GrantJobCompleted, nil},
		{"sold out", domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, NotGranted: 2}, domain.GrantJobSoldOut, nil},
		{"batch closed", domain.GrantCounts{Total: 4, Granted: 1, Failed: 3}, domain.GrantJobBatchClosed, nil},
		{"not granted needs sold out", domain.GrantCounts{Total: 4, Granted: 2, NotGranted: 2}, domain.GrantJobCompleted, domain.ErrInvalidArgument},
		{"sum too small", domain.GrantCounts{Total: 4, Granted: 3}, domain.GrantJobCompleted, domain.ErrInvalidArgument},
		{"sum too large", domain.GrantCounts{Total: 4, Granted: 4, Skipped: 1}, domain.GrantJobCompleted, domain.ErrInvalidArgument},
		{"wrong total", domain.GrantCounts{Total: 5, Granted: 5}, domain.GrantJobCompleted, domain.ErrInvalidArgument},
		{"negative", domain.GrantCounts{Total: 4, Granted: 5, Failed: -1}, domain.GrantJobCompleted, domain.ErrInvalidArgument},
		{"unknown outcome", domain.GrantCounts{Total: 4, Granted: 4}, "done", domain.ErrInvalidArgument},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j := stored(t, "u1", "u2", "u1", "u3")
			err := j.Finish(tc.counts, tc.outcome, at(day))
			wantErr(t, err, tc.kind)
			if tc.kind != nil {
				if len(j.Changes()) != 0 {
					t.Fatalf("a refused finish recorded %v", names(j.Changes()))
				}
				return
			}
			wantNames(t, j.Changes(), domain.EvGrantJobFinished)
			e := j.Changes()[0].(*domain.GrantJobFinished)
			if e.JobID != "job-1" || e.BatchID != "b-1" || e.GrantCounts != tc.counts || e.Outcome != tc.outcome || !e.At.Equal(at(day)) {
				t.Fatalf("finished = %+v", e)
			}
			if !j.Finished || j.Counts != tc.counts || j.Outcome != tc.outcome || j.BaseVersion() != 0 || j.Version() != 1 {
				t.Fatalf("job = %+v", j)
			}
			// A job finishes once.
			again := domain.NewGrantJobFromHistory("job-1", append([]domain.Event{&domain.GrantJobCreated{JobID: "job-1", BatchID: "b-1", UserIDs: j.UserIDs}}, j.Changes()...))
			wantErr(t, again.Finish(tc.counts, tc.outcome, at(day)), domain.ErrConflict)
		})
	}
	wantErr(t, domain.NewGrantJobFromHistory("nope", nil).Finish(domain.GrantCounts{}, domain.GrantJobCompleted, t0), domain.ErrNotFound)
}

func TestGrantJobSameRequest(t *testing.T) {
	j := stored(t, "u1", "u2", "u1")
	cases := []struct {
		name  string
		batch string
		users []string
		want  bool
	}{
		{"same", "b-1", []string{"u1", "u2", "u1"}, true},
		{"other batch", "b-2", []string{"u1", "u2", "u1"}, false},
		{"other order", "b-1", []string{"u2", "u1", "u1"}, false},
		{"fewer", "b-1", []string{"u1", "u2"}, false},
		{"more", "b-1", []string{"u1", "u2", "u1", "u3"}, false},
	}
	for _, tc := range cases {
		if got := j.SameRequest(tc.batch, tc.users); got != tc.want {
			t.Errorf("%s: SameRequest = %v, want %v", tc.name, got, tc.want)
		}
	}
	if domain.NewGrantJobFromHistory("job-1", nil).SameRequest("", nil) {
		t.Error("a job that does not exist matches")
	}
}

func TestGrantJobEventsRoundTrip(t *testing.T) {
	at := at(3 * day)
	reg := domain.NewRegistry()
	cases := []struct {
		e    domain.Event
		name string
		want string
	}{
		{&domain.GrantJobCreated{JobID: "job-1", BatchID: "b-1", UserIDs: []string{"u1", "u2"}, By: "admin-1", At: at},
			"grantjob.created.v1",
			`{"job_id":"job-1","batch_id":"b-1","user_ids":["u1","u2"],"by":"admin-1","at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantJobFinished{JobID: "job-1", BatchID: "b-1", GrantCounts: domain.GrantCounts{Total: 9, Granted: 4, Skipped: 3, NotGranted: 1, Failed: 1}, Outcome: domain.GrantJobSoldOut, At: at},
			"grantjob.finished.v1",
			`{"job_id":"job-1","batch_id":"b-1","total":9,"granted":4,"skipped":3,"not_granted":1,"failed":1,"outcome":"sold_out","at":"2026-11-04T00:00:00Z"}`},
	}
	for _, tc := range cases {
		name, data, err := reg.Marshal(tc.e)
		wantErr(t, err, nil)
		if name != tc.name || string(data) != tc.want {
			t.Fatalf("Marshal = %s %s\nwant %s %s", name, data, tc.name, tc.want)
		}
		back, err := reg.Unmarshal(name, data)
		wantErr(t, err, nil)
		if !reflect.DeepEqual(back, tc.e) {
			t.Fatalf("round trip %+v, want %+v", back, tc.e)
		}
	}
	if domain.EvGrantJobCreated != "grantjob.created.v1" || domain.EvGrantJobFinished != "grantjob.finished.v1" {
		t.Fatal("grant job event names changed")
	}
}
