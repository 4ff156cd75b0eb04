package domain_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// sha is a well-formed list fingerprint (64 hex digits).
var sha = strings.Repeat("ab", 32)

// grantList describes a list of total entries (dups of them repeats) spread
// over shards shards of at most size users.
func grantList(total, dups, shards, size int) domain.GrantList {
	return domain.GrantList{Total: total, Duplicates: dups, Shards: shards, ShardSize: size, SHA256: sha}
}

func userList(n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("u%06d", i)
	}
	return out
}

// wantField fails unless err is an invalid argument naming field.
func wantField(t *testing.T, err error, field string) {
	t.Helper()
	wantErr(t, err, domain.ErrInvalidArgument)
	if !strings.HasPrefix(err.Error(), field+": ") {
		t.Fatalf("error %q does not name field %s", err, field)
	}
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

	ok := grantList(10, 2, 3, 3) // 8 distinct users in 3 shards of at most 3
	with := func(f func(*domain.GrantList)) domain.GrantList {
		l := ok
		f(&l)
		return l
	}
	cases := []struct {
		name  string
		id    string
		batch *domain.Batch
		list  domain.GrantList
		at    int // days after t0
		kind  error
		field string // named by an invalid argument
	}{
		{name: "scheduled batch takes grants", id: "job-1", batch: live, list: ok},
		{name: "running batch", id: "job-1", batch: live, list: ok, at: 2},
		{name: "one user", id: "job-1", batch: live, list: grantList(1, 0, 1, 1)},
		{name: "one user, default shard size", id: "job-1", batch: live, list: grantList(1, 0, 1, domain.DefaultGrantShardSize)},
		{name: "the most entries", id: "job-1", batch: live,
			list: grantList(domain.MaxGrantJobEntries, 0, domain.MaxGrantJobEntries/domain.MaxGrantShardSize, domain.MaxGrantShardSize)},
		{name: "the most entries, mostly duplicates", id: "job-1", batch: live, list: grantList(domain.MaxGrantJobEntries, domain.MaxGrantJobEntries-1, 1, 1)},

		// CheckGrantList.
		{name: "no entries", id: "job-1", batch: live, list: grantList(0, 0, 0, 1), kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "negative total", id: "job-1", batch: live, list: grantList(-1, 0, 1, 1), kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "one entry too many", id: "job-1", batch: live,
			list: grantList(domain.MaxGrantJobEntries+1, 0, domain.MaxGrantJobEntries/domain.MaxGrantShardSize+1, domain.MaxGrantShardSize),
			kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "negative duplicates", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Duplicates = -1 }), kind: domain.ErrInvalidArgument, field: "duplicates"},
		{name: "only duplicates", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Duplicates = l.Total }), kind: domain.ErrInvalidArgument, field: "duplicates"},
		{name: "all but one duplicates", id: "job-1", batch: live, list: grantList(10, 9, 1, 1)},
		{name: "shard size 0", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.ShardSize = 0 }), kind: domain.ErrInvalidArgument, field: "shard_size"},
		{name: "largest shard size", id: "job-1", batch: live, list: grantList(domain.MaxGrantShardSize, 0, 1, domain.MaxGrantShardSize)},
		{name: "shard size over the maximum", id: "job-1", batch: live, list: grantList(domain.MaxGrantShardSize+1, 0, 1, domain.MaxGrantShardSize+1),
			kind: domain.ErrInvalidArgument, field: "shard_size"},
		{name: "too few shards", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Shards = 2 }), kind: domain.ErrInvalidArgument, field: "shards"},
		{name: "no shards", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Shards = 0 }), kind: domain.ErrInvalidArgument, field: "shards"},
		{name: "one shard per user", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Shards = 8 })},
		{name: "more shards than users", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.Shards = 9 }), kind: domain.ErrInvalidArgument, field: "shards"},
		{name: "no sha", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.SHA256 = "" }), kind: domain.ErrInvalidArgument, field: "list_sha256"},
		{name: "short sha", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.SHA256 = sha[:63] }), kind: domain.ErrInvalidArgument, field: "list_sha256"},
		{name: "long sha", id: "job-1", batch: live, list: with(func(l *domain.GrantList) { l.SHA256 = sha + "0" }), kind: domain.ErrInvalidArgument, field: "list_sha256"},

		// Ids, then the batch.
		{name: "no job id", id: "", batch: live, list: ok, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "bad job id", id: "j\x7f", batch: live, list: ok, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "too long job id", id: strings.Repeat("j", domain.MaxIDLen+1), batch: live, list: ok, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "bad batch id", id: "job-1", batch: domain.NewBatchFromHistory("", nil), list: ok, kind: domain.ErrInvalidArgument, field: "batch_id"},
		{name: "ids come before the list", id: "", batch: live, list: domain.GrantList{}, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "the list comes before the batch", id: "job-1", batch: domain.NewBatchFromHistory("nope", nil), list: domain.GrantList{}, kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "unknown batch", id: "job-1", batch: domain.NewBatchFromHistory("nope", nil), list: ok, kind: domain.ErrNotFound},
		{name: "stopped batch", id: "job-1", batch: stopped, list: ok, kind: domain.ErrConflict},
		{name: "ended batch", id: "job-1", batch: live, list: ok, at: 11, kind: domain.ErrConflict},
		{name: "coupons still valid", id: "job-1", batch: shortLived, list: ok, at: 4},
		{name: "coupons born expired", id: "job-1", batch: shortLived, list: ok, at: 5, kind: domain.ErrConflict},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			now := at(time.Duration(tc.at) * day)
			j, err := domain.CreateGrantJob(tc.id, tc.batch, tc.list, "admin-1", now)
			if tc.kind != nil {
				if j != nil {
					t.Fatalf("a refused create returned a job: %+v", j)
				}
				if tc.field != "" {
					wantField(t, err, tc.field)
				}
				wantErr(t, err, tc.kind)
				return
			}
			wantErr(t, err, nil)
			wantNames(t, j.Changes(), domain.EvGrantJobCreated)
			e := j.Changes()[0].(*domain.GrantJobCreated)
			want := domain.GrantJobCreated{JobID: tc.id, BatchID: tc.batch.ID, GrantList: tc.list, By: "admin-1", At: now}
			if !reflect.DeepEqual(*e, want) {
				t.Fatalf("created = %+v\nwant %+v", *e, want)
			}
			if !j.Exists() || j.Finished || j.Legacy || j.ID != tc.id || j.BatchID != tc.batch.ID || j.GrantList != tc.list ||
				j.By != "admin-1" || !j.CreatedAt.Equal(now) || j.BaseVersion() != -1 || j.Version() != 0 {
				t.Fatalf("job = %+v (base %d, version %d)", j, j.BaseVersion(), j.Version())
			}
		})
	}
}

