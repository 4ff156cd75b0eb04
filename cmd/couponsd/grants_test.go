package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/outbound"
	"github.com/couponsd/couponsd/infra/redistest"
)

// webhookReceiver answers 503 until up, then verifies every signature and
// keeps each delivered envelope once by webhook-id.
type webhookReceiver struct {
	t      *testing.T
	secret []byte
	up     atomic.Bool
	mu     sync.Mutex
	byID   map[string]outbound.Envelope
	downs  atomic.Int64
	badSig atomic.Int64
	repeat atomic.Int64
}

func (rcv *webhookReceiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !rcv.up.Load() {
		rcv.downs.Add(1)
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	body, _ := io.ReadAll(r.Body)
	id, ts := r.Header.Get("webhook-id"), r.Header.Get("webhook-timestamp")
	if err := outbound.VerifySignature(rcv.secret, id, ts, body, r.Header.Get("webhook-signature"), time.Now(), time.Minute); err != nil {
		rcv.badSig.Add(1)
		http.Error(w, err.Error(), http.StatusUnauthorized)
		return
	}
	var env outbound.Envelope
	if err := json.Unmarshal(body, &env); err != nil || env.ID != id {
		rcv.badSig.Add(1)
		http.Error(w, "bad envelope", http.StatusBadRequest)
		return
	}
	rcv.mu.Lock()
	if _, dup := rcv.byID[id]; dup {
		rcv.repeat.Add(1)
	}
	rcv.byID[id] = env
	rcv.mu.Unlock()
	w.WriteHeader(http.StatusNoContent)
}

func (rcv *webhookReceiver) count(typ string) (n int, keys map[string]bool) {
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	keys = map[string]bool{}
	for _, e := range rcv.byID {
		if e.Type == typ {
			n++
			keys[e.Key] = true
		}
	}
	return n, keys
}

// TestGrantJobSurvivesACrashAndWebhooksDeliver runs the built binary with
// embedded back ends (but real Redis) and a webhook receiver that is down
// at first: a 20,000-entry CSV grant job (duplicates, stock short of the
// list) is cut by a SIGKILL mid-job and finished after the restart; the
// counts add up, granted equals the stock consumed, and the receiver ends
// with exactly one signed coupon.granted.v1 per granted coupon.
func TestGrantJobSurvivesACrashAndWebhooksDeliver(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	be := redistest.Real(t)
	rcv := &webhookReceiver{t: t, secret: []byte("webhook-secret-0123456789"), byID: map[string]outbound.Envelope{}}
	hook := httptest.NewServer(rcv)
	defer hook.Close()

	addr := freeAddr(t)
	bin := buildBinary(t)
	redisURL := fmt.Sprintf("redis://%s/%d", redistest.Options(t).Addr, redistest.Options(t).DB)
	env := []string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + t.TempDir(), "COUPONS_JWT_SECRET=" + testSecret, "COUPONS_LOG_LEVEL=warn",
		"COUPONS_REDIS_URL=" + redisURL, "COUPONS_REDIS_PREFIX=" + be.Prefix,
		"COUPONS_WEBHOOK_URL=" + hook.URL, "COUPONS_WEBHOOK_SECRET=" + string(rcv.secret),
		"COUPONS_GRANT_SHARD_SIZE=200", "COUPONS_GRANT_CONCURRENCY=1",
	}
	svc := &service{t: t, bin: bin, addr: addr, env: env}
	svc.start()
	defer func() { svc.stop() }()
	base := "http://" + addr
	admin := tok(t, "ops", "admin")
	now := time.Now().UTC()
	const stock = 12_000
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "vip", "kind": "direct", "issuer": "platform", "amount_off": 500,
		"scope": map[string]any{"kind": "all"}, "total_stock": stock, "per_user_limit": 1,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour),
		"valid_from": now.Add(-time.Minute), "valid_until": now.Add(48 * time.Hour), "audience": "targeted",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue: %d %v %v", code, body, err)
	}
	batch := body["id"].(string)

	var csv bytes.Buffer
	csv.WriteString("user_id\n")
	const distinct, dups = 19_000, 1_000
	for i := range distinct {
		fmt.Fprintf(&csv, "shopper-%05d\n", i)
		if i < dups {
			fmt.Fprintf(&csv, "shopper-%05d\n", i) // listed twice
		}
	}
	req, _ := http.NewRequest("POST", base+"/v1/batches/"+batch+"/grants", &csv)
	req.Header.Set("Authorization", "Bearer "+admin)
	req.Header.Set("Content-Type", "text/csv")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var acc struct {
		JobID             string `json:"job_id"`
		Total, Duplicates int
	}
	_ = json.NewDecoder(resp.Body).Decode(&acc)
	resp.Body.Close()
	if resp.StatusCode != 202 || acc.Total != distinct+dups || acc.Duplicates != dups {
		t.Fatalf("grant upload: %d %+v", resp.StatusCode, acc)
	}

	// Kill the service once some shards are done.
	jobURL := base + "/v1/grant-jobs/" + acc.JobID
	deadline := time.Now().Add(time.Minute)
	for {
		_, st, err := call("GET", jobURL, admin, "", nil)
		if err == nil && st["shards_done"] != nil && st["shards_done"].(float64) >= 5 {
			if st["state"] == "finished" {
				t.Fatal("the job finished before the kill; make it larger")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no progress: %v %v", st, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	svc.kill()
	rcv.up.Store(true) // the receiver comes back while couponsd is down
	svc.start()

	// couponsd grants status follows the job to its end.
	cli := exec.Command(bin, "grants", "status", acc.JobID, "--interval", "200ms")
	cli.Env = append(os.Environ(), append(env, "COUPONS_URL="+base)...)
	done := make(chan struct{})
	var out []byte
	go func() { out, err = cli.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		_ = cli.Process.Kill()
		t.Fatalf("grants status did not end; service logs:\n%s", svc.logs)
	}
	if err != nil || !strings.Contains(string(out), "finished (sold_out)") {
		t.Fatalf("grants status: %v\n%s", err, out)
	}
	_, st, _ := call("GET", jobURL, admin, "", nil)
	granted, skipped, notGranted, failed := int(st["granted"].(float64)), int(st["skipped"].(float64)), int(st["not_granted"].(float64)), int(st["failed"].(float64))
	if granted != stock || skipped != dups || notGranted != distinct-stock || failed != 0 || granted+skipped+notGranted+failed != acc.Total {
		t.Fatalf("final status %v", st)
	}
	_, b, _ := call("GET", base+"/v1/batches/"+batch, admin, "", nil)
	if b["remaining"].(float64) != 0 {
		t.Fatalf("batch after the job: %v", b)
	}

	// Every granted coupon reached the webhook once, signed.
	deadline = time.Now().Add(time.Minute)
	for {
		n, keys := rcv.count("coupon.granted.v1")
		fin, _ := rcv.count("grantjob.finished.v1")
		if n == stock && len(keys) == stock && fin == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("webhook got %d coupon.granted.v1 (%d coupons), want %d; down answers %d", n, len(keys), stock, rcv.downs.Load())
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Everything delivered: the outbound lag drains to 0.
	deadline = time.Now().Add(30 * time.Second)
	for {
		r, err := http.Get(base + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		m, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if strings.Contains(string(m), "\ncouponsd_outbound_lag_events 0\n") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("outbound lag never 0:\n%s", grepLines(string(m), "couponsd_outbound_lag_events"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if rcv.downs.Load() == 0 || rcv.badSig.Load() != 0 {
		t.Fatalf("receiver: %d refused while down (want > 0), %d bad signatures", rcv.downs.Load(), rcv.badSig.Load())
	}
	t.Logf("webhook: %d events, %d repeats after the crash (deduplicated by webhook-id), %d refused while down",
		len(rcv.byID), rcv.repeat.Load(), rcv.downs.Load())
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
