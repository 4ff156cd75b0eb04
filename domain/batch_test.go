package domain_test

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

func TestIssueBatchRecordsOneEvent(t *testing.T) {
	shanghai := time.FixedZone("CST", 8*3600)
	r := windowRules()
	r.ClaimStartsAt, r.ClaimEndsAt = r.ClaimStartsAt.In(shanghai), r.ClaimEndsAt.In(shanghai)
	r.ValidFrom, r.ValidUntil = r.ValidFrom.In(shanghai), r.ValidUntil.In(shanghai)

	b, err := domain.IssueBatch("b-1", r, 500, "admin-1", t0)
	wantErr(t, err, nil)
	wantNames(t, b.Changes(), domain.EvBatchIssued)

	e, ok := b.Changes()[0].(*domain.BatchIssued)
	if !ok {
		t.Fatalf("change is %T", b.Changes()[0])
	}
	if e.BatchID != "b-1" || e.TotalStock != 500 || e.IssuedBy != "admin-1" || !e.At.Equal(t0) {
		t.Fatalf("BatchIssued = %+v", e)
	}
	if !e.Rules.Equal(r) {
		t.Fatalf("BatchIssued rules = %+v, want %+v", e.Rules, r)
	}
	for _, tt := range []time.Time{e.Rules.ClaimStartsAt, e.Rules.ClaimEndsAt, e.Rules.ValidFrom, e.Rules.ValidUntil} {
		if tt.Location() != time.UTC {
			t.Fatalf("stored rule time %v is not UTC", tt)
		}
	}
	if !b.Exists() || b.ID != "b-1" || b.TotalStock != 500 || b.RuleVersion != 0 || !b.IssuedAt.Equal(t0) ||
		b.Paused || b.Stopped || !b.Rules.Equal(r) {
		t.Fatalf("state after issue = %+v", b)
	}
	if b.Version() != 0 || b.BaseVersion() != -1 {
		t.Fatalf("Version, BaseVersion = %d, %d; want 0, -1", b.Version(), b.BaseVersion())
	}
}

func TestIssueBatchRejects(t *testing.T) {
	cases := []struct {
		name  string
		id    string
		edit  func(*domain.Rules)
		stock int64
		now   time.Time
		field string
	}{
		{"empty id", "", nil, 10, t0, "id"},
		{"id with control char", "b\n1", nil, 10, t0, "id"},
		{"id too long", strings.Repeat("b", domain.MaxIDLen+1), nil, 10, t0, "id"},
		{"invalid rules", "b-1", func(r *domain.Rules) { r.AmountOff = 0 }, 10, t0, "amount_off"},
		{"zero stock", "b-1", nil, 0, t0, "total_stock"},
		{"negative stock", "b-1", nil, -5, t0, "total_stock"},
		{"stock over max", "b-1", nil, domain.MaxStock + 1, t0, "total_stock"},
		{"claim window ends now", "b-1", nil, 10, claimEnd, "claim_ends_at"},
		{"claim window already past", "b-1", nil, 10, claimEnd.Add(time.Hour), "claim_ends_at"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := baseRules()
			if tc.edit != nil {
				tc.edit(&r)
			}
			b, err := domain.IssueBatch(tc.id, r, tc.stock, "admin-1", tc.now)
			wantErr(t, err, domain.ErrInvalidArgument)
			if b != nil {
				t.Fatal("a rejected issue returned a batch")
			}
			if !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("message %q does not name %q", err, tc.field)
			}
		})
	}
}

func TestIssueBatchAccepts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		stock int64
		now   time.Time
	}{
		{"max stock", domain.MaxStock, t0},
		{"stock 1", 1, t0},
		{"issued while the window is already open", 10, claimStart.Add(time.Hour)},
		{"issued the last instant before the end", 10, claimEnd.Add(-time.Nanosecond)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b, err := domain.IssueBatch("b-1", baseRules(), tc.stock, "admin-1", tc.now)
			wantErr(t, err, nil)
			if b.TotalStock != tc.stock {
				t.Fatalf("TotalStock = %d", b.TotalStock)
			}
		})
	}
}

