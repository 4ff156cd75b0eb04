// Package historytest is the shared conformance suite of the history index
// port (projections.HistoryIndex). Every adapter runs it from its own tests:
//
//	func TestConformance(t *testing.T) {
//		historytest.Run(t, func(t *testing.T) projections.HistoryIndex { ... })
//	}
//
// The semantics it checks, beyond the port's doc comments:
//
//   - Upsert validates every record first (coupon, batch and user id
//     required, status one of usable, locked, redeemed, expired) and writes
//     nothing when one is invalid (domain.ErrInvalidArgument). A record is
//     written when its Version is strictly above the stored one; several
//     versions of one coupon in one call end with the highest, whatever
//     their order.
//   - ListByUser: an empty status filter means every status; an unknown
//     status, an empty user id, a limit outside 0..200 and a malformed
//     cursor are domain.ErrInvalidArgument; limit 0 means 50. Order: EndedAt
//     descending (nanosecond precision), then coupon id descending (byte
//     order); a zero EndedAt sorts last. Next is empty exactly on the last
//     page; cursors are keyset positions, so records added while paging
//     appear on later pages only when they sort after the position.
//   - Reports count a transition only when its time is set and in
//     [From, To): Claimed by ObtainedAt, Redeemed by RedeemedAt of records
//     whose status is redeemed (TotalDiscount sums their Discount), Expired
//     by ExpiredAt of records whose status is expired. From after To is
//     domain.ErrInvalidArgument. A batch without records reports zeros.
//   - TopBatches and TopUsers list only batches (users) with at least one
//     redemption in the range, by redemptions desc, then discount desc,
//     then id asc; each TopBatches entry carries the full BatchReport of the
//     batch over the range. Limit 0 means 10, above 1000 or negative is
//     domain.ErrInvalidArgument.
//   - The checkpoint is 0 until saved and belongs to the generation: a
//     rebuild starts at 0 and its checkpoint is the index's after Commit.
//   - A finished (committed or aborted) rebuild refuses further calls.
//   - A call with a cancelled context fails with an error matching
//     ctx.Err() and writes nothing.
package historytest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
)

// callTimeout bounds every call of the suite so that a broken adapter fails
// instead of hanging.
const callTimeout = 20 * time.Second

// Run runs the conformance suite. open must return a new, empty index on
// every call and release it (t.Cleanup) when the subtest ends. Subtests run
// in parallel.
func Run(t *testing.T, open func(t *testing.T) projections.HistoryIndex) {
	t.Helper()
	cases := []struct {
		name string
		fn   func(t *testing.T, ix projections.HistoryIndex)
	}{
		{"UpsertThenGet", testUpsertGet},
		{"NewerVersionReplacesAndReindexes", testNewerVersionReplaces},
		{"StaleVersionsAreSkipped", testStaleSkipped},
		{"OneCallWithSeveralVersionsOfACoupon", testBulkVersions},
		{"ConcurrentUpsertsHighestVersionWins", testConcurrentUpserts},
		{"UpsertValidatesAllOrNothing", testUpsertValidates},
		{"ListByUserFiltersByStatus", testListFilter},
		{"ListByUserOrder", testListOrder},
		{"ListByUserPaging", testListPaging},
		{"ListByUserLimits", testListLimits},
		{"PagingIsStableWhileInserting", testPagingStable},
		{"BadCursor", testBadCursor},
		{"BatchReport", testBatchReport},
		{"TopBatches", testTopBatches},
		{"TopUsers", testTopUsers},
		{"Checkpoint", testCheckpoint},
		{"RebuildReadsOldUntilCommit", testRebuildCommit},
		{"RebuildAbortKeepsOld", testRebuildAbort},
		{"RebuildTwice", testRebuildTwice},
		{"CancelledContext", testCancelled},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ix := open(t)
			if ix == nil {
				t.Fatal("open returned a nil index")
			}
			tc.fn(t, ix)
		})
	}
}

// ---- fixtures ----

// t0 has nanoseconds so that adapters keeping less precision fail.
var t0 = time.Date(2026, 3, 1, 10, 0, 0, 123456789, time.UTC)

func at(d time.Duration) time.Time { return t0.Add(d) }

func newRec(id, batch, user string) projections.CouponRecord {
	return projections.CouponRecord{
		CouponID: id, BatchID: batch, UserID: user,
		Status: "usable", Source: "claimed", Kind: "amount_off", Issuer: "shop-1",
		Threshold: 10_000, AmountOff: 1_500, MaxDiscount: 1_500,
		ObtainedAt: t0, ValidFrom: t0.Add(-time.Hour), ValidUntil: t0.Add(30 * 24 * time.Hour),
		UpdatedAt: t0, Version: 1,
	}
}

func obtained(r projections.CouponRecord, when time.Time) projections.CouponRecord {
	r.ObtainedAt, r.UpdatedAt = when, when
	return r
}

func redeemed(r projections.CouponRecord, when time.Time, discount int64) projections.CouponRecord {
	r.Status, r.OrderID, r.PaymentID, r.Discount = "redeemed", "o-"+r.CouponID, "p-"+r.CouponID, discount
	r.RedeemedAt, r.EndedAt, r.UpdatedAt = when, when, when
	r.Version++
	return r
}

func expired(r projections.CouponRecord, when time.Time) projections.CouponRecord {
	r.Status, r.ExpiredAt, r.EndedAt, r.UpdatedAt = "expired", when, when, when
	r.Version++
	return r
}

func locked(r projections.CouponRecord) projections.CouponRecord {
	r.Status, r.OrderID = "locked", "o-"+r.CouponID
	r.Version++
	return r
}

func withVersion(r projections.CouponRecord, v uint64) projections.CouponRecord {
	r.Version = v
	return r
}

// ---- helpers ----

func ctxOf(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), callTimeout)
	t.Cleanup(cancel)
	return ctx
}

func upsert(t *testing.T, w interface {
	Upsert(context.Context, []projections.CouponRecord) error
}, recs ...projections.CouponRecord) {
	t.Helper()
	if err := w.Upsert(ctxOf(t), recs); err != nil {
		t.Fatalf("Upsert(%d records): %v", len(recs), err)
	}
}

func get(t *testing.T, r interface {
	Get(context.Context, []string) (map[string]projections.CouponRecord, error)
}, ids ...string) map[string]projections.CouponRecord {
	t.Helper()
	m, err := r.Get(ctxOf(t), ids)
	if err != nil {
		t.Fatalf("Get(%v): %v", ids, err)
	}
	return m
}

func list(t *testing.T, ix projections.HistoryIndex, user string, statuses []string, cursor string, limit int) projections.HistoryPage {
	t.Helper()
	p, err := ix.ListByUser(ctxOf(t), user, statuses, cursor, limit)
	if err != nil {
		t.Fatalf("ListByUser(%q, %v, %q, %d): %v", user, statuses, cursor, limit, err)
	}
	return p
}

// listAll pages through a listing and fails on a page that breaks the page
// contract (over the limit, short page before the end).
func listAll(t *testing.T, ix projections.HistoryIndex, user string, statuses []string, limit int) []projections.CouponRecord {
	t.Helper()
	var out []projections.CouponRecord
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 1000 {
			t.Fatal("listing does not end")
		}
		p := list(t, ix, user, statuses, cursor, limit)
		if len(p.Records) > limit {
			t.Fatalf("page of %d records, limit %d", len(p.Records), limit)
		}
		out = append(out, p.Records...)
		if p.Next == "" {
			return out
		}
		if len(p.Records) != limit {
			t.Fatalf("page %d has %d records and a next cursor; want %d", pages, len(p.Records), limit)
		}
		cursor = p.Next
	}
}

