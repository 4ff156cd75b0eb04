package main

import (
	"bytes"
	"context"
	"errors"
	"image/png"
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

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/infra/redistest"
)

const testSecret = "loadgen-test-secret-0123456789-abcdef"

// syncBuffer collects the generator's output from its goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// realRedis returns the env that points the service at the real Redis (DB
// 15, a fresh prefix whose keys are deleted afterwards, never FLUSHALL), or
// nil when no server answers.
func realRedis(t *testing.T) []string {
	t.Helper()
	if os.Getenv("LOADGEN_TEST_EMBEDDED") == "1" {
		return nil
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379", DB: 15, DialTimeout: 300 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := rdb.Ping(ctx).Err(); err != nil {
		_ = rdb.Close()
		t.Logf("real Redis unreachable (%v): embedded", err)
		return nil
	}
	prefix := redistest.RandomPrefix(t)
	t.Cleanup(func() {
		defer rdb.Close()
		if err := redistest.DeletePrefix(context.Background(), rdb, prefix); err != nil {
			t.Errorf("redis cleanup of %s: %v", prefix, err)
		}
	})
	return []string{"COUPONS_REDIS_URL=redis://127.0.0.1:6379/15", "COUPONS_REDIS_PREFIX=" + prefix}
}

// startService builds and starts couponsd; it is stopped when the test ends.
func startService(t *testing.T) (url string, pid int) {
	t.Helper()
	bin := os.Getenv("LOADGEN_TEST_COUPONSD") // a prebuilt binary, to skip the build
	if bin == "" {
		bin = filepath.Join(t.TempDir(), "couponsd")
		t0 := time.Now()
		if out, err := exec.Command("go", "build", "-o", bin, "github.com/couponsd/couponsd/cmd/couponsd").CombinedOutput(); err != nil {
			t.Fatalf("build couponsd: %v\n%s", err, out)
		}
		t.Logf("built couponsd in %v", time.Since(t0).Round(time.Millisecond))
	}
	addr := freeAddr(t)
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(),
		"COUPONS_ADDR="+addr, "COUPONS_DATA_DIR="+t.TempDir(), "COUPONS_JWT_SECRET="+testSecret,
		"COUPONS_CLAIMS_PER_MINUTE=0", "COUPONS_LOG_LEVEL=warn")
	cmd.Env = append(cmd.Env, realRedis(t)...)
	logs := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("couponsd logs:\n%s", logs)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if r, err := http.Get("http://" + addr + "/healthz"); err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusOK {
				return "http://" + addr, cmd.Process.Pid
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("couponsd did not come up; logs:\n%s", logs)
	return "", 0
}

// TestRunAgainstService runs a short sale against the real binary and
// checks that the invariants hold, the files are written and --check-only
// agrees afterwards.
func TestRunAgainstService(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the service")
	}
	base, pid := startService(t)
	dir := t.TempDir()
	cfg := DefaultConfig()
	cfg.URL, cfg.Secret, cfg.ServerPID = base, []byte(testSecret), pid
	cfg.Users, cfg.Stock, cfg.Conns = 500, 300, 32
	cfg.OpenIn, cfg.Duration, cfg.Settle = time.Second, 3*time.Second, 10*time.Second
	cfg.Out, cfg.Plot = filepath.Join(dir, "result.json"), filepath.Join(dir, "result.png")
	out := &syncBuffer{}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	t0 := time.Now()
	res, err := Run(ctx, cfg, out)
	t.Logf("loadgen output (%v):\n%s", time.Since(t0).Round(time.Millisecond), out)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !res.OK || len(res.Invariants) < 8 {
		t.Fatalf("invariants: ok=%v %+v", res.OK, res.Invariants)
	}
	for _, c := range res.Invariants {
		if !c.OK {
			t.Errorf("invariant %s: %s", c.Name, c.Detail)
		}
	}
	c := res.Claims
	if c.Accepted < 1 || c.Accepted > cfg.Stock || c.Attempted < c.Accepted {
		t.Errorf("claims: %+v", c)
	}
	if len(res.Series) == 0 || len(res.Endpoints) == 0 || res.Endpoints[0].Name != "claim" {
		t.Errorf("series %d, endpoints %+v", len(res.Series), res.Endpoints)
	}

	// The files.
	back, err := readResult(cfg.Out)
	if err != nil || back.BatchID != res.BatchID || int64(len(back.Acknowledged)) != c.Accepted {
		t.Fatalf("result file: %v %+v", err, back)
	}
	f, err := os.Open(cfg.Plot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(f)
	f.Close()
	if err != nil || img.Bounds().Dx() < 800 {
		t.Fatalf("plot: %v", err)
	}

	// --check-only reruns the invariants from the result file...
	t0 = time.Now()
	chk := cfg
	chk.CheckOnly, chk.BatchID, chk.In, chk.Out, chk.Verify = true, res.BatchID, cfg.Out, "", false
	chkOut := &syncBuffer{}
	if _, err := Run(ctx, chk, chkOut); err != nil {
		t.Fatalf("check-only: %v\n%s", err, chkOut)
	}
	// ... or from the usable view alone.
	chk.In, chk.UserPrefix, chk.Users = "", res.UserPrefix, res.Users
	chkOut = &syncBuffer{}
	r2, err := Run(ctx, chk, chkOut)
	if err != nil {
		t.Fatalf("check-only from the view: %v\n%s", err, chkOut)
	}
	if r2.Claims.Accepted != c.Accepted {
		t.Fatalf("check-only read %d claims from the view, the run acknowledged %d", r2.Claims.Accepted, c.Accepted)
	}

	t.Logf("check-only twice: %v", time.Since(t0).Round(time.Millisecond))

	// A wrong claim in the record is caught loudly.
	back.Acknowledged = append(back.Acknowledged, Ack{User: back.Acknowledged[0].User, Coupon: "no-such-coupon", Key: "x"})
	bad := filepath.Join(dir, "bad.json")
	if err := writeJSON(bad, back); err != nil {
		t.Fatal(err)
	}
	chk.In, chk.Settle = bad, 500*time.Millisecond
	chkOut = &syncBuffer{}
	if _, err := Run(ctx, chk, chkOut); !errors.Is(err, ErrInvariant) {
		t.Fatalf("check-only with a forged claim: %v, want ErrInvariant\n%s", err, chkOut)
	}
	want := []string{"[FAIL] per-user limit", "[FAIL] stock consumed", "[FAIL] claim events", "[FAIL] report claimed"}
	if c.Accepted == cfg.Stock {
		want = append(want, "[FAIL] accepted <= stock")
	}
	for _, w := range want {
		if !strings.Contains(chkOut.String(), w) {
			t.Errorf("forged claim: output lacks %q:\n%s", w, chkOut)
		}
	}
}