func TestBatchStatusOverTime(t *testing.T) {
	plain := issued(t, "b-1", baseRules(), 10)

	paused := issued(t, "b-2", baseRules(), 10)
	wantErr(t, paused.Pause("admin-1", t0), nil)

	stopped := issued(t, "b-3", baseRules(), 10)
	wantErr(t, stopped.Stop("admin-1", t0), nil)

	resumed := issued(t, "b-4", baseRules(), 10)
	wantErr(t, resumed.Pause("admin-1", t0), nil)
	wantErr(t, resumed.Resume("admin-1", t0), nil)

	times := []struct {
		name string
		now  time.Time
	}{
		{"before start", t0},
		{"just before start", claimStart.Add(-time.Nanosecond)},
		{"at start", claimStart},
		{"inside", claimStart.Add(3 * day)},
		{"just before end", claimEnd.Add(-time.Nanosecond)},
		{"at end", claimEnd},
		{"after end", claimEnd.Add(30 * day)},
	}
	want := map[*domain.Batch][]domain.BatchStatus{
		plain:   {domain.BatchScheduled, domain.BatchScheduled, domain.BatchRunning, domain.BatchRunning, domain.BatchRunning, domain.BatchEnded, domain.BatchEnded},
		paused:  {domain.BatchScheduled, domain.BatchScheduled, domain.BatchPausedSt, domain.BatchPausedSt, domain.BatchPausedSt, domain.BatchEnded, domain.BatchEnded},
		stopped: {domain.BatchStoppedSt, domain.BatchStoppedSt, domain.BatchStoppedSt, domain.BatchStoppedSt, domain.BatchStoppedSt, domain.BatchStoppedSt, domain.BatchStoppedSt},
		resumed: {domain.BatchScheduled, domain.BatchScheduled, domain.BatchRunning, domain.BatchRunning, domain.BatchRunning, domain.BatchEnded, domain.BatchEnded},
	}
	for b, statuses := range want {
		for i, tm := range times {
			if got := b.Status(tm.now); got != statuses[i] {
				t.Errorf("%s %s: Status = %s, want %s", b.ID, tm.name, got, statuses[i])
			}
		}
	}
}

func TestBatchPauseResumeStopEvents(t *testing.T) {
	inside := claimStart.Add(time.Hour)
	b := issued(t, "b-1", baseRules(), 10)

	steps := []struct {
		name string
		do   func() error
		want []string // events recorded by this step only
	}{
		{"pause", func() error { return b.Pause("admin-1", inside) }, []string{domain.EvBatchPaused}},
		{"pause again", func() error { return b.Pause("admin-1", inside) }, nil},
		{"resume", func() error { return b.Resume("admin-2", inside) }, []string{domain.EvBatchResumed}},
		{"resume again", func() error { return b.Resume("admin-2", inside) }, nil},
		{"stop", func() error { return b.Stop("admin-3", inside) }, []string{domain.EvBatchStopped}},
		{"stop again", func() error { return b.Stop("admin-3", inside) }, nil},
		{"stop again after the end", func() error { return b.Stop("admin-3", claimEnd.Add(day)) }, nil},
	}
	for _, s := range steps {
		before := len(b.Changes())
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := names(b.Changes()[before:])
		if !slices.Equal(got, s.want) {
			t.Fatalf("%s recorded %v, want %v", s.name, got, s.want)
		}
	}
	wantNames(t, b.Changes(), domain.EvBatchPaused, domain.EvBatchResumed, domain.EvBatchStopped)

	p := b.Changes()[0].(*domain.BatchPaused)
	r := b.Changes()[1].(*domain.BatchResumed)
	s := b.Changes()[2].(*domain.BatchStopped)
	if p.BatchID != "b-1" || p.By != "admin-1" || !p.At.Equal(inside) ||
		r.BatchID != "b-1" || r.By != "admin-2" || !r.At.Equal(inside) ||
		s.BatchID != "b-1" || s.By != "admin-3" || !s.At.Equal(inside) {
		t.Fatalf("event facts: %+v %+v %+v", p, r, s)
	}
	if !b.Stopped || b.Paused {
		t.Fatalf("Stopped, Paused = %v, %v", b.Stopped, b.Paused)
	}
	if b.BaseVersion() != 0 || b.Version() != 3 {
		t.Fatalf("Version, BaseVersion = %d, %d; want 3, 0", b.Version(), b.BaseVersion())
	}
}