func TestGrantListDistinct(t *testing.T) {
	if got := grantList(10, 3, 1, 7).Distinct(); got != 7 {
		t.Fatalf("Distinct = %d, want 7", got)
	}
}

// storedJob is a job created on batch b-1 and read back, with its history:
// 4 entries, 1 of them a duplicate, in one shard.
func storedJob(t *testing.T) (*domain.GrantJob, []domain.Event) {
	t.Helper()
	j, err := domain.CreateGrantJob("job-1", issued(t, "b-1", baseRules(), 10), grantList(4, 1, 1, 10), "admin-1", t0)
	wantErr(t, err, nil)
	return domain.NewGrantJobFromHistory("job-1", j.Changes()), j.Changes()
}

func TestGrantJobSameRequest(t *testing.T) {
	j, _ := storedJob(t)
	cases := []struct {
		name  string
		batch string
		list  domain.GrantList
		want  bool
	}{
		{"same", "b-1", grantList(4, 1, 1, 10), true},
		{"same upload, other sharding", "b-1", grantList(4, 1, 3, 1), true},
		{"other batch", "b-2", grantList(4, 1, 1, 10), false},
		{"other sha", "b-1", domain.GrantList{Total: 4, Duplicates: 1, Shards: 1, ShardSize: 10, SHA256: strings.Repeat("cd", 32)}, false},
		{"other total", "b-1", grantList(5, 1, 1, 10), false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := j.SameRequest(tc.batch, tc.list); got != tc.want {
				t.Fatalf("SameRequest = %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("job not existing", func(t *testing.T) {
		if domain.NewGrantJobFromHistory("job-1", nil).SameRequest("", domain.GrantList{}) {
			t.Fatal("a job that does not exist matches")
		}
	})
}

func TestGrantJobFinish(t *testing.T) {
	cases := []struct {
		name    string
		counts  domain.GrantCounts
		outcome string
		kind    error
		field   string
	}{
		{"all granted but the duplicate", domain.GrantCounts{Total: 4, Granted: 3, Skipped: 1}, domain.GrantJobCompleted, nil, ""},
		{"mixed", domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, Failed: 2}, domain.GrantJobCompleted, nil, ""},
		{"sold out", domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, NotGranted: 2}, domain.GrantJobSoldOut, nil, ""},
		{"sold out, nothing left over", domain.GrantCounts{Total: 4, Granted: 3, Skipped: 1}, domain.GrantJobSoldOut, nil, ""},
		{"batch closed", domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, Failed: 2}, domain.GrantJobBatchClosed, nil, ""},
		{"not granted needs sold out", domain.GrantCounts{Total: 4, Granted: 2, NotGranted: 2}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"not granted needs sold out, not batch closed", domain.GrantCounts{Total: 4, Granted: 2, NotGranted: 2}, domain.GrantJobBatchClosed, domain.ErrInvalidArgument, "counts"},
		{"sum too small", domain.GrantCounts{Total: 4, Granted: 3}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"sum too large", domain.GrantCounts{Total: 4, Granted: 4, Skipped: 1}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"wrong total", domain.GrantCounts{Total: 5, Granted: 5}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"total of the distinct users only", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"negative granted", domain.GrantCounts{Total: 4, Granted: -1, Skipped: 5}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"negative skipped", domain.GrantCounts{Total: 4, Granted: 5, Skipped: -1}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"negative not granted", domain.GrantCounts{Total: 4, Granted: 5, NotGranted: -1}, domain.GrantJobSoldOut, domain.ErrInvalidArgument, "counts"},
		{"negative failed", domain.GrantCounts{Total: 4, Granted: 5, Failed: -1}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"unknown outcome", domain.GrantCounts{Total: 4, Granted: 4}, "done", domain.ErrInvalidArgument, "outcome"},
		{"no outcome", domain.GrantCounts{Total: 4, Granted: 4}, "", domain.ErrInvalidArgument, "outcome"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			j, history := storedJob(t)
			err := j.Finish(tc.counts, tc.outcome, at(day))
			if tc.kind != nil {
				wantField(t, err, tc.field)
				if len(j.Changes()) != 0 || j.Finished || j.Version() != 0 {
					t.Fatalf("a refused finish changed the job: %v, %+v", names(j.Changes()), j)
				}
				return
			}
			wantErr(t, err, nil)
			wantNames(t, j.Changes(), domain.EvGrantJobFinished)
			e := j.Changes()[0].(*domain.GrantJobFinished)
			want := domain.GrantJobFinished{JobID: "job-1", BatchID: "b-1", GrantCounts: tc.counts, Outcome: tc.outcome, At: at(day)}
			if *e != want {
				t.Fatalf("finished = %+v\nwant %+v", *e, want)
			}
			if !j.Finished || j.Counts != tc.counts || j.Outcome != tc.outcome || !j.FinishedAt.Equal(at(day)) || j.BaseVersion() != 0 || j.Version() != 1 {
				t.Fatalf("job = %+v (base %d, version %d)", j, j.BaseVersion(), j.Version())
			}
			// A job finishes once, even with the same counts.
			again := domain.NewGrantJobFromHistory("job-1", append(slices.Clone(history), j.Changes()...))
			if !again.Finished || again.Version() != 1 {
				t.Fatalf("read back = %+v", again)
			}
			wantErr(t, again.Finish(tc.counts, tc.outcome, at(2*day)), domain.ErrConflict)
			if len(again.Changes()) != 0 {
				t.Fatalf("a second finish recorded %v", names(again.Changes()))
			}
		})
	}
	t.Run("not found", func(t *testing.T) {
		j := domain.NewGrantJobFromHistory("nope", nil)
		wantErr(t, j.Finish(domain.GrantCounts{}, domain.GrantJobCompleted, t0), domain.ErrNotFound)
		if len(j.Changes()) != 0 || j.Exists() {
			t.Fatalf("finishing a missing job changed it: %+v", j)
		}
	})
}

