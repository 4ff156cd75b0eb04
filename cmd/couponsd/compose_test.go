package main

import (
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/EventStore/EventStore-Client-Go/v4/esdb"
	"gopkg.in/yaml.v3"

	"github.com/couponsd/couponsd/infra/pipeline/kafkapipe"
	"github.com/couponsd/couponsd/infra/redisx"
)

// The compose files cannot be run here (no Docker engine); this test checks
// what can be checked without one: they parse, every COUPONS_* variable they
// set is one the service reads, the values pass the service's own
// validation (as interpolated with their defaults), and the services,
// volumes and files they reference exist.

var composeFiles = []string{"compose.yaml", "compose.scaled.yaml"}

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string         `yaml:"image"`
	Build       any            `yaml:"build"`
	Environment any            `yaml:"environment"` // map or list of NAME=value
	DependsOn   any            `yaml:"depends_on"`  // list or map name -> {condition}
	Healthcheck map[string]any `yaml:"healthcheck"`
	Volumes     []string       `yaml:"volumes"`
	Restart     string         `yaml:"restart"`
	Deploy      map[string]any `yaml:"deploy"`
}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		t.Fatalf("repository root not found from %s: %v", root, err)
	}
	return root
}

func loadCompose(t *testing.T, name string) composeFile {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), name))
	if err != nil {
		t.Fatal(err)
	}
	var f composeFile
	if err := yaml.Unmarshal(raw, &f); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if len(f.Services) == 0 {
		t.Fatalf("%s: no services", name)
	}
	return f
}

// environment returns a service's variables, whichever form they take.
func (s composeService) environment(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch env := s.Environment.(type) {
	case nil:
	case map[string]any:
		for k, v := range env {
			if v == nil {
				out[k] = ""
			} else {
				out[k] = fmt.Sprint(v)
			}
		}
	case []any:
		for _, e := range env {
			k, v, _ := strings.Cut(fmt.Sprint(e), "=")
			out[k] = v
		}
	default:
		t.Fatalf("environment of unexpected type %T", env)
	}
	return out
}

// dependencies returns depends_on as name -> condition.
func (s composeService) dependencies(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	switch d := s.DependsOn.(type) {
	case nil:
	case []any:
		for _, n := range d {
			out[fmt.Sprint(n)] = "service_started"
		}
	case map[string]any:
		for n, v := range d {
			cond := "service_started"
			if m, ok := v.(map[string]any); ok && m["condition"] != nil {
				cond = fmt.Sprint(m["condition"])
			}
			out[n] = cond
		}
	default:
		t.Fatalf("depends_on of unexpected type %T", d)
	}
	return out
}

var interpolation = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate resolves ${VAR:-default} to its default, and ${VAR:?message}
// (a variable the operator must set) to required, as compose would with
// nothing set in the environment.
func interpolate(s, required string) string {
	s = interpolation.ReplaceAllStringFunc(s, func(m string) string {
		sub := interpolation.FindStringSubmatch(m)
		switch {
		case strings.HasSuffix(sub[2], "-"):
			return sub[3]
		case strings.HasSuffix(sub[2], "?"):
			return required
		}
		return ""
	})
	return strings.ReplaceAll(s, "$$", "$")
}

// readVariables lists the COUPONS_* variables couponsd reads: those
// ConfigFromEnv asks for, and those read with os.Getenv in the command.
func readVariables(t *testing.T) map[string]bool {
	t.Helper()
	read := map[string]bool{}
	if _, err := ConfigFromEnv(func(name string) string { read[name] = true; return "" }); err != nil {
		t.Fatalf("ConfigFromEnv with nothing set: %v", err)
	}
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	getenv := regexp.MustCompile(`[Gg]etenv\("(COUPONS_[A-Z0-9_]+)"\)`)
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range getenv.FindAllStringSubmatch(string(src), -1) {
			read[m[1]] = true
		}
	}
	for _, must := range []string{"COUPONS_ADDR", "COUPONS_REDIS_URL", "COUPONS_EVENTSTORE_URL", "COUPONS_KAFKA_BROKERS", "COUPONS_ELASTICSEARCH_URL", "COUPONS_JWT_SECRET"} {
		if !read[must] {
			t.Fatalf("%s not among the variables found (%v): the test's discovery is broken", must, read)
		}
	}
	return read
}

func TestComposeFilesSetOnlyVariablesTheServiceReads(t *testing.T) {
	read := readVariables(t)
	for _, name := range composeFiles {
		t.Run(name, func(t *testing.T) {
			f := loadCompose(t, name)
			couponsd := 0
			for sname, s := range f.Services {
				env := s.environment(t)
				var set []string
				for k := range env {
					if strings.HasPrefix(k, "COUPONS_") {
						set = append(set, k)
					}
				}
				if len(set) == 0 {
					continue
				}
				couponsd++
				sort.Strings(set)
				for _, k := range set {
					if !read[k] {
						t.Errorf("service %s sets %s, which couponsd never reads", sname, k)
					}
				}
				checkCouponsdEnv(t, name, sname, env)
			}
			if couponsd == 0 {
				t.Error("no service runs couponsd")
			}
		})
	}
}

