package redisx_test

// Redis Cluster key rules, checked for every adapter of the service at once:
// a Lua script may only touch the keys it is given in KEYS, and all of them
// must hash to one cluster slot; so must every key of a MULTI/EXEC block.
// Redis Cluster refuses anything else with CROSSSLOT, but only when the keys
// happen to land on different slots, which a test on a standalone Redis or a
// few friendly ids would never show. So the adapters are driven through
// their operations, with ids full of braces, while a go-redis hook checks
// every EVAL/EVALSHA and MULTI block against HASH_SLOT of the Redis Cluster
// specification, and the script sources seen on the wire are checked to
// address keys through KEYS only.

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"github.com/couponsd/couponsd/infra/redistest"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
	"github.com/couponsd/couponsd/infra/redisguard"
	"github.com/couponsd/couponsd/infra/redisidem"
	"github.com/couponsd/couponsd/infra/redisjobs"
	"github.com/couponsd/couponsd/infra/redislimit"
	"github.com/couponsd/couponsd/infra/redisops"
	"github.com/couponsd/couponsd/infra/redisreminders"
	"github.com/couponsd/couponsd/infra/redisview"
	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
)

// awkward are ids that try to break the hash tags: braces of their own,
// separators, non-ASCII, long.
var awkward = []string{"b1", "2024-black-friday", "weird}id", "{x}", "a{b}c", "}{", "{", "}", "ünïcode", "x:y:z", "tab\tand space", strings.Repeat("z", 200)}

func randomID(r *rand.Rand) string {
	const alphabet = "ab{}:-_ü0"
	n := 1 + r.IntN(12)
	var b strings.Builder
	for range n {
		i := r.IntN(len(alphabet))
		if alphabet[i] == 0xc3 || alphabet[i] == 0xbc { // keep ü whole
			b.WriteString("ü")
			continue
		}
		b.WriteByte(alphabet[i])
	}
	return b.String()
}

// TestKeyFamiliesShareOneSlot checks the key families the adapters build
// for one batch, one shopper or the grant jobs: each family is one slot,
// whatever the id.
func TestKeyFamiliesShareOneSlot(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	ids := slices.Clone(awkward)
	for range 2000 {
		ids = append(ids, randomID(r))
	}
	rdb := redis.NewClient(&redis.Options{Addr: "127.0.0.1:0"}) // never dialled
	defer rdb.Close()
	for _, prefix := range []string{"couponsd:", "test:1a2b3c:", "p"} {
		g, err := redisguard.New(rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		view, err := redisview.New(rdb, prefix+"view:g7:")
		if err != nil {
			t.Fatal(err)
		}
		ops, err := redisops.New(rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		jobs, err := redisjobs.New(rdb, prefix)
		if err != nil {
			t.Fatal(err)
		}
		families := map[string][]string{"grant jobs set and checkpoint": {jobs.ActiveKey(), jobs.CheckpointKey()}}
		for _, id := range ids {
			families["guard keys of batch "+id] = g.Keys(id).All()
			families["view keys of shopper "+id] = view.UserKeys(id)
			families["ops keys of batch "+id] = ops.BatchKeys(id)
		}
		for name, keys := range families {
			for _, k := range keys {
				if !strings.HasPrefix(k, prefix) {
					t.Errorf("%s: key %q lacks the prefix %q", name, k, prefix)
				}
				if redistest.KeySlot(k) != redistest.KeySlot(keys[0]) {
					t.Errorf("prefix %q, %s: %q in slot %d, %q in slot %d", prefix, name, keys[0], redistest.KeySlot(keys[0]), k, redistest.KeySlot(k))
					break
				}
			}
		}
	}
}

// scriptCount is how many distinct Lua scripts the service has: guard 6
// (sync, reserve, confirm, release, reserve grants, confirm many), view 2
// (apply, batch), ops 1 (apply), grant jobs 3 (renew, release lease, shard
// done), reminders 2 (apply, drop), idempotency 2 (complete, abandon),
// claim rate limit 1 (hit).
const scriptCount = 17

// slotChecker is a go-redis hook checking every script call and MULTI block
// for keys of more than one slot, and recording the script sources that go
// over the wire (EVAL, SCRIPT LOAD) and how each script was called.
type slotChecker struct {
	mu         sync.Mutex
	violations []string
	sources    map[string]string // sha1 -> source
	calls      map[string]int    // sha1 -> calls with at least one key
	minKeys    map[string]int    // sha1 -> fewest keys a call passed
	multis     int               // MULTI blocks with keys
	maxKeys    int               // most keys of one checked call or block
}

func newSlotChecker() *slotChecker {
	return &slotChecker{sources: map[string]string{}, calls: map[string]int{}, minKeys: map[string]int{}}
}

func (c *slotChecker) DialHook(next redis.DialHook) redis.DialHook {
	return func(ctx context.Context, network, addr string) (net.Conn, error) { return next(ctx, network, addr) }
}

func (c *slotChecker) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		c.command(cmd)
		return next(ctx, cmd)
	}
}