func TestGrantJobApplyLegacy(t *testing.T) {
	created := &domain.GrantJobCreatedV1{JobID: "job-1", BatchID: "b-1", UserIDs: []string{"u1", "u2", "u1"}, By: "admin-1", At: t0}
	j := domain.NewGrantJobFromHistory("job-1", []domain.Event{created})
	want := domain.GrantList{Total: 3} // no duplicates counted, no shards, no sha
	if !j.Exists() || !j.Legacy || j.GrantList != want || j.BatchID != "b-1" || j.By != "admin-1" || !j.CreatedAt.Equal(t0) ||
		j.Finished || j.Version() != 0 || len(j.Changes()) != 0 {
		t.Fatalf("legacy job = %+v", j)
	}
	// A legacy job finishes on its inline list's length.
	wantField(t, j.Finish(domain.GrantCounts{Total: 2, Granted: 2}, domain.GrantJobCompleted, at(day)), "counts")
	counts := domain.GrantCounts{Total: 3, Granted: 2, Skipped: 1}
	wantErr(t, j.Finish(counts, domain.GrantJobCompleted, at(day)), nil)
	wantNames(t, j.Changes(), domain.EvGrantJobFinished)
	if !j.Legacy || !j.Finished || j.Counts != counts {
		t.Fatalf("finished legacy job = %+v", j)
	}
	// A retried v2 create never matches a legacy job: it has no sha.
	if j.SameRequest("b-1", grantList(3, 1, 1, 10)) {
		t.Fatal("a legacy job matches a sharded request")
	}
}