// checkCouponsdEnv reports the problems couponsdEnvProblems finds.
func checkCouponsdEnv(t *testing.T, file, service string, raw map[string]string) {
	t.Helper()
	for _, p := range couponsdEnvProblems(strings.Contains(file, "scaled"), raw) {
		t.Errorf("%s: service %s: %s", file, service, p)
	}
}

// couponsdEnvProblems runs the service's own validation over the values of
// a couponsd service's environment, interpolated as compose would with
// nothing set (a required variable gets a valid value).
func couponsdEnvProblems(scaled bool, raw map[string]string) []string {
	const secret = "a-secret-an-operator-sets-32-bytes-at-least"
	var out []string
	bad := func(format string, args ...any) { out = append(out, fmt.Sprintf(format, args...)) }
	env := map[string]string{}
	for k, v := range raw {
		env[k] = interpolate(v, secret)
	}
	cfg, err := ConfigFromEnv(func(n string) string { return env[n] })
	if err != nil {
		bad("ConfigFromEnv: %v", err)
		return out
	}
	if env["COUPONS_ADDR"] == "" || env["COUPONS_DATA_DIR"] == "" {
		bad("COUPONS_ADDR or COUPONS_DATA_DIR left to its default")
	}
	if cfg.JWTSecret == "" {
		bad("COUPONS_JWT_SECRET unset: every instance would mint its own key")
	}
	if cfg.RedisURL == "" || cfg.EventStoreURL == "" || cfg.KafkaBrokers == "" || cfg.ElasticsearchURL == "" {
		bad("a production back end is left embedded")
	}
	if cfg.RedisURL != "" {
		if err := (redisx.Config{URL: cfg.RedisURL, Prefix: cfg.RedisPrefix}).WithDefaults().Validate(); err != nil {
			bad("COUPONS_REDIS_URL: %v", err)
		}
		if cluster := strings.Contains(cfg.RedisURL, "cluster://") || strings.Contains(cfg.RedisURL, ","); cluster != scaled {
			bad("COUPONS_REDIS_URL %q: want a cluster address list exactly in the scaled topology", cfg.RedisURL)
		}
	}
	if cfg.EventStoreURL != "" {
		conf, err := esdb.ParseConnectionString(strings.Replace(cfg.EventStoreURL, "kurrentdb", "esdb", 1))
		switch {
		case err != nil:
			bad("COUPONS_EVENTSTORE_URL: %v", err)
		case conf.DnsDiscover && conf.Address == "":
			// The v4 client dials only Address in DNS discovery mode: the
			// seeds of esdb+discover://h1,h2 are never tried.
			bad("COUPONS_EVENTSTORE_URL %q: esdb+discover:// takes one DNS name; list gossip seeds with esdb://", cfg.EventStoreURL)
		case !conf.DisableTLS:
			bad("COUPONS_EVENTSTORE_URL %q: the nodes run insecure, the URL needs tls=false", cfg.EventStoreURL)
		case scaled && !conf.DnsDiscover && len(conf.GossipSeeds) == 0:
			bad("COUPONS_EVENTSTORE_URL %q: one node of a cluster, no discovery", cfg.EventStoreURL)
		}
	}
	if cfg.KafkaBrokers != "" {
		if err := (kafkapipe.Config{Brokers: kafkapipe.ParseBrokers(cfg.KafkaBrokers)}).Validate(); err != nil {
			bad("COUPONS_KAFKA_BROKERS: %v", err)
		}
	}
	if cfg.ElasticsearchURL != "" {
		for _, u := range strings.Split(cfg.ElasticsearchURL, ",") {
			p, err := url.Parse(u)
			if err != nil || (p.Scheme != "http" && p.Scheme != "https") || p.Host == "" {
				bad("COUPONS_ELASTICSEARCH_URL entry %q is not an http(s) URL", u)
			}
		}
	}
	return out
}