func (c *slotChecker) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if len(cmds) > 0 && cmds[0].Name() == "multi" {
			var keys []string
			var names []string
			for _, cmd := range cmds {
				c.command(cmd)
				k := cmdKeys(cmd)
				keys = append(keys, k...)
				if len(k) > 0 {
					names = append(names, cmd.Name())
				}
			}
			if len(keys) > 0 {
				c.mu.Lock()
				c.multis++
				c.mu.Unlock()
				c.check("MULTI block of "+strings.Join(names, ","), keys)
			}
		} else {
			for _, cmd := range cmds {
				c.command(cmd)
			}
		}
		return next(ctx, cmds)
	}
}

func arg(args []any, i int) string {
	if i >= len(args) {
		return ""
	}
	switch v := args[i].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	}
	return fmt.Sprint(args[i])
}

func sha(src string) string {
	h := sha1.Sum([]byte(src))
	return hex.EncodeToString(h[:])
}

// command records script sources and checks script calls.
func (c *slotChecker) command(cmd redis.Cmder) {
	args := cmd.Args()
	switch cmd.Name() {
	case "script":
		if strings.EqualFold(arg(args, 1), "load") {
			src := arg(args, 2)
			c.mu.Lock()
			c.sources[sha(src)] = src
			c.mu.Unlock()
		}
	case "eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro":
		id := arg(args, 1)
		if strings.HasPrefix(cmd.Name(), "eval") && !strings.HasPrefix(cmd.Name(), "evalsha") {
			id = sha(id)
			c.mu.Lock()
			c.sources[id] = arg(args, 1)
			c.mu.Unlock()
		}
		keys := cmdKeys(cmd)
		if len(keys) == 0 {
			return
		}
		c.mu.Lock()
		c.calls[id]++
		if n, ok := c.minKeys[id]; !ok || len(keys) < n {
			c.minKeys[id] = len(keys)
		}
		c.mu.Unlock()
		c.check(cmd.Name()+" "+id[:min(8, len(id))], keys)
	}
}

func (c *slotChecker) check(what string, keys []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.maxKeys = max(c.maxKeys, len(keys))
	for _, k := range keys[1:] {
		if redistest.KeySlot(k) != redistest.KeySlot(keys[0]) {
			if len(c.violations) < 20 {
				c.violations = append(c.violations, fmt.Sprintf("%s spans slots: %q (slot %d) and %q (slot %d)",
					what, keys[0], redistest.KeySlot(keys[0]), k, redistest.KeySlot(k)))
			}
			return
		}
	}
}

// cmdKeys returns the keys of the commands the adapters send (nil for
// commands without keys).
func cmdKeys(cmd redis.Cmder) []string {
	args := cmd.Args()
	switch cmd.Name() {
	case "eval", "eval_ro", "evalsha", "evalsha_ro", "fcall", "fcall_ro":
		n, _ := strconv.Atoi(arg(args, 2))
		keys := make([]string, 0, n)
		for i := 3; i < 3+n && i < len(args); i++ {
			keys = append(keys, arg(args, i))
		}
		return keys
	case "del", "unlink", "exists", "mget", "touch", "watch":
		keys := make([]string, 0, len(args)-1)
		for i := 1; i < len(args); i++ {
			keys = append(keys, arg(args, i))
		}
		return keys
	case "multi", "exec", "discard", "ping", "script", "hello", "client", "select", "auth", "info",
		"scan", "cluster", "command", "readonly", "memory", "dbsize", "flushdb", "flushall":
		return nil
	}
	if len(args) > 1 {
		return []string{arg(args, 1)}
	}
	return nil
}

