package outbound

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

func TestMapperRoutesByCategory(t *testing.T) {
	reg := testRegistry()
	m := mustMapper(t, reg)
	at := time.Date(2026, 11, 11, 0, 0, 0, 0, time.UTC)
	cases := []struct {
		name      string
		rec       es.RecordedEvent
		topic     string
		key       string
		wantNotif bool
	}{
		{"coupon", recorded(t, reg, "coupon-c-1", 2, 10, &domain.CouponRedeemed{CouponID: "c-1", BatchID: "b-1", UserID: "alice", OrderID: "o-1", At: at}),
			DefaultCouponTopic, "c-1", false},
		{"batch", recorded(t, reg, "batch-b-1", 0, 11, &domain.BatchPaused{BatchID: "b-1", By: "ops", At: at}),
			DefaultBatchTopic, "b-1", false},
		{"other", recorded(t, reg, "grantjob-j-9", 0, 12, &domain.GrantJobFinished{JobID: "j-9", BatchID: "b-1", At: at}),
			DefaultOtherTopic, "j-9", false},
		{"coupon id from data when the stream has no coupon prefix",
			recorded(t, reg, "legacy", 0, 13, &domain.CouponExpired{CouponID: "c-7", BatchID: "b-1", UserID: "bob", At: at}),
			DefaultCouponTopic, "c-7", false},
		{"notification", recorded(t, reg, "reminder-r-1", 0, 14, &testReminder{CouponID: "c-1", UserID: "carol", DueAt: at}),
			DefaultOtherTopic, "r-1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			msgs, err := m.Map(tc.rec)
			if err != nil {
				t.Fatal(err)
			}
			want := 1
			if tc.wantNotif {
				want = 2
			}
			if len(msgs) != want {
				t.Fatalf("got %d messages, want %d: %+v", len(msgs), want, msgs)
			}
			got := msgs[0]
			if got.Topic != tc.topic || got.Key != tc.key || got.Envelope.Key != tc.key {
				t.Errorf("routed to %s key %s (envelope key %s), want %s key %s", got.Topic, got.Key, got.Envelope.Key, tc.topic, tc.key)
			}
			e := got.Envelope
			if e.ID != tc.rec.ID || e.Type != tc.rec.Type || e.Source != "couponsd" || e.Stream != tc.rec.StreamID ||
				e.Revision != tc.rec.Revision || e.Position != tc.rec.Position || string(e.Data) != string(tc.rec.Data) {
				t.Errorf("envelope %+v does not carry the event %+v unchanged", e, tc.rec)
			}
			if !e.OccurredAt.Equal(tc.rec.RecordedAt) || e.OccurredAt.Location() != time.UTC {
				t.Errorf("occurred_at %v, want %v in UTC", e.OccurredAt, tc.rec.RecordedAt)
			}
			if !tc.wantNotif {
				return
			}
			n := msgs[1]
			if n.Topic != DefaultNotificationsTopic || n.Key != "carol" || n.Envelope.Key != "carol" ||
				n.Envelope.Type != "test.coupon_expiring.v1" || string(n.Envelope.Data) != string(tc.rec.Data) {
				t.Errorf("notification message %+v", n)
			}
			if n.Envelope.ID == tc.rec.ID || n.Envelope.ID != NotificationID(tc.rec.ID) {
				t.Errorf("notification id %s, want NotificationID(%s) = %s", n.Envelope.ID, tc.rec.ID, NotificationID(tc.rec.ID))
			}
		})
	}
}

func TestNotificationIDIsDeterministicUUIDv5(t *testing.T) {
	a, b := NotificationID("e-1"), NotificationID("e-1")
	if a != b {
		t.Fatalf("not deterministic: %s != %s", a, b)
	}
	if a == NotificationID("e-2") {
		t.Fatal("two events give the same notification id")
	}
	if len(a) != 36 || a[14] != '5' {
		t.Fatalf("%s is not a UUID v5", a)
	}
}

func TestMapperSkipsUnknownEvents(t *testing.T) {
	m := mustMapper(t, domain.NewRegistry())
	msgs, err := m.Map(es.RecordedEvent{StreamID: "coupon-1", Position: 1, ID: "x", Type: "coupon.teleported.v1", Data: []byte(`{}`)})
	if err != nil || msgs != nil {
		t.Fatalf("unknown event: got %v, %v; want nil, nil", msgs, err)
	}
}

func TestMapperRejectsUndecodableData(t *testing.T) {
	m := mustMapper(t, domain.NewRegistry())
	_, err := m.Map(es.RecordedEvent{StreamID: "coupon-1", Position: 1, ID: "x", Type: domain.EvCouponClaimed, Data: []byte(`{"coupon_id":5}`)})
	if err == nil {
		t.Fatal("a registered event with undecodable data mapped without error")
	}
}

func TestNewMapperValidates(t *testing.T) {
	if _, err := NewMapper(nil, Topics{}); err == nil {
		t.Error("nil registry accepted")
	}
	if _, err := NewMapper(domain.NewRegistry(), Topics{Coupon: "bad topic!"}); err == nil {
		t.Error("invalid topic name accepted")
	}
	if _, err := NewMapper(domain.NewRegistry(), Topics{Batch: DefaultCouponTopic}); err == nil {
		t.Error("two categories on one topic accepted")
	}
	m, err := NewMapper(domain.NewRegistry(), Topics{Coupon: "shop.coupons"})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Topics(); got.Coupon != "shop.coupons" || got.Batch != DefaultBatchTopic || got.Notifications != DefaultNotificationsTopic {
		t.Errorf("topics %+v", got)
	}
}

func TestEnvelopeEncodeKeepsDataBytes(t *testing.T) {
	data := `{"note":"<b>&</b>","n":1}`
	e := Envelope{ID: "id-1", Type: "t.v1", Source: Source, Key: "k", Stream: "s-k", Revision: 1, Position: 2,
		OccurredAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Data: json.RawMessage(data)}
	b, err := e.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"data":`+data) || !strings.Contains(string(b), `"occurred_at":"2026-01-02T03:04:05Z"`) {
		t.Fatalf("encoded envelope %s", b)
	}
	var back Envelope
	if err := json.Unmarshal(b, &back); err != nil || back.ID != "id-1" || string(back.Data) != data {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
}