func TestGrantJobApplyFinishedAlone(t *testing.T) {
	// The finished event carries the batch, so a job read from its finished
	// event alone still knows it; a created event's batch is kept.
	fin := &domain.GrantJobFinished{JobID: "job-1", BatchID: "b-1", GrantCounts: domain.GrantCounts{Total: 1, Granted: 1}, Outcome: domain.GrantJobCompleted, At: t0}
	if j := domain.NewGrantJobFromHistory("job-1", []domain.Event{fin}); j.BatchID != "b-1" || !j.Finished || j.Version() != 0 {
		t.Fatalf("job = %+v", j)
	}
	created := &domain.GrantJobCreated{JobID: "job-1", BatchID: "b-1", GrantList: grantList(1, 0, 1, 1), At: t0}
	other := *fin
	other.BatchID = "b-2"
	if j := domain.NewGrantJobFromHistory("job-1", []domain.Event{created, &other}); j.BatchID != "b-1" || !j.Finished || j.Version() != 1 {
		t.Fatalf("job = %+v", j)
	}
}

func TestCombineGrantOutcomes(t *testing.T) {
	const (
		c  = domain.GrantJobCompleted
		so = domain.GrantJobSoldOut
		bc = domain.GrantJobBatchClosed
	)
	cases := []struct {
		in   []string
		want string
	}{
		{nil, c},
		{[]string{c}, c},
		{[]string{c, c, c}, c},
		{[]string{bc}, bc},
		{[]string{c, bc, c}, bc},
		{[]string{so}, so},
		{[]string{c, so}, so},
		{[]string{bc, so, c}, so},
		{[]string{so, bc}, so},
		{[]string{"unknown", c}, c},
	}
	for _, tc := range cases {
		if got := domain.CombineGrantOutcomes(tc.in...); got != tc.want {
			t.Errorf("CombineGrantOutcomes(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestGrantCountsAdd(t *testing.T) {
	cases := []struct {
		name    string
		a, b    domain.GrantCounts
		want    domain.GrantCounts
		wantSum int
	}{
		{"zero", domain.GrantCounts{}, domain.GrantCounts{}, domain.GrantCounts{}, 0},
		{"zero is neutral", domain.GrantCounts{Total: 10, Granted: 1, Skipped: 2, NotGranted: 3, Failed: 4}, domain.GrantCounts{},
			domain.GrantCounts{Total: 10, Granted: 1, Skipped: 2, NotGranted: 3, Failed: 4}, 10},
		{"field-wise", domain.GrantCounts{Total: 10, Granted: 1, Skipped: 2, NotGranted: 3, Failed: 4},
			domain.GrantCounts{Total: 100, Granted: 10, Skipped: 20, NotGranted: 30, Failed: 40},
			domain.GrantCounts{Total: 110, Granted: 11, Skipped: 22, NotGranted: 33, Failed: 44}, 110},
		{"shards plus the duplicates", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantCounts{Total: 1, Skipped: 1},
			domain.GrantCounts{Total: 4, Granted: 3, Skipped: 1}, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.a.Add(tc.b); got != tc.want {
				t.Fatalf("Add = %+v, want %+v", got, tc.want)
			}
			if got := tc.b.Add(tc.a); got != tc.want {
				t.Fatalf("Add is not commutative: %+v", got)
			}
			if got := tc.want.Sum(); got != tc.wantSum {
				t.Fatalf("Sum = %d, want %d", got, tc.wantSum)
			}
		})
	}
}

func TestListGrantShard(t *testing.T) {
	cases := []struct {
		name   string
		job    string
		batch  string
		shard  int
		users  []string
		kind   error
		field  string
		reason string // in the message
	}{
		{name: "one user", job: "job-1", batch: "b-1", shard: 0, users: []string{"u1"}},
		{name: "a later shard", job: "job-1", batch: "b-1", shard: 41, users: userList(3)},
		{name: "the most users", job: "job-1", batch: "b-1", shard: 0, users: userList(domain.MaxGrantShardSize)},
		{name: "one user too many", job: "job-1", batch: "b-1", shard: 0, users: userList(domain.MaxGrantShardSize + 1), kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "no users", job: "job-1", batch: "b-1", shard: 0, users: nil, kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "empty list", job: "job-1", batch: "b-1", shard: 0, users: []string{}, kind: domain.ErrInvalidArgument, field: "user_ids"},
		{name: "duplicate user", job: "job-1", batch: "b-1", shard: 0, users: []string{"u1", "u2", "u1"}, kind: domain.ErrInvalidArgument, field: "user_ids[2]", reason: "u1 is listed twice"},
		{name: "empty user id", job: "job-1", batch: "b-1", shard: 0, users: []string{"u1", ""}, kind: domain.ErrInvalidArgument, field: "user_ids[1]", reason: "required"},
		{name: "control character", job: "job-1", batch: "b-1", shard: 0, users: []string{"u\x01"}, kind: domain.ErrInvalidArgument, field: "user_ids[0]"},
		{name: "too long user id", job: "job-1", batch: "b-1", shard: 0, users: []string{strings.Repeat("u", domain.MaxIDLen+1)}, kind: domain.ErrInvalidArgument, field: "user_ids[0]"},
		{name: "negative shard", job: "job-1", batch: "b-1", shard: -1, users: []string{"u1"}, kind: domain.ErrInvalidArgument, field: "shard"},
		{name: "no job id", job: "", batch: "b-1", shard: 0, users: []string{"u1"}, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "bad job id", job: "j\x00", batch: "b-1", shard: 0, users: []string{"u1"}, kind: domain.ErrInvalidArgument, field: "job_id"},
		{name: "no batch id", job: "job-1", batch: "", shard: 0, users: []string{"u1"}, kind: domain.ErrInvalidArgument, field: "batch_id"},
		{name: "bad batch id", job: "job-1", batch: "b\x1f", shard: 0, users: []string{"u1"}, kind: domain.ErrInvalidArgument, field: "batch_id"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s, err := domain.ListGrantShard(tc.job, tc.batch, tc.shard, tc.users, at(day))
			if tc.kind != nil {
				if s != nil {
					t.Fatalf("a refused list returned a shard: %+v", s)
				}
				wantField(t, err, tc.field)
				if !strings.Contains(err.Error(), tc.reason) {
					t.Fatalf("error %q does not say %q", err, tc.reason)
				}
				return
			}
			wantErr(t, err, nil)
			wantNames(t, s.Changes(), domain.EvGrantShardListed)
			e := s.Changes()[0].(*domain.GrantShardListed)
			want := domain.GrantShardListed{JobID: tc.job, BatchID: tc.batch, Shard: tc.shard, UserIDs: tc.users, At: at(day)}
			if !reflect.DeepEqual(*e, want) {
				t.Fatalf("listed = %+v\nwant %+v", *e, want)
			}
			if !s.Exists() || s.JobID != tc.job || s.Shard != tc.shard || s.BatchID != tc.batch || !slices.Equal(s.UserIDs, tc.users) ||
				s.Started || s.Done || s.BaseVersion() != -1 || s.Version() != 0 {
				t.Fatalf("shard = %+v (base %d, version %d)", s, s.BaseVersion(), s.Version())
			}
		})
	}
}

func TestListGrantShardCopiesTheList(t *testing.T) {
	users := []string{"u1", "u2"}
	s, err := domain.ListGrantShard("job-1", "b-1", 0, users, t0)
	wantErr(t, err, nil)
	users[0] = "changed"
	if s.UserIDs[0] != "u1" || s.Changes()[0].(*domain.GrantShardListed).UserIDs[0] != "u1" {
		t.Fatal("the shard shares the caller's slice")
	}
}

// shardHistory is the stored history of shard 2 of job-1 (users u1..u3) up
// to the given step: "" (none), "listed", "started", "done", "done unstarted".
func shardHistory(step string) []domain.Event {
	listed := &domain.GrantShardListed{JobID: "job-1", BatchID: "b-1", Shard: 2, UserIDs: []string{"u1", "u2", "u3"}, At: t0}
	started := &domain.GrantShardStarted{JobID: "job-1", Shard: 2, At: at(day)}
	done := &domain.GrantShardDone{JobID: "job-1", BatchID: "b-1", Shard: 2, GrantCounts: domain.GrantCounts{Total: 3, Granted: 3},
		Outcome: domain.GrantJobCompleted, At: at(2 * day)}
	switch step {
	case "listed":
		return []domain.Event{listed}
	case "started":
		return []domain.Event{listed, started}
	case "done":
		return []domain.Event{listed, started, done}
	case "done unstarted":
		return []domain.Event{listed, done}
	}
	return nil
}

func TestGrantShardStart(t *testing.T) {
	cases := []struct {
		step string
		kind error
	}{
		{"", domain.ErrNotFound},
		{"listed", nil},
		{"started", domain.ErrConflict},
		{"done", domain.ErrConflict},
		{"done unstarted", domain.ErrConflict},
	}
	for _, tc := range cases {
		t.Run("from "+tc.step, func(t *testing.T) {
			h := shardHistory(tc.step)
			s := domain.NewGrantShardFromHistory("job-1", 2, h)
			err := s.Start(at(3 * day))
			wantErr(t, err, tc.kind)
			if tc.kind != nil {
				if len(s.Changes()) != 0 || s.Version() != int64(len(h))-1 {
					t.Fatalf("a refused start changed the shard: %v", names(s.Changes()))
				}
				return
			}
			wantNames(t, s.Changes(), domain.EvGrantShardStarted)
			e := s.Changes()[0].(*domain.GrantShardStarted)
			if want := (domain.GrantShardStarted{JobID: "job-1", Shard: 2, At: at(3 * day)}); *e != want {
				t.Fatalf("started = %+v\nwant %+v", *e, want)
			}
			if !s.Started || s.Done || s.BaseVersion() != 0 || s.Version() != 1 {
				t.Fatalf("shard = %+v (base %d, version %d)", s, s.BaseVersion(), s.Version())
			}
			// Started twice in one run is refused too.
			wantErr(t, s.Start(at(3*day)), domain.ErrConflict)
		})
	}
}

func TestGrantShardFinish(t *testing.T) {
	cases := []struct {
		name    string
		step    string
		counts  domain.GrantCounts
		outcome string
		kind    error
		field   string
	}{
		{"all granted", "started", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantJobCompleted, nil, ""},
		{"not started", "listed", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantJobCompleted, nil, ""},
		{"mixed", "started", domain.GrantCounts{Total: 3, Granted: 1, Skipped: 1, Failed: 1}, domain.GrantJobCompleted, nil, ""},
		{"sold out", "started", domain.GrantCounts{Total: 3, Granted: 1, NotGranted: 2}, domain.GrantJobSoldOut, nil, ""},
		{"batch closed", "started", domain.GrantCounts{Total: 3, Granted: 1, Failed: 2}, domain.GrantJobBatchClosed, nil, ""},
		{"not granted needs sold out", "started", domain.GrantCounts{Total: 3, Granted: 1, NotGranted: 2}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"not granted with batch closed", "started", domain.GrantCounts{Total: 3, NotGranted: 1, Failed: 2}, domain.GrantJobBatchClosed, domain.ErrInvalidArgument, "counts"},
		{"unknown outcome", "started", domain.GrantCounts{Total: 3, Granted: 3}, "finished", domain.ErrInvalidArgument, "outcome"},
		{"sum too small", "started", domain.GrantCounts{Total: 3, Granted: 2}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"sum too large", "started", domain.GrantCounts{Total: 3, Granted: 3, Failed: 1}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"total not the shard's size", "started", domain.GrantCounts{Total: 4, Granted: 4}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"negative", "started", domain.GrantCounts{Total: 3, Granted: 4, Skipped: -1}, domain.GrantJobCompleted, domain.ErrInvalidArgument, "counts"},
		{"done once", "done", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantJobCompleted, domain.ErrConflict, ""},
		{"done once, not started", "done unstarted", domain.GrantCounts{Total: 3, Granted: 3}, domain.GrantJobCompleted, domain.ErrConflict, ""},
		{"not found", "", domain.GrantCounts{}, domain.GrantJobCompleted, domain.ErrNotFound, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := shardHistory(tc.step)
			s := domain.NewGrantShardFromHistory("job-1", 2, h)
			base := int64(len(h)) - 1
			err := s.Finish(tc.counts, tc.outcome, at(3*day))
			if tc.kind != nil {
				if tc.field != "" {
					wantField(t, err, tc.field)
				}
				wantErr(t, err, tc.kind)
				if len(s.Changes()) != 0 || s.Version() != base {
					t.Fatalf("a refused finish changed the shard: %v", names(s.Changes()))
				}
				return
			}
			wantErr(t, err, nil)
			wantNames(t, s.Changes(), domain.EvGrantShardDone)
			e := s.Changes()[0].(*domain.GrantShardDone)
			want := domain.GrantShardDone{JobID: "job-1", BatchID: "b-1", Shard: 2, GrantCounts: tc.counts, Outcome: tc.outcome, At: at(3 * day)}
			if *e != want {
				t.Fatalf("done = %+v\nwant %+v", *e, want)
			}
			if !s.Done || s.Counts != tc.counts || s.Outcome != tc.outcome || s.BaseVersion() != base || s.Version() != base+1 {
				t.Fatalf("shard = %+v (base %d, version %d)", s, s.BaseVersion(), s.Version())
			}
			// Done once; a done shard does not start either.
			again := domain.NewGrantShardFromHistory("job-1", 2, append(slices.Clone(h), s.Changes()...))
			if !again.Done || again.Counts != tc.counts || again.Outcome != tc.outcome {
				t.Fatalf("read back = %+v", again)
			}
			wantErr(t, again.Finish(tc.counts, tc.outcome, at(4*day)), domain.ErrConflict)
			wantErr(t, again.Start(at(4*day)), domain.ErrConflict)
		})
	}
}

