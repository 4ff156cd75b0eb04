package readapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/couponsd/couponsd/projections"
)

// `couponsd verify`: the event store is the source of truth; every derived
// state (the Redis stock guard, the usable view and its batch catalog, the
// ops counters and deadlines, the history index) is recomputed from it in one
// pass and compared entry by entry. Verify repairs nothing: it lists every
// drift so an operator can decide (guard rebuild, projection rebuild).

// Components of a drift.
const (
	ComponentGuard   = "guard"
	ComponentView    = "view"
	ComponentOps     = "ops"
	ComponentHistory = "history"
)

// Absent is the value of a drift's Expected or Actual side for an entry that
// does not (or should not) exist.
const Absent = "absent"

// View statuses of a coupon as Verify names them: usable and locked are in
// the view; removed left it (used or expired) and only its revision is kept;
// absent left no trace (a voided claim, or a coupon of another user).
const (
	ViewUsable  = "usable"
	ViewLocked  = "locked"
	ViewRemoved = "removed"
)

// Policy fields of a batch in the stock guard, as drifts name them (and as
// GuardSnapshot.Unreadable keys them).
const (
	GuardFieldVersion       = "version"
	GuardFieldRuleVersion   = "rule_version"
	GuardFieldPaused        = "paused"
	GuardFieldStopped       = "stopped"
	GuardFieldPublic        = "public"
	GuardFieldPerUserLimit  = "per_user_limit"
	GuardFieldClaimStartsAt = "claim_starts_at"
	GuardFieldClaimEndsAt   = "claim_ends_at"
	GuardFieldTotalStock    = "total_stock"
)

// Drift is one derived entry that disagrees with the event store.
type Drift struct {
	Component string `json:"component"` // guard, view, ops or history
	Entity    string `json:"entity"`    // e.g. "batch b-1", "user u-17 coupon c-9"
	Field     string `json:"field"`     // e.g. "remaining", "status", "terms.amount_off"
	Expected  string `json:"expected"`  // as derived from the event store (Absent: should not exist)
	Actual    string `json:"actual"`    // as stored (Absent: missing)
}

// String reads "view user u-17 coupon c-9: status expected locked, actual usable".
func (d Drift) String() string {
	return d.Component + " " + d.Entity + ": " + d.Field + " expected " + d.Expected + ", actual " + d.Actual
}

// VerifyReport is the outcome of Verify.
type VerifyReport struct {
	UpTo   uint64 `json:"up_to"`  // last event position taken into account
	Events int    `json:"events"` // events read from the store
	// Checked counts the entities compared, keyed "<component> <entities>"
	// (e.g. "guard batches", "view coupons", "history coupons").
	Checked map[string]int `json:"checked"`
	Drifts  []Drift        `json:"drifts"`
	// Pending lists the coupon ids of unconfirmed guard reservations. They
	// are not drift (a claim may be in flight) and are accounted for in the
	// expected stock, per-user counts and idempotency records.
	Pending []string `json:"pending"`
	// Notes are caveats for reading the drifts (a projection whose
	// checkpoint is not at UpTo, a skipped component, coupons without batch).
	Notes []string `json:"notes"`
}

// OK tells whether no drift was found.
func (r VerifyReport) OK() bool { return len(r.Drifts) == 0 }

// String is the report for humans: a summary, then one line per drift.
func (r VerifyReport) String() string {
	var b strings.Builder
	r.writeSummary(&b)
	for _, d := range r.Drifts {
		b.WriteString(d.String())
		b.WriteByte('\n')
	}
	return b.String()
}

// WriteTable writes the summary then the drifts as an aligned table.
func (r VerifyReport) WriteTable(w io.Writer) error {
	var b strings.Builder
	r.writeSummary(&b)
	if _, err := io.WriteString(w, b.String()); err != nil {
		return err
	}
	if len(r.Drifts) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "COMPONENT\tENTITY\tFIELD\tEXPECTED\tACTUAL")
	for _, d := range r.Drifts {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", d.Component, d.Entity, d.Field, d.Expected, d.Actual)
	}
	return tw.Flush()
}

