// Command loadgen drives a running couponsd over HTTP like a flash sale, then
// checks that nothing was oversold and that every derived view agrees with
// the claims it acknowledged.
//
// It mints one HS256 token per shopper (and an admin token) from the service's
// key, creates a batch whose claim window opens a little later, lets the
// shoppers browse until the open, then hammers the claim endpoint (mixed with
// reads) from the first millisecond of the sale on. Every second it prints a
// progress line; at the end a summary (claims/s accepted and attempted,
// reads/s, p50/p99/p99.9 latency and status codes per endpoint, time to sell
// out, the first second of the sale in 100 ms slices), a JSON result and a PNG
// plot. Then it checks the invariants and exits 1, loudly, if any breaks:
//
//   - accepted claims <= stock, and no shopper above the per-user limit
//     (accepted = distinct coupons acknowledged by a 201; a 201 with
//     Idempotent-Replayed: true is not a new claim, and must return the same
//     coupon as the first answer for that Idempotency-Key);
//   - GET /v1/batches/{id}: total_stock - remaining == accepted (stock consumed
//     in the guard) and claimed (ops projection) == accepted;
//   - GET /v1/users/{uid}/coupons?status=usable&min_position=P lists, for a
//     sample of shoppers (all of them when few), exactly the coupons of this
//     batch the shopper got 201s for;
//   - GET /v1/coupons/{id}/events holds coupon.claimed.v1 (this batch, this
//     shopper) for every accepted coupon, and GET /v1/reports/batches/{id}
//     counts exactly `accepted` claims;
//   - POST /v1/admin/verify (when available) reports no drift touching the
//     batch, its coupons or its shoppers.
//
// Usage:
//
//	go run ./cmd/loadgen [flags]
//	go run ./cmd/loadgen --check-only --batch ID [--in result.json | --user-prefix P --users N]
//
// Flags:
//
//	--url URL            the service (default http://127.0.0.1:8080)
//	--secret S           HS256 key (default $COUPONS_JWT_SECRET); else
//	--data-dir DIR       read the key from DIR/jwt.secret (embedded mode; default ./data)
//	--users N            shoppers, each with its own token (10000)
//	--user-prefix P      shopper ids are P000000..; default "lg-<run id>-"
//	--stock S            batch stock (5000)
//	--limit L            per_user_limit (1)
//	--open-in D          the claim window opens D after the batch is created (2s)
//	--conns C            concurrent connections = workers, keep-alive (256)
//	--duration D         length of the sale window measured (20s)
//	--requests N         also stop after N requests in the sale window (0: no
//	                     limit); with --duration 0 only this limit applies
//	--mix SPEC           request mix by weight (claim=70,me=20,product=5,quote=5);
//	                     names: claim, me, product, quote, claimable
//	--replay-pct P       % of claims that resend the shopper's previous
//	                     Idempotency-Key, like a retrying client (2)
//	--timeout D          per-request timeout (10s)
//	--out FILE           JSON result (result.json; "" to skip; with --check-only
//	                     only when given, and never over --in)
//	--plot FILE          PNG plot (result.png; "" to skip)
//	--check-only         only check the invariants of --batch
//	--batch ID           the batch to check (with --check-only)
//	--in FILE            the JSON result holding the acknowledged claims for
//	                     --check-only (default: --out); without it the claims
//	                     are read back from the usable view of --user-prefix0..N
//	--check-sample N     shoppers whose usable view is compared (2000; all when fewer)
//	--settle D           how long to wait for projections to catch up (20s)
//	--verify             also run POST /v1/admin/verify (true)
//	--seed N             random seed (0: from the clock)
//	--quiet              no progress lines
//	--server-pid PID     also report the service's CPU use during the sale
//	                     (from /proc, Linux): the generator and the service
//	                     usually share the machine
//
// Before the open, shoppers only browse (the read part of the mix); claims
// then start at the open on every connection. Requests to endpoints the
// server does not have (404 on product or quote) are counted, reported
// separately and never fail the run. The per-shopper claim rate limit
// (COUPONS_CLAIMS_PER_MINUTE) answers 429: start the service with 0 to
// measure the raw claim path.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/couponsd/couponsd/infra/httpapi"
)