func TestGrantShardReadBack(t *testing.T) {
	s := domain.NewGrantShardFromHistory("job-1", 2, shardHistory("done"))
	want := []string{"u1", "u2", "u3"}
	if !s.Exists() || s.JobID != "job-1" || s.Shard != 2 || s.BatchID != "b-1" || !slices.Equal(s.UserIDs, want) || !s.Started || !s.Done ||
		s.Counts != (domain.GrantCounts{Total: 3, Granted: 3}) || s.Outcome != domain.GrantJobCompleted || s.Version() != 2 || s.BaseVersion() != 2 || len(s.Changes()) != 0 {
		t.Fatalf("shard = %+v", s)
	}
	if n := domain.NewGrantShardFromHistory("job-1", 2, nil); n.Exists() || n.Version() != -1 || n.BaseVersion() != -1 {
		t.Fatalf("new shard = %+v", n)
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
		{&domain.GrantJobCreatedV1{JobID: "job-1", BatchID: "b-1", UserIDs: []string{"u1", "u2"}, By: "admin-1", At: at},
			"grantjob.created.v1",
			`{"job_id":"job-1","batch_id":"b-1","user_ids":["u1","u2"],"by":"admin-1","at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantJobCreated{JobID: "job-1", BatchID: "b-1", GrantList: domain.GrantList{Total: 2500, Duplicates: 12, Shards: 3, ShardSize: 1000, SHA256: sha},
			By: "admin-1", At: at},
			"grantjob.created.v2",
			`{"job_id":"job-1","batch_id":"b-1","total":2500,"duplicates":12,"shards":3,"shard_size":1000,"list_sha256":"` + sha + `","by":"admin-1","at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantJobFinished{JobID: "job-1", BatchID: "b-1", GrantCounts: domain.GrantCounts{Total: 9, Granted: 4, Skipped: 3, NotGranted: 1, Failed: 1}, Outcome: domain.GrantJobSoldOut, At: at},
			"grantjob.finished.v1",
			`{"job_id":"job-1","batch_id":"b-1","total":9,"granted":4,"skipped":3,"not_granted":1,"failed":1,"outcome":"sold_out","at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantShardListed{JobID: "job-1", BatchID: "b-1", Shard: 2, UserIDs: []string{"u1", "u2"}, At: at},
			"grantshard.listed.v1",
			`{"job_id":"job-1","batch_id":"b-1","shard":2,"user_ids":["u1","u2"],"at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantShardStarted{JobID: "job-1", Shard: 2, At: at},
			"grantshard.started.v1",
			`{"job_id":"job-1","shard":2,"at":"2026-11-04T00:00:00Z"}`},
		{&domain.GrantShardDone{JobID: "job-1", BatchID: "b-1", Shard: 2, GrantCounts: domain.GrantCounts{Total: 5, Granted: 1, Skipped: 1, NotGranted: 2, Failed: 1}, Outcome: domain.GrantJobSoldOut, At: at},
			"grantshard.done.v1",
			`{"job_id":"job-1","batch_id":"b-1","shard":2,"total":5,"granted":1,"skipped":1,"not_granted":2,"failed":1,"outcome":"sold_out","at":"2026-11-04T00:00:00Z"}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.e.EventName(); got != tc.name {
				t.Fatalf("EventName = %q, want %q", got, tc.name)
			}
			name, data, err := reg.Marshal(tc.e)
			wantErr(t, err, nil)
			if name != tc.name || string(data) != tc.want {
				t.Fatalf("Marshal = %s %s\nwant %s %s", name, data, tc.name, tc.want)
			}
			back, err := reg.Unmarshal(name, []byte(tc.want))
			wantErr(t, err, nil)
			if !reflect.DeepEqual(back, tc.e) {
				t.Fatalf("round trip %+v, want %+v", back, tc.e)
			}
		})
	}
	consts := [][2]string{
		{domain.EvGrantJobCreatedV1, "grantjob.created.v1"},
		{domain.EvGrantJobCreated, "grantjob.created.v2"},
		{domain.EvGrantJobFinished, "grantjob.finished.v1"},
		{domain.EvGrantShardListed, "grantshard.listed.v1"},
		{domain.EvGrantShardStarted, "grantshard.started.v1"},
		{domain.EvGrantShardDone, "grantshard.done.v1"},
	}
	for _, c := range consts {
		if c[0] != c[1] {
			t.Errorf("event name constant %q, want %q", c[0], c[1])
		}
	}
}

// A job stored by the first version reads back from its stored JSON as a
// legacy job.
func TestGrantJobStoredV1ReadsBack(t *testing.T) {
	reg := domain.NewRegistry()
	e, err := reg.Unmarshal("grantjob.created.v1",
		[]byte(`{"job_id":"job-1","batch_id":"b-1","user_ids":["u1","u2","u1"],"by":"admin-1","at":"2026-11-01T00:00:00Z"}`))
	wantErr(t, err, nil)
	j := domain.NewGrantJobFromHistory("job-1", []domain.Event{e})
	if !j.Legacy || j.Total != 3 || j.BatchID != "b-1" || j.By != "admin-1" || !j.CreatedAt.Equal(t0) || j.Version() != 0 {
		t.Fatalf("job = %+v", j)
	}
}