var (
	// redisCall finds redis.call/pcall with a literal command name and
	// captures the first argument after it.
	redisCall = regexp.MustCompile(`redis\.p?call\(\s*'([A-Za-z_]+)'\s*(?:,\s*([^,)]+))?`)
	keysIndex = regexp.MustCompile(`^KEYS\[(\d+)\]$`)
	anyKeys   = regexp.MustCompile(`KEYS\[(\d+)\]`)
)

// scriptKeyRule checks a script source: every redis.call addresses a key
// given in KEYS (all commands the service's scripts use take their key
// first), and no KEYS index is beyond what the calls pass. It returns the
// highest KEYS index used.
func scriptKeyRule(src string, minKeys int) (highest int, problems []string) {
	calls := redisCall.FindAllStringSubmatch(src, -1)
	if len(calls) == 0 {
		problems = append(problems, "no redis.call with a literal command name")
	}
	for _, m := range calls {
		if !keysIndex.MatchString(strings.TrimSpace(m[2])) {
			problems = append(problems, fmt.Sprintf("redis.call('%s', %s ...) addresses a key not taken from KEYS", m[1], strings.TrimSpace(m[2])))
		}
	}
	for _, m := range anyKeys.FindAllStringSubmatch(src, -1) {
		n, _ := strconv.Atoi(m[1])
		highest = max(highest, n)
	}
	if highest > minKeys {
		problems = append(problems, fmt.Sprintf("uses KEYS[%d] but a call passed %d keys", highest, minKeys))
	}
	return highest, problems
}

func TestScriptKeyRuleCatchesStrayKeys(t *testing.T) {
	for src, bad := range map[string]bool{
		"return redis.call('GET', KEYS[1])":                             false,
		"redis.call('HSET', KEYS[2], ARGV[1], 1) return 1":              false,
		"return redis.call('GET', 'couponsd:batches')":                  true,
		"return redis.call('GET', ARGV[1])":                             true,
		"local k = KEYS[1] .. ':x' return redis.call('GET', k)":         true,
		"redis.pcall('DEL', KEYS[1]) return redis.call('GET', KEYS[3])": true, // KEYS[3] of 2
		"return redis.call('SET', KEYS[1], redis.call('GET', KEYS[2]))": false,
	} {
		_, problems := scriptKeyRule(src, 2)
		if (len(problems) > 0) != bad {
			t.Errorf("%q: problems %v, want bad=%v", src, problems, bad)
		}
	}
}