func ids(recs []projections.CouponRecord) []string {
	out := make([]string, len(recs))
	for i, r := range recs {
		out[i] = r.CouponID
	}
	return out
}

// listingOrder sorts records as listings must: EndedAt desc, then id desc.
// It is written independently of the adapters.
func listingOrder(recs []projections.CouponRecord) []projections.CouponRecord {
	out := slices.Clone(recs)
	sort.SliceStable(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if !a.EndedAt.Equal(b.EndedAt) {
			return a.EndedAt.After(b.EndedAt)
		}
		return a.CouponID > b.CouponID
	})
	return out
}

func sameIDs(t *testing.T, what string, got []projections.CouponRecord, want []string) {
	t.Helper()
	if g := ids(got); !slices.Equal(g, want) {
		t.Fatalf("%s: got ids %v, want %v", what, g, want)
	}
}

// diffRecord reports the fields that differ, comparing times with Equal.
func diffRecord(want, got projections.CouponRecord) string {
	var diffs []string
	wv, gv := reflect.ValueOf(want), reflect.ValueOf(got)
	for i := 0; i < wv.NumField(); i++ {
		name := wv.Type().Field(i).Name
		w, g := wv.Field(i).Interface(), gv.Field(i).Interface()
		if wt, ok := w.(time.Time); ok {
			if !wt.Equal(g.(time.Time)) {
				diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", name, g, w))
			}
			continue
		}
		if w != g {
			diffs = append(diffs, fmt.Sprintf("%s: got %v, want %v", name, g, w))
		}
	}
	return strings.Join(diffs, "; ")
}

func wantRecord(t *testing.T, m map[string]projections.CouponRecord, want projections.CouponRecord) {
	t.Helper()
	got, ok := m[want.CouponID]
	if !ok {
		t.Fatalf("record %s missing", want.CouponID)
	}
	if d := diffRecord(want, got); d != "" {
		t.Fatalf("record %s differs: %s", want.CouponID, d)
	}
}

func wantRecords(t *testing.T, what string, got []projections.CouponRecord, want []projections.CouponRecord) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: got %d records %v, want %d %v", what, len(got), ids(got), len(want), ids(want))
	}
	for i := range want {
		if d := diffRecord(want[i], got[i]); d != "" {
			t.Fatalf("%s: record %d (%s) differs: %s", what, i, want[i].CouponID, d)
		}
	}
}

func wantKeys(t *testing.T, m map[string]projections.CouponRecord, want ...string) {
	t.Helper()
	var got []string
	for k := range m {
		got = append(got, k)
	}
	slices.Sort(got)
	want = slices.Sorted(slices.Values(want))
	if !slices.Equal(got, want) {
		t.Fatalf("Get returned ids %v, want %v", got, want)
	}
}

func wantInvalid(t *testing.T, what string, err error) {
	t.Helper()
	if !errors.Is(err, domain.ErrInvalidArgument) {
		t.Fatalf("%s: err = %v, want domain.ErrInvalidArgument", what, err)
	}
}

func batchReport(t *testing.T, ix projections.HistoryIndex, batch string, r projections.TimeRange) projections.BatchReport {
	t.Helper()
	rep, err := ix.BatchReport(ctxOf(t), batch, r)
	if err != nil {
		t.Fatalf("BatchReport(%s, %v): %v", batch, r, err)
	}
	return rep
}

func wantBatchReport(t *testing.T, ix projections.HistoryIndex, batch string, r projections.TimeRange, want projections.BatchReport) {
	t.Helper()
	if got := batchReport(t, ix, batch, r); got != want {
		t.Fatalf("BatchReport(%s, [%v, %v)) = %+v, want %+v", batch, r.From, r.To, got, want)
	}
}

func checkpoint(t *testing.T, ix projections.HistoryIndex) uint64 {
	t.Helper()
	cp, err := ix.Checkpoint(ctxOf(t))
	if err != nil {
		t.Fatalf("Checkpoint: %v", err)
	}
	return cp
}

func saveCheckpoint(t *testing.T, w interface {
	SaveCheckpoint(context.Context, uint64) error
}, pos uint64) {
	t.Helper()
	if err := w.SaveCheckpoint(ctxOf(t), pos); err != nil {
		t.Fatalf("SaveCheckpoint(%d): %v", pos, err)
	}
}

func rebuild(t *testing.T, ix projections.HistoryIndex) projections.HistoryRebuild {
	t.Helper()
	rb, err := ix.Rebuild(ctxOf(t))
	if err != nil {
		t.Fatalf("Rebuild: %v", err)
	}
	if rb == nil {
		t.Fatal("Rebuild returned nil")
	}
	return rb
}

// ---- cases ----

func testUpsertGet(t *testing.T, ix projections.HistoryIndex) {
	zone := time.FixedZone("UTC+5:30", 5*3600+1800)
	full := projections.CouponRecord{
		CouponID: "c-full", BatchID: "b-1", UserID: "u-ü-1", Status: "redeemed", Source: "granted",
		Kind: "percent_off", Issuer: "Shop «Ünïcode» 店", Threshold: math.MaxInt64, AmountOff: -7,
		PercentOff: 15, MaxDiscount: 1 << 40, OrderID: "o-1", PaymentID: "p-1", Discount: 1 << 50,
		ObtainedAt: t0.In(zone), ValidFrom: at(-48 * time.Hour), ValidUntil: at(48 * time.Hour),
		RedeemedAt: at(time.Hour + 1), ExpiredAt: at(2 * time.Hour), ReturnedAt: at(3 * time.Hour),
		EndedAt: at(time.Hour + 1), UpdatedAt: at(4 * time.Hour), Version: 42,
	}
	minimal := projections.CouponRecord{
		CouponID: "c-min", BatchID: "b-2", UserID: "u-2", Status: "usable",
		ObtainedAt: t0, ValidFrom: t0, ValidUntil: t0.Add(time.Hour), UpdatedAt: t0, Version: 0,
	}
	ctx := ctxOf(t)
	if err := ix.Upsert(ctx, nil); err != nil {
		t.Fatalf("Upsert(nil): %v", err)
	}
	if m, err := ix.Get(ctx, nil); err != nil || len(m) != 0 {
		t.Fatalf("Get(nil) = %v, %v; want empty", m, err)
	}
	if m := get(t, ix, "c-full", "c-min"); len(m) != 0 {
		t.Fatalf("Get on an empty index returned %v", m)
	}
	call := []projections.CouponRecord{full, minimal}
	upsert(t, ix, call...)
	call[0].Issuer = "changed after the call" // the index must not keep the caller's slice
	m := get(t, ix, "c-full", "c-min", "c-missing", "c-full")
	wantKeys(t, m, "c-full", "c-min")
	wantRecord(t, m, full)
	wantRecord(t, m, minimal)
	if m := get(t, ix, "c-missing"); len(m) != 0 {
		t.Fatalf("Get(missing) = %v, want empty", m)
	}
}

