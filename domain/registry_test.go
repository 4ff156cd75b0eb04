package domain_test

import (
	"encoding/json"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// goldenNames are the stored event names. They are part of the storage
// format: this list changes only by adding a name, never by renaming one.
var goldenNames = []string{
	"batch.issued.v1",
	"batch.paused.v1",
	"batch.resumed.v1",
	"batch.rules_changed.v1",
	"batch.stock_added.v1",
	"batch.stopped.v1",
	"coupon.claim_voided.v1",
	"coupon.claimed.v1",
	"coupon.expired.v1",
	"coupon.expiry_reminded.v1",
	"coupon.granted.v1",
	"coupon.locked.v1",
	"coupon.redeemed.v1",
	"coupon.returned.v1",
	"coupon.unlocked.v1",
	"grantjob.created.v1",
	"grantjob.created.v2",
	"grantjob.finished.v1",
	"grantshard.done.v1",
	"grantshard.listed.v1",
	"grantshard.started.v1",
	"reminder.sent.v1",
	"reminder.subscribed.v1",
}

// sample is a fully populated value of one event and its exact stored JSON.
type sample struct {
	e    domain.Event
	json string
}

// sampleEvents has one sample of every event, keyed by the name its Go type
// must carry.
func sampleEvents() map[string]sample {
	at := time.Date(2026, 11, 1, 9, 30, 15, 123456789, time.UTC)
	rules := windowRules()
	rules.Scope = domain.Scope{Kind: domain.ScopeCategory, IDs: []string{"c1", "c2"}}
	rules.Exclusive = true
	terms := rules.TermsAt("b-1", 2, at)
	counts := domain.GrantCounts{Total: 4, Granted: 1, Skipped: 1, NotGranted: 1, Failed: 1}
	list := domain.GrantList{Total: 2500, Duplicates: 12, Shards: 3, ShardSize: 1000, SHA256: strings.Repeat("0f", 32)}
	return map[string]sample{
		"batch.issued.v1": {&domain.BatchIssued{BatchID: "b-1", Rules: rules, TotalStock: 500, IssuedBy: "admin-1", At: at},
			`{"batch_id":"b-1","rules":{"name":"Double 11","kind":"threshold","issuer":"platform","threshold":20000,"amount_off":5000,"percent_off":0,"max_discount":0,"scope":{"kind":"category","ids":["c1","c2"]},"exclusive":true,"per_user_limit":1,"claim_starts_at":"2026-11-02T00:00:00Z","claim_ends_at":"2026-11-12T00:00:00Z","valid_from":"2026-11-03T00:00:00Z","valid_until":"2026-11-21T00:00:00Z","audience":"public"},"total_stock":500,"issued_by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"batch.rules_changed.v1": {&domain.BatchRulesChanged{BatchID: "b-1", Rules: baseRules(), RuleVersion: 3, By: "admin-1", At: at},
			`{"batch_id":"b-1","rules":{"name":"Double 11","kind":"threshold","issuer":"platform","threshold":20000,"amount_off":5000,"percent_off":0,"max_discount":0,"scope":{"kind":"all"},"exclusive":false,"per_user_limit":1,"claim_starts_at":"2026-11-02T00:00:00Z","claim_ends_at":"2026-11-12T00:00:00Z","valid_days":7,"audience":"public"},"rule_version":3,"by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"batch.paused.v1": {&domain.BatchPaused{BatchID: "b-1", By: "admin-1", At: at},
			`{"batch_id":"b-1","by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"batch.resumed.v1": {&domain.BatchResumed{BatchID: "b-1", By: "admin-1", At: at},
			`{"batch_id":"b-1","by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"batch.stopped.v1": {&domain.BatchStopped{BatchID: "b-1", By: "admin-1", At: at},
			`{"batch_id":"b-1","by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"batch.stock_added.v1": {&domain.BatchStockAdded{BatchID: "b-1", Added: 10, TotalStock: 510, IdempotencyKey: "k1", By: "admin-1", At: at},
			`{"batch_id":"b-1","added":10,"total_stock":510,"idempotency_key":"k1","by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.claimed.v1": {&domain.CouponClaimed{CouponID: "c-1", UserID: "u-1", IdempotencyKey: "idem", Terms: terms, At: at},
			`{"coupon_id":"c-1","user_id":"u-1","idempotency_key":"idem","terms":{"batch_id":"b-1","rule_version":2,"kind":"threshold","issuer":"platform","threshold":20000,"amount_off":5000,"percent_off":0,"max_discount":0,"scope":{"kind":"category","ids":["c1","c2"]},"exclusive":true,"valid_from":"2026-11-03T00:00:00Z","valid_until":"2026-11-21T00:00:00Z"},"at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.granted.v1": {&domain.CouponGranted{CouponID: "c-1", UserID: "u-1", JobID: "job-1", Terms: terms, At: at},
			`{"coupon_id":"c-1","user_id":"u-1","job_id":"job-1","terms":{"batch_id":"b-1","rule_version":2,"kind":"threshold","issuer":"platform","threshold":20000,"amount_off":5000,"percent_off":0,"max_discount":0,"scope":{"kind":"category","ids":["c1","c2"]},"exclusive":true,"valid_from":"2026-11-03T00:00:00Z","valid_until":"2026-11-21T00:00:00Z"},"at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.locked.v1": {&domain.CouponLocked{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-1", HoldUntil: at.Add(hold), At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","order_id":"o-1","hold_until":"2026-11-01T09:45:15.123456789Z","at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.unlocked.v1": {&domain.CouponUnlocked{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-1", Reason: domain.UnlockHoldExpired, At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","order_id":"o-1","reason":"hold_expired","at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.redeemed.v1": {&domain.CouponRedeemed{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-1", PaymentID: "p-1", Discount: 4200, At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","order_id":"o-1","payment_id":"p-1","discount":4200,"at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.returned.v1": {&domain.CouponReturned{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", OrderID: "o-1", UsableAgain: true, At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","order_id":"o-1","usable_again":true,"at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.expired.v1": {&domain.CouponExpired{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", ValidUntil: at, At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","valid_until":"2026-11-01T09:30:15.123456789Z","at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.claim_voided.v1": {&domain.CouponClaimVoided{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", Reason: "append_failed", At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","reason":"append_failed","at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantjob.created.v1": {&domain.GrantJobCreatedV1{JobID: "job-1", BatchID: "b-1", UserIDs: []string{"u-1", "u-2"}, By: "admin-1", At: at},
			`{"job_id":"job-1","batch_id":"b-1","user_ids":["u-1","u-2"],"by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantjob.created.v2": {&domain.GrantJobCreated{JobID: "job-1", BatchID: "b-1", GrantList: list, By: "admin-1", At: at},
			`{"job_id":"job-1","batch_id":"b-1","total":2500,"duplicates":12,"shards":3,"shard_size":1000,"list_sha256":"0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f","by":"admin-1","at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantjob.finished.v1": {&domain.GrantJobFinished{JobID: "job-1", BatchID: "b-1", GrantCounts: counts, Outcome: domain.GrantJobSoldOut, At: at},
			`{"job_id":"job-1","batch_id":"b-1","total":4,"granted":1,"skipped":1,"not_granted":1,"failed":1,"outcome":"sold_out","at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantshard.listed.v1": {&domain.GrantShardListed{JobID: "job-1", BatchID: "b-1", Shard: 2, UserIDs: []string{"u-1", "u-2"}, At: at},
			`{"job_id":"job-1","batch_id":"b-1","shard":2,"user_ids":["u-1","u-2"],"at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantshard.started.v1": {&domain.GrantShardStarted{JobID: "job-1", Shard: 2, At: at},
			`{"job_id":"job-1","shard":2,"at":"2026-11-01T09:30:15.123456789Z"}`},
		"grantshard.done.v1": {&domain.GrantShardDone{JobID: "job-1", BatchID: "b-1", Shard: 2, GrantCounts: counts, Outcome: domain.GrantJobSoldOut, At: at},
			`{"job_id":"job-1","batch_id":"b-1","shard":2,"total":4,"granted":1,"skipped":1,"not_granted":1,"failed":1,"outcome":"sold_out","at":"2026-11-01T09:30:15.123456789Z"}`},
		"coupon.expiry_reminded.v1": {&domain.CouponExpiryReminded{CouponID: "c-1", BatchID: "b-1", UserID: "u-1", ValidUntil: at, At: at},
			`{"coupon_id":"c-1","batch_id":"b-1","user_id":"u-1","valid_until":"2026-11-01T09:30:15.123456789Z","at":"2026-11-01T09:30:15.123456789Z"}`},
		"reminder.subscribed.v1": {&domain.ReminderSubscribed{BatchID: "b-1", UserID: "u-1", OpensAt: at, At: at},
			`{"batch_id":"b-1","user_id":"u-1","opens_at":"2026-11-01T09:30:15.123456789Z","at":"2026-11-01T09:30:15.123456789Z"}`},
		"reminder.sent.v1": {&domain.ReminderSent{BatchID: "b-1", UserID: "u-1", OpenedAt: at, At: at},
			`{"batch_id":"b-1","user_id":"u-1","opened_at":"2026-11-01T09:30:15.123456789Z","at":"2026-11-01T09:30:15.123456789Z"}`},
	}
}

// versioned is the form of a stored event name: area.what.vN, lower case.
var versioned = regexp.MustCompile(`^[a-z]+\.[a-z_]+\.v[1-9][0-9]*$`)

func TestRegistryNamesAreGolden(t *testing.T) {
	got := domain.NewRegistry().Names()
	slices.Sort(got)
	if !slices.Equal(got, goldenNames) {
		t.Fatalf("registry names\n%v\nwant exactly\n%v", got, goldenNames)
	}
	for _, n := range got {
		if !versioned.MatchString(n) {
			t.Errorf("name %q is not an explicit lower-case versioned name", n)
		}
	}
}

func TestEventNamesAreExplicit(t *testing.T) {
	// Type → name pinned by the Go type itself, so renaming either side fails here.
	pinned := []struct {
		e    domain.Event
		name string
	}{
		{&domain.BatchIssued{}, "batch.issued.v1"},
		{&domain.BatchRulesChanged{}, "batch.rules_changed.v1"},
		{&domain.BatchPaused{}, "batch.paused.v1"},
		{&domain.BatchResumed{}, "batch.resumed.v1"},
		{&domain.BatchStopped{}, "batch.stopped.v1"},
		{&domain.BatchStockAdded{}, "batch.stock_added.v1"},
		{&domain.CouponClaimed{}, "coupon.claimed.v1"},
		{&domain.CouponGranted{}, "coupon.granted.v1"},
		{&domain.CouponLocked{}, "coupon.locked.v1"},
		{&domain.CouponUnlocked{}, "coupon.unlocked.v1"},
		{&domain.CouponRedeemed{}, "coupon.redeemed.v1"},
		{&domain.CouponReturned{}, "coupon.returned.v1"},
		{&domain.CouponExpired{}, "coupon.expired.v1"},
		{&domain.CouponClaimVoided{}, "coupon.claim_voided.v1"},
		{&domain.GrantJobCreatedV1{}, "grantjob.created.v1"},
		{&domain.GrantJobCreated{}, "grantjob.created.v2"},
		{&domain.GrantJobFinished{}, "grantjob.finished.v1"},
		{&domain.GrantShardListed{}, "grantshard.listed.v1"},
		{&domain.GrantShardStarted{}, "grantshard.started.v1"},
		{&domain.GrantShardDone{}, "grantshard.done.v1"},
		{&domain.CouponExpiryReminded{}, "coupon.expiry_reminded.v1"},
		{&domain.ReminderSubscribed{}, "reminder.subscribed.v1"},
		{&domain.ReminderSent{}, "reminder.sent.v1"},
	}
	if len(pinned) != len(goldenNames) {
		t.Fatalf("%d pinned types for %d names", len(pinned), len(goldenNames))
	}
	for _, p := range pinned {
		if got := p.e.EventName(); got != p.name {
			t.Errorf("%T.EventName() = %q, want %q", p.e, got, p.name)
		}
	}
	consts := []string{
		domain.EvBatchIssued, domain.EvBatchRulesChanged, domain.EvBatchPaused, domain.EvBatchResumed,
		domain.EvBatchStopped, domain.EvBatchStockAdded, domain.EvCouponClaimed, domain.EvCouponGranted,
		domain.EvCouponLocked, domain.EvCouponUnlocked, domain.EvCouponRedeemed, domain.EvCouponReturned,
		domain.EvCouponExpired, domain.EvCouponClaimVoided, domain.EvGrantJobCreatedV1, domain.EvGrantJobCreated,
		domain.EvGrantJobFinished, domain.EvGrantShardListed, domain.EvGrantShardStarted, domain.EvGrantShardDone,
		domain.EvCouponExpiryReminded, domain.EvReminderSubscribed, domain.EvReminderSent,
	}
	slices.Sort(consts)
	if !slices.Equal(consts, goldenNames) {
		t.Fatalf("Ev* constants %v, want %v", consts, goldenNames)
	}
}

func TestRegistryRoundTripsEveryEvent(t *testing.T) {
	reg := domain.NewRegistry()
	samples := sampleEvents()
	if len(samples) != len(goldenNames) {
		t.Fatalf("%d samples for %d names: add a sample for every new event", len(samples), len(goldenNames))
	}
	for _, name := range goldenNames {
		t.Run(name, func(t *testing.T) {
			s, ok := samples[name]
			if !ok {
				t.Fatalf("no sample for %s", name)
			}
			e := s.e
			gotName, data, err := reg.Marshal(e)
			wantErr(t, err, nil)
			if gotName != name {
				t.Fatalf("Marshal name = %q, want %q", gotName, name)
			}
			// The JSON field names are the storage format.
			if string(data) != s.json {
				t.Errorf("%s encodes as\n%s\nwant\n%s", name, data, s.json)
			}
			// Decode the stored form, as a repository reads it back.
			back, err := reg.Unmarshal(name, []byte(s.json))
			wantErr(t, err, nil)
			if reflect.TypeOf(back) != reflect.TypeOf(e) {
				t.Fatalf("Unmarshal gave %T, want %T", back, e)
			}
			if !reflect.DeepEqual(back, e) {
				t.Fatalf("round trip\n%+v\nwant\n%+v", back, e)
			}
			// Every field is populated in the sample, so none may come back zero.
			v := reflect.ValueOf(back).Elem()
			for i := range v.NumField() {
				if v.Field(i).IsZero() {
					t.Errorf("field %s is zero after the round trip", v.Type().Field(i).Name)
				}
			}
		})
	}
}

// The JSON field names are stored too: pin a few encodings.
func TestStoredEncodingIsStable(t *testing.T) {
	at := time.Date(2026, 11, 1, 8, 0, 0, 0, time.UTC)
	cases := []struct {
		e    domain.Event
		want string
	}{
		{&domain.BatchStockAdded{BatchID: "b-1", Added: 5, TotalStock: 15, IdempotencyKey: "k", By: "a", At: at},
			`{"batch_id":"b-1","added":5,"total_stock":15,"idempotency_key":"k","by":"a","at":"2026-11-01T08:00:00Z"}`},
		{&domain.BatchStockAdded{BatchID: "b-1", Added: 5, TotalStock: 15, By: "a", At: at},
			`{"batch_id":"b-1","added":5,"total_stock":15,"by":"a","at":"2026-11-01T08:00:00Z"}`},
		{&domain.CouponLocked{CouponID: "c", BatchID: "b", UserID: "u", OrderID: "o", HoldUntil: at, At: at},
			`{"coupon_id":"c","batch_id":"b","user_id":"u","order_id":"o","hold_until":"2026-11-01T08:00:00Z","at":"2026-11-01T08:00:00Z"}`},
		{&domain.CouponRedeemed{CouponID: "c", BatchID: "b", UserID: "u", OrderID: "o", PaymentID: "p", Discount: 7, At: at},
			`{"coupon_id":"c","batch_id":"b","user_id":"u","order_id":"o","payment_id":"p","discount":7,"at":"2026-11-01T08:00:00Z"}`},
		{&domain.CouponReturned{CouponID: "c", BatchID: "b", UserID: "u", OrderID: "o", At: at},
			`{"coupon_id":"c","batch_id":"b","user_id":"u","order_id":"o","usable_again":false,"at":"2026-11-01T08:00:00Z"}`},
	}
	reg := domain.NewRegistry()
	for _, tc := range cases {
		_, data, err := reg.Marshal(tc.e)
		wantErr(t, err, nil)
		if string(data) != tc.want {
			t.Errorf("%s encodes as\n%s\nwant\n%s", tc.e.EventName(), data, tc.want)
		}
	}

	// Rules: a valid_days batch omits the window; a window batch omits valid_days.
	_, data, err := reg.Marshal(&domain.BatchIssued{Rules: baseRules()})
	wantErr(t, err, nil)
	var m struct {
		Rules map[string]any `json:"rules"`
	}
	wantErr(t, json.Unmarshal(data, &m), nil)
	rules := m.Rules
	for _, k := range []string{"name", "kind", "issuer", "threshold", "amount_off", "percent_off", "max_discount",
		"scope", "exclusive", "per_user_limit", "claim_starts_at", "claim_ends_at", "valid_days", "audience"} {
		if _, ok := rules[k]; !ok {
			t.Errorf("stored rules lack %q: %s", k, data)
		}
	}
	for _, k := range []string{"valid_from", "valid_until"} {
		if _, ok := rules[k]; ok {
			t.Errorf("stored valid_days rules carry %q: %s", k, data)
		}
	}
}

type testOnlyEvent struct {
	N int `json:"n"`
}

func (*testOnlyEvent) EventName() string { return "test.only.v1" }

func TestRegistryRefusesUnknown(t *testing.T) {
	reg := domain.NewRegistry()
	for _, name := range []string{"", "coupon.claimed.v2", "Coupon.Claimed.v1", "CouponClaimed", "test.only.v1"} {
		if e, err := reg.Unmarshal(name, []byte(`{}`)); err == nil || e != nil {
			t.Errorf("Unmarshal(%q) = %v, %v; want an error", name, e, err)
		}
	}
	if _, _, err := reg.Marshal(&testOnlyEvent{}); err == nil {
		t.Error("Marshal of an unregistered event succeeded")
	}
	if _, err := reg.Unmarshal(domain.EvCouponClaimed, []byte(`{"coupon_id": 5}`)); err == nil {
		t.Error("Unmarshal of malformed data succeeded")
	}
	if _, err := reg.Unmarshal(domain.EvCouponClaimed, []byte(`not json`)); err == nil {
		t.Error("Unmarshal of non-JSON succeeded")
	}
}

func TestRegistriesAreIndependent(t *testing.T) {
	a, b := domain.NewRegistry(), domain.NewRegistry()
	a.Register(&testOnlyEvent{})

	if len(a.Names()) != len(goldenNames)+1 || len(b.Names()) != len(goldenNames) {
		t.Fatalf("names: a %d, b %d", len(a.Names()), len(b.Names()))
	}
	name, data, err := a.Marshal(&testOnlyEvent{N: 7})
	wantErr(t, err, nil)
	back, err := a.Unmarshal(name, data)
	wantErr(t, err, nil)
	if got := back.(*testOnlyEvent); got.N != 7 {
		t.Fatalf("round trip gave %+v", got)
	}
	if _, _, err := b.Marshal(&testOnlyEvent{}); err == nil {
		t.Fatal("registry b knows an event registered only in a")
	}
	if _, err := b.Unmarshal(name, data); err == nil {
		t.Fatal("registry b decodes an event registered only in a")
	}
	if c := domain.NewRegistry(); len(c.Names()) != len(goldenNames) {
		t.Fatal("a new registry sees another registry's registration")
	}
}

func TestRegistryDuplicatePanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("registering a duplicate name did not panic")
		}
	}()
	domain.NewRegistry().Register(&domain.CouponClaimed{})
}

func TestRegistryAcceptsValueProto(t *testing.T) {
	r := domain.NewRegistry()
	r.Register(valueEvent{})
	_, data, err := r.Marshal(valueEvent{S: "x"})
	wantErr(t, err, nil)
	back, err := r.Unmarshal("test.value.v1", data)
	wantErr(t, err, nil)
	if got, ok := back.(*valueEvent); !ok || got.S != "x" {
		t.Fatalf("Unmarshal gave %#v", back)
	}
}

type valueEvent struct {
	S string `json:"s"`
}

func (valueEvent) EventName() string { return "test.value.v1" }

func TestRegistryKnown(t *testing.T) {
	reg := domain.NewRegistry()
	for _, n := range reg.Names() {
		if !reg.Known(n) {
			t.Errorf("%s not known", n)
		}
	}
	for _, n := range []string{"", "coupon.claimed", "coupon.claimed.v9", "CouponClaimed"} {
		if reg.Known(n) {
			t.Errorf("%q known", n)
		}
	}
}