func (r VerifyReport) writeSummary(b *strings.Builder) {
	fmt.Fprintf(b, "verified against the event store up to position %d (%d events)\n", r.UpTo, r.Events)
	if len(r.Checked) > 0 {
		keys := slices.Sorted(maps.Keys(r.Checked))
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%d %s", r.Checked[k], k)
		}
		fmt.Fprintf(b, "checked: %s\n", strings.Join(parts, ", "))
	}
	for _, n := range r.Notes {
		fmt.Fprintf(b, "note: %s\n", n)
	}
	if len(r.Pending) > 0 {
		fmt.Fprintf(b, "unconfirmed reservations (not drift, may be in flight): %d: %s\n", len(r.Pending), strings.Join(r.Pending, ", "))
	}
	if len(r.Drifts) == 0 {
		b.WriteString("no drift\n")
	} else {
		fmt.Fprintf(b, "%d drift(s):\n", len(r.Drifts))
	}
}

// ---- read ports ----

// GuardSnapshot is the stored stock-guard state of one batch.
type GuardSnapshot struct {
	BatchID string
	// Found tells whether the batch's policy is stored. Policy holds the
	// fields that could be read; the others are in Unreadable (field name,
	// one of GuardField*, to the raw stored value; "" when missing).
	Found      bool
	Policy     commands.GuardBatch
	Unreadable map[string]string
	// Remaining is the raw remaining stock ("" when the key is missing).
	Remaining string
	PerUser   map[string]string // user id -> raw count
	Idem      map[string]string // user id + "\x00" + idempotency key -> coupon id
	Pending   []commands.PendingReservation
}

// GuardInspector reads the stock guard's stored state.
type GuardInspector interface {
	// Initialized tells whether the guard was rebuilt (its marker is set).
	Initialized(ctx context.Context) (bool, error)
	// BatchIDs lists the batches registered in the guard.
	BatchIDs(ctx context.Context) ([]string, error)
	// InspectBatches reads the state of the given batches (one snapshot per
	// id, Found false for an unknown one).
	InspectBatches(ctx context.Context, batchIDs []string) ([]GuardSnapshot, error)
}

// ViewEntry is what a user's view keys hold for one coupon.
type ViewEntry struct {
	CouponID string
	// HasTerms: the coupon is in the view (usable or locked). Terms are
	// decoded unless TermsUnreadable, then RawTerms holds what is stored.
	HasTerms        bool
	Terms           projections.ViewTerms
	TermsUnreadable bool
	RawTerms        string
	// Locked: held by OrderID until HoldUntil (unix ms, 0 when none).
	Locked    bool
	OrderID   string
	HoldUntil int64
	// HasVersion: the coupon's last applied revision is kept (also after it
	// left the view). VersionUnreadable: stored but not a number (RawVersion).
	HasVersion        bool
	Version           uint64
	VersionUnreadable bool
	RawVersion        string
	// Indexed: listed in the user's index, scored by obtained time (unix ms).
	Indexed    bool
	IndexScore int64
}

// CatalogEntry is one stored batch catalog entry.
type CatalogEntry struct {
	BatchID string
	Entry   projections.BatchEntry
	// FiledVersion is the version the entry is filed under (what later
	// writes are compared with). Unreadable: Raw did not decode.
	FiledVersion int64
	Unreadable   bool
	Raw          string
}

// ViewInspector reads the Redis usable view.
type ViewInspector interface {
	// Users lists every user that has view keys.
	Users(ctx context.Context) ([]string, error)
	// InspectUsers reads the view entries of the given users.
	InspectUsers(ctx context.Context, userIDs []string) (map[string][]ViewEntry, error)
	// InspectCatalog reads the whole batch catalog.
	InspectCatalog(ctx context.Context) ([]CatalogEntry, error)
}

// OpsSnapshot is the stored operations view of one batch.
type OpsSnapshot struct {
	BatchID  string
	Counts   map[string]string // counter (claimed, redeemed, expired, returned) -> raw value
	Holds    map[string]int64  // coupon id -> hold deadline (unix ms)
	Expiries map[string]int64  // coupon id -> validity end (unix ms)
}

// OpsInspector reads the operations view.
type OpsInspector interface {
	// BatchIDs lists the batches registered in the operations view.
	BatchIDs(ctx context.Context) ([]string, error)
	// InspectBatches reads the counters and deadlines of the given batches.
	InspectBatches(ctx context.Context, batchIDs []string) ([]OpsSnapshot, error)
}

// HistoryReader reads stored history records (projections.HistoryIndex is one).
type HistoryReader interface {
	Get(ctx context.Context, couponIDs []string) (map[string]projections.CouponRecord, error)
}

// VerifyDeps are what Verify reads. Repo is required; a nil component is
// skipped (and noted in the report).
type VerifyDeps struct {
	Repo    *commands.Repository
	Guard   GuardInspector
	View    ViewInspector
	Ops     OpsInspector
	History HistoryReader
}

