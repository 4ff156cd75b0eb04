package outbound

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// testLog is quiet unless OUTBOUND_TEST_LOG=1.
func testLog(t testing.TB) *slog.Logger {
	if os.Getenv("OUTBOUND_TEST_LOG") == "" {
		return slog.New(slog.DiscardHandler)
	}
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(p []byte) (int, error) { w.t.Log(string(p)); return len(p), nil }

// testReminder is a test-only notification event (the production registry
// may not hold one yet).
type testReminder struct {
	CouponID string    `json:"coupon_id"`
	UserID   string    `json:"user_id"`
	DueAt    time.Time `json:"due_at"`
}

func (*testReminder) EventName() string        { return "test.reminder_due.v1" }
func (*testReminder) NotificationName() string { return "test.coupon_expiring.v1" }
func (r *testReminder) Recipient() string      { return r.UserID }

var _ domain.Notification = (*testReminder)(nil)

// testRegistry is the production registry plus testReminder.
func testRegistry() *domain.Registry {
	reg := domain.NewRegistry()
	reg.Register(&testReminder{})
	return reg
}

func mustMapper(t testing.TB, reg *domain.Registry) *Mapper {
	t.Helper()
	m, err := NewMapper(reg, Topics{})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// recorded builds a stored event of e.
func recorded(t testing.TB, reg *domain.Registry, stream string, rev, pos uint64, e domain.Event) es.RecordedEvent {
	t.Helper()
	name, data, err := reg.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return es.RecordedEvent{
		StreamID: stream, Revision: rev, Position: pos, ID: fmt.Sprintf("00000000-0000-4000-8000-%012d", pos),
		Type: name, Data: data, RecordedAt: time.Date(2026, 11, 11, 0, 0, int(pos), 0, time.FixedZone("CST", 8*3600)),
	}
}

// fill sets every field of the value v points to to a non-zero value:
// strings "<prefix>-<field>", numbers 7, bools true, times a fixed instant,
// one element per slice and map, recursively.
func fill(v reflect.Value, prefix string) {
	switch v.Kind() {
	case reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		fill(v.Elem(), prefix)
	case reflect.Struct:
		if v.Type() == reflect.TypeFor[time.Time]() {
			v.Set(reflect.ValueOf(time.Date(2026, 11, 11, 10, 30, 0, 0, time.UTC)))
			return
		}
		for i := range v.NumField() {
			if f := v.Type().Field(i); f.IsExported() {
				fill(v.Field(i), prefix+"-"+f.Name)
			}
		}
	case reflect.String:
		v.SetString(prefix)
	case reflect.Bool:
		v.SetBool(true)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		v.SetInt(7)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		v.SetUint(7)
	case reflect.Float32, reflect.Float64:
		v.SetFloat(7.5)
	case reflect.Slice:
		s := reflect.MakeSlice(v.Type(), 1, 1)
		fill(s.Index(0), prefix)
		v.Set(s)
	case reflect.Array:
		for i := range v.Len() {
			fill(v.Index(i), prefix)
		}
	case reflect.Map:
		m := reflect.MakeMap(v.Type())
		k := reflect.New(v.Type().Key()).Elem()
		fill(k, prefix+"-key")
		e := reflect.New(v.Type().Elem()).Elem()
		fill(e, prefix)
		m.SetMapIndex(k, e)
		v.Set(m)
	}
}

// sampleEvent is the registered event name filled with non-zero values.
func sampleEvent(t testing.TB, reg *domain.Registry, name string) domain.Event {
	t.Helper()
	ev, err := reg.Unmarshal(name, []byte("{}"))
	if err != nil {
		t.Fatal(err)
	}
	fill(reflect.ValueOf(ev), "x")
	return ev
}

// receiver is a webhook endpoint that verifies every signature, answers
// with status() (2xx accepts), and deduplicates accepted ids.
type receiver struct {
	secret []byte
	// status decides the answer to a request (it may sleep, to answer
	// late); nil accepts everything.
	status func(id string) int

	mu       sync.Mutex
	requests int            // requests received
	accepted map[string]int // 2xx answers per id, duplicates included
	order    []string       // ids accepted, after dedupe, in arrival order
	bodies   map[string][]byte
	topics   map[string]string
	errs     []string
}

func newReceiver(secret string) *receiver {
	return &receiver{secret: []byte(secret), accepted: map[string]int{}, bodies: map[string][]byte{}, topics: map[string]string{}}
}

func (rc *receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	id := r.Header.Get(HeaderWebhookID)
	status := http.StatusNoContent
	if rc.status != nil { // outside the lock: it may sleep
		status = rc.status(id)
	}
	rc.mu.Lock()
	rc.requests++
	if err != nil {
		rc.errs = append(rc.errs, fmt.Sprintf("read body: %v", err))
	}
	if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
		rc.errs = append(rc.errs, fmt.Sprintf("%s: method %s, content type %q", id, r.Method, r.Header.Get("Content-Type")))
	}
	if err := VerifySignature(rc.secret, id, r.Header.Get(HeaderWebhookTimestamp), body, r.Header.Get(HeaderWebhookSignature), time.Now(), time.Minute); err != nil {
		rc.errs = append(rc.errs, fmt.Sprintf("%s: %v", id, err))
		rc.mu.Unlock()
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	if status/100 == 2 {
		rc.accepted[id]++
		if rc.accepted[id] == 1 {
			rc.order = append(rc.order, id)
			rc.bodies[id] = body
			rc.topics[id] = r.Header.Get(HeaderWebhookTopic)
		}
	}
	rc.mu.Unlock()
	w.WriteHeader(status)
}

func (rc *receiver) snapshot() (order []string, accepted map[string]int, requests int, errs []string) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	acc := make(map[string]int, len(rc.accepted))
	for k, v := range rc.accepted {
		acc[k] = v
	}
	return append([]string(nil), rc.order...), acc, rc.requests, append([]string(nil), rc.errs...)
}

// waitFor polls cond until it holds or timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// restartableServer serves h on one fixed address and can be stopped and
// started again on it (a receiver that is down for a while).
type restartableServer struct {
	t    testing.TB
	h    http.Handler
	addr string
	srv  *httptest.Server
}

func startServer(t testing.TB, h http.Handler) *restartableServer {
	t.Helper()
	s := &restartableServer{t: t, h: h}
	s.srv = httptest.NewServer(h)
	s.addr = s.srv.Listener.Addr().String()
	t.Cleanup(func() {
		if s.srv != nil {
			s.srv.Close()
		}
	})
	return s
}

func (s *restartableServer) URL() string { return "http://" + s.addr + "/hooks/couponsd" }

func (s *restartableServer) stop() {
	s.srv.Close()
	s.srv = nil
}

func (s *restartableServer) start() {
	s.t.Helper()
	var (
		ln  net.Listener
		err error
	)
	for range 50 { // the port may take a moment to be free again
		if ln, err = net.Listen("tcp", s.addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.t.Fatalf("listen again on %s: %v", s.addr, err)
	}
	srv := httptest.NewUnstartedServer(s.h)
	srv.Listener.Close()
	srv.Listener = ln
	srv.Start()
	s.srv = srv
}

// captureLog records log records (and forwards nothing).
type captureLog struct {
	mu   *sync.Mutex
	recs *[]slog.Record
}

func newCaptureLog() (*slog.Logger, captureLog) {
	c := captureLog{mu: &sync.Mutex{}, recs: &[]slog.Record{}}
	return slog.New(c), c
}

func (c captureLog) Enabled(context.Context, slog.Level) bool { return true }
func (c captureLog) Handle(_ context.Context, r slog.Record) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	*c.recs = append(*c.recs, r.Clone())
	return nil
}
func (c captureLog) WithAttrs([]slog.Attr) slog.Handler { return c }
func (c captureLog) WithGroup(string) slog.Handler      { return c }

// attempts lists the attempt attribute of the records with message msg
// about envelope id.
func (c captureLog) attempts(msg, id string) []int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int64
	for _, r := range *c.recs {
		if r.Message != msg {
			continue
		}
		var rid string
		var attempt int64
		r.Attrs(func(a slog.Attr) bool {
			switch a.Key {
			case "id":
				rid = a.Value.String()
			case "attempt":
				attempt = a.Value.Int64()
			}
			return true
		})
		if rid == id {
			out = append(out, attempt)
		}
	}
	return out
}