func TestBatchPauseWhileScheduled(t *testing.T) {
	b := issued(t, "b-1", baseRules(), 10)
	wantErr(t, b.Pause("admin-1", t0), nil)
	wantNames(t, b.Changes(), domain.EvBatchPaused)
	if !b.Paused {
		t.Fatal("not paused")
	}
}

// An ended or stopped batch takes no further change.
func TestBatchEndedOrStoppedIsImmutable(t *testing.T) {
	after := claimEnd.Add(time.Hour)
	inside := claimStart.Add(time.Hour)

	build := map[string]func(t *testing.T) (*domain.Batch, time.Time){
		"ended": func(t *testing.T) (*domain.Batch, time.Time) {
			return issued(t, "b-1", baseRules(), 10), after
		},
		"ended while paused": func(t *testing.T) (*domain.Batch, time.Time) {
			b := issued(t, "b-1", baseRules(), 10)
			wantErr(t, b.Pause("admin-1", inside), nil)
			return domain.NewBatchFromHistory("b-1", append(historyOf(t, "b-1", baseRules(), 10), b.Changes()...)), after
		},
		"stopped (inside window)": func(t *testing.T) (*domain.Batch, time.Time) {
			b := issued(t, "b-1", baseRules(), 10)
			wantErr(t, b.Stop("admin-1", inside), nil)
			return domain.NewBatchFromHistory("b-1", append(historyOf(t, "b-1", baseRules(), 10), b.Changes()...)), inside
		},
		"stopped (before start)": func(t *testing.T) (*domain.Batch, time.Time) {
			b := issued(t, "b-1", baseRules(), 10)
			wantErr(t, b.Stop("admin-1", t0), nil)
			return domain.NewBatchFromHistory("b-1", append(historyOf(t, "b-1", baseRules(), 10), b.Changes()...)), t0
		},
	}
	ops := map[string]func(b *domain.Batch, now time.Time) error{
		"pause":        func(b *domain.Batch, now time.Time) error { return b.Pause("admin-9", now) },
		"resume":       func(b *domain.Batch, now time.Time) error { return b.Resume("admin-9", now) },
		"add stock":    func(b *domain.Batch, now time.Time) error { return b.AddStock(5, "", "admin-9", now) },
		"change rules": func(b *domain.Batch, now time.Time) error { return b.ChangeRules(laterRules(), "admin-9", now) },
	}
	for state, mk := range build {
		for op, do := range ops {
			t.Run(state+"/"+op, func(t *testing.T) {
				b, now := mk(t)
				before := snapshot(b)
				wantErr(t, do(b, now), domain.ErrConflict)
				if len(b.Changes()) != 0 {
					t.Fatalf("recorded %v", names(b.Changes()))
				}
				if !reflect.DeepEqual(snapshot(b), before) {
					t.Fatal("state changed")
				}
			})
		}
	}
	t.Run("ended/stop", func(t *testing.T) {
		b := issued(t, "b-1", baseRules(), 10)
		wantErr(t, b.Stop("admin-1", after), domain.ErrConflict)
		if len(b.Changes()) != 0 || b.Stopped {
			t.Fatal("an ended batch was stopped")
		}
	})
}