// Chunk sizes of the reads.
const (
	verifyPage         = 5000 // events per ReadAll
	verifyBatchChunk   = 100  // batches per guard or ops inspection
	verifyUserChunk    = 200  // users per view inspection
	verifyHistoryChunk = 500  // coupons per history Get
)

type checkpointer interface {
	Checkpoint(ctx context.Context) (uint64, error)
}

// Verify compares every derived state with the event store read up to
// position upTo (0: the store's last position when Verify starts) and lists
// every drift. Run it while the service is quiet, or read the notes: a
// projection that has not reached upTo (or went past it) shows its lag as
// drift, and the guard always reflects every claim made so far.
func Verify(ctx context.Context, deps VerifyDeps, upTo uint64) (VerifyReport, error) {
	if deps.Repo == nil {
		return VerifyReport{}, errors.New("readapi: Verify needs a repository")
	}
	last, err := deps.Repo.Store().LastPosition(ctx)
	if err != nil {
		return VerifyReport{}, err
	}
	if upTo == 0 {
		upTo = last
	}
	exp, err := derive(ctx, deps.Repo, upTo)
	if err != nil {
		return VerifyReport{}, err
	}
	rep := VerifyReport{UpTo: upTo, Events: exp.events, Checked: map[string]int{}}
	if last > upTo && deps.Guard != nil {
		rep.Notes = append(rep.Notes, fmt.Sprintf("the store holds events up to %d, past %d: the guard reflects them", last, upTo))
	}
	for _, id := range exp.orphanBatches {
		rep.Notes = append(rep.Notes, fmt.Sprintf("coupons of batch %s exist without a batch stream", id))
	}

	type part struct {
		name  string
		run   func(context.Context, *checker) error
		skip  bool
		cp    any
		drift []Drift
	}
	parts := []*part{
		{name: ComponentGuard, run: func(ctx context.Context, c *checker) error { return c.guard(ctx, deps.Guard) }, skip: deps.Guard == nil},
		{name: ComponentView, run: func(ctx context.Context, c *checker) error { return c.view(ctx, deps.View) }, skip: deps.View == nil, cp: deps.View},
		{name: ComponentOps, run: func(ctx context.Context, c *checker) error { return c.ops(ctx, deps.Ops) }, skip: deps.Ops == nil, cp: deps.Ops},
		{name: ComponentHistory, run: func(ctx context.Context, c *checker) error { return c.history(ctx, deps.History) }, skip: deps.History == nil, cp: deps.History},
	}
	checkers := make([]*checker, len(parts))
	errs := make([]error, len(parts))
	var wg sync.WaitGroup
	for i, p := range parts {
		if p.skip {
			rep.Notes = append(rep.Notes, p.name+" not checked (no reader given)")
			continue
		}
		if cp, ok := p.cp.(checkpointer); ok {
			if pos, err := cp.Checkpoint(ctx); err != nil {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s checkpoint unreadable: %v", p.name, err))
			} else if pos < upTo {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s projection is at position %d, behind %d: drifts may be events it has not applied yet", p.name, pos, upTo))
			} else if pos > upTo {
				rep.Notes = append(rep.Notes, fmt.Sprintf("%s projection is at position %d, past %d: drifts may be events it applied after it", p.name, pos, upTo))
			}
		}
		c := &checker{exp: exp, component: p.name, checked: map[string]int{}}
		checkers[i] = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = p.run(ctx, c)
		}()
	}
	wg.Wait()
	for i, c := range checkers {
		if errs[i] != nil {
			return rep, fmt.Errorf("verify %s: %w", parts[i].name, errs[i])
		}
		if c == nil {
			continue
		}
		rep.Drifts = append(rep.Drifts, c.drifts...)
		rep.Pending = append(rep.Pending, c.pending...)
		for k, n := range c.checked {
			rep.Checked[k] += n
		}
	}
	slices.Sort(rep.Pending)
	return rep, nil
}

// ---- expected state, derived from the store in one pass ----

type expCoupon struct {
	c      *domain.Coupon
	rec    projections.CouponRecord
	hasRec bool
}

type expGuard struct {
	consumed int64
	perUser  map[string]int64
	idem     map[string]string
}

type expOps struct {
	claimed, redeemed, expired, returned int64
	holds, expiries                      map[string]int64 // coupon -> unix ms
}

type expected struct {
	events        int
	batches       map[string]*domain.Batch
	coupons       map[string]*expCoupon
	guard         map[string]*expGuard
	ops           map[string]*expOps
	byUser        map[string][]string // user -> coupons that leave a trace in the view
	orphanBatches []string
}

