package outbound

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

const testSecret = "0123456789abcdef-test-secret"

func testMessages(n int) []Message {
	out := make([]Message, n)
	for i := range out {
		id := fmt.Sprintf("evt-%02d", i)
		out[i] = Message{Topic: DefaultCouponTopic, Key: "c-1", Envelope: Envelope{
			ID: id, Type: "coupon.claimed.v1", Source: Source, Key: "c-1", Stream: "coupon-c-1", Revision: uint64(i),
			Position: uint64(i + 1), OccurredAt: time.Date(2026, 11, 11, 0, 0, i, 0, time.UTC),
			Data: []byte(`{"coupon_id":"c-1","n":` + strconv.Itoa(i) + `}`),
		}}
	}
	return out
}

func ids(msgs []Message) []string {
	out := make([]string, len(msgs))
	for i, m := range msgs {
		out[i] = m.Envelope.ID
	}
	return out
}

func fastWebhookConfig(url string) WebhookConfig {
	return WebhookConfig{URL: url, Secret: testSecret, Timeout: 150 * time.Millisecond,
		MinBackoff: 5 * time.Millisecond, MaxBackoff: 40 * time.Millisecond}
}

// TestWebhookDeliversThroughOutage: the receiver first answers 503, then
// is down (closed) and comes back on the same address, and once accepts an
// envelope but answers too late. Every envelope arrives, in order, each id
// once after the receiver's dedupe, every signature valid.
func TestWebhookDeliversThroughOutage(t *testing.T) {
	var unavailable atomic.Bool
	unavailable.Store(true)
	var slowOnce sync.Once
	rc := newReceiver(testSecret)
	rc.status = func(id string) int {
		if unavailable.Load() {
			return http.StatusServiceUnavailable
		}
		if id == "evt-06" {
			late := false
			slowOnce.Do(func() { late = true })
			if late { // processed, but the sender gave up waiting
				time.Sleep(400 * time.Millisecond)
			}
		}
		return http.StatusOK
	}
	srv := startServer(t, rc)
	log, logs := newCaptureLog()
	sink, err := NewWebhookSink(fastWebhookConfig(srv.URL()), log)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()

	msgs := testMessages(10)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- sink.Publish(ctx, msgs) }()

	waitFor(t, 3*time.Second, "three 503 answers", func() bool { _, _, n, _ := rc.snapshot(); return n >= 3 })
	unavailable.Store(false)
	waitFor(t, 3*time.Second, "four envelopes accepted", func() bool { o, _, _, _ := rc.snapshot(); return len(o) >= 4 })
	srv.stop()
	_, _, before, _ := rc.snapshot()
	time.Sleep(150 * time.Millisecond) // down: connections refused
	if _, _, n, _ := rc.snapshot(); n != before {
		t.Fatalf("the stopped receiver got %d requests", n-before)
	}
	select {
	case err := <-done:
		t.Fatalf("Publish returned while the receiver was down: %v", err)
	default:
	}
	srv.start()

	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Publish: %v", err)
		}
	case <-time.After(7 * time.Second):
		t.Fatal("Publish did not complete after the receiver came back")
	}
	// The late answer to evt-06's first attempt is recorded after its retry.
	waitFor(t, 2*time.Second, "the late answer to evt-06", func() bool { _, a, _, _ := rc.snapshot(); return a["evt-06"] >= 2 })
	order, accepted, requests, errs := rc.snapshot()
	for _, e := range errs {
		t.Error(e)
	}
	if !slices.Equal(order, ids(msgs)) {
		t.Errorf("receiver got %v, want %v in order", order, ids(msgs))
	}
	for _, id := range ids(msgs) {
		want := 1
		if id == "evt-06" {
			want = 2 // the late 2xx was lost: sent again, deduplicated by the receiver
		}
		if accepted[id] != want {
			t.Errorf("%s accepted %d times, want %d", id, accepted[id], want)
		}
	}
	if got := logs.attempts("webhook delivery failed; retrying", "evt-00"); len(got) < 3 || got[0] != 1 || got[1] != 2 || got[2] != 3 {
		t.Errorf("failures of evt-00 logged with attempts %v, want 1, 2, 3, ...", got)
	}
	if got := logs.attempts("webhook delivery failed; retrying", "evt-06"); len(got) == 0 {
		t.Error("the timed-out attempt of evt-06 was not logged")
	}

	// The sender remembers what it delivered: publishing again sends nothing.
	if err := sink.Publish(ctx, msgs); err != nil {
		t.Fatal(err)
	}
	if _, _, n, _ := rc.snapshot(); n != requests {
		t.Errorf("re-publishing delivered ids sent %d requests", n-requests)
	}
}