func TestBatchStoppedNeverResumes(t *testing.T) {
	b := issued(t, "b-1", baseRules(), 10)
	wantErr(t, b.Pause("admin-1", claimStart), nil)
	wantErr(t, b.Stop("admin-1", claimStart), nil)
	for _, now := range []time.Time{t0, claimStart, claimStart.Add(day), claimEnd, claimEnd.Add(365 * day)} {
		wantErr(t, b.Resume("admin-1", now), domain.ErrConflict)
		if got := b.Status(now); got != domain.BatchStoppedSt {
			t.Fatalf("Status(%v) = %s", now, got)
		}
	}
	wantNames(t, b.Changes(), domain.EvBatchPaused, domain.EvBatchStopped)
	// Still stopped after a rebuild.
	rebuilt := storedBatch(historyOf(t, "b-1", baseRules(), 10), b)
	wantErr(t, rebuilt.Resume("admin-1", claimStart), domain.ErrConflict)
}

func TestBatchMissing(t *testing.T) {
	b := domain.NewBatchFromHistory("nope", nil)
	if b.Exists() || b.Version() != -1 || b.BaseVersion() != -1 {
		t.Fatalf("empty history: Exists %v, Version %d, BaseVersion %d", b.Exists(), b.Version(), b.BaseVersion())
	}
	for name, err := range map[string]error{
		"pause":        b.Pause("a", t0),
		"resume":       b.Resume("a", t0),
		"stop":         b.Stop("a", t0),
		"add stock":    b.AddStock(1, "k", "a", t0),
		"change rules": b.ChangeRules(baseRules(), "a", t0),
		"claimable":    b.CheckClaimable(claimStart),
	} {
		if !errors.Is(err, domain.ErrNotFound) {
			t.Errorf("%s on a missing batch: %v, want not_found", name, err)
		}
	}
	if len(b.Changes()) != 0 {
		t.Fatalf("recorded %v", names(b.Changes()))
	}
}

// laterRules are valid rules whose claim window starts after t0+2d.
func laterRules() domain.Rules {
	r := baseRules()
	r.Name, r.AmountOff = "Double 11 (fixed)", 6000
	r.ClaimStartsAt, r.ClaimEndsAt = at(3*day), at(12*day)
	return r
}

func TestBatchChangeRules(t *testing.T) {
	b := issued(t, "b-1", baseRules(), 10)
	nr := laterRules()

	wantErr(t, b.ChangeRules(nr, "admin-2", t0), nil)
	wantNames(t, b.Changes(), domain.EvBatchRulesChanged)
	e := b.Changes()[0].(*domain.BatchRulesChanged)
	if e.BatchID != "b-1" || e.RuleVersion != 1 || e.By != "admin-2" || !e.At.Equal(t0) || !e.Rules.Equal(nr) {
		t.Fatalf("BatchRulesChanged = %+v", e)
	}
	if b.RuleVersion != 1 || !b.Rules.Equal(nr) {
		t.Fatalf("RuleVersion %d, rules %+v", b.RuleVersion, b.Rules)
	}

	// A second change bumps again; a paused but not yet started batch is still scheduled.
	wantErr(t, b.Pause("admin-2", t0), nil)
	nr2 := nr
	nr2.PerUserLimit = 3
	wantErr(t, b.ChangeRules(nr2, "admin-2", at(2*day)), nil)
	if b.RuleVersion != 2 || b.Rules.PerUserLimit != 3 {
		t.Fatalf("RuleVersion %d, per_user_limit %d", b.RuleVersion, b.Rules.PerUserLimit)
	}

	// Once the (new) window has started, the rules are fixed.
	before := len(b.Changes())
	wantErr(t, b.ChangeRules(nr, "admin-2", nr.ClaimStartsAt), domain.ErrConflict)
	wantErr(t, b.ChangeRules(nr, "admin-2", nr.ClaimStartsAt.Add(day)), domain.ErrConflict)
	if len(b.Changes()) != before || b.RuleVersion != 2 {
		t.Fatal("a refused change was recorded")
	}
}