func testNewerVersionReplaces(t *testing.T, ix projections.HistoryIndex) {
	all := projections.TimeRange{}
	v1 := newRec("c-1", "b-1", "u-1")
	upsert(t, ix, v1)
	sameIDs(t, "usable after v1", list(t, ix, "u-1", []string{"usable"}, "", 10).Records, []string{"c-1"})

	v2 := redeemed(v1, at(time.Hour), 300)
	upsert(t, ix, v2)
	wantRecord(t, get(t, ix, "c-1"), v2)
	sameIDs(t, "usable after v2", list(t, ix, "u-1", []string{"usable"}, "", 10).Records, nil)
	wantRecords(t, "redeemed after v2", list(t, ix, "u-1", []string{"redeemed"}, "", 10).Records, []projections.CouponRecord{v2})
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1, Redeemed: 1, TotalDiscount: 300})

	// Returned: back to usable, no end time, no redemption.
	v3 := v2
	v3.Status, v3.Discount, v3.OrderID, v3.PaymentID = "usable", 0, "", ""
	v3.RedeemedAt, v3.EndedAt, v3.ReturnedAt, v3.UpdatedAt, v3.Version = time.Time{}, time.Time{}, at(2*time.Hour), at(2*time.Hour), 3
	upsert(t, ix, v3)
	wantRecord(t, get(t, ix, "c-1"), v3)
	sameIDs(t, "redeemed after v3", list(t, ix, "u-1", []string{"redeemed"}, "", 10).Records, nil)
	wantRecords(t, "usable after v3", list(t, ix, "u-1", []string{"usable"}, "", 10).Records, []projections.CouponRecord{v3})
	wantRecords(t, "all after v3", list(t, ix, "u-1", nil, "", 10).Records, []projections.CouponRecord{v3})
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1})
	if top, err := ix.TopBatches(ctxOf(t), all, 10); err != nil || len(top) != 0 {
		t.Fatalf("TopBatches after the redemption was returned = %+v, %v; want none", top, err)
	}

	// Expired, with a new end time.
	v4 := expired(v3, at(5*time.Hour))
	upsert(t, ix, v4)
	wantRecords(t, "expired after v4", list(t, ix, "u-1", []string{"expired"}, "", 10).Records, []projections.CouponRecord{v4})
	sameIDs(t, "usable after v4", list(t, ix, "u-1", []string{"usable"}, "", 10).Records, nil)
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1, Expired: 1})
}

func testStaleSkipped(t *testing.T, ix projections.HistoryIndex) {
	all := projections.TimeRange{}
	base := newRec("c-1", "b-1", "u-1")
	v5 := withVersion(redeemed(base, at(time.Hour), 500), 5)
	upsert(t, ix, v5)

	older := withVersion(expired(base, at(2*time.Hour)), 4)
	upsert(t, ix, older)
	wantRecord(t, get(t, ix, "c-1"), v5)
	sameIDs(t, "expired after a stale write", list(t, ix, "u-1", []string{"expired"}, "", 10).Records, nil)
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1, Redeemed: 1, TotalDiscount: 500})

	equal := v5
	equal.Discount, equal.Issuer = 999, "other"
	upsert(t, ix, equal)
	wantRecord(t, get(t, ix, "c-1"), v5)
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1, Redeemed: 1, TotalDiscount: 500})

	zero := withVersion(base, 0)
	other := newRec("c-2", "b-1", "u-1")
	upsert(t, ix, zero, other) // a stale record does not fail the others
	wantRecord(t, get(t, ix, "c-1"), v5)
	wantRecord(t, get(t, ix, "c-2"), other)

	v6 := withVersion(expired(base, at(3*time.Hour)), 6)
	upsert(t, ix, v6)
	wantRecord(t, get(t, ix, "c-1"), v6)
	wantRecords(t, "expired after v6", list(t, ix, "u-1", []string{"expired"}, "", 10).Records, []projections.CouponRecord{v6})
	sameIDs(t, "redeemed after v6", list(t, ix, "u-1", []string{"redeemed"}, "", 10).Records, nil)
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 2, Expired: 1})
}

func testBulkVersions(t *testing.T, ix projections.HistoryIndex) {
	versionsOf := func(id string) map[uint64]projections.CouponRecord {
		base := newRec(id, "b-1", "u-1")
		return map[uint64]projections.CouponRecord{
			3: withVersion(locked(base), 3),
			5: withVersion(expired(base, at(5*time.Hour)), 5),
			7: withVersion(redeemed(base, at(7*time.Hour), 70), 7),
		}
	}
	orders := map[string][]uint64{"c-x": {3, 7, 5}, "c-y": {7, 3, 5}, "c-z": {5, 3, 7}}
	var call []projections.CouponRecord
	for _, id := range []string{"c-x", "c-y", "c-z"} {
		vs := versionsOf(id)
		for _, v := range orders[id] {
			call = append(call, vs[v])
		}
	}
	// Interleave the coupons too.
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(call), func(i, j int) { call[i], call[j] = call[j], call[i] })
	upsert(t, ix, call...)
	m := get(t, ix, "c-x", "c-y", "c-z")
	for _, id := range []string{"c-x", "c-y", "c-z"} {
		wantRecord(t, m, versionsOf(id)[7])
	}
	sameIDs(t, "all statuses", list(t, ix, "u-1", nil, "", 10).Records, []string{"c-z", "c-y", "c-x"})
	sameIDs(t, "expired", list(t, ix, "u-1", []string{"expired"}, "", 10).Records, nil)
	sameIDs(t, "locked", list(t, ix, "u-1", []string{"locked"}, "", 10).Records, nil)
	wantBatchReport(t, ix, "b-1", projections.TimeRange{}, projections.BatchReport{BatchID: "b-1", Claimed: 3, Redeemed: 3, TotalDiscount: 210})

	upsert(t, ix, versionsOf("c-x")[5], withVersion(versionsOf("c-y")[3], 6))
	m = get(t, ix, "c-x", "c-y")
	wantRecord(t, m, versionsOf("c-x")[7])
	wantRecord(t, m, versionsOf("c-y")[7])
}