// TestWebhookBodyIsTheEnvelope: the body is the envelope JSON and the
// headers follow Standard Webhooks.
func TestWebhookBodyIsTheEnvelope(t *testing.T) {
	var (
		mu  sync.Mutex
		hdr http.Header
	)
	rc := newReceiver(testSecret)
	rc.status = func(string) int { return http.StatusAccepted }
	srv := startServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hdr = r.Header.Clone()
		mu.Unlock()
		rc.ServeHTTP(w, r)
	}))
	sink, err := NewWebhookSink(fastWebhookConfig(srv.URL()), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	msgs := testMessages(1)
	msgs[0].Topic = DefaultNotificationsTopic
	if err := sink.Publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	want, _ := msgs[0].Envelope.Encode()
	rc.mu.Lock()
	body, topic := rc.bodies["evt-00"], rc.topics["evt-00"]
	rc.mu.Unlock()
	if string(body) != string(want) {
		t.Errorf("body %s, want %s", body, want)
	}
	if topic != DefaultNotificationsTopic {
		t.Errorf("topic header %q", topic)
	}
	mu.Lock()
	defer mu.Unlock()
	ts, err := strconv.ParseInt(hdr.Get(HeaderWebhookTimestamp), 10, 64)
	if err != nil || time.Since(time.Unix(ts, 0)).Abs() > time.Minute {
		t.Errorf("webhook-timestamp %q", hdr.Get(HeaderWebhookTimestamp))
	}
	if hdr.Get(HeaderWebhookID) != "evt-00" || hdr.Get("Content-Type") != "application/json" {
		t.Errorf("headers %v", hdr)
	}
	if sig := hdr.Get(HeaderWebhookSignature); sig != Sign([]byte(testSecret), "evt-00", hdr.Get(HeaderWebhookTimestamp), want) {
		t.Errorf("signature %q", sig)
	}
}