// Config is one load run (or check) against a running service.
type Config struct {
	URL         string
	Secret      []byte
	Users       int
	UserPrefix  string // "" = "lg-<run id>-"
	Stock       int64
	Limit       int
	OpenIn      time.Duration
	Conns       int
	Duration    time.Duration
	Requests    int64 // > 0: stop after this many sale-window requests
	Mix         Mix
	ReplayPct   float64
	Timeout     time.Duration
	Out         string
	Plot        string
	CheckOnly   bool
	BatchID     string
	In          string
	CheckSample int
	Settle      time.Duration
	Verify      bool
	Seed        int64
	Quiet       bool
	ServerPID   int // > 0: report the server's CPU use too (Linux /proc)
}

// DefaultConfig returns the defaults of the flags.
func DefaultConfig() Config {
	mix, _ := ParseMix("claim=70,me=20,product=5,quote=5")
	return Config{
		URL: "http://127.0.0.1:8080", Users: 10000, Stock: 5000, Limit: 1, OpenIn: 2 * time.Second,
		Conns: 256, Duration: 20 * time.Second, Mix: mix, ReplayPct: 2, Timeout: 10 * time.Second,
		Out: "result.json", Plot: "result.png", CheckSample: 2000, Settle: 20 * time.Second, Verify: true,
	}
}

// ErrInvariant is returned (wrapped) by Run when an invariant does not hold.
var ErrInvariant = errors.New("invariant violated")

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	_, err = Run(ctx, cfg, os.Stdout)
	if err != nil {
		if errors.Is(err, ErrInvariant) {
			fmt.Fprintf(os.Stderr, "\n%s\n!!! LOADGEN: %v\n%s\n", strings.Repeat("!", 72), err, strings.Repeat("!", 72))
		} else {
			fmt.Fprintln(os.Stderr, "loadgen:", err)
		}
		os.Exit(1)
	}
}

