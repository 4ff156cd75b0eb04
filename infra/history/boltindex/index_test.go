package boltindex

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/history/historytest"
	"github.com/couponsd/couponsd/projections"
)

func openTemp(t *testing.T, dir string) *Index {
	t.Helper()
	ix, err := Open(dir, Options{})
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return ix
}

func TestConformance(t *testing.T) {
	historytest.Run(t, func(t *testing.T) projections.HistoryIndex {
		ix := openTemp(t, t.TempDir())
		t.Cleanup(func() {
			if err := ix.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		return ix
	})
}

func rec(id string, v uint64) projections.CouponRecord {
	t0 := time.Date(2026, 3, 1, 10, 0, 0, 1, time.UTC)
	return projections.CouponRecord{
		CouponID: id, BatchID: "b-1", UserID: "u-1", Status: "redeemed", Source: "claimed", Kind: "amount_off",
		Issuer: "shop", Discount: 100, ObtainedAt: t0, ValidFrom: t0, ValidUntil: t0.Add(time.Hour),
		RedeemedAt: t0.Add(time.Minute), EndedAt: t0.Add(time.Minute), UpdatedAt: t0.Add(time.Minute), Version: v,
	}
}

func TestReopenKeepsDataCheckpointAndGeneration(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ix := openTemp(t, dir)
	if err := ix.Upsert(ctx, []projections.CouponRecord{rec("c-live", 3)}); err != nil {
		t.Fatal(err)
	}
	rb, err := ix.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := rb.Upsert(ctx, []projections.CouponRecord{rec("c-1", 5), rec("c-2", 1)}); err != nil {
		t.Fatal(err)
	}
	if err := rb.SaveCheckpoint(ctx, 77); err != nil {
		t.Fatal(err)
	}
	if err := rb.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ix.Close(); err != nil {
		t.Fatal(err)
	}

	ix = openTemp(t, dir)
	defer ix.Close()
	m, err := ix.Get(ctx, []string{"c-live", "c-1", "c-2"})
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 2 || m["c-1"].Version != 5 || !m["c-1"].EndedAt.Equal(rec("c-1", 5).EndedAt) {
		t.Fatalf("after reopen Get = %+v", m)
	}
	if cp, err := ix.Checkpoint(ctx); err != nil || cp != 77 {
		t.Fatalf("checkpoint after reopen = %d, %v; want 77", cp, err)
	}
	p, err := ix.ListByUser(ctx, "u-1", []string{"redeemed"}, "", 10)
	if err != nil || len(p.Records) != 2 {
		t.Fatalf("listing after reopen = %+v, %v", p, err)
	}
	rep, err := ix.BatchReport(ctx, "b-1", projections.TimeRange{})
	if err != nil || rep != (projections.BatchReport{BatchID: "b-1", Claimed: 2, Redeemed: 2, TotalDiscount: 200}) {
		t.Fatalf("report after reopen = %+v, %v", rep, err)
	}
	// Versions survive: an older write is still skipped.
	if err := ix.Upsert(ctx, []projections.CouponRecord{rec("c-1", 4)}); err != nil {
		t.Fatal(err)
	}
	if m, _ := ix.Get(ctx, []string{"c-1"}); m["c-1"].Version != 5 {
		t.Fatalf("stale write after reopen applied: %+v", m["c-1"])
	}
	gens, cur, err := ix.generations()
	if err != nil || cur != 2 || !slices.Equal(gens, []uint64{2}) {
		t.Fatalf("generations = %v current %d (%v); want only 2", gens, cur, err)
	}
}

func TestCommitAndAbortDropGenerations(t *testing.T) {
	ctx := context.Background()
	ix := openTemp(t, t.TempDir())
	defer ix.Close()
	rb1, _ := ix.Rebuild(ctx)
	rb2, _ := ix.Rebuild(ctx)
	if gens, cur, _ := ix.generations(); cur != 1 || !slices.Equal(gens, []uint64{1, 2, 3}) {
		t.Fatalf("during rebuilds: generations %v current %d", gens, cur)
	}
	if err := rb1.Abort(ctx); err != nil {
		t.Fatal(err)
	}
	if gens, cur, _ := ix.generations(); cur != 1 || !slices.Equal(gens, []uint64{1, 3}) {
		t.Fatalf("after abort: generations %v current %d", gens, cur)
	}
	if err := rb2.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if gens, cur, _ := ix.generations(); cur != 3 || !slices.Equal(gens, []uint64{3}) {
		t.Fatalf("after commit: generations %v current %d", gens, cur)
	}
	if err := rb1.Commit(ctx); !errors.Is(err, ErrRebuildFinished) || !errors.Is(err, domain.ErrConflict) {
		t.Fatalf("Commit of an aborted rebuild: %v", err)
	}
}

func TestUnfinishedRebuildIsDroppedOnOpen(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	ix := openTemp(t, dir)
	if err := ix.Upsert(ctx, []projections.CouponRecord{rec("c-live", 1)}); err != nil {
		t.Fatal(err)
	}
	rb, _ := ix.Rebuild(ctx)
	if err := rb.Upsert(ctx, []projections.CouponRecord{rec("c-new", 1)}); err != nil {
		t.Fatal(err)
	}
	ix.Close() // "crash" mid-rebuild

	ix = openTemp(t, dir)
	defer ix.Close()
	if gens, cur, _ := ix.generations(); cur != 1 || !slices.Equal(gens, []uint64{1}) {
		t.Fatalf("after reopen: generations %v current %d; want the unfinished one dropped", gens, cur)
	}
	if m, _ := ix.Get(ctx, []string{"c-live", "c-new"}); len(m) != 1 {
		t.Fatalf("Get after reopen = %v", m)
	}
	// Generation ids are not reused.
	rb2, err := ix.Rebuild(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if id := rb2.(*Rebuild).id; id != 3 {
		t.Fatalf("next generation id = %d, want 3", id)
	}
}

func TestClosedIsUnavailable(t *testing.T) {
	ctx := context.Background()
	ix := openTemp(t, t.TempDir())
	rb, _ := ix.Rebuild(ctx)
	ix.Close()
	checks := map[string]error{}
	checks["Upsert"] = ix.Upsert(ctx, []projections.CouponRecord{rec("c-1", 1)})
	_, checks["Get"] = ix.Get(ctx, []string{"c-1"})
	_, checks["ListByUser"] = ix.ListByUser(ctx, "u-1", nil, "", 10)
	_, checks["Checkpoint"] = ix.Checkpoint(ctx)
	_, checks["Rebuild"] = ix.Rebuild(ctx)
	checks["rebuild Commit"] = rb.Commit(ctx)
	for name, err := range checks {
		if !errors.Is(err, domain.ErrUnavailable) {
			t.Errorf("%s on a closed index: %v, want domain.ErrUnavailable", name, err)
		}
	}
}

func TestOpenValidates(t *testing.T) {
	if _, err := Open("", Options{}); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Fatalf("Open(\"\"): %v", err)
	}
	if _, err := Open(t.TempDir(), Options{OpenTimeout: -1}); !errors.Is(err, domain.ErrInvalidArgument) {
		t.Fatalf("negative timeout: %v", err)
	}
}

func TestCodecRoundTrip(t *testing.T) {
	r := rec("c-ü", 1<<63)
	r.Threshold, r.AmountOff, r.ReturnedAt = -1<<63, 1<<63-1, time.Unix(-1, 999999999).UTC()
	got, err := decodeRecord(encodeRecord(&r))
	if err != nil {
		t.Fatal(err)
	}
	if got != r {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
	enc := encodeRecord(&r)
	for _, bad := range [][]byte{nil, enc[:5], enc[:len(enc)-1], append(slices.Clone(enc), 0), append([]byte{9}, enc[1:]...)} {
		if _, err := decodeRecord(bad); !errors.Is(err, errCorrupt) {
			t.Fatalf("decode of %d corrupt bytes: %v", len(bad), err)
		}
	}
	// Time keys order like times, the zero time first.
	ts := []time.Time{{}, time.Unix(-5, 0), time.Unix(-5, 1), time.Unix(0, 0), time.Unix(1, 999999999), time.Unix(2, 0)}
	for i := 1; i < len(ts); i++ {
		if string(timeKey(ts[i-1])) >= string(timeKey(ts[i])) {
			t.Fatalf("timeKey(%v) >= timeKey(%v)", ts[i-1], ts[i])
		}
	}
}