func TestBatchChangeRulesRejects(t *testing.T) {
	cases := []struct {
		name  string
		edit  func(*domain.Rules)
		now   time.Time
		kind  error
		field string
	}{
		{"invalid rules", func(r *domain.Rules) { r.Audience = "" }, t0, domain.ErrInvalidArgument, "audience"},
		{"new start already past", func(r *domain.Rules) { r.ClaimStartsAt = t0.Add(-time.Hour) }, t0, domain.ErrInvalidArgument, "claim_starts_at"},
		{"new start is now", func(r *domain.Rules) { r.ClaimStartsAt = t0 }, t0, domain.ErrInvalidArgument, "claim_starts_at"},
		{"batch running", nil, claimStart, domain.ErrConflict, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := issued(t, "b-1", baseRules(), 10)
			r := laterRules()
			if tc.edit != nil {
				tc.edit(&r)
			}
			err := b.ChangeRules(r, "admin-1", tc.now)
			wantErr(t, err, tc.kind)
			if tc.field != "" && !strings.HasPrefix(err.Error(), tc.field+": ") {
				t.Fatalf("message %q does not name %q", err, tc.field)
			}
			if len(b.Changes()) != 0 || b.RuleVersion != 0 || !b.Rules.Equal(baseRules()) {
				t.Fatal("a refused change altered the batch")
			}
		})
	}
}

func TestBatchAddStock(t *testing.T) {
	inside := claimStart.Add(time.Hour)
	b := issued(t, "b-1", baseRules(), 100)

	wantErr(t, b.AddStock(50, "k1", "admin-1", inside), nil)
	wantNames(t, b.Changes(), domain.EvBatchStockAdded)
	e := b.Changes()[0].(*domain.BatchStockAdded)
	if e.BatchID != "b-1" || e.Added != 50 || e.TotalStock != 150 || e.IdempotencyKey != "k1" || e.By != "admin-1" || !e.At.Equal(inside) {
		t.Fatalf("BatchStockAdded = %+v", e)
	}
	if b.TotalStock != 150 {
		t.Fatalf("TotalStock = %d", b.TotalStock)
	}

	// Repeated key: nothing, whatever the amount.
	wantErr(t, b.AddStock(50, "k1", "admin-1", inside), nil)
	wantErr(t, b.AddStock(7, "k1", "admin-1", inside), nil)
	// New key, and no key: added each time.
	wantErr(t, b.AddStock(10, "k2", "admin-1", inside), nil)
	wantErr(t, b.AddStock(1, "", "admin-1", inside), nil)
	wantErr(t, b.AddStock(1, "", "admin-1", inside), nil)
	// Also while scheduled or paused.
	wantErr(t, b.Pause("admin-1", inside), nil)
	wantErr(t, b.AddStock(3, "k3", "admin-1", inside), nil)
	if b.TotalStock != 165 {
		t.Fatalf("TotalStock = %d, want 165", b.TotalStock)
	}
	wantNames(t, b.Changes(), domain.EvBatchStockAdded, domain.EvBatchStockAdded, domain.EvBatchStockAdded,
		domain.EvBatchStockAdded, domain.EvBatchPaused, domain.EvBatchStockAdded)

	// The keys survive a rebuild from history.
	rebuilt := storedBatch(historyOf(t, "b-1", baseRules(), 100), b)
	for _, k := range []string{"k1", "k2", "k3"} {
		wantErr(t, rebuilt.AddStock(1, k, "admin-1", inside), nil)
	}
	if len(rebuilt.Changes()) != 0 || rebuilt.TotalStock != 165 {
		t.Fatalf("repeated keys after rebuild recorded %v, total %d", names(rebuilt.Changes()), rebuilt.TotalStock)
	}
}