func parseFlags(args []string, stderr io.Writer) (Config, error) {
	cfg := DefaultConfig()
	fs := flag.NewFlagSet("loadgen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.URL, "url", cfg.URL, "the service's base URL")
	secret := fs.String("secret", os.Getenv("COUPONS_JWT_SECRET"), "HS256 key (default $COUPONS_JWT_SECRET)")
	dataDir := fs.String("data-dir", "", "read the key from DIR/jwt.secret (embedded mode; default ./data when --secret is empty)")
	fs.IntVar(&cfg.Users, "users", cfg.Users, "shoppers (one token each)")
	fs.StringVar(&cfg.UserPrefix, "user-prefix", "", `shopper id prefix (default "lg-<run id>-")`)
	fs.Int64Var(&cfg.Stock, "stock", cfg.Stock, "batch stock")
	fs.IntVar(&cfg.Limit, "limit", cfg.Limit, "per_user_limit")
	fs.DurationVar(&cfg.OpenIn, "open-in", cfg.OpenIn, "the claim window opens this long after the batch is created")
	fs.IntVar(&cfg.Conns, "conns", cfg.Conns, "concurrent connections (workers)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "sale window measured")
	fs.Int64Var(&cfg.Requests, "requests", 0, "also stop after this many sale-window requests (0: no limit; --duration 0: only this limit)")
	mix := fs.String("mix", "claim=70,me=20,product=5,quote=5", "request mix by weight: claim, me, product, quote, claimable")
	fs.Float64Var(&cfg.ReplayPct, "replay-pct", cfg.ReplayPct, "% of claims resending the shopper's previous Idempotency-Key")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "per-request timeout")
	fs.StringVar(&cfg.Out, "out", cfg.Out, `JSON result file ("" to skip)`)
	fs.StringVar(&cfg.Plot, "plot", cfg.Plot, `PNG plot file ("" to skip)`)
	fs.BoolVar(&cfg.CheckOnly, "check-only", false, "only check the invariants of --batch")
	fs.StringVar(&cfg.BatchID, "batch", "", "batch id (with --check-only)")
	fs.StringVar(&cfg.In, "in", "", "JSON result with the acknowledged claims for --check-only (default: --out)")
	fs.IntVar(&cfg.CheckSample, "check-sample", cfg.CheckSample, "shoppers whose usable view is compared (all when fewer)")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "how long to wait for projections to catch up")
	fs.BoolVar(&cfg.Verify, "verify", cfg.Verify, "also run POST /v1/admin/verify")
	fs.Int64Var(&cfg.Seed, "seed", 0, "random seed (0: from the clock)")
	fs.BoolVar(&cfg.Quiet, "quiet", false, "no progress lines")
	fs.IntVar(&cfg.ServerPID, "server-pid", 0, "the service's pid, to report its CPU use during the sale (Linux)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if fs.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	m, err := ParseMix(*mix)
	if err != nil {
		return cfg, err
	}
	cfg.Mix = m
	if *secret == "" && *dataDir == "" {
		*dataDir = "./data"
	}
	key, err := loadSecret(*secret, *dataDir)
	if err != nil {
		return cfg, err
	}
	cfg.Secret = key
	if cfg.CheckOnly {
		outSet := false
		fs.Visit(func(f *flag.Flag) { outSet = outSet || f.Name == "out" })
		if cfg.In == "" {
			cfg.In = cfg.Out
		}
		if !outSet {
			cfg.Out = "" // a check writes a result only when asked to
		}
	}
	return cfg, cfg.validate()
}

// loadSecret returns the key given, or the one kept in dataDir (never
// creating one: a fresh key would not be the service's).
func loadSecret(secret, dataDir string) ([]byte, error) {
	if secret != "" {
		if len(secret) < httpapi.MinJWTSecretLen {
			return nil, fmt.Errorf("--secret must be at least %d bytes", httpapi.MinJWTSecretLen)
		}
		return []byte(secret), nil
	}
	if _, err := os.Stat(filepath.Join(dataDir, httpapi.SecretFileName)); err != nil {
		return nil, fmt.Errorf("no --secret, and no key in %s (%v): pass --secret or the service's --data-dir", dataDir, err)
	}
	return httpapi.LoadOrCreateSecret(dataDir)
}

func (c Config) validate() error {
	var errs []error
	if c.URL == "" {
		errs = append(errs, errors.New("--url is required"))
	}
	if len(c.Secret) < httpapi.MinJWTSecretLen {
		errs = append(errs, fmt.Errorf("the key must be at least %d bytes", httpapi.MinJWTSecretLen))
	}
	if c.CheckOnly {
		if c.BatchID == "" {
			errs = append(errs, errors.New("--check-only needs --batch"))
		}
		return errors.Join(errs...)
	}
	if c.Users < 1 {
		errs = append(errs, errors.New("--users must be at least 1"))
	}
	if c.Stock < 1 {
		errs = append(errs, errors.New("--stock must be at least 1"))
	}
	if c.Limit < 1 {
		errs = append(errs, errors.New("--limit must be at least 1"))
	}
	if c.Conns < 1 {
		errs = append(errs, errors.New("--conns must be at least 1"))
	}
	if c.Duration <= 0 && c.Requests <= 0 {
		errs = append(errs, errors.New("--duration or --requests must be positive"))
	}
	if c.OpenIn < 0 {
		errs = append(errs, errors.New("--open-in must not be negative"))
	}
	if c.ReplayPct < 0 || c.ReplayPct > 100 {
		errs = append(errs, errors.New("--replay-pct must be within 0..100"))
	}
	if c.Timeout <= 0 {
		errs = append(errs, errors.New("--timeout must be positive"))
	}
	if c.Mix.total() == 0 {
		errs = append(errs, errors.New("--mix has no weight"))
	}
	return errors.Join(errs...)
}

// Mix is the weight of each endpoint.
type Mix [numEndpoints]int

// ParseMix reads "claim=70,me=20,product=5,quote=5".
func ParseMix(s string) (Mix, error) {
	var m Mix
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, val, ok := strings.Cut(part, "=")
		if !ok {
			return m, fmt.Errorf("--mix: %q is not name=weight", part)
		}
		ep := -1
		for i, n := range endpointNames {
			if n == strings.TrimSpace(name) {
				ep = i
			}
		}
		if ep < 0 {
			return m, fmt.Errorf("--mix: unknown request %q (claim, me, product, quote, claimable)", name)
		}
		var w int
		if _, err := fmt.Sscanf(strings.TrimSpace(val), "%d", &w); err != nil || w < 0 {
			return m, fmt.Errorf("--mix: weight of %s must be a non-negative integer", name)
		}
		m[ep] = w
	}
	if m.total() == 0 {
		return m, errors.New("--mix has no weight")
	}
	return m, nil
}

func (m Mix) total() int {
	t := 0
	for _, w := range m {
		t += w
	}
	return t
}

func (m Mix) reads() Mix {
	r := m
	r[EpClaim] = 0
	return r
}

func (m Mix) String() string {
	var parts []string
	for i, w := range m {
		if w > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", endpointNames[i], w))
		}
	}
	return strings.Join(parts, ",")
}

// pick draws an endpoint by weight from r in [0, total).
func (m Mix) pick(r int) Endpoint {
	for i, w := range m {
		if r < w {
			return Endpoint(i)
		}
		r -= w
	}
	return EpClaim
}
