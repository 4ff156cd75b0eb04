package projections

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// reminderRecorder is a ReminderStore that records what it is asked to apply.
type reminderRecorder struct {
	calls [][]ReminderChange
	fail  error
}

func (r *reminderRecorder) ApplyReminderChanges(_ context.Context, cs []ReminderChange) error {
	if r.fail != nil {
		return r.fail
	}
	r.calls = append(r.calls, cs)
	return nil
}

func (r *reminderRecorder) Checkpoint(context.Context) (uint64, error) { return 0, nil }

func TestReminderChangeOf(t *testing.T) {
	vu := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	start := vu.Add(-72 * time.Hour)
	terms := domain.CouponTerms{BatchID: "b1", ValidUntil: vu}
	rec := es.RecordedEvent{StreamID: "s", Revision: 4, Position: 40}
	base := ReminderChange{Stream: "s", Revision: 4, Position: 40}
	with := func(f func(*ReminderChange)) ReminderChange { c := base; f(&c); return c }
	cases := []struct {
		e    domain.Event
		want ReminderChange
		ok   bool
	}{
		{&domain.CouponClaimed{CouponID: "c", Terms: terms}, with(func(c *ReminderChange) { c.Kind, c.CouponID, c.ValidUntil = ExpiryTrack, "c", vu }), true},
		{&domain.CouponGranted{CouponID: "c", Terms: terms}, with(func(c *ReminderChange) { c.Kind, c.CouponID, c.ValidUntil = ExpiryTrack, "c", vu }), true},
		{&domain.CouponLocked{CouponID: "c"}, ReminderChange{}, false}, // kept indexed
		{&domain.CouponUnlocked{CouponID: "c"}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryRetrack, "c" }), true},
		{&domain.CouponRedeemed{CouponID: "c"}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryUntrack, "c" }), true},
		{&domain.CouponReturned{CouponID: "c", UsableAgain: true}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryRetrack, "c" }), true},
		{&domain.CouponReturned{CouponID: "c", UsableAgain: false}, ReminderChange{}, false},
		{&domain.CouponExpired{CouponID: "c"}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryForget, "c" }), true},
		{&domain.CouponClaimVoided{CouponID: "c"}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryForget, "c" }), true},
		{&domain.CouponExpiryReminded{CouponID: "c"}, with(func(c *ReminderChange) { c.Kind, c.CouponID = ExpiryForget, "c" }), true},
		{&domain.BatchIssued{BatchID: "b", Rules: domain.Rules{ClaimStartsAt: start}}, with(func(c *ReminderChange) { c.Kind, c.BatchID, c.OpensAt = OpeningBatch, "b", start }), true},
		{&domain.BatchRulesChanged{BatchID: "b", Rules: domain.Rules{ClaimStartsAt: start}}, with(func(c *ReminderChange) { c.Kind, c.BatchID, c.OpensAt = OpeningBatch, "b", start }), true},
		{&domain.BatchStopped{BatchID: "b"}, with(func(c *ReminderChange) { c.Kind, c.BatchID = OpeningClosed, "b" }), true},
		{&domain.BatchPaused{BatchID: "b"}, ReminderChange{}, false},
		{&domain.BatchStockAdded{BatchID: "b"}, ReminderChange{}, false},
		{&domain.ReminderSubscribed{BatchID: "b", UserID: "u", OpensAt: start}, with(func(c *ReminderChange) { c.Kind, c.BatchID, c.UserID, c.OpensAt = OpeningSubscribed, "b", "u", start }), true},
		{&domain.ReminderSent{BatchID: "b", UserID: "u", OpenedAt: start}, with(func(c *ReminderChange) { c.Kind, c.BatchID, c.UserID = OpeningSent, "b", "u" }), true},
	}
	for _, tc := range cases {
		got, ok := ReminderChangeOf(tc.e, rec)
		if ok != tc.ok || (ok && !reflect.DeepEqual(got, tc.want)) {
			t.Errorf("%s: %+v %v, want %+v %v", tc.e.EventName(), got, ok, tc.want, tc.ok)
		}
	}
}