func TestHistogram(t *testing.T) {
	var h Histogram
	for i := 1; i <= 10000; i++ {
		h.Record(time.Duration(i) * time.Microsecond)
	}
	for _, tc := range []struct {
		q    float64
		want uint64
	}{{0.5, 5000}, {0.99, 9900}, {0.999, 9990}, {1, 10000}} {
		got := h.Quantile(tc.q)
		if d := float64(got) - float64(tc.want); d < 0 || d > float64(tc.want)*0.02 {
			t.Errorf("q%v = %d, want %d within 2%%", tc.q, got, tc.want)
		}
	}
	for v := uint64(0); v < 1<<20; v = v*3/2 + 1 {
		if i := histIndex(v); histValue(i) < v || (i > 0 && histValue(i-1) >= v) {
			t.Fatalf("value %d: bucket %d [%d, %d]", v, i, histValue(i-1)+1, histValue(i))
		}
	}
}

func TestParseMix(t *testing.T) {
	m, err := ParseMix("claim=70, me=20,product=5,quote=5")
	if err != nil || m[EpClaim] != 70 || m[EpMe] != 20 || m.total() != 100 || m.reads().total() != 30 {
		t.Fatalf("%v %v", m, err)
	}
	counts := map[Endpoint]int{}
	for r := range m.total() {
		counts[m.pick(r)]++
	}
	if counts[EpClaim] != 70 || counts[EpQuote] != 5 {
		t.Fatalf("pick: %v", counts)
	}
	for _, bad := range []string{"", "claim", "claim=-1", "buy=3", "claim=0"} {
		if _, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) accepted", bad)
		}
	}
}

func TestFontCoversLabels(t *testing.T) {
	labels := "0123456789 ABCDEFGHIJKLMNOPQRSTUVWXYZ abcdefghijklmnopqrstuvwxyz .,-+/():=%_<>"
	for _, r := range strings.ToUpper(labels) {
		if _, ok := glyphs[r]; !ok && r != ' ' {
			t.Errorf("no glyph for %q", r)
		}
	}
	for r, g := range glyphs {
		for _, row := range g {
			if len(row) != glyphW {
				t.Errorf("glyph %q: row %q", r, row)
			}
		}
	}
}

func TestWritePlot(t *testing.T) {
	sold := 1.25
	for _, n := range []int{1, 3, 40} {
		res := &Result{Users: 10, Stock: 5, Limit: 1, Conns: 2, Mix: "claim=1", DurationS: float64(n)}
		res.Claims.SoldOutAfterS = &sold
		for i := -2; i < n; i++ {
			s := SecondResult{T: i, Requests: 100, P50Ms: 2, P99Ms: 9, P99ReadMs: 8}
			if i >= 0 {
				s.Claims, s.Accepted, s.P99ClaimMs = 60, 3, 12
			}
			res.Series = append(res.Series, s)
		}
		path := filepath.Join(t.TempDir(), "p.png")
		if err := writePlot(path, res); err != nil {
			t.Fatal(err)
		}
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		_, err = png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
	}
}