// TestEveryScriptAndTransactionStaysInOneSlot drives every Redis adapter of
// the service through its operations, with awkward ids, on an embedded
// miniredis (so every script reaches the wire as source at least once), and
// on the Redis Cluster named by COUPONS_TEST_REDIS_CLUSTER when it is set
// (where Redis itself refuses CROSSSLOT). Then: no script call and no MULTI
// block spanned slots, every script of the service was called with keys,
// and every script addresses keys only through KEYS.
func TestEveryScriptAndTransactionStaysInOneSlot(t *testing.T) {
	t.Run("miniredis", func(t *testing.T) {
		conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		sc := newSlotChecker()
		conn.Client.AddHook(sc)
		driveAdapters(t, conn.Client, conn.Prefix)
		sc.report(t)

		sc.mu.Lock()
		defer sc.mu.Unlock()
		shas := make([]string, 0, len(sc.sources))
		for id := range sc.sources {
			shas = append(shas, id)
		}
		sort.Strings(shas)
		for _, id := range shas {
			src := sc.sources[id]
			first := strings.TrimSpace(strings.SplitN(strings.TrimSpace(src), "\n", 2)[0])
			if sc.calls[id] == 0 {
				t.Errorf("script %s (%q...) was loaded but never called with keys: drive it in driveAdapters", id[:8], first)
				continue
			}
			highest, problems := scriptKeyRule(src, sc.minKeys[id])
			for _, p := range problems {
				t.Errorf("script %s (%q...): %s", id[:8], first, p)
			}
			t.Logf("script %s: %d calls, KEYS[1..%d], %q...", id[:8], sc.calls[id], highest, first)
		}
		for id := range sc.calls {
			if _, ok := sc.sources[id]; !ok {
				t.Errorf("script %s was called but its source never went over the wire", id[:8])
			}
		}
		if len(sc.sources) != scriptCount {
			t.Errorf("saw %d distinct scripts, want %d: a script was added or removed; drive it in driveAdapters and update scriptCount", len(sc.sources), scriptCount)
		}
		// Every Lua source in the module's code was seen on the wire.
		inCode := luaSourcesInCode(t)
		t.Logf("%d Lua scripts in the code", len(inCode))
		for id, where := range inCode {
			if _, ok := sc.sources[id]; !ok {
				t.Errorf("the Lua script at %s never ran: drive its adapter in driveAdapters", where)
			}
		}
		if sc.multis == 0 {
			t.Error("no MULTI block was checked")
		}
	})
	t.Run("cluster", func(t *testing.T) {
		raw := strings.TrimSpace(os.Getenv("COUPONS_TEST_REDIS_CLUSTER"))
		if raw == "" {
			t.Skip("COUPONS_TEST_REDIS_CLUSTER not set")
		}
		if !strings.Contains(raw, "://") {
			raw = "redis-cluster://" + raw
		}
		b := make([]byte, 6)
		for i := range b {
			b[i] = "0123456789abcdef"[rand.IntN(16)]
		}
		prefix := "test:" + string(b) + ":"
		conn, err := redisx.Open(context.Background(), redisx.Config{URL: raw, Prefix: prefix}, nil)
		if err != nil {
			t.Fatalf("COUPONS_TEST_REDIS_CLUSTER: %v", err)
		}
		defer conn.Close()
		defer func() {
			if err := redisx.DeletePrefix(context.Background(), conn.Client, prefix); err != nil {
				t.Errorf("cleanup: %v", err)
			}
		}()
		// The slot function agrees with the cluster's own.
		r := rand.New(rand.NewPCG(3, 4))
		samples := []string{"foo", "{user1000}.following", "foo{}{bar}", "foo{{bar}}zap"}
		for _, id := range awkward {
			samples = append(samples, prefix+"{b:"+id+"}:meta", prefix+"view:g0:{u:"+id+"}:r")
		}
		for range 200 {
			samples = append(samples, prefix+"{b:"+randomID(r)+"}:stock")
		}
		for _, k := range samples {
			got, err := conn.Client.ClusterKeySlot(context.Background(), k).Result()
			if err != nil {
				t.Fatalf("CLUSTER KEYSLOT %q: %v", k, err)
			}
			if int(got) != redistest.KeySlot(k) {
				t.Errorf("CLUSTER KEYSLOT %q = %d, keySlot = %d", k, got, redistest.KeySlot(k))
			}
		}
		sc := newSlotChecker()
		conn.Client.AddHook(sc)
		driveAdapters(t, conn.Client, prefix)
		sc.report(t)
	})
}

// luaSourcesInCode finds the Lua scripts of the module's (non-test) Go
// code: raw string literals calling redis.call, by sha1, with where they are.
func luaSourcesInCode(t *testing.T) map[string]string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	fset := token.NewFileSet()
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if name := d.Name(); path != root && (strings.HasPrefix(name, ".") || name == "vendor" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return nil
		}
		f, err := parser.ParseFile(fset, path, nil, parser.SkipObjectResolution)
		if err != nil {
			return err
		}
		ast.Inspect(f, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING || !strings.HasPrefix(lit.Value, "`") {
				return true
			}
			src, err := strconv.Unquote(lit.Value)
			if err == nil && strings.Contains(src, "redis.call(") {
				rel, _ := filepath.Rel(root, fset.Position(lit.Pos()).Filename)
				out[sha(src)] = fmt.Sprintf("%s:%d", rel, fset.Position(lit.Pos()).Line)
			}
			return true
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no Lua script found in the code: the scan is broken")
	}
	return out
}