func testConcurrentUpserts(t *testing.T, ix projections.HistoryIndex) {
	const versions, workers = 40, 8
	base := newRec("c-1", "b-1", "u-1")
	rec := func(v uint64) projections.CouponRecord {
		r := withVersion(redeemed(base, at(time.Duration(v)*time.Minute), int64(v)), v)
		return r
	}
	vs := make([]uint64, versions)
	for i := range vs {
		vs[i] = uint64(i + 1)
	}
	rand.New(rand.NewPCG(3, 4)).Shuffle(len(vs), func(i, j int) { vs[i], vs[j] = vs[j], vs[i] })
	var wg sync.WaitGroup
	errs := make(chan error, versions)
	for w := range workers {
		wg.Go(func() {
			for i := w; i < versions; i += workers {
				if err := ix.Upsert(ctxOf(t), []projections.CouponRecord{rec(vs[i])}); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("concurrent Upsert: %v", err)
	}
	wantRecord(t, get(t, ix, "c-1"), rec(versions))
	wantRecords(t, "listing", list(t, ix, "u-1", nil, "", 10).Records, []projections.CouponRecord{rec(versions)})
	wantBatchReport(t, ix, "b-1", projections.TimeRange{}, projections.BatchReport{BatchID: "b-1", Claimed: 1, Redeemed: 1, TotalDiscount: versions})
}

func testUpsertValidates(t *testing.T, ix projections.HistoryIndex) {
	good := newRec("c-good", "b-1", "u-1")
	bad := map[string]projections.CouponRecord{}
	r := newRec("", "b-1", "u-1")
	bad["empty coupon id"] = r
	r = newRec("c-bad", "", "u-1")
	bad["empty batch id"] = r
	r = newRec("c-bad", "b-1", "")
	bad["empty user id"] = r
	r = newRec("c-bad", "b-1", "u-1")
	r.Status = "used"
	bad["unknown status"] = r
	r = newRec("c-bad", "b-1", "u-1")
	r.Status = ""
	bad["empty status"] = r
	r = newRec("c-bad\xff", "b-1", "u-1")
	bad["invalid UTF-8 id"] = r
	for name, b := range bad {
		err := ix.Upsert(ctxOf(t), []projections.CouponRecord{good, b})
		wantInvalid(t, "Upsert with "+name, err)
	}
	if m := get(t, ix, "c-good", "c-bad"); len(m) != 0 {
		t.Fatalf("a rejected Upsert wrote %v", ids(slices.Collect(mapValues(m))))
	}
	sameIDs(t, "listing after rejected upserts", list(t, ix, "u-1", nil, "", 10).Records, nil)
}

func mapValues(m map[string]projections.CouponRecord) func(func(projections.CouponRecord) bool) {
	return func(yield func(projections.CouponRecord) bool) {
		for _, v := range m {
			if !yield(v) {
				return
			}
		}
	}
}

func testListFilter(t *testing.T, ix projections.HistoryIndex) {
	var recs []projections.CouponRecord
	add := func(r projections.CouponRecord) { recs = append(recs, r) }
	for i, user := range []string{"u-1", "u-2", "u-10"} {
		p := fmt.Sprintf("%s-", user)
		off := time.Duration(i) * time.Minute
		add(newRec(p+"usable-1", "b-1", user))
		add(newRec(p+"usable-2", "b-2", user))
		add(locked(newRec(p+"locked-1", "b-1", user)))
		add(redeemed(newRec(p+"redeemed-1", "b-1", user), at(time.Hour+off), 10))
		add(redeemed(newRec(p+"redeemed-2", "b-2", user), at(3*time.Hour+off), 20))
		add(expired(newRec(p+"expired-1", "b-1", user), at(2*time.Hour+off)))
		add(expired(newRec(p+"expired-2", "b-2", user), at(4*time.Hour+off)))
	}
	upsert(t, ix, recs...)
	cases := []struct {
		statuses []string
		want     []string
	}{
		{[]string{"redeemed"}, []string{"u-1-redeemed-2", "u-1-redeemed-1"}},
		{[]string{"expired", "redeemed"}, []string{"u-1-expired-2", "u-1-redeemed-2", "u-1-expired-1", "u-1-redeemed-1"}},
		{[]string{"redeemed", "expired", "redeemed"}, []string{"u-1-expired-2", "u-1-redeemed-2", "u-1-expired-1", "u-1-redeemed-1"}},
		{[]string{"usable"}, []string{"u-1-usable-2", "u-1-usable-1"}},
		{[]string{"locked", "usable"}, []string{"u-1-usable-2", "u-1-usable-1", "u-1-locked-1"}},
		{nil, []string{"u-1-expired-2", "u-1-redeemed-2", "u-1-expired-1", "u-1-redeemed-1", "u-1-usable-2", "u-1-usable-1", "u-1-locked-1"}},
		{[]string{}, []string{"u-1-expired-2", "u-1-redeemed-2", "u-1-expired-1", "u-1-redeemed-1", "u-1-usable-2", "u-1-usable-1", "u-1-locked-1"}},
	}
	for _, c := range cases {
		p := list(t, ix, "u-1", c.statuses, "", 50)
		sameIDs(t, fmt.Sprintf("statuses %v", c.statuses), p.Records, c.want)
		if p.Next != "" {
			t.Fatalf("statuses %v: Next = %q on the only page", c.statuses, p.Next)
		}
	}
	// Full records come back, not just ids.
	byID := map[string]projections.CouponRecord{}
	for _, r := range recs {
		byID[r.CouponID] = r
	}
	got := list(t, ix, "u-10", []string{"redeemed"}, "", 50).Records
	wantRecords(t, "u-10 redeemed", got, []projections.CouponRecord{byID["u-10-redeemed-2"], byID["u-10-redeemed-1"]})

	if p := list(t, ix, "u-unknown", nil, "", 50); len(p.Records) != 0 || p.Next != "" {
		t.Fatalf("unknown user: %+v, want an empty last page", p)
	}
	_, err := ix.ListByUser(ctxOf(t), "u-1", []string{"redeemed", "used"}, "", 10)
	wantInvalid(t, "unknown status", err)
	_, err = ix.ListByUser(ctxOf(t), "", nil, "", 10)
	wantInvalid(t, "empty user", err)
}

func testListOrder(t *testing.T, ix projections.HistoryIndex) {
	mk := func(id string, ended time.Time) projections.CouponRecord {
		r := newRec(id, "b-1", "u-1")
		if ended.IsZero() {
			return r
		}
		return redeemed(r, ended, 1)
	}
	recs := []projections.CouponRecord{
		mk("c-a", at(time.Hour)),
		mk("c-1", at(2*time.Hour)), // ties at 2h: byte order desc c-9, c-2, c-10, c-1
		mk("c-10", at(2*time.Hour)),
		mk("c-2", at(2*time.Hour)),
		mk("c-9", at(2*time.Hour)),
		mk("c-ns", at(2*time.Hour+1)), // one nanosecond later
		mk("c-ns-before", at(2*time.Hour-1)),
		mk("c-z", at(-time.Hour)),
		mk("c-late", at(240*time.Hour)),
		expired(newRec("c-old", "b-1", "u-1"), time.Date(2001, 1, 1, 0, 0, 0, 1, time.UTC)),
		mk("c-usable-b", time.Time{}),
		mk("c-usable-a", time.Time{}),
		mk("c-usable-c", time.Time{}),
	}
	upsert(t, ix, recs...)
	want := []string{"c-late", "c-ns", "c-9", "c-2", "c-10", "c-1", "c-ns-before", "c-a", "c-z", "c-old", "c-usable-c", "c-usable-b", "c-usable-a"}
	sameIDs(t, "one page", list(t, ix, "u-1", nil, "", 50).Records, want)
	sameIDs(t, "pages of 2", listAll(t, ix, "u-1", nil, 2), want)
	sameIDs(t, "pages of 1", listAll(t, ix, "u-1", nil, 1), want)
	sameIDs(t, "independent order", listingOrder(recs), want) // guards the fixture
}

// bigSet builds n records of user u-1 (plus noise of other users) with
// colliding and distinct end times, every status, and zero end times.
func bigSet(n int) []projections.CouponRecord {
	rng := rand.New(rand.NewPCG(5, 6))
	var recs []projections.CouponRecord
	for i := range n {
		r := newRec(fmt.Sprintf("c-%04d", i), fmt.Sprintf("b-%d", i%7), "u-1")
		ended := at(time.Duration(rng.IntN(60)) * time.Minute) // many ties
		switch i % 5 {
		case 0, 1:
			r = redeemed(r, ended, int64(i))
		case 2, 3:
			r = expired(r, ended)
		case 4:
			if i%10 == 4 {
				r = locked(r)
			}
		}
		recs = append(recs, r)
	}
	for i := range 30 {
		recs = append(recs, redeemed(newRec(fmt.Sprintf("n-%03d", i), "b-1", "u-2"), at(time.Duration(i)*time.Minute), 1))
	}
	return recs
}

func onlyUser(recs []projections.CouponRecord, user string, statuses ...string) []projections.CouponRecord {
	var out []projections.CouponRecord
	for _, r := range recs {
		if r.UserID == user && (len(statuses) == 0 || slices.Contains(statuses, r.Status)) {
			out = append(out, r)
		}
	}
	return out
}

func testListPaging(t *testing.T, ix projections.HistoryIndex) {
	recs := bigSet(250)
	upsert(t, ix, recs...)
	want := listingOrder(onlyUser(recs, "u-1"))
	if len(want) != 250 {
		t.Fatalf("fixture has %d records of u-1", len(want))
	}
	got := listAll(t, ix, "u-1", nil, 7)
	wantRecords(t, "pages of 7", got, want)

	wantSub := listingOrder(onlyUser(recs, "u-1", "redeemed", "expired"))
	sameIDs(t, "pages of 9, ended only", listAll(t, ix, "u-1", []string{"expired", "redeemed"}, 9), ids(wantSub))
	wantLocked := listingOrder(onlyUser(recs, "u-1", "locked"))
	sameIDs(t, "pages of 4, locked", listAll(t, ix, "u-1", []string{"locked"}, 4), ids(wantLocked))

	// Page sizes that divide the count exactly (the last page is full).
	sameIDs(t, "pages of 50", listAll(t, ix, "u-1", nil, 50), ids(want))
	sameIDs(t, "pages of 200", listAll(t, ix, "u-1", nil, 200), ids(want))
}

func testListLimits(t *testing.T, ix projections.HistoryIndex) {
	recs := bigSet(250)
	upsert(t, ix, recs...)
	want := ids(listingOrder(onlyUser(recs, "u-1")))

	p := list(t, ix, "u-1", nil, "", 0)
	sameIDs(t, "limit 0 (default 50)", p.Records, want[:50])
	if p.Next == "" {
		t.Fatal("limit 0: no next cursor on the first of five pages")
	}
	p = list(t, ix, "u-1", nil, p.Next, 0)
	sameIDs(t, "second default page", p.Records, want[50:100])

	p = list(t, ix, "u-1", nil, "", 200)
	sameIDs(t, "limit 200", p.Records, want[:200])
	p = list(t, ix, "u-1", nil, p.Next, 200)
	sameIDs(t, "limit 200, second page", p.Records, want[200:])
	if p.Next != "" {
		t.Fatalf("last page has Next %q", p.Next)
	}

	p = list(t, ix, "u-2", nil, "", 30) // exactly the number of records
	if len(p.Records) != 30 || p.Next != "" {
		t.Fatalf("limit = count: %d records, Next %q; want 30 and no Next", len(p.Records), p.Next)
	}
	p = list(t, ix, "u-2", nil, "", 29)
	if len(p.Records) != 29 || p.Next == "" {
		t.Fatalf("limit = count-1: %d records, Next %q; want 29 and a Next", len(p.Records), p.Next)
	}
	p = list(t, ix, "u-2", nil, p.Next, 29)
	if len(p.Records) != 1 || p.Next != "" {
		t.Fatalf("after limit = count-1: %d records, Next %q; want 1 and no Next", len(p.Records), p.Next)
	}

	for _, n := range []int{-1, 201, 1 << 20} {
		_, err := ix.ListByUser(ctxOf(t), "u-1", nil, "", n)
		wantInvalid(t, fmt.Sprintf("limit %d", n), err)
	}
}

func testPagingStable(t *testing.T, ix projections.HistoryIndex) {
	const limit = 10
	var initial []projections.CouponRecord
	for i := range 60 {
		r := newRec(fmt.Sprintf("c-%03d", i), "b-1", "u-1")
		initial = append(initial, redeemed(r, at(time.Duration(i/2)*time.Minute), 1)) // pairs tie
	}
	upsert(t, ix, initial...)

	var got []projections.CouponRecord
	var mustAppear, mustNotAppear []string
	p := list(t, ix, "u-1", nil, "", limit)
	got = append(got, p.Records...)
	for round := 0; p.Next != ""; round++ {
		if round > 100 {
			t.Fatal("listing does not end")
		}
		last := got[len(got)-1]
		// Newer than anything: only on a fresh first page.
		newer := redeemed(newRec(fmt.Sprintf("new-%03d", round), "b-1", "u-1"), at(time.Duration(100+round)*time.Hour), 1)
		// Older than anything: on a later page.
		older := expired(newRec(fmt.Sprintf("old-%03d", round), "b-1", "u-1"), at(-time.Duration(100+round)*time.Hour))
		// Same end time as the page's last record, sorting before it (id
		// greater): behind the cursor, must not appear.
		before := redeemed(newRec(last.CouponID+"~b", "b-1", "u-1"), last.EndedAt, 1)
		// Same end time, sorting after it (id smaller): must appear.
		after := redeemed(newRec(last.CouponID[:len(last.CouponID)-1], "b-1", "u-1"), last.EndedAt, 1)
		after.CouponID += "!" // "c-05!" < "c-050" since '!' < '0'
		upsert(t, ix, newer, older, before, after)
		mustNotAppear = append(mustNotAppear, newer.CouponID, before.CouponID)
		mustAppear = append(mustAppear, older.CouponID, after.CouponID)

		p = list(t, ix, "u-1", nil, p.Next, limit)
		got = append(got, p.Records...)
	}
	seen := map[string]bool{}
	for i, r := range got {
		if seen[r.CouponID] {
			t.Fatalf("record %s listed twice", r.CouponID)
		}
		seen[r.CouponID] = true
		if i > 0 {
			prev := got[i-1]
			if !(prev.EndedAt.After(r.EndedAt) || prev.EndedAt.Equal(r.EndedAt) && prev.CouponID > r.CouponID) {
				t.Fatalf("listing out of order at %d: %s (%v) then %s (%v)", i, prev.CouponID, prev.EndedAt, r.CouponID, r.EndedAt)
			}
		}
	}
	for _, r := range initial {
		if !seen[r.CouponID] {
			t.Fatalf("initial record %s skipped while paging", r.CouponID)
		}
	}
	for _, id := range mustAppear {
		if !seen[id] {
			t.Fatalf("record %s, added behind the cursor position, is missing", id)
		}
	}
	for _, id := range mustNotAppear {
		if seen[id] {
			t.Fatalf("record %s, added ahead of the cursor position, was listed", id)
		}
	}
	if len(mustNotAppear) == 0 {
		t.Fatal("no records were inserted while paging")
	}
	// A fresh first page shows the newest insert first.
	first := list(t, ix, "u-1", nil, "", limit)
	if len(first.Records) == 0 || !strings.HasPrefix(first.Records[0].CouponID, "new-") {
		t.Fatalf("fresh first page starts with %v, want the newest insert", ids(first.Records))
	}
}

func testBadCursor(t *testing.T, ix projections.HistoryIndex) {
	var recs []projections.CouponRecord
	for i := range 5 {
		recs = append(recs, redeemed(newRec(fmt.Sprintf("c-%d", i), "b-1", "u-1"), at(time.Duration(i)*time.Minute), 1))
	}
	upsert(t, ix, recs...)
	p := list(t, ix, "u-1", nil, "", 2)
	if p.Next == "" {
		t.Fatal("no cursor")
	}
	// A cursor can be used again and gives the same page.
	a := list(t, ix, "u-1", nil, p.Next, 2)
	b := list(t, ix, "u-1", nil, p.Next, 2)
	sameIDs(t, "second page", a.Records, []string{"c-2", "c-1"})
	sameIDs(t, "second page again", b.Records, ids(a.Records))

	bad := []string{
		"not a cursor!",
		"AAAA",
		"////",
		p.Next[:len(p.Next)/2],
		p.Next + "%",
		"x" + p.Next,
		strings.Repeat("A", 4096),
	}
	for _, c := range bad {
		_, err := ix.ListByUser(ctxOf(t), "u-1", nil, c, 2)
		wantInvalid(t, fmt.Sprintf("cursor %q", c), err)
	}
}

func testBatchReport(t *testing.T, ix projections.HistoryIndex) {
	h := time.Hour
	b1 := []projections.CouponRecord{
		newRec("c1", "b-1", "u-1"), // obtained t0
		redeemed(obtained(newRec("c2", "b-1", "u-1"), at(h)), at(2*h), 150),
		redeemed(obtained(newRec("c3", "b-1", "u-2"), at(h)), at(3*h), 250),
		expired(obtained(newRec("c4", "b-1", "u-2"), at(2*h)), at(5*h)),
		locked(obtained(newRec("c5", "b-1", "u-3"), at(3*h))),
		obtained(newRec("c6", "b-1", "u-3"), at(h)),
	}
	b1[4].Discount = 77 // not redeemed: does not count
	// Expired, with a redemption time left over: counts as expired only.
	c7 := expired(obtained(newRec("c7", "b-1", "u-4"), at(30*time.Minute)), at(4*h))
	c7.RedeemedAt, c7.Discount = at(2*h), 1000
	b1 = append(b1, c7)
	// Redeemed without a redemption time: never in a range.
	c8 := redeemed(obtained(newRec("c8", "b-1", "u-4"), at(-h)), at(2*h), 5)
	c8.RedeemedAt = time.Time{}
	b1 = append(b1, c8)
	noise := []projections.CouponRecord{
		redeemed(newRec("d1", "b-2", "u-1"), at(2*h), 10_000),
		expired(newRec("d2", "b-2", "u-1"), at(2*h)),
		newRec("d3", "b-10", "u-1"),
	}
	upsert(t, ix, append(b1, noise...)...)

	rep := func(claimed, red, exp, disc int64) projections.BatchReport {
		return projections.BatchReport{BatchID: "b-1", Claimed: claimed, Redeemed: red, Expired: exp, TotalDiscount: disc}
	}
	r := func(from, to time.Time) projections.TimeRange { return projections.TimeRange{From: from, To: to} }
	var zero time.Time
	cases := []struct {
		name string
		r    projections.TimeRange
		want projections.BatchReport
	}{
		{"open", r(zero, zero), rep(8, 2, 2, 400)},
		{"[1h,3h)", r(at(h), at(3*h)), rep(4, 1, 0, 150)},
		{"[3h,open)", r(at(3*h), zero), rep(1, 1, 2, 250)},
		{"[open,3h)", r(zero, at(3*h)), rep(7, 1, 0, 150)},
		{"[2h,2h+1ns)", r(at(2*h), at(2*h+1)), rep(1, 1, 0, 150)},
		{"[2h+1ns,open)", r(at(2*h+1), zero), rep(1, 1, 2, 250)},
		{"[open,2h)", r(zero, at(2*h)), rep(6, 0, 0, 0)},
		{"[4h,5h]", r(at(4*h), at(5*h+1)), rep(0, 0, 2, 0)},
		{"[4h,5h)", r(at(4*h), at(5*h)), rep(0, 0, 1, 0)},
		{"empty [2h,2h)", r(at(2*h), at(2*h)), rep(0, 0, 0, 0)},
		{"long ago", r(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(1960, 1, 1, 0, 0, 0, 0, time.UTC)), rep(0, 0, 0, 0)},
		{"wide", r(time.Date(1900, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(2500, 1, 1, 0, 0, 0, 0, time.UTC)), rep(8, 2, 2, 400)},
	}
	for _, c := range cases {
		got := batchReport(t, ix, "b-1", c.r)
		if got != c.want {
			t.Errorf("BatchReport %s = %+v, want %+v", c.name, got, c.want)
		}
	}
	wantBatchReport(t, ix, "b-2", projections.TimeRange{}, projections.BatchReport{BatchID: "b-2", Claimed: 2, Redeemed: 1, Expired: 1, TotalDiscount: 10_000})
	wantBatchReport(t, ix, "b-none", projections.TimeRange{}, projections.BatchReport{BatchID: "b-none"})

	_, err := ix.BatchReport(ctxOf(t), "b-1", r(at(3*h), at(h)))
	wantInvalid(t, "From after To", err)
	_, err = ix.BatchReport(ctxOf(t), "", projections.TimeRange{})
	wantInvalid(t, "empty batch id", err)
}

// rankingSet: in [t0, t0+10h) D has 5 redemptions, B and C 3 each with
// equal discount, A 3 with less, E none; F has 4, all at t0+20h.
func rankingSet() []projections.CouponRecord {
	var recs []projections.CouponRecord
	n := 0
	add := func(batch, user string, redemptions []int64, when time.Time) {
		for _, d := range redemptions {
			n++
			r := obtained(newRec(fmt.Sprintf("c-%03d", n), batch, user), at(time.Minute))
			recs = append(recs, redeemed(r, when.Add(time.Duration(n)*time.Second), d))
		}
	}
	add("b-A", "u-1", []int64{10, 10, 10}, at(time.Hour))
	add("b-B", "u-2", []int64{20, 20, 10}, at(time.Hour))
	add("b-C", "u-3", []int64{25, 25}, at(time.Hour))
	add("b-C", "u-4", []int64{0}, at(2*time.Hour))
	add("b-D", "u-5", []int64{1, 1, 1, 1, 1}, at(time.Hour))
	add("b-F", "u-6", []int64{100, 100, 100, 100}, at(20*time.Hour))
	// Claims and expirations, which TopBatches reports too.
	recs = append(recs,
		obtained(newRec("x-1", "b-A", "u-9"), at(2*time.Hour)),
		expired(obtained(newRec("x-2", "b-A", "u-9"), at(time.Minute)), at(3*time.Hour)),
		expired(obtained(newRec("x-3", "b-A", "u-9"), at(time.Minute)), at(30*time.Hour)),
		expired(obtained(newRec("x-4", "b-E", "u-9"), at(time.Minute)), at(3*time.Hour)),
		obtained(newRec("x-5", "b-E", "u-9"), at(time.Minute)),
		obtained(newRec("x-6", "b-D", "u-9"), at(-time.Hour)),
	)
	// Expired with a redemption time left over: no redemption to rank.
	x7 := expired(obtained(newRec("x-7", "b-G", "u-9"), at(-time.Hour)), at(4*time.Hour))
	x7.RedeemedAt, x7.Discount = at(2*time.Hour), 999
	return append(recs, x7)
}

func testTopBatches(t *testing.T, ix projections.HistoryIndex) {
	upsert(t, ix, rankingSet()...)
	in := projections.TimeRange{From: t0, To: at(10 * time.Hour)}
	top := func(r projections.TimeRange, limit int) []projections.BatchReport {
		t.Helper()
		got, err := ix.TopBatches(ctxOf(t), r, limit)
		if err != nil {
			t.Fatalf("TopBatches(%v, %d): %v", r, limit, err)
		}
		return got
	}
	br := func(id string, claimed, red, exp, disc int64) projections.BatchReport {
		return projections.BatchReport{BatchID: id, Claimed: claimed, Redeemed: red, Expired: exp, TotalDiscount: disc}
	}
	wantIn := []projections.BatchReport{
		br("b-D", 5, 5, 0, 5),
		br("b-B", 3, 3, 0, 50),
		br("b-C", 3, 3, 0, 50),
		br("b-A", 6, 3, 1, 30),
	}
	if got := top(in, 10); !slices.Equal(got, wantIn) {
		t.Fatalf("TopBatches in range:\n got %+v\nwant %+v", got, wantIn)
	}
	if got := top(in, 0); !slices.Equal(got, wantIn) {
		t.Fatalf("TopBatches limit 0:\n got %+v\nwant %+v", got, wantIn)
	}
	if got := top(in, 2); !slices.Equal(got, wantIn[:2]) {
		t.Fatalf("TopBatches limit 2:\n got %+v\nwant %+v", got, wantIn[:2])
	}
	if got := top(in, 3); !slices.Equal(got, wantIn[:3]) {
		t.Fatalf("TopBatches limit 3 (tie at the cut):\n got %+v\nwant %+v", got, wantIn[:3])
	}
	wantOpen := []projections.BatchReport{
		br("b-D", 6, 5, 0, 5),
		br("b-F", 4, 4, 0, 400),
		br("b-B", 3, 3, 0, 50),
		br("b-C", 3, 3, 0, 50),
		br("b-A", 6, 3, 2, 30),
	}
	if got := top(projections.TimeRange{}, 10); !slices.Equal(got, wantOpen) {
		t.Fatalf("TopBatches open range:\n got %+v\nwant %+v", got, wantOpen)
	}
	// Only redemptions in the range rank: from 20h on, F alone.
	if got := top(projections.TimeRange{From: at(20 * time.Hour)}, 10); !slices.Equal(got, []projections.BatchReport{br("b-F", 0, 4, 0, 400)}) {
		t.Fatalf("TopBatches from 20h: %+v", got)
	}
	if got := top(projections.TimeRange{From: at(100 * time.Hour)}, 10); len(got) != 0 {
		t.Fatalf("TopBatches with no redemption in range = %+v, want none", got)
	}
	for _, n := range []int{-1, 1001} {
		_, err := ix.TopBatches(ctxOf(t), in, n)
		wantInvalid(t, fmt.Sprintf("limit %d", n), err)
	}
	_, err := ix.TopBatches(ctxOf(t), projections.TimeRange{From: at(time.Hour), To: t0}, 10)
	wantInvalid(t, "From after To", err)
}

func testTopUsers(t *testing.T, ix projections.HistoryIndex) {
	recs := rankingSet()
	// u-7 redeems across batches: 3 redemptions, 3 discount, ties u-1 on
	// count, loses on discount.
	for i, b := range []string{"b-A", "b-B", "b-E"} {
		recs = append(recs, redeemed(newRec(fmt.Sprintf("y-%d", i), b, "u-7"), at(5*time.Hour), 1))
	}
	// u-8 ties u-1 exactly (3 redemptions, 30): id order decides.
	for i := range 3 {
		recs = append(recs, redeemed(newRec(fmt.Sprintf("z-%d", i), "b-Z", "u-8"), at(6*time.Hour), 10))
	}
	upsert(t, ix, recs...)
	in := projections.TimeRange{From: t0, To: at(10 * time.Hour)}
	top := func(r projections.TimeRange, limit int) []projections.UserReport {
		t.Helper()
		got, err := ix.TopUsers(ctxOf(t), r, limit)
		if err != nil {
			t.Fatalf("TopUsers(%v, %d): %v", r, limit, err)
		}
		return got
	}
	ur := func(id string, red, disc int64) projections.UserReport {
		return projections.UserReport{UserID: id, Redeemed: red, TotalDiscount: disc}
	}
	wantIn := []projections.UserReport{
		ur("u-5", 5, 5),
		ur("u-2", 3, 50),
		ur("u-1", 3, 30),
		ur("u-8", 3, 30),
		ur("u-7", 3, 3),
		ur("u-3", 2, 50),
		ur("u-4", 1, 0),
	}
	if got := top(in, 10); !slices.Equal(got, wantIn) {
		t.Fatalf("TopUsers in range:\n got %+v\nwant %+v", got, wantIn)
	}
	if got := top(in, 3); !slices.Equal(got, wantIn[:3]) {
		t.Fatalf("TopUsers limit 3:\n got %+v\nwant %+v", got, wantIn[:3])
	}
	if got := top(in, 0); !slices.Equal(got, wantIn) {
		t.Fatalf("TopUsers limit 0:\n got %+v\nwant %+v", got, wantIn)
	}
	wantOpen := append([]projections.UserReport{ur("u-5", 5, 5), ur("u-6", 4, 400)}, wantIn[1:]...)
	if got := top(projections.TimeRange{}, 10); !slices.Equal(got, wantOpen) {
		t.Fatalf("TopUsers open range:\n got %+v\nwant %+v", got, wantOpen)
	}
	if got := top(projections.TimeRange{From: at(5 * time.Hour), To: at(6 * time.Hour)}, 10); !slices.Equal(got, []projections.UserReport{ur("u-7", 3, 3)}) {
		t.Fatalf("TopUsers [5h,6h) = %+v, want u-7 only (6h excluded)", got)
	}
	if got := top(projections.TimeRange{To: t0}, 10); len(got) != 0 {
		t.Fatalf("TopUsers before any redemption = %+v, want none", got)
	}
	for _, n := range []int{-5, 1001} {
		_, err := ix.TopUsers(ctxOf(t), in, n)
		wantInvalid(t, fmt.Sprintf("limit %d", n), err)
	}
	_, err := ix.TopUsers(ctxOf(t), projections.TimeRange{From: at(time.Hour), To: t0}, 10)
	wantInvalid(t, "From after To", err)
}

func testCheckpoint(t *testing.T, ix projections.HistoryIndex) {
	if cp := checkpoint(t, ix); cp != 0 {
		t.Fatalf("initial checkpoint = %d, want 0", cp)
	}
	for _, pos := range []uint64{42, 7, 1 << 53, math.MaxInt64, math.MaxInt64 + 1, math.MaxUint64, 0, 12345} {
		saveCheckpoint(t, ix, pos)
		if cp := checkpoint(t, ix); cp != pos {
			t.Fatalf("checkpoint after saving %d = %d", pos, cp)
		}
	}
}

// liveAndRebuilt sets up a live generation and a rebuild with different
// contents. Live: a (v5, redeemed), b; rebuild: a (v2, expired), c.
func liveAndRebuilt(t *testing.T, ix projections.HistoryIndex) (live, rebuilt []projections.CouponRecord, rb projections.HistoryRebuild) {
	a := newRec("c-a", "b-1", "u-1")
	live = []projections.CouponRecord{
		withVersion(redeemed(a, at(time.Hour), 100), 5),
		redeemed(newRec("c-b", "b-1", "u-1"), at(2*time.Hour), 200),
	}
	upsert(t, ix, live...)
	saveCheckpoint(t, ix, 100)

	rb = rebuild(t, ix)
	if m := get(t, rb, "c-a", "c-b", "c-c"); len(m) != 0 {
		t.Fatalf("a new rebuild is not empty: %v", ids(slices.Collect(mapValues(m))))
	}
	rebuilt = []projections.CouponRecord{
		withVersion(expired(a, at(3*time.Hour)), 2), // below the live version: a fresh generation takes it
		redeemed(newRec("c-c", "b-2", "u-1"), at(4*time.Hour), 400),
	}
	upsert(t, rb, rebuilt...)
	saveCheckpoint(t, rb, 50)
	return live, rebuilt, rb
}

func testRebuildCommit(t *testing.T, ix projections.HistoryIndex) {
	all := projections.TimeRange{}
	live, rebuilt, rb := liveAndRebuilt(t, ix)

	m := get(t, rb, "c-a", "c-b", "c-c")
	wantKeys(t, m, "c-a", "c-c")
	wantRecord(t, m, rebuilt[0])
	wantRecord(t, m, rebuilt[1])

	// Reads still see the live generation.
	m = get(t, ix, "c-a", "c-b", "c-c")
	wantKeys(t, m, "c-a", "c-b")
	wantRecord(t, m, live[0])
	wantRecords(t, "live listing during rebuild", list(t, ix, "u-1", nil, "", 10).Records, []projections.CouponRecord{live[1], live[0]})
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 2, Redeemed: 2, TotalDiscount: 300})
	wantBatchReport(t, ix, "b-2", all, projections.BatchReport{BatchID: "b-2"})
	if cp := checkpoint(t, ix); cp != 100 {
		t.Fatalf("checkpoint during rebuild = %d, want the live 100", cp)
	}
	if got, err := ix.TopUsers(ctxOf(t), all, 10); err != nil || !slices.Equal(got, []projections.UserReport{{UserID: "u-1", Redeemed: 2, TotalDiscount: 300}}) {
		t.Fatalf("TopUsers during rebuild = %+v, %v", got, err)
	}

	// Live writes during the rebuild go to the live generation only.
	d := newRec("c-d", "b-1", "u-1")
	upsert(t, ix, d)
	wantKeys(t, get(t, ix, "c-d"), "c-d")
	if m := get(t, rb, "c-d"); len(m) != 0 {
		t.Fatal("a live write during the rebuild reached the rebuild")
	}
	saveCheckpoint(t, ix, 101)
	if cp := checkpoint(t, ix); cp != 101 {
		t.Fatalf("live checkpoint during rebuild = %d, want 101", cp)
	}

	if err := rb.Commit(ctxOf(t)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	m = get(t, ix, "c-a", "c-b", "c-c", "c-d")
	wantKeys(t, m, "c-a", "c-c")
	wantRecord(t, m, rebuilt[0])
	wantRecords(t, "listing after commit", list(t, ix, "u-1", nil, "", 10).Records, []projections.CouponRecord{rebuilt[1], rebuilt[0]})
	wantBatchReport(t, ix, "b-1", all, projections.BatchReport{BatchID: "b-1", Claimed: 1, Expired: 1})
	wantBatchReport(t, ix, "b-2", all, projections.BatchReport{BatchID: "b-2", Claimed: 1, Redeemed: 1, TotalDiscount: 400})
	if got, err := ix.TopBatches(ctxOf(t), all, 10); err != nil || !slices.Equal(got, []projections.BatchReport{{BatchID: "b-2", Claimed: 1, Redeemed: 1, TotalDiscount: 400}}) {
		t.Fatalf("TopBatches after commit = %+v, %v", got, err)
	}
	if cp := checkpoint(t, ix); cp != 50 {
		t.Fatalf("checkpoint after commit = %d, want the rebuild's 50", cp)
	}

	// Writes after the commit go to the new generation, with its versions.
	upsert(t, ix, withVersion(redeemed(newRec("c-a", "b-1", "u-1"), at(time.Hour), 1), 2)) // equal: skipped
	wantRecord(t, get(t, ix, "c-a"), rebuilt[0])
	upsert(t, ix, d)
	wantKeys(t, get(t, ix, "c-a", "c-d"), "c-a", "c-d")
	saveCheckpoint(t, ix, 60)
	if cp := checkpoint(t, ix); cp != 60 {
		t.Fatalf("checkpoint = %d, want 60", cp)
	}

	// The finished rebuild refuses further use.
	if err := rb.Upsert(ctxOf(t), []projections.CouponRecord{newRec("c-z", "b-1", "u-1")}); err == nil {
		t.Fatal("Upsert on a committed rebuild succeeded")
	}
	if err := rb.SaveCheckpoint(ctxOf(t), 1); err == nil {
		t.Fatal("SaveCheckpoint on a committed rebuild succeeded")
	}
	if err := rb.Commit(ctxOf(t)); err == nil {
		t.Fatal("second Commit succeeded")
	}
	if err := rb.Abort(ctxOf(t)); err == nil {
		t.Fatal("Abort after Commit succeeded")
	}
	if m := get(t, ix, "c-z"); len(m) != 0 {
		t.Fatal("an Upsert on a committed rebuild was written")
	}
	if cp := checkpoint(t, ix); cp != 60 {
		t.Fatalf("checkpoint after refused calls = %d, want 60", cp)
	}
}

func testRebuildAbort(t *testing.T, ix projections.HistoryIndex) {
	live, _, rb := liveAndRebuilt(t, ix)
	if err := rb.Abort(ctxOf(t)); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	m := get(t, ix, "c-a", "c-b", "c-c")
	wantKeys(t, m, "c-a", "c-b")
	wantRecord(t, m, live[0])
	wantRecord(t, m, live[1])
	wantRecords(t, "listing after abort", list(t, ix, "u-1", nil, "", 10).Records, []projections.CouponRecord{live[1], live[0]})
	if cp := checkpoint(t, ix); cp != 100 {
		t.Fatalf("checkpoint after abort = %d, want 100", cp)
	}
	if _, err := rb.Get(ctxOf(t), []string{"c-a"}); err == nil {
		t.Fatal("Get on an aborted rebuild succeeded")
	}
	if err := rb.Upsert(ctxOf(t), []projections.CouponRecord{newRec("c-z", "b-1", "u-1")}); err == nil {
		t.Fatal("Upsert on an aborted rebuild succeeded")
	}
	if err := rb.Commit(ctxOf(t)); err == nil {
		t.Fatal("Commit after Abort succeeded")
	}
	if m := get(t, ix, "c-a", "c-c", "c-z"); len(m) != 1 {
		t.Fatalf("reads after a refused Commit: %v", ids(slices.Collect(mapValues(m))))
	}

	// The index still works, and a later rebuild starts empty, at checkpoint 0.
	upsert(t, ix, newRec("c-e", "b-1", "u-1"))
	wantKeys(t, get(t, ix, "c-e"), "c-e")
	rb2 := rebuild(t, ix)
	if m := get(t, rb2, "c-a", "c-c"); len(m) != 0 {
		t.Fatalf("a rebuild after an abort is not empty: %v", ids(slices.Collect(mapValues(m))))
	}
	f := newRec("c-f", "b-1", "u-1")
	upsert(t, rb2, f)
	if err := rb2.Commit(ctxOf(t)); err != nil {
		t.Fatalf("Commit: %v", err)
	}
	m = get(t, ix, "c-a", "c-b", "c-c", "c-e", "c-f")
	wantKeys(t, m, "c-f")
	if cp := checkpoint(t, ix); cp != 0 {
		t.Fatalf("checkpoint after committing a rebuild that saved none = %d, want 0", cp)
	}
}

func testRebuildTwice(t *testing.T, ix projections.HistoryIndex) {
	upsert(t, ix, newRec("c-0", "b-1", "u-1"))
	for i := 1; i <= 3; i++ {
		rb := rebuild(t, ix)
		id := fmt.Sprintf("c-%d", i)
		upsert(t, rb, newRec(id, "b-1", "u-1"))
		saveCheckpoint(t, rb, uint64(i*10))
		if err := rb.Commit(ctxOf(t)); err != nil {
			t.Fatalf("Commit %d: %v", i, err)
		}
		wantKeys(t, get(t, ix, "c-0", "c-1", "c-2", "c-3"), id)
		sameIDs(t, fmt.Sprintf("listing after rebuild %d", i), list(t, ix, "u-1", nil, "", 10).Records, []string{id})
		if cp := checkpoint(t, ix); cp != uint64(i*10) {
			t.Fatalf("checkpoint after rebuild %d = %d", i, cp)
		}
	}
}

func testCancelled(t *testing.T, ix projections.HistoryIndex) {
	upsert(t, ix, newRec("c-1", "b-1", "u-1"))
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	want := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("%s with a cancelled context: err = %v, want context.Canceled", what, err)
		}
	}
	want("Upsert", ix.Upsert(ctx, []projections.CouponRecord{newRec("c-2", "b-1", "u-1")}))
	_, err := ix.Get(ctx, []string{"c-1"})
	want("Get", err)
	_, err = ix.ListByUser(ctx, "u-1", nil, "", 10)
	want("ListByUser", err)
	_, err = ix.BatchReport(ctx, "b-1", projections.TimeRange{})
	want("BatchReport", err)
	_, err = ix.TopBatches(ctx, projections.TimeRange{}, 10)
	want("TopBatches", err)
	_, err = ix.TopUsers(ctx, projections.TimeRange{}, 10)
	want("TopUsers", err)
	_, err = ix.Checkpoint(ctx)
	want("Checkpoint", err)
	want("SaveCheckpoint", ix.SaveCheckpoint(ctx, 9))
	_, err = ix.Rebuild(ctx)
	want("Rebuild", err)
	if m := get(t, ix, "c-1", "c-2"); len(m) != 1 {
		t.Fatalf("a cancelled Upsert was written: %v", ids(slices.Collect(mapValues(m))))
	}
	if cp := checkpoint(t, ix); cp != 0 {
		t.Fatalf("a cancelled SaveCheckpoint was written: %d", cp)
	}
}
