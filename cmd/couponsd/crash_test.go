package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/eventstore/boltstore"
	"github.com/couponsd/couponsd/infra/httpapi"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redistest"
)

const testSecret = "crash-test-secret-crash-test-secret-0123"

// service is one couponsd process under test.
type service struct {
	t    *testing.T
	bin  string
	env  []string
	addr string
	cmd  *exec.Cmd
	logs *bytes.Buffer
}

func buildBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "couponsd")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	return bin
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func (s *service) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin)
	s.cmd.Env = append(os.Environ(), s.env...)
	s.logs = &bytes.Buffer{}
	s.cmd.Stderr = s.logs
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + s.addr + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	s.t.Fatalf("service did not come up; logs:\n%s", s.logs)
}

func (s *service) kill() {
	_ = s.cmd.Process.Signal(syscall.SIGKILL)
	_ = s.cmd.Wait()
}

func (s *service) stop() {
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	_ = s.cmd.Wait()
}

var client = &http.Client{Timeout: 5 * time.Second}

func call(method, url, token, key string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, url, rd)
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Idempotency-Key", key)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out, nil
}

func tok(t *testing.T, sub, role string) string {
	s, err := httpapi.IssueToken([]byte(testSecret), sub, role, time.Hour, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestCrashLosesNoAcknowledgedClaim starts the built binary on the real
// Redis, fires a burst of claims, SIGKILLs it mid-burst, restarts it, and
// checks: every 201 the client saw has its event; after reconciliation the
// stock consumed in Redis equals the claimed events; no Idempotency-Key
// produced two coupons.
func TestCrashLosesNoAcknowledgedClaim(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	bin := buildBinary(t)
	// Real Redis survives the crash: unconfirmed reservations are settled by
	// the reconciler. The embedded Redis dies with the process: the guard is
	// rebuilt from the event store at restart.
	t.Run("redis", func(t *testing.T) {
		be := redistest.Real(t)
		opt := redistest.Options(t)
		crashBurst(t, bin, []string{fmt.Sprintf("COUPONS_REDIS_URL=redis://%s/%d", opt.Addr, opt.DB), "COUPONS_REDIS_PREFIX=" + be.Prefix}, &be)
	})
	t.Run("embedded", func(t *testing.T) { crashBurst(t, bin, nil, nil) })
}

func crashBurst(t *testing.T, bin string, redisEnv []string, be *redistest.Backend) {
	dataDir := t.TempDir()
	addr := freeAddr(t)
	svc := &service{t: t, bin: bin, addr: addr, env: append([]string{
		"COUPONS_ADDR=" + addr, "COUPONS_DATA_DIR=" + dataDir,
		"COUPONS_JWT_SECRET=" + testSecret, "COUPONS_RESERVATION_TIMEOUT=1s", "COUPONS_RECONCILE_INTERVAL=300ms",
		"COUPONS_LOG_LEVEL=warn",
	}, redisEnv...)}
	svc.start()
	base := "http://" + addr
	admin := tok(t, "ops", "admin")
	now := time.Now().UTC()
	const stock = 400
	code, body, err := call("POST", base+"/v1/batches", admin, "", map[string]any{
		"name": "crash", "kind": "direct", "issuer": "platform", "amount_off": 500,
		"scope": map[string]any{"kind": "all"}, "total_stock": stock, "per_user_limit": 1,
		"claim_starts_at": now.Add(-time.Minute), "claim_ends_at": now.Add(time.Hour), "valid_days": 7, "audience": "public",
	})
	if err != nil || code != 201 {
		t.Fatalf("issue batch: %d %v %v", code, body, err)
	}
	batchID := body["id"].(string)

	// The burst: 600 shoppers, each with its own Idempotency-Key.
	type ack struct{ user, key, coupon string }
	var (
		mu    sync.Mutex
		acked []ack
		tried = map[string]string{} // user -> key
	)
	users := make(chan int)
	var wg sync.WaitGroup
	for range 24 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range users {
				u, k := fmt.Sprintf("shopper-%04d", i), fmt.Sprintf("key-%04d", i)
				mu.Lock()
				tried[u] = k
				mu.Unlock()
				code, body, err := call("POST", base+"/v1/batches/"+batchID+"/claim", tok(t, u, "user"), k, nil)
				if err == nil && code == 201 {
					mu.Lock()
					acked = append(acked, ack{u, k, body["id"].(string)})
					mu.Unlock()
				}
			}
		}()
	}
	killed := make(chan struct{})
	go func() {
		for {
			mu.Lock()
			n := len(acked)
			mu.Unlock()
			if n >= 150 {
				svc.kill()
				close(killed)
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()
	for i := range 600 {
		select {
		case users <- i:
		case <-killed:
		}
	}
	close(users)
	wg.Wait()
	<-killed
	t.Logf("acknowledged before the kill: %d of %d tried", len(acked), len(tried))

	svc.start()
	defer svc.stop()
	// Every acknowledged claim has its event.
	for _, a := range acked {
		code, body, err := call("GET", base+"/v1/coupons/"+a.coupon+"/events", admin, "", nil)
		if err != nil || code != 200 || !strings.Contains(fmt.Sprint(body), domain.EvCouponClaimed) {
			t.Fatalf("acknowledged coupon %s: %d %v %v", a.coupon, code, body, err)
		}
	}
	// Retrying every request with its key gives the acknowledged coupon back.
	ackByUser := map[string]string{}
	for _, a := range acked {
		ackByUser[a.user] = a.coupon
	}
	// Retry the acknowledged requests and half of the others; the rest are
	// left to the reconciler (real Redis) or were lost with the process
	// (embedded Redis, whose guard is rebuilt from the events).
	i := 0
	for u, k := range tried {
		i++
		if _, ok := ackByUser[u]; !ok && i%2 == 0 {
			continue
		}
		code, body, err := call("POST", base+"/v1/batches/"+batchID+"/claim", tok(t, u, "user"), k, nil)
		if err != nil {
			t.Fatal(err)
		}
		if c, ok := ackByUser[u]; ok && (code != 201 || body["id"] != c) {
			t.Fatalf("retry of acknowledged %s: %d %v, want 201 with %s", u, code, body, c)
		}
	}
	if be != nil {
		// Wait for the reconciler to settle every reservation.
		g, _ := redisguard.New(be.Client, be.Prefix)
		deadline := time.Now().Add(20 * time.Second)
		for {
			p, err := g.Pending(context.Background(), time.Now().Add(time.Hour), 1000)
			if err == nil && len(p) == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("reservations still pending: %v %v", p, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	code, body, err = call("GET", base+"/v1/batches/"+batchID, admin, "", nil)
	if err != nil || code != 200 {
		t.Fatalf("get batch: %d %v %v", code, body, err)
	}
	remaining := int64(body["remaining"].(float64))
	svc.stop()

	// Count the claims in the event store itself.
	bs, err := boltstore.Open(filepath.Join(dataDir, "events"), boltstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer bs.Close()
	reg := domain.NewRegistry()
	claims := 0
	perKey := map[string]int{}
	var after uint64
	for {
		recs, err := bs.ReadAll(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range recs {
			after = r.Position
			if r.Type != domain.EvCouponClaimed {
				continue
			}
			e, _ := reg.Unmarshal(r.Type, r.Data)
			c := e.(*domain.CouponClaimed)
			claims++
			perKey[c.UserID+"/"+c.IdempotencyKey]++
		}
		if len(recs) < 1000 {
			break
		}
	}
	if consumed := stock - remaining; consumed != int64(claims) {
		t.Fatalf("stock consumed in Redis %d != claimed events %d", consumed, claims)
	}
	for k, n := range perKey {
		if n > 1 {
			t.Fatalf("idempotency key %s produced %d coupons", k, n)
		}
	}
	if claims < len(acked) {
		t.Fatalf("%d claimed events < %d acknowledged", claims, len(acked))
	}
	t.Logf("claimed events %d, acknowledged %d, remaining %d", claims, len(acked), remaining)
}