func TestBatchAddStockBounds(t *testing.T) {
	cases := []struct {
		name  string
		stock int64
		add   int64
		ok    bool
	}{
		{"zero", 10, 0, false},
		{"negative", 10, -1, false},
		{"over max at once", 1, domain.MaxStock + 1, false},
		{"total over max", domain.MaxStock - 5, 6, false},
		{"total exactly max", domain.MaxStock - 5, 5, true},
		{"one", 10, 1, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := issued(t, "b-1", baseRules(), tc.stock)
			err := b.AddStock(tc.add, "", "admin-1", t0)
			if tc.ok {
				wantErr(t, err, nil)
				if b.TotalStock != tc.stock+tc.add {
					t.Fatalf("TotalStock = %d", b.TotalStock)
				}
				return
			}
			wantErr(t, err, domain.ErrInvalidArgument)
			if !strings.HasPrefix(err.Error(), "add: ") {
				t.Fatalf("message %q does not name add", err)
			}
			if len(b.Changes()) != 0 || b.TotalStock != tc.stock {
				t.Fatal("a refused add changed the batch")
			}
		})
	}
}

// A retry with the same key returns the first outcome (success) even when
// the same amount would not fit any more, or the batch has since closed.
func TestBatchAddStockRetryReturnsFirstOutcome(t *testing.T) {
	hist := historyOf(t, "b-1", baseRules(), domain.MaxStock-10)
	b := domain.NewBatchFromHistory("b-1", hist)
	wantErr(t, b.AddStock(10, "fill", "admin-1", t0), nil)
	hist = append(hist, b.Changes()...)

	retry := domain.NewBatchFromHistory("b-1", hist)
	wantErr(t, retry.AddStock(10, "fill", "admin-1", t0.Add(time.Minute)), nil)
	if len(retry.Changes()) != 0 || retry.TotalStock != domain.MaxStock {
		t.Fatalf("retry at max stock: recorded %v, total %d", names(retry.Changes()), retry.TotalStock)
	}

	stop := domain.NewBatchFromHistory("b-1", hist)
	wantErr(t, stop.Stop("admin-1", t0.Add(time.Minute)), nil)
	hist = append(hist, stop.Changes()...)
	retry = domain.NewBatchFromHistory("b-1", hist)
	wantErr(t, retry.AddStock(10, "fill", "admin-1", t0.Add(2*time.Minute)), nil)
	if len(retry.Changes()) != 0 {
		t.Fatalf("retry after stop recorded %v", names(retry.Changes()))
	}
	// A new key on the stopped batch is still refused.
	wantErr(t, retry.AddStock(1, "other", "admin-1", t0.Add(2*time.Minute)), domain.ErrConflict)
}

func TestBatchCheckClaimable(t *testing.T) {
	inside := claimStart.Add(time.Hour)
	targeted := baseRules()
	targeted.Audience = domain.AudienceTargeted

	cases := []struct {
		name  string
		rules domain.Rules
		prep  func(b *domain.Batch) error
		now   time.Time
		kind  error
	}{
		{"running", baseRules(), nil, inside, nil},
		{"running at the start instant", baseRules(), nil, claimStart, nil},
		{"scheduled", baseRules(), nil, t0, domain.ErrNotClaimable},
		{"ended", baseRules(), nil, claimEnd, domain.ErrNotClaimable},
		{"paused", baseRules(), func(b *domain.Batch) error { return b.Pause("a", t0) }, inside, domain.ErrNotClaimable},
		{"resumed", baseRules(), func(b *domain.Batch) error {
			if err := b.Pause("a", t0); err != nil {
				return err
			}
			return b.Resume("a", t0)
		}, inside, nil},
		{"stopped", baseRules(), func(b *domain.Batch) error { return b.Stop("a", t0) }, inside, domain.ErrNotClaimable},
		{"targeted, running", targeted, nil, inside, domain.ErrNotClaimable},
		{"targeted, scheduled", targeted, nil, t0, domain.ErrNotClaimable},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := issued(t, "b-1", tc.rules, 10)
			if tc.prep != nil {
				wantErr(t, tc.prep(b), nil)
			}
			wantErr(t, b.CheckClaimable(tc.now), tc.kind)
		})
	}
}