func TestComposeEnvChecksCatchMistakes(t *testing.T) {
	good := map[string]string{
		"COUPONS_ADDR": ":8080", "COUPONS_DATA_DIR": "/data", "COUPONS_JWT_SECRET": "${COUPONS_JWT_SECRET:?set it}",
		"COUPONS_EVENTSTORE_URL": "esdb+discover://eventstore:2113?tls=false", "COUPONS_KAFKA_BROKERS": "k1:9092,k2:9092",
		"COUPONS_REDIS_URL": "redis-cluster://r1:6379,r2:6379", "COUPONS_ELASTICSEARCH_URL": "http://es-1:9200,http://es-2:9200",
	}
	if p := couponsdEnvProblems(true, good); len(p) > 0 {
		t.Fatalf("a good environment: %v", p)
	}
	for name, change := range map[string][2]string{
		"seed list under esdb+discover": {"COUPONS_EVENTSTORE_URL", "esdb+discover://e1:2113,e2:2113?tls=false"},
		"TLS to insecure nodes":         {"COUPONS_EVENTSTORE_URL", "esdb://e1:2113,e2:2113"},
		"one node of a cluster":         {"COUPONS_EVENTSTORE_URL", "esdb://e1:2113?tls=false"},
		"not an esdb URL":               {"COUPONS_EVENTSTORE_URL", "http://e1:2113"},
		"standalone Redis":              {"COUPONS_REDIS_URL", "redis://r1:6379/0"},
		"bad Redis scheme":              {"COUPONS_REDIS_URL", "http://r1:6379"},
		"broker without port":           {"COUPONS_KAFKA_BROKERS", "k1"},
		"short secret":                  {"COUPONS_JWT_SECRET", "${COUPONS_JWT_SECRET:-short}"},
		"no secret":                     {"COUPONS_JWT_SECRET", ""},
		"ES without scheme":             {"COUPONS_ELASTICSEARCH_URL", "es-1:9200"},
		"bad duration":                  {"COUPONS_HOLD_TIMEOUT", "soon"},
	} {
		env := maps.Clone(good)
		env[change[0]] = change[1]
		if p := couponsdEnvProblems(true, env); len(p) == 0 {
			t.Errorf("%s (%s=%s) went unnoticed", name, change[0], change[1])
		}
	}
	if got := interpolate("${A:-x}-${B-y}-${C:?must}-$$HOME", "req"); got != "x-y-req-$HOME" {
		t.Errorf("interpolate = %q", got)
	}
}

func TestComposeFilesAreConsistent(t *testing.T) {
	root := repoRoot(t)
	for _, name := range composeFiles {
		t.Run(name, func(t *testing.T) {
			f := loadCompose(t, name)
			for sname, s := range f.Services {
				if s.Image == "" && s.Build == nil {
					t.Errorf("service %s has neither image nor build", sname)
				}
				if s.Build != nil {
					if _, err := os.Stat(filepath.Join(root, "Dockerfile")); err != nil {
						t.Errorf("service %s builds the repository, which has no Dockerfile: %v", sname, err)
					}
				}
				for dep, cond := range s.dependencies(t) {
					d, ok := f.Services[dep]
					switch {
					case !ok:
						t.Errorf("service %s depends on %s, which does not exist", sname, dep)
					case cond == "service_healthy" && len(d.Healthcheck) == 0:
						t.Errorf("service %s waits for %s to be healthy, which has no healthcheck", sname, dep)
					case cond == "service_completed_successfully" && d.Restart != "" && d.Restart != "no":
						t.Errorf("service %s waits for %s to complete, which restarts (%s)", sname, dep, d.Restart)
					case !slices.Contains([]string{"service_started", "service_healthy", "service_completed_successfully"}, cond):
						t.Errorf("service %s: unknown depends_on condition %q", sname, cond)
					}
				}
				for _, v := range s.Volumes {
					src, _, ok := strings.Cut(v, ":")
					if !ok {
						continue // anonymous volume
					}
					if strings.HasPrefix(src, ".") || strings.HasPrefix(src, "/") {
						if _, err := os.Stat(filepath.Join(root, src)); err != nil {
							t.Errorf("service %s mounts %s: %v", sname, src, err)
						}
						continue
					}
					if _, ok := f.Volumes[src]; !ok {
						t.Errorf("service %s mounts volume %s, not declared under volumes", sname, src)
					}
				}
			}
		})
	}
}

// TestNginxRoutesToTheReplicas checks that the load balancer of the scaled
// topology points at the couponsd service and its port.
func TestNginxRoutesToTheReplicas(t *testing.T) {
	root := repoRoot(t)
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	f := loadCompose(t, "compose.scaled.yaml")
	m := regexp.MustCompile(`(?m)^\s*server\s+([a-z0-9_-]+):(\d+)\b`).FindStringSubmatch(string(conf))
	if m == nil {
		t.Fatal("nginx.conf has no upstream server host:port")
	}
	s, ok := f.Services[m[1]]
	if !ok {
		t.Fatalf("nginx.conf routes to %s, not a service of compose.scaled.yaml", m[1])
	}
	addr := s.environment(t)["COUPONS_ADDR"]
	if !strings.HasSuffix(addr, ":"+m[2]) {
		t.Errorf("nginx.conf routes to port %s, the service listens on %q", m[2], addr)
	}
	if n, _ := s.Deploy["replicas"].(int); n < 2 {
		t.Errorf("the scaled topology runs %v replicas of %s", s.Deploy["replicas"], m[1])
	}
}