func TestRemindersProjectorSavesEveryPosition(t *testing.T) {
	reg := domain.NewRegistry()
	st := &reminderRecorder{}
	p, err := NewRemindersProjector(st, reg)
	if err != nil {
		t.Fatal(err)
	}
	if p.Name() != "reminders" {
		t.Fatalf("name %q: never change it", p.Name())
	}
	if _, err := NewRemindersProjector(nil, reg); err == nil {
		t.Fatal("nil store accepted")
	}
	if _, err := NewRemindersProjector(st, nil); err == nil {
		t.Fatal("nil registry accepted")
	}
	mk := func(pos uint64, stream string, e domain.Event) es.RecordedEvent {
		name, data, err := reg.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		return es.RecordedEvent{StreamID: stream, Position: pos, Type: name, Data: data}
	}
	vu := time.Date(2026, 12, 1, 0, 0, 0, 0, time.UTC)
	claimed := mk(1, "coupon-c", &domain.CouponClaimed{CouponID: "c", Terms: domain.CouponTerms{ValidUntil: vu}})
	paused := mk(2, "batch-b", &domain.BatchPaused{BatchID: "b"})
	grant := es.RecordedEvent{StreamID: "grantjob-j", Position: 3, Type: "grantjob.unknown.v9", Data: []byte(`not decoded`)}
	ctx := context.Background()

	// Handle: an ignored event (even one this registry cannot decode) saves only its position.
	for _, rec := range []es.RecordedEvent{claimed, paused, grant} {
		if err := p.Handle(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	want := [][]ReminderChange{
		{{Kind: ExpiryTrack, Stream: "coupon-c", Position: 1, CouponID: "c", ValidUntil: vu}},
		{{Kind: ReminderCheckpoint, Position: 2}},
		{{Kind: ReminderCheckpoint, Position: 3}},
	}
	if !reflect.DeepEqual(st.calls, want) {
		t.Fatalf("Handle applied %+v, want %+v", st.calls, want)
	}

	// HandleBatch: one call; it ends with the last position.
	st.calls = nil
	if err := p.HandleBatch(ctx, []es.RecordedEvent{claimed, paused}); err != nil {
		t.Fatal(err)
	}
	if err := p.HandleBatch(ctx, []es.RecordedEvent{paused, claimed}); err != nil {
		t.Fatal(err)
	}
	if err := p.HandleBatch(ctx, nil); err != nil {
		t.Fatal(err)
	}
	want = [][]ReminderChange{
		{want[0][0], {Kind: ReminderCheckpoint, Position: 2}},
		{want[0][0]},
	}
	if !reflect.DeepEqual(st.calls, want) {
		t.Fatalf("HandleBatch applied %+v, want %+v", st.calls, want)
	}

	// A followed event that does not decode, or a failing store, is an error.
	bad := es.RecordedEvent{StreamID: "coupon-x", Position: 9, Type: domain.EvCouponClaimed, Data: []byte(`{"coupon_id":1}`)}
	if err := p.Handle(ctx, bad); err == nil {
		t.Fatal("undecodable event accepted")
	}
	st.fail = errors.New("down")
	if err := p.Handle(ctx, claimed); !errors.Is(err, st.fail) {
		t.Fatalf("store failure: %v", err)
	}
}

// The usable view keeps a reminded coupon as it is but follows its revision
// (couponsd verify compares it with the coupon's).
func TestViewTouchesRemindedCoupons(t *testing.T) {
	op, ok, err := (&ViewProjector{}).viewOp(context.Background(), &domain.CouponExpiryReminded{CouponID: "c", UserID: "u"}, es.RecordedEvent{Revision: 3})
	want := ViewOp{UserID: "u", CouponID: "c", Version: 3, Kind: ViewTouch}
	if err != nil || !ok || !reflect.DeepEqual(op, want) {
		t.Fatalf("view op %+v %v %v, want %+v", op, ok, err, want)
	}
}