func TestNewBatchFromHistoryRebuildsState(t *testing.T) {
	b, err := domain.IssueBatch("b-1", baseRules(), 100, "admin-1", t0)
	wantErr(t, err, nil)
	wantErr(t, b.ChangeRules(laterRules(), "admin-1", t0), nil)
	wantErr(t, b.Pause("admin-1", t0), nil)
	wantErr(t, b.AddStock(25, "k1", "admin-1", t0), nil)
	wantErr(t, b.Resume("admin-1", t0), nil)
	wantErr(t, b.Pause("admin-1", t0), nil)
	if b.Version() != 5 || b.BaseVersion() != -1 {
		t.Fatalf("new stream: Version %d, BaseVersion %d; want 5, -1", b.Version(), b.BaseVersion())
	}

	// Through the registry, as the repository stores them.
	reg := domain.NewRegistry()
	var history []domain.Event
	for _, e := range b.Changes() {
		name, data, err := reg.Marshal(e)
		wantErr(t, err, nil)
		back, err := reg.Unmarshal(name, data)
		wantErr(t, err, nil)
		history = append(history, back)
	}

	r := domain.NewBatchFromHistory("b-1", history)
	if !reflect.DeepEqual(snapshot(r), snapshot(b)) {
		t.Fatalf("rebuilt %+v\nwant    %+v", snapshot(r), snapshot(b))
	}
	if r.Version() != 5 || r.BaseVersion() != 5 || len(r.Changes()) != 0 || !r.Exists() {
		t.Fatalf("rebuilt: Version %d, BaseVersion %d, %d changes", r.Version(), r.BaseVersion(), len(r.Changes()))
	}
	// Idempotency keys are part of the rebuilt state.
	wantErr(t, r.AddStock(25, "k1", "admin-1", t0), nil)
	if len(r.Changes()) != 0 {
		t.Fatal("a replayed key added stock after a rebuild")
	}

	// A command on the rebuilt batch is expected to land right after revision 5.
	wantErr(t, r.Resume("admin-1", t0), nil)
	wantErr(t, r.Stop("admin-1", t0), nil)
	if r.BaseVersion() != 5 || r.Version() != 7 {
		t.Fatalf("after 2 changes: Version %d, BaseVersion %d; want 7, 5", r.Version(), r.BaseVersion())
	}
}

type foreignEvent struct{}

func (foreignEvent) EventName() string { return "other.thing_happened.v1" }

func TestBatchApplyUnknownEventCountsRevision(t *testing.T) {
	b := domain.NewBatchFromHistory("b-1", append(historyOf(t, "b-1", baseRules(), 10), foreignEvent{}))
	if b.Version() != 1 {
		t.Fatalf("Version = %d, want 1 (an unknown event is still a stored revision)", b.Version())
	}
	if b.TotalStock != 10 || b.Paused || b.Stopped {
		t.Fatalf("unknown event changed the state: %+v", snapshot(b))
	}
}

// historyOf is the stored history of a batch issued at t0.
func historyOf(t *testing.T, id string, r domain.Rules, stock int64) []domain.Event {
	t.Helper()
	b, err := domain.IssueBatch(id, r, stock, "admin-1", t0)
	if err != nil {
		t.Fatalf("IssueBatch: %v", err)
	}
	return b.Changes()
}

type batchState struct {
	ID          string
	Rules       string
	RuleVersion int
	TotalStock  int64
	Paused      bool
	Stopped     bool
	IssuedAt    time.Time
	Version     int64
}

func snapshot(b *domain.Batch) batchState {
	reg := domain.NewRegistry()
	_, rules, _ := reg.Marshal(&domain.BatchIssued{Rules: b.Rules.Normalized()})
	return batchState{b.ID, string(rules), b.RuleVersion, b.TotalStock, b.Paused, b.Stopped, b.IssuedAt.UTC(), b.Version()}
}