func (e *expected) guardOf(batchID string) *expGuard {
	g := e.guard[batchID]
	if g == nil {
		g = &expGuard{perUser: map[string]int64{}, idem: map[string]string{}}
		e.guard[batchID] = g
	}
	return g
}

func (e *expected) opsOf(batchID string) *expOps {
	o := e.ops[batchID]
	if o == nil {
		o = &expOps{holds: map[string]int64{}, expiries: map[string]int64{}}
		e.ops[batchID] = o
	}
	return o
}

// existingBatches lists the ids of the issued batches, sorted.
func (e *expected) existingBatches() []string {
	out := make([]string, 0, len(e.batches))
	for id, b := range e.batches {
		if b.Exists() {
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func (e *expected) batch(id string) *domain.Batch {
	if b := e.batches[id]; b != nil && b.Exists() {
		return b
	}
	return nil
}

func derive(ctx context.Context, repo *commands.Repository, upTo uint64) (*expected, error) {
	exp := &expected{batches: map[string]*domain.Batch{}, coupons: map[string]*expCoupon{},
		guard: map[string]*expGuard{}, ops: map[string]*expOps{}, byUser: map[string][]string{}}
	reg := repo.Registry()
	err := es.Scan(ctx, repo.Store(), 0, verifyPage, func(rec es.RecordedEvent) error {
		if rec.Position > upTo {
			return es.ErrStopScan
		}
		exp.events++
		return exp.apply(reg, rec)
	})
	if err != nil {
		return nil, err
	}
	for id, ec := range exp.coupons {
		c := ec.c
		if !c.Exists() {
			continue
		}
		exp.byUser[c.UserID] = append(exp.byUser[c.UserID], id)
		switch c.Status {
		case domain.CouponLockedSt:
			exp.opsOf(c.Terms.BatchID).holds[id] = c.HoldUntil.UnixMilli()
		case domain.CouponUsable:
			exp.opsOf(c.Terms.BatchID).expiries[id] = c.Terms.ValidUntil.UnixMilli()
		}
	}
	for id := range exp.guard {
		if exp.batch(id) == nil {
			exp.orphanBatches = append(exp.orphanBatches, id)
		}
	}
	slices.Sort(exp.orphanBatches)
	return exp, nil
}

func (e *expected) apply(reg *domain.Registry, rec es.RecordedEvent) error {
	switch {
	case strings.HasPrefix(rec.Type, "batch."):
		ev, err := reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return fmt.Errorf("event at position %d: %w", rec.Position, err)
		}
		id := strings.TrimPrefix(rec.StreamID, "batch-")
		b := e.batches[id]
		if b == nil {
			b = domain.NewBatchFromHistory(id, nil)
			e.batches[id] = b
		}
		b.Apply(ev)
	case strings.HasPrefix(rec.Type, "coupon."):
		ev, err := reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return fmt.Errorf("event at position %d: %w", rec.Position, err)
		}
		id := strings.TrimPrefix(rec.StreamID, "coupon-")
		ec := e.coupons[id]
		if ec == nil {
			ec = &expCoupon{c: domain.NewCouponFromHistory(id, nil)}
			e.coupons[id] = ec
		}
		ec.c.Apply(ev)
		if r, keep := projections.FoldRecord(ec.rec, ev, rec.Revision); keep {
			ec.rec, ec.hasRec = r, true
		}
		if oc, ok := projections.OpsChangeOf(ev, rec.Revision); ok {
			o := e.opsOf(oc.BatchID)
			o.claimed += oc.Claimed
			o.redeemed += oc.Redeemed
			o.expired += oc.Expired
			o.returned += oc.Returned
		}
		switch ev := ev.(type) {
		case *domain.CouponClaimed:
			g := e.guardOf(ev.Terms.BatchID)
			g.consumed++
			g.perUser[ev.UserID]++
			if ev.IdempotencyKey != "" {
				g.idem[ev.UserID+"\x00"+ev.IdempotencyKey] = ev.CouponID
			}
		case *domain.CouponGranted:
			g := e.guardOf(ev.Terms.BatchID)
			g.consumed++
			g.perUser[ev.UserID]++
		}
	}
	return nil
}

// ---- comparison ----

// checker compares one component; each runs in its own goroutine over the
// read-only expected state.
type checker struct {
	exp       *expected
	component string
	drifts    []Drift
	pending   []string
	checked   map[string]int
}

func (c *checker) add(entity, field, expected, actual string) {
	c.drifts = append(c.drifts, Drift{Component: c.component, Entity: entity, Field: field, Expected: expected, Actual: actual})
}

// cmp adds a drift when the two sides differ.
func (c *checker) cmp(entity, field, expected, actual string) {
	if expected != actual {
		c.add(entity, field, expected, actual)
	}
}

func i64(n int64) string { return strconv.FormatInt(n, 10) }

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// msTime renders unix milliseconds as an RFC 3339 UTC time.
func msTime(v int64) string { return time.UnixMilli(v).UTC().Format(time.RFC3339Nano) }

func tsTime(t time.Time) string {
	if t.IsZero() {
		return Absent
	}
	return t.UTC().Format(time.RFC3339Nano)
}

func unreadable(raw string) string { return "unreadable " + strconv.Quote(raw) }

// count renders a raw counter, a missing one as 0.
func count(raw string, ok bool) string {
	if !ok || raw == "" {
		return "0"
	}
	return raw
}

func sortedUnion(lists ...[]string) []string {
	seen := map[string]bool{}
	var out []string
	for _, l := range lists {
		for _, s := range l {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	slices.Sort(out)
	return out
}

func chunks[T any](s []T, n int) [][]T {
	var out [][]T
	for len(s) > 0 {
		k := min(n, len(s))
		out = append(out, s[:k])
		s = s[k:]
	}
	return out
}

// ---- guard ----

func guardPolicy(b commands.GuardBatch) [][2]string {
	return [][2]string{
		{GuardFieldVersion, i64(b.Version)},
		{GuardFieldRuleVersion, strconv.Itoa(b.RuleVersion)},
		{GuardFieldPaused, strconv.FormatBool(b.Paused)},
		{GuardFieldStopped, strconv.FormatBool(b.Stopped)},
		{GuardFieldPublic, strconv.FormatBool(b.Public)},
		{GuardFieldPerUserLimit, strconv.Itoa(b.PerUserLimit)},
		{GuardFieldClaimStartsAt, msTime(b.ClaimStartsAt.UnixMilli())},
		{GuardFieldClaimEndsAt, msTime(b.ClaimEndsAt.UnixMilli())},
		{GuardFieldTotalStock, i64(b.TotalStock)},
	}
}

func (c *checker) guard(ctx context.Context, g GuardInspector) error {
	ok, err := g.Initialized(ctx)
	if err != nil {
		return err
	}
	if !ok {
		c.add("state", "initialized", "yes", "no")
	}
	registered, err := g.BatchIDs(ctx)
	if err != nil {
		return err
	}
	isReg := map[string]bool{}
	for _, id := range registered {
		isReg[id] = true
	}
	ids := sortedUnion(c.exp.existingBatches(), registered)
	for _, chunk := range chunks(ids, verifyBatchChunk) {
		snaps, err := g.InspectBatches(ctx, chunk)
		if err != nil {
			return err
		}
		byID := make(map[string]GuardSnapshot, len(snaps))
		for _, s := range snaps {
			byID[s.BatchID] = s
		}
		for _, id := range chunk {
			c.guardBatch(id, byID[id], isReg[id])
		}
	}
	c.checked["guard batches"] = len(ids)
	return nil
}

func (c *checker) guardBatch(id string, s GuardSnapshot, registered bool) {
	ent := "batch " + id
	for _, p := range s.Pending {
		c.pending = append(c.pending, p.CouponID)
	}
	b := c.exp.batch(id)
	if b == nil {
		if s.Found || s.Remaining != "" || registered {
			c.add(ent, "batch", Absent, "present")
		}
		return
	}
	if !s.Found {
		c.add(ent, "batch", "present", Absent)
		return
	}
	want := guardPolicy(commands.GuardBatchOf(b))
	got := guardPolicy(s.Policy)
	for i, f := range want {
		actual := got[i][1]
		if raw, bad := s.Unreadable[f[0]]; bad {
			actual = Absent
			if raw != "" {
				actual = unreadable(raw)
			}
		}
		c.cmp(ent, f[0], f[1], actual)
	}
	if !registered {
		c.add(ent, "registered", "yes", "no")
	}

	// Unconfirmed reservations hold a unit, a per-user count and their
	// idempotency record until they are confirmed (their claim is stored,
	// hence already counted) or voided and released.
	ge := c.exp.guard[id]
	if ge == nil {
		ge = &expGuard{}
	}
	var extra int64
	perUser := maps.Clone(ge.perUser)
	idem := maps.Clone(ge.idem)
	if perUser == nil {
		perUser = map[string]int64{}
	}
	if idem == nil {
		idem = map[string]string{}
	}
	for _, p := range s.Pending {
		if ec := c.exp.coupons[p.CouponID]; ec != nil && ec.c.Exists() {
			continue
		}
		extra++
		if p.UserID != "" {
			perUser[p.UserID]++
			if p.IdempotencyKey != "" {
				idem[p.UserID+"\x00"+p.IdempotencyKey] = p.CouponID
			}
		}
	}
	actual := s.Remaining
	if actual == "" {
		actual = Absent
	}
	c.cmp(ent, "remaining", i64(b.TotalStock-ge.consumed-extra), actual)

	for _, u := range sortedUnion(slices.Collect(maps.Keys(perUser)), slices.Collect(maps.Keys(s.PerUser))) {
		raw, ok := s.PerUser[u]
		c.cmp(ent+" user "+u, "count", i64(perUser[u]), count(raw, ok))
	}
	for _, k := range sortedUnion(slices.Collect(maps.Keys(idem)), slices.Collect(maps.Keys(s.Idem))) {
		user, key, _ := strings.Cut(k, "\x00")
		want, ok := idem[k]
		if !ok {
			want = Absent
		}
		got, ok := s.Idem[k]
		if !ok {
			got = Absent
		}
		c.cmp(ent+" user "+user+" idempotency key "+strconv.Quote(key), "coupon", want, got)
	}
}

// ---- view ----

func (c *checker) view(ctx context.Context, v ViewInspector) error {
	users, err := v.Users(ctx)
	if err != nil {
		return err
	}
	all := sortedUnion(users, slices.Collect(maps.Keys(c.exp.byUser)))
	coupons := 0
	for _, chunk := range chunks(all, verifyUserChunk) {
		got, err := v.InspectUsers(ctx, chunk)
		if err != nil {
			return err
		}
		for _, u := range chunk {
			entries := map[string]ViewEntry{}
			for _, e := range got[u] {
				entries[e.CouponID] = e
			}
			ids := sortedUnion(c.exp.byUser[u], slices.Collect(maps.Keys(entries)))
			for _, id := range ids {
				e, ok := entries[id]
				c.viewCoupon(u, id, e, ok)
			}
			coupons += len(ids)
		}
	}
	c.checked["view users"] = len(all)
	c.checked["view coupons"] = coupons
	return c.catalog(ctx, v)
}

// expectedViewStatus is where the coupon should be in user's view.
func (c *checker) expectedViewStatus(user, id string) (string, *domain.Coupon) {
	ec := c.exp.coupons[id]
	if ec == nil || !ec.c.Exists() || ec.c.UserID != user {
		return Absent, nil
	}
	switch ec.c.Status {
	case domain.CouponUsable:
		return ViewUsable, ec.c
	case domain.CouponLockedSt:
		return ViewLocked, ec.c
	default:
		return ViewRemoved, ec.c
	}
}

func actualViewStatus(e ViewEntry, ok bool) string {
	switch {
	case !ok:
		return Absent
	case e.HasTerms:
		if e.Locked {
			return ViewLocked
		}
		return ViewUsable
	case e.HasVersion:
		return ViewRemoved
	}
	return Absent
}

func inView(status string) bool { return status == ViewUsable || status == ViewLocked }

func (c *checker) viewCoupon(user, id string, e ViewEntry, ok bool) {
	ent := "user " + user + " coupon " + id
	want, cp := c.expectedViewStatus(user, id)
	got := actualViewStatus(e, ok)
	c.cmp(ent, "status", want, got)
	if want != Absent {
		actual := Absent
		switch {
		case e.VersionUnreadable:
			actual = unreadable(e.RawVersion)
		case e.HasVersion:
			actual = strconv.FormatUint(e.Version, 10)
		}
		c.cmp(ent, "revision", i64(cp.Version()), actual)
	}
	switch {
	case inView(want) && inView(got):
		terms := projections.ViewTermsOf(cp.Terms, cp.ObtainedAt)
		if e.TermsUnreadable {
			raw, _ := json.Marshal(terms)
			c.add(ent, "terms", string(raw), unreadable(e.RawTerms))
		} else {
			c.viewTerms(ent, terms, e.Terms)
		}
		if want == ViewLocked && got == ViewLocked {
			c.cmp(ent, "order_id", cp.OrderID, e.OrderID)
			hold := Absent
			if e.HoldUntil != 0 {
				hold = msTime(e.HoldUntil)
			}
			c.cmp(ent, "hold_until", msTime(cp.HoldUntil.UnixMilli()), hold)
		}
		idx := Absent
		if e.Indexed {
			idx = msTime(e.IndexScore)
		}
		c.cmp(ent, "index", msTime(terms.ObtainedAt), idx)
	case !inView(want) && !inView(got):
		// Leftovers of a coupon out of the view.
		if e.Locked {
			c.add(ent, "lock", Absent, "order "+e.OrderID)
		}
		if e.Indexed {
			c.add(ent, "index", Absent, msTime(e.IndexScore))
		}
	}
}

func scopeString(s domain.Scope) string {
	if len(s.IDs) == 0 {
		return s.Kind
	}
	return s.Kind + ":" + strings.Join(s.IDs, ",")
}

func (c *checker) viewTerms(ent string, want, got projections.ViewTerms) {
	for _, f := range []struct{ name, want, got string }{
		{"terms.batch_id", want.BatchID, got.BatchID},
		{"terms.kind", string(want.Kind), string(got.Kind)},
		{"terms.issuer", want.Issuer, got.Issuer},
		{"terms.threshold", i64(want.Threshold), i64(got.Threshold)},
		{"terms.amount_off", i64(want.AmountOff), i64(got.AmountOff)},
		{"terms.percent_off", i64(want.PercentOff), i64(got.PercentOff)},
		{"terms.max_discount", i64(want.MaxDiscount), i64(got.MaxDiscount)},
		{"terms.scope", scopeString(want.Scope), scopeString(got.Scope)},
		{"terms.exclusive", strconv.FormatBool(want.Exclusive), strconv.FormatBool(got.Exclusive)},
		{"terms.valid_from", msTime(want.ValidFrom), msTime(got.ValidFrom)},
		{"terms.valid_until", msTime(want.ValidUntil), msTime(got.ValidUntil)},
		{"terms.obtained_at", msTime(want.ObtainedAt), msTime(got.ObtainedAt)},
	} {
		c.cmp(ent, f.name, f.want, f.got)
	}
}

func rulesJSON(r domain.Rules) string {
	b, _ := json.Marshal(r.Normalized())
	return string(b)
}

func (c *checker) catalog(ctx context.Context, v ViewInspector) error {
	entries, err := v.InspectCatalog(ctx)
	if err != nil {
		return err
	}
	got := map[string]CatalogEntry{}
	for _, e := range entries {
		got[e.BatchID] = e
	}
	ids := sortedUnion(c.exp.existingBatches(), slices.Collect(maps.Keys(got)))
	for _, id := range ids {
		ent := "batch " + id
		b := c.exp.batch(id)
		e, ok := got[id]
		switch {
		case b == nil && ok:
			c.add(ent, "catalog entry", Absent, "present")
			continue
		case b != nil && !ok:
			c.add(ent, "catalog entry", "present", Absent)
			continue
		case b == nil:
			continue
		}
		if e.Unreadable {
			c.add(ent, "catalog entry", "version "+i64(b.Version()), unreadable(e.Raw))
			continue
		}
		c.cmp(ent, "batch_id", id, e.Entry.BatchID)
		c.cmp(ent, "version", i64(b.Version()), i64(e.Entry.Version))
		c.cmp(ent, "filed_version", i64(b.Version()), i64(e.FiledVersion))
		c.cmp(ent, "rule_version", strconv.Itoa(b.RuleVersion), strconv.Itoa(e.Entry.RuleVersion))
		c.cmp(ent, "total_stock", i64(b.TotalStock), i64(e.Entry.TotalStock))
		c.cmp(ent, "paused", strconv.FormatBool(b.Paused), strconv.FormatBool(e.Entry.Paused))
		c.cmp(ent, "stopped", strconv.FormatBool(b.Stopped), strconv.FormatBool(e.Entry.Stopped))
		if !b.Rules.Equal(e.Entry.Rules) {
			c.add(ent, "rules", rulesJSON(b.Rules), rulesJSON(e.Entry.Rules))
		}
	}
	c.checked["view batches"] = len(ids)
	return nil
}

// ---- ops ----

func (c *checker) ops(ctx context.Context, o OpsInspector) error {
	registered, err := o.BatchIDs(ctx)
	if err != nil {
		return err
	}
	isReg := map[string]bool{}
	for _, id := range registered {
		isReg[id] = true
	}
	ids := sortedUnion(c.exp.existingBatches(), slices.Collect(maps.Keys(c.exp.ops)), registered)
	for _, chunk := range chunks(ids, verifyBatchChunk) {
		snaps, err := o.InspectBatches(ctx, chunk)
		if err != nil {
			return err
		}
		byID := make(map[string]OpsSnapshot, len(snaps))
		for _, s := range snaps {
			byID[s.BatchID] = s
		}
		for _, id := range chunk {
			c.opsBatch(id, byID[id], isReg[id])
		}
	}
	c.checked["ops batches"] = len(ids)
	return nil
}

func (c *checker) opsBatch(id string, s OpsSnapshot, registered bool) {
	ent := "batch " + id
	want := c.exp.ops[id]
	if want == nil {
		want = &expOps{}
	}
	for _, f := range []struct {
		name string
		want int64
	}{{"claimed", want.claimed}, {"redeemed", want.redeemed}, {"expired", want.expired}, {"returned", want.returned}} {
		raw, ok := s.Counts[f.name]
		c.cmp(ent, f.name, i64(f.want), count(raw, ok))
	}
	if want.claimed > 0 && !registered {
		c.add(ent, "registered", "yes", "no")
	}
	deadlines := func(field string, want, got map[string]int64) {
		for _, cid := range sortedUnion(slices.Collect(maps.Keys(want)), slices.Collect(maps.Keys(got))) {
			w, wok := want[cid]
			g, gok := got[cid]
			ws, gs := Absent, Absent
			if wok {
				ws = msTime(w)
			}
			if gok {
				gs = msTime(g)
			}
			c.cmp(ent+" coupon "+cid, field, ws, gs)
		}
	}
	deadlines("hold", want.holds, s.Holds)
	deadlines("expiry", want.expiries, s.Expiries)
}

// ---- history ----

func (c *checker) history(ctx context.Context, h HistoryReader) error {
	ids := slices.Sorted(maps.Keys(c.exp.coupons))
	for _, chunk := range chunks(ids, verifyHistoryChunk) {
		got, err := h.Get(ctx, chunk)
		if err != nil {
			return err
		}
		for _, id := range chunk {
			r, ok := got[id]
			c.historyRecord(id, c.exp.coupons[id], r, ok)
		}
	}
	c.checked["history coupons"] = len(ids)
	return nil
}

func (c *checker) historyRecord(id string, ec *expCoupon, got projections.CouponRecord, ok bool) {
	ent := "coupon " + id
	switch {
	case !ec.hasRec && ok:
		c.add(ent, "record", Absent, "status "+got.Status)
		return
	case ec.hasRec && !ok:
		c.add(ent, "record", "status "+ec.rec.Status, Absent)
		return
	case !ec.hasRec:
		return
	}
	w := ec.rec
	for _, f := range []struct{ name, want, got string }{
		{"status", w.Status, got.Status},
		{"version", strconv.FormatUint(w.Version, 10), strconv.FormatUint(got.Version, 10)},
		{"user_id", w.UserID, got.UserID},
		{"batch_id", w.BatchID, got.BatchID},
		{"source", w.Source, got.Source},
		{"kind", w.Kind, got.Kind},
		{"issuer", w.Issuer, got.Issuer},
		{"threshold", i64(w.Threshold), i64(got.Threshold)},
		{"amount_off", i64(w.AmountOff), i64(got.AmountOff)},
		{"percent_off", i64(w.PercentOff), i64(got.PercentOff)},
		{"max_discount", i64(w.MaxDiscount), i64(got.MaxDiscount)},
		{"order_id", w.OrderID, got.OrderID},
		{"payment_id", w.PaymentID, got.PaymentID},
		{"discount", i64(w.Discount), i64(got.Discount)},
		{"obtained_at", tsTime(w.ObtainedAt), tsTime(got.ObtainedAt)},
		{"valid_from", tsTime(w.ValidFrom), tsTime(got.ValidFrom)},
		{"valid_until", tsTime(w.ValidUntil), tsTime(got.ValidUntil)},
		{"redeemed_at", tsTime(w.RedeemedAt), tsTime(got.RedeemedAt)},
		{"expired_at", tsTime(w.ExpiredAt), tsTime(got.ExpiredAt)},
		{"returned_at", tsTime(w.ReturnedAt), tsTime(got.ReturnedAt)},
		{"ended_at", tsTime(w.EndedAt), tsTime(got.EndedAt)},
		{"updated_at", tsTime(w.UpdatedAt), tsTime(got.UpdatedAt)},
	} {
		c.cmp(ent, f.name, f.want, f.got)
	}
}
