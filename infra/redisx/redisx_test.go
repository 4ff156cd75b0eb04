package redisx

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/domain"
)

func TestConfigDefaultsAndValidate(t *testing.T) {
	c := Config{}.WithDefaults()
	if c.Prefix != "couponsd:" || c.DialTimeout != DefaultDialTimeout || c.PingTimeout != DefaultPingTimeout ||
		c.ReadTimeout != DefaultReadTimeout || c.WriteTimeout != DefaultWriteTimeout {
		t.Fatalf("defaults = %+v", c)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, bad := range map[string]Config{
		"empty prefix":     {Prefix: ""},
		"brace in prefix":  Config{Prefix: "a{b"}.WithDefaults(),
		"negative timeout": {Prefix: "p", DialTimeout: -time.Second},
		"negative pool":    {Prefix: "p", PoolSize: -1},
		"bad scheme":       {Prefix: "p", URL: "http://localhost"},
		"bad URL":          {Prefix: "p", URL: "redis://host:notaport"},
		"empty cluster":    {Prefix: "p", URL: "redis-cluster://"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("%s: Validate accepted %+v", name, bad)
		}
	}
	for _, u := range []string{"redis://:secret@host:notaport", "redis-cluster://u:secret@h1:x,h2:2"} {
		err := Config{URL: u}.WithDefaults().Validate()
		if err == nil || strings.Contains(err.Error(), "secret") {
			t.Errorf("%s: err = %v (want an error without the password)", u, err)
		}
	}
}

func TestTarget(t *testing.T) {
	cases := []struct {
		url, mode string
		addrs     []string
		check     func(t target) bool
	}{
		{"", modeEmbedded, nil, nil},
		{"redis://:secret@10.0.0.1:6380/3", modeStandalone, []string{"10.0.0.1:6380"},
			func(t target) bool { return t.standalone.DB == 3 && t.standalone.Password == "secret" }},
		{"rediss://cache.example:6379", modeStandalone, []string{"cache.example:6379"},
			func(t target) bool { return t.standalone.TLSConfig != nil }},
		{"localhost:6379", modeStandalone, []string{"localhost:6379"}, nil},
		{"unix:///tmp/redis.sock", modeStandalone, []string{"/tmp/redis.sock"}, nil},
		{"h1:7000, h2:7001,h3:7002", modeCluster, []string{"h1:7000", "h2:7001", "h3:7002"}, nil},
		{"redis-cluster://h1:7000", modeCluster, []string{"h1:7000"}, nil},
		{"redis-cluster://u:pw@h1:7000,h2:7001?max_redirects=5", modeCluster, []string{"h1:7000", "h2:7001"},
			func(t target) bool {
				return t.cluster.Username == "u" && t.cluster.Password == "pw" && t.cluster.MaxRedirects == 5
			}},
		{"rediss-cluster://h1:7000,h2:7001", modeCluster, []string{"h1:7000", "h2:7001"},
			func(t target) bool { return t.cluster.TLSConfig != nil }},
	}
	for _, c := range cases {
		tg, err := Config{URL: c.url}.target()
		if err != nil {
			t.Errorf("%q: %v", c.url, err)
			continue
		}
		if tg.mode != c.mode {
			t.Errorf("%q: mode %s, want %s", c.url, tg.mode, c.mode)
			continue
		}
		var addrs []string
		switch tg.mode {
		case modeStandalone:
			addrs = []string{tg.standalone.Addr}
		case modeCluster:
			addrs = tg.cluster.Addrs
		}
		if strings.Join(addrs, " ") != strings.Join(c.addrs, " ") {
			t.Errorf("%q: addrs %v, want %v", c.url, addrs, c.addrs)
		}
		if c.check != nil && !c.check(tg) {
			t.Errorf("%q: options not as expected", c.url)
		}
	}
}

func TestRedact(t *testing.T) {
	for in, want := range map[string]string{
		"redis://:secret@h:6379/1":            "redis://:xxxxx@h:6379/1",
		"redis://user:secret@h:6379":          "redis://user:xxxxx@h:6379",
		"redis-cluster://u:p@h1:1,h2:2?x=1":   "redis-cluster://u:xxxxx@h1:1,h2:2?x=1",
		"redis://h:6379":                      "redis://h:6379",
		"redis://user@h:6379":                 "redis://user@h:6379",
		"h1:1,h2:2":                           "h1:1,h2:2",
		"redis://:p@ss@word@h:6379/0?proto=3": "redis://:xxxxx@h:6379/0?proto=3",
		"rediss://default:tok/en@h:6380/2":    "rediss://default:xxxxx@h:6380/2",
		"redis://:pa?ss@h:6379":               "redis://:xxxxx@h:6379",
	} {
		if got := Redact(in); got != want {
			t.Errorf("Redact(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestOpenEmbedded(t *testing.T) {
	ctx := context.Background()
	c, err := Open(ctx, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !c.Embedded || c.Cluster || c.Mini() == nil || c.Prefix != DefaultPrefix || !strings.HasPrefix(c.Addr, "127.0.0.1:") {
		t.Fatalf("conn = %+v", c)
	}
	if _, ok := c.Client.(*redis.Client); !ok {
		t.Fatalf("client is %T", c.Client)
	}
	if err := c.Client.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	// Lua runs on the embedded server.
	if v, err := c.Client.Eval(ctx, "return redis.call('GET', KEYS[1])", []string{"k"}).Result(); err != nil || v != "v" {
		t.Fatalf("eval = %v, %v", v, err)
	}
	addr := c.Addr
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if conn, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
		conn.Close()
		t.Error("embedded server still listening after Close")
	}
	// Two embedded servers are independent.
	a, err := Open(ctx, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := Open(ctx, Config{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	_ = a.Client.Set(ctx, "only-a", "1", 0).Err()
	if n, _ := b.Client.Exists(ctx, "only-a").Result(); n != 0 {
		t.Error("embedded servers share data")
	}
}

func TestOpenFailsFast(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close()
	for _, url := range []string{"redis://:pw@" + addr + "/0", "redis-cluster://" + addr} {
		began := time.Now()
		_, err := Open(context.Background(), Config{URL: url, PingTimeout: 300 * time.Millisecond, DialTimeout: 100 * time.Millisecond}, nil)
		if err == nil {
			t.Fatalf("%s: Open succeeded", url)
		}
		if !errors.Is(err, domain.ErrUnavailable) || !strings.Contains(err.Error(), addr) || strings.Contains(err.Error(), ":pw@") {
			t.Errorf("%s: err = %v", url, err)
		}
		if d := time.Since(began); d > 2*time.Second {
			t.Errorf("%s: took %v to fail", url, d)
		}
	}
	if _, err := Open(context.Background(), Config{URL: "ftp://x"}, nil); err == nil || errors.Is(err, domain.ErrUnavailable) {
		t.Errorf("bad scheme: %v", err)
	}
}

// TestOpenReal connects to the local Redis (COUPONS_TEST_REDIS_URL, default
// redis://127.0.0.1:6379/11); it only pings, writing nothing.
func TestOpenReal(t *testing.T) {
	url := os.Getenv("COUPONS_TEST_REDIS_URL")
	if url == "" {
		url = "redis://127.0.0.1:6379/11"
	}
	c, err := Open(context.Background(), Config{URL: url, PingTimeout: time.Second}, nil)
	if err != nil {
		if os.Getenv("COUPONS_TEST_REQUIRE_REDIS") == "1" {
			t.Fatal(err)
		}
		t.Skipf("real Redis unreachable: %v", err)
	}
	defer c.Close()
	if c.Embedded || c.Cluster {
		t.Fatalf("conn = %+v", c)
	}
}

// TestOpenCluster runs when COUPONS_TEST_REDIS_CLUSTER names cluster nodes.
func TestOpenCluster(t *testing.T) {
	addrs := os.Getenv("COUPONS_TEST_REDIS_CLUSTER")
	if addrs == "" {
		t.Skip("COUPONS_TEST_REDIS_CLUSTER not set")
	}
	c, err := Open(context.Background(), Config{URL: addrs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, ok := c.Client.(*redis.ClusterClient); !ok || !c.Cluster {
		t.Fatalf("client is %T", c.Client)
	}
}