// TestWebhookStopsRetryingWhenContextEnds: a receiver that always fails
// keeps the envelope undelivered until ctx ends; nothing is marked
// delivered, so the next Publish sends it.
func TestWebhookStopsRetryingWhenContextEnds(t *testing.T) {
	var failing atomic.Bool
	failing.Store(true)
	rc := newReceiver(testSecret)
	rc.status = func(string) int {
		if failing.Load() {
			return http.StatusBadRequest // 4xx is retried too
		}
		return http.StatusOK
	}
	srv := startServer(t, rc)
	sink, err := NewWebhookSink(fastWebhookConfig(srv.URL()), testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	msgs := testMessages(2)
	err = sink.Publish(ctx, msgs)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Publish: %v, want the context's deadline", err)
	}
	if _, _, n, _ := rc.snapshot(); n < 2 {
		t.Errorf("only %d attempts in 200ms", n)
	}
	failing.Store(false)
	if err := sink.Publish(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	if order, _, _, _ := rc.snapshot(); !slices.Equal(order, ids(msgs)) {
		t.Errorf("receiver got %v", order)
	}
	if err := sink.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sink.Publish(context.Background(), testMessages(3)); err == nil {
		t.Error("Publish after Close succeeded")
	}
}

func TestWebhookBackoffIsCappedWithJitter(t *testing.T) {
	sink, err := NewWebhookSink(WebhookConfig{URL: "https://shop.example/hook", Secret: testSecret,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second}, testLog(t))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[time.Duration]bool{}
	for attempt := 1; attempt <= 20; attempt++ {
		for range 20 {
			d := sink.backoff(attempt)
			full := min(100*time.Millisecond<<(attempt-1), time.Second)
			if attempt > 10 {
				full = time.Second
			}
			if d < full/2 || d > full {
				t.Fatalf("attempt %d: backoff %v outside [%v, %v]", attempt, d, full/2, full)
			}
			seen[d] = true
		}
	}
	if len(seen) < 50 {
		t.Errorf("only %d distinct backoffs: no jitter?", len(seen))
	}
}

func TestSignMatchesStandardWebhooksVector(t *testing.T) {
	// From the Standard Webhooks specification (secret whsec_MfKQ...).
	key, err := base64.StdEncoding.DecodeString("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", "1614265330", []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %s, want %s", got, want)
	}
}

func TestVerifySignatureRejectsTamperedBody(t *testing.T) {
	secret := []byte(testSecret)
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	body := []byte(`{"id":"evt-1","data":{"discount":100}}`)
	sig := Sign(secret, "evt-1", ts, body)
	if err := VerifySignature(secret, "evt-1", ts, body, sig, now, time.Minute); err != nil {
		t.Fatalf("genuine webhook rejected: %v", err)
	}
	for name, c := range map[string]struct {
		id, sig string
		body    []byte
		secret  []byte
	}{
		"tampered body": {"evt-1", sig, []byte(`{"id":"evt-1","data":{"discount":999}}`), secret},
		"other id":      {"evt-2", sig, body, secret},
		"wrong secret":  {"evt-1", sig, body, []byte("another-secret-of-16+")},
		"no v1":         {"evt-1", "v2," + sig[3:], body, secret},
		"garbage":       {"evt-1", "v1,not-base64!!", body, secret},
		"empty":         {"evt-1", "", body, secret},
	} {
		if err := VerifySignature(c.secret, c.id, ts, c.body, c.sig, now, time.Minute); !errors.Is(err, ErrNoValidSignature) {
			t.Errorf("%s: %v, want ErrNoValidSignature", name, err)
		}
	}
	// Several signatures (a secret rotation): one valid is enough.
	other := Sign([]byte("the-old-secret-0123"), "evt-1", ts, body)
	if err := VerifySignature(secret, "evt-1", ts, body, other+" "+sig, now, time.Minute); err != nil {
		t.Errorf("valid second signature rejected: %v", err)
	}
}

func TestVerifySignatureRejectsExpiredTimestamp(t *testing.T) {
	secret := []byte(testSecret)
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{}`)
	for name, at := range map[string]time.Time{
		"expired":   now.Add(-6 * time.Minute),
		"in future": now.Add(6 * time.Minute),
	} {
		ts := strconv.FormatInt(at.Unix(), 10)
		err := VerifySignature(secret, "evt-1", ts, body, Sign(secret, "evt-1", ts, body), now, 5*time.Minute)
		if !errors.Is(err, ErrTimestampOutOfTolerance) {
			t.Errorf("%s: %v, want ErrTimestampOutOfTolerance", name, err)
		}
	}
	ts := strconv.FormatInt(now.Add(-4*time.Minute).Unix(), 10)
	if err := VerifySignature(secret, "evt-1", ts, body, Sign(secret, "evt-1", ts, body), now, 0); err != nil {
		t.Errorf("within the default tolerance: %v", err)
	}
	if err := VerifySignature(secret, "evt-1", "soon", body, "v1,x", now, 0); !errors.Is(err, ErrBadTimestamp) {
		t.Errorf("malformed timestamp: %v", err)
	}
}

func TestWebhookConfigValidate(t *testing.T) {
	ok := WebhookConfig{URL: "https://shop.example/hooks", Secret: "0123456789abcdef"}
	if err := ok.Validate(); err != nil {
		t.Fatalf("valid config: %v", err)
	}
	for name, mutate := range map[string]func(*WebhookConfig){
		"short secret":     func(c *WebhookConfig) { c.Secret = "0123456789abcde" },
		"relative url":     func(c *WebhookConfig) { c.URL = "/hooks" },
		"ftp url":          func(c *WebhookConfig) { c.URL = "ftp://shop.example/hooks" },
		"no host":          func(c *WebhookConfig) { c.URL = "http:///hooks" },
		"negative timeout": func(c *WebhookConfig) { c.Timeout = -time.Second },
		"min over max":     func(c *WebhookConfig) { c.MinBackoff, c.MaxBackoff = time.Minute, time.Second },
		"negative dedup":   func(c *WebhookConfig) { c.DedupSize = -1 },
	} {
		c := ok
		mutate(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := NewWebhookSink(c, testLog(t)); err == nil {
			t.Errorf("%s: NewWebhookSink accepted", name)
		}
	}
	d := ok.WithDefaults()
	if d.Timeout != DefaultWebhookTimeout || d.MinBackoff != DefaultWebhookMinBackoff || d.MaxBackoff != DefaultWebhookMaxBackoff ||
		d.DedupSize != DefaultWebhookDedupSize || d.Client == nil {
		t.Errorf("defaults %+v", d)
	}
	if _, err := NewWebhookSink(ok, nil); err == nil {
		t.Error("nil logger accepted")
	}
}

func TestLRUEvictsOldest(t *testing.T) {
	l := newLRU(2)
	l.add("a")
	l.add("b")
	l.contains("a") // a is now newer than b
	l.add("c")
	if !l.contains("a") || l.contains("b") || !l.contains("c") {
		t.Fatalf("lru holds a=%v b=%v c=%v, want a and c", l.contains("a"), l.contains("b"), l.contains("c"))
	}
}