func (c *slotChecker) report(t *testing.T) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, v := range c.violations {
		t.Error(v)
	}
	t.Logf("%d script ids, %d MULTI blocks, up to %d keys in one call or block", len(c.calls), c.multis, c.maxKeys)
}

// driveAdapters runs every operation of the Redis adapters once or more.
// Operations must succeed: a CROSSSLOT refusal on a real cluster fails here.
func driveAdapters(t *testing.T, rdb redis.UniversalClient, prefix string) {
	t.Helper()
	ctx := context.Background()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	now := time.Now().UTC().Truncate(time.Millisecond)
	batches := awkward
	users := []string{"alice", "u{1}", "}x{", "a}b", "{bob}", "ünï"}

	// ---- stock guard ----
	g, err := redisguard.New(rdb, prefix, redisguard.RequireInitialized()) // as the service runs it
	must("redisguard.New", err)
	must("guard load", g.Load(ctx))
	first := commands.GuardBatch{BatchID: batches[0], Version: 1, RuleVersion: 1, Public: true, PerUserLimit: 3,
		ClaimStartsAt: now.Add(-time.Hour), ClaimEndsAt: now.Add(time.Hour), TotalStock: 10}
	if err := g.SyncBatch(ctx, first); !errors.Is(err, commands.ErrGuardEmpty) { // an empty guard creates no batch
		t.Fatalf("sync on an empty strict guard = %v, want ErrGuardEmpty", err)
	}
	must("initial rebuild", g.Rebuild(ctx, nil))
	for i, id := range batches {
		b := commands.GuardBatch{BatchID: id, Version: 1, RuleVersion: 1, Public: true, PerUserLimit: 3,
			ClaimStartsAt: now.Add(-time.Hour), ClaimEndsAt: now.Add(time.Hour), TotalStock: 10}
		must("sync "+id, g.SyncBatch(ctx, b))
		b.Version, b.TotalStock = 2, 12 // a grown total
		must("resync "+id, g.SyncBatch(ctx, b))
		for j, u := range users {
			c := fmt.Sprintf("c-%d-%d", i, j)
			_, err := g.Reserve(ctx, id, u, "key{"+u+"}", c, now)
			must("reserve", err)
			if _, err := g.Reserve(ctx, id, u, "key{"+u+"}", c+"-again", now); err != nil { // a duplicate
				must("reserve again", err)
			}
			switch j % 3 {
			case 0:
				must("confirm", g.Confirm(ctx, id, c))
			case 1:
				must("release", g.Release(ctx, id, c))
			}
		}
		must("grant", g.ReserveGrant(ctx, id, "granted{1}", fmt.Sprintf("g-%d", i), now))
		_, err := g.ReserveGrants(ctx, id, []string{"bulk{1}", "}bulk{"}, []string{fmt.Sprintf("gb-%d-1", i), fmt.Sprintf("gb-%d-2", i)}, now.UnixMilli())
		must("reserve grants", err)
		must("confirm many", g.ConfirmMany(ctx, id, []string{fmt.Sprintf("gb-%d-1", i), fmt.Sprintf("gb-%d-2", i)}))
		_, err = g.Remaining(ctx, id)
		must("remaining", err)
	}
	_, err = g.Pending(ctx, now.Add(time.Hour), 0)
	must("pending", err)
	_, err = g.UserCounts(ctx, batches, "u{1}")
	must("user counts", err)
	ids, err := g.BatchIDs(ctx)
	must("batch ids", err)
	_, err = g.InspectBatches(ctx, ids)
	must("inspect", err)
	var states []commands.GuardBatchState
	for _, id := range batches[1:] { // the first batch is dropped by the rebuild
		states = append(states, commands.GuardBatchState{
			Batch:    commands.GuardBatch{BatchID: id, Version: 3, RuleVersion: 1, Public: true, PerUserLimit: 3, ClaimStartsAt: now.Add(-time.Hour), ClaimEndsAt: now.Add(time.Hour), TotalStock: 12},
			Consumed: 2, PerUser: map[string]int64{"alice": 1, "u{1}": 1}, Idem: map[string]string{"alice\x00k": "c1", "u{1}\x00k}": "c2"},
		})
	}
	must("rebuild", g.Rebuild(ctx, states))
	_, err = g.Initialized(ctx)
	must("initialized", err)

	// ---- usable view (live generations) ----
	view, err := redisview.OpenLive(ctx, rdb, prefix)
	must("redisview.OpenLive", err)
	ops := func(rev uint64) []projections.ViewOp {
		var out []projections.ViewOp
		for i, u := range users {
			c := fmt.Sprintf("v-%d", i)
			terms := projections.ViewTerms{BatchID: batches[i%len(batches)], Kind: "threshold", Issuer: "platform", Threshold: 1000, AmountOff: 100,
				ValidFrom: now.UnixMilli(), ValidUntil: now.Add(time.Hour).UnixMilli(), ObtainedAt: now.UnixMilli()}
			out = append(out,
				projections.ViewOp{UserID: u, CouponID: c, Version: rev, Kind: projections.ViewPut, Terms: terms},
				projections.ViewOp{UserID: u, CouponID: c, Version: rev + 1, Kind: projections.ViewLock, OrderID: "o|{1}", Hold: now.Add(time.Minute)},
				projections.ViewOp{UserID: u, CouponID: c, Version: rev + 2, Kind: projections.ViewUnlock},
				projections.ViewOp{UserID: u, CouponID: c + "-used", Version: rev, Kind: projections.ViewPut, Terms: terms},
				projections.ViewOp{UserID: u, CouponID: c + "-used", Version: rev + 1, Kind: projections.ViewRemove},
				projections.ViewOp{UserID: u, CouponID: c + "-ret", Version: rev, Kind: projections.ViewTouch},
			)
		}
		return out
	}
	single := projections.ViewOp{UserID: "solo{x}", CouponID: "s-1", Version: 0, Kind: projections.ViewPut,
		Terms: projections.ViewTerms{BatchID: "b1", ObtainedAt: now.UnixMilli()}}
	must("apply one", view.ApplyView(ctx, []projections.ViewOp{single}))
	must("apply many", view.ApplyView(ctx, ops(1)))
	must("apply again", view.ApplyView(ctx, ops(1))) // stale: skipped
	for _, id := range batches {
		must("put batch", view.PutBatch(ctx, projections.BatchEntry{BatchID: id, Version: 1, TotalStock: 10}))
	}
	must("save checkpoint", view.SaveCheckpoint(ctx, 42))
	_, err = view.Checkpoint(ctx)
	must("checkpoint", err)
	for _, u := range users {
		_, err = view.List(ctx, u, "", "", 2)
		must("list", err)
		_, err = view.All(ctx, u)
		must("all", err)
	}
	_, err = view.Batches(ctx)
	must("batches", err)
	vusers, err := view.Users(ctx)
	must("users", err)
	_, err = view.InspectUsers(ctx, vusers)
	must("inspect users", err)
	_, err = view.InspectCatalog(ctx)
	must("inspect catalog", err)
	next, commit, _, err := view.NextGeneration(ctx)
	must("next generation", err)
	must("rebuild apply", next.ApplyView(ctx, ops(1)))
	must("rebuild apply one", next.ApplyView(ctx, []projections.ViewOp{single}))
	must("rebuild put batch", next.PutBatch(ctx, projections.BatchEntry{BatchID: "}{", Version: 1}))
	must("commit generation", commit(ctx))
	must("apply after flip", view.ApplyView(ctx, ops(10)))

	// ---- operations view ----
	opsStore, err := redisops.New(rdb, prefix)
	must("redisops.New", err)
	var changes []projections.OpsChange
	for i, id := range batches {
		c := fmt.Sprintf("o-%d", i)
		changes = append(changes,
			projections.OpsChange{BatchID: id, CouponID: c, Revision: 0, Claimed: 1, SetExpiry: true, ValidUntil: now.Add(time.Hour)},
			projections.OpsChange{BatchID: id, CouponID: c, Revision: 1, HoldUntil: now.Add(-time.Minute), ClearExpiry: true},
			projections.OpsChange{BatchID: id, CouponID: c, Revision: 2, ClearHold: true, SetExpiry: true},
			projections.OpsChange{BatchID: id, CouponID: c + "-r", Revision: 0, Claimed: 1, SetExpiry: true, ValidUntil: now.Add(-time.Hour)},
			projections.OpsChange{BatchID: id, CouponID: c + "-r", Revision: 1, Redeemed: 1, ClearExpiry: true},
			projections.OpsChange{BatchID: id, CouponID: c + "-r", Revision: 2, Redeemed: -1, Returned: 1, SetExpiry: true},
		)
	}
	must("ops apply all", opsStore.ApplyAll(ctx, changes))
	must("ops apply one", opsStore.Apply(ctx, projections.OpsChange{BatchID: "{x}", CouponID: "o-x", Revision: 5, Expired: 1, ClearExpiry: true}))
	must("ops checkpoint", opsStore.SaveCheckpoint(ctx, 7))
	_, err = opsStore.Checkpoint(ctx)
	must("ops checkpoint read", err)
	for _, id := range batches {
		_, err = opsStore.BatchCounts(ctx, id)
		must("batch counts", err)
	}
	_, err = opsStore.DueHolds(ctx, now, 100)
	must("due holds", err)
	_, err = opsStore.DueExpiries(ctx, now, 100)
	must("due expiries", err)
	oids, err := opsStore.BatchIDs(ctx)
	must("ops batch ids", err)
	_, err = opsStore.InspectBatches(ctx, oids)
	must("ops inspect", err)
	cp, err := redisops.NewCheckpoint(rdb, prefix+"kafka-forwarder:checkpoint")
	must("checkpoint", err)
	must("forwarder checkpoint", cp.SaveCheckpoint(ctx, 9))

	// ---- grant jobs and leases ----
	jobs, err := redisjobs.New(rdb, prefix)
	must("redisjobs.New", err)
	for i, id := range []string{"job-1", "j{1}", "}j{"} {
		must("job active", jobs.MarkGrantJobActive(ctx, id, uint64(10+i)))
		owner := "owner{" + id + "}"
		ok, err := jobs.TryLease(ctx, id, owner, time.Minute)
		must("try lease", err)
		if !ok {
			t.Fatalf("lease %s not taken", id)
		}
		ok, err = jobs.RenewLease(ctx, id, owner, time.Minute)
		must("renew lease", err)
		if !ok {
			t.Fatalf("lease %s not renewed", id)
		}
		_, err = jobs.LeaseOwner(ctx, id)
		must("lease owner", err)
		must("release lease", jobs.ReleaseLease(ctx, id, owner))
		_, err = jobs.RenewLease(ctx, id, owner, time.Minute) // not held any more
		must("renew released lease", err)
		must("job finished", jobs.MarkGrantJobFinished(ctx, id, uint64(20+i)))
	}
	_, err = jobs.ActiveGrantJobs(ctx)
	must("active jobs", err)
	for i, id := range batches { // job ids as awkward as batch ids
		must("shard done", jobs.MarkGrantShardDone(ctx, id, i, domain.GrantCounts{Total: 3, Granted: 2, Skipped: 1}, uint64(40+i)))
		_, err = jobs.DoneShards(ctx, id)
		must("done shards", err)
		_, _, err = jobs.GrantJobProgress(ctx, id)
		must("job progress", err)
	}

	// ---- reminder indexes ----
	rem, err := redisreminders.New(rdb, prefix)
	must("redisreminders.New", err)
	var rcs []projections.ReminderChange
	for i, id := range batches {
		c := fmt.Sprintf("r-%d{x}", i)
		rcs = append(rcs,
			projections.ReminderChange{Kind: projections.ExpiryTrack, Stream: "coupon-" + c, Revision: 0, Position: uint64(100 + 10*i), CouponID: c, ValidUntil: now.Add(time.Hour)},
			projections.ReminderChange{Kind: projections.ExpiryUntrack, Stream: "coupon-" + c, Revision: 1, Position: uint64(101 + 10*i), CouponID: c},
			projections.ReminderChange{Kind: projections.ExpiryRetrack, Stream: "coupon-" + c, Revision: 2, Position: uint64(102 + 10*i), CouponID: c},
			projections.ReminderChange{Kind: projections.OpeningBatch, Stream: "batch-" + id, Revision: 0, Position: uint64(103 + 10*i), BatchID: id, OpensAt: now.Add(-time.Minute)},
			projections.ReminderChange{Kind: projections.OpeningSubscribed, Stream: "reminder-" + id + "-u{1}", Revision: 0, Position: uint64(104 + 10*i), BatchID: id, UserID: "u{1}", OpensAt: now.Add(-time.Minute)},
			projections.ReminderChange{Kind: projections.ExpiryForget, Stream: "coupon-" + c, Revision: 3, Position: uint64(105 + 10*i), CouponID: c},
		)
	}
	must("reminders apply", rem.ApplyReminderChanges(ctx, rcs))
	_, err = rem.Checkpoint(ctx)
	must("reminders checkpoint", err)
	_, err = rem.DueExpiryReminders(ctx, now.Add(2*time.Hour), 0, 100)
	must("due expiry reminders", err)
	due, err := rem.DueClaimOpenings(ctx, now, 100)
	must("due openings", err)
	for _, id := range due {
		_, err = rem.PendingClaimOpeningReminders(ctx, id, "", 10)
		must("pending openings", err)
		must("drop opening", rem.DropClaimOpening(ctx, id))
	}
	must("jobs checkpoint", jobs.SaveCheckpoint(ctx, 30))

	// ---- per-shopper claim rate limit ----
	limiter, err := redislimit.New(rdb, prefix, 2, time.Minute, func() time.Time { return now })
	must("redislimit.New", err)
	for _, u := range users {
		for range 3 { // the third is refused: still one script call
			if _, err := limiter.Allow(ctx, "claim:"+u); err != nil && !errors.Is(err, domain.ErrRateLimited) {
				must("allow", err)
			}
		}
	}

	// ---- idempotency records ----
	idem, err := redisidem.New(rdb, prefix)
	must("redisidem.New", err)
	for _, key := range []string{"claim-1", "k{1}", "}{"} {
		e, err := idem.Begin(ctx, key, "fp", time.Minute)
		must("begin", err)
		must("complete", idem.Complete(ctx, key, e.Token, idempotency.Response{Status: 201, ContentType: "application/json", Body: []byte(`{}`)}, time.Hour))
		_, err = idem.Begin(ctx, key, "fp", time.Minute) // completed: replay
		must("begin again", err)
		e, err = idem.Begin(ctx, key+"-abandoned", "fp", time.Minute)
		must("begin 2", err)
		must("abandon", idem.Abandon(ctx, key+"-abandoned", e.Token))
	}
}

// TestSlotCheckerCatchesCrossSlot makes sure the hook above reports what
// Redis Cluster would refuse, so a pass of the test above means something.
func TestSlotCheckerCatchesCrossSlot(t *testing.T) {
	conn, err := redisx.Open(context.Background(), redisx.Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := context.Background()
	sc := newSlotChecker()
	conn.Client.AddHook(sc)
	two := redis.NewScript(`redis.call('SET', KEYS[1], 1) return redis.call('SET', KEYS[2], 1)`)
	if err := two.Run(ctx, conn.Client, []string{"p:{b:1}:a", "p:{b:1}:b"}).Err(); err != nil {
		t.Fatal(err)
	}
	if len(sc.violations) != 0 {
		t.Fatalf("one tag reported as two slots: %v", sc.violations)
	}
	if err := two.Run(ctx, conn.Client, []string{"p:{b:1}:a", "p:{b:2}:a"}).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Client.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "p:{u:1}:a", 1, 0)
		p.Set(ctx, "p:{u:2}:a", 1, 0)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(sc.violations) != 2 {
		t.Fatalf("violations = %q, want the script call and the MULTI block", sc.violations)
	}
	if _, problems := scriptKeyRule(sc.sources[sha(`redis.call('SET', KEYS[1], 1) return redis.call('SET', KEYS[2], 1)`)], 2); len(problems) > 0 {
		t.Fatalf("a clean script was flagged: %v", problems)
	}
}
