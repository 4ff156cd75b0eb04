// Package redisx opens the Redis connection the service shares: a standalone
// server (redis:// or rediss:// URL), a Redis Cluster (a comma-separated
// list of host:port, or a redis-cluster:// URL) or, with no URL at all, an
// embedded in-process miniredis so a single binary runs without Redis.
package redisx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/domain"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultPrefix       = "couponsd:"
	DefaultDialTimeout  = 2 * time.Second
	DefaultReadTimeout  = 3 * time.Second
	DefaultWriteTimeout = time.Second
	DefaultPingTimeout  = 3 * time.Second
)

// Config selects and tunes the Redis connection.
type Config struct {
	// URL is empty for an embedded miniredis; redis://[user:pass@]host:port/db
	// (or rediss:// for TLS, unix:// for a socket) for a standalone server;
	// "h1:p1,h2:p2" or redis-cluster://[user:pass@]h1:p1,h2:p2[?options] for
	// a Redis Cluster (rediss-cluster:// for TLS). A single bare host:port is
	// a standalone server.
	URL string
	// Prefix starts every key the service writes (default "couponsd:"). It
	// must not hold '{' or '}', which would break the per-batch hash tags.
	Prefix string
	// DialTimeout, ReadTimeout and WriteTimeout bound each network step.
	DialTimeout  time.Duration
	ReadTimeout  time.Duration
	WriteTimeout time.Duration
	// PingTimeout bounds the connectivity check made by Open.
	PingTimeout time.Duration
	// PoolSize is the connection pool size (per node for a cluster); 0 keeps
	// go-redis's default of 10 per CPU.
	PoolSize int
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	c.URL = strings.TrimSpace(c.URL)
	if c.Prefix == "" {
		c.Prefix = DefaultPrefix
	}
	if c.DialTimeout == 0 {
		c.DialTimeout = DefaultDialTimeout
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = DefaultReadTimeout
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = DefaultWriteTimeout
	}
	if c.PingTimeout == 0 {
		c.PingTimeout = DefaultPingTimeout
	}
	return c
}

// Validate reports the first invalid setting.
func (c Config) Validate() error {
	if c.Prefix == "" {
		return errors.New("redis: prefix is required")
	}
	if strings.ContainsAny(c.Prefix, "{}") {
		return fmt.Errorf("redis: prefix %q must not contain '{' or '}' (they would break the cluster hash tags)", c.Prefix)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"dial timeout", c.DialTimeout}, {"read timeout", c.ReadTimeout}, {"write timeout", c.WriteTimeout}, {"ping timeout", c.PingTimeout}} {
		if d.v < 0 {
			return fmt.Errorf("redis: %s must not be negative", d.name)
		}
	}
	if c.PoolSize < 0 {
		return errors.New("redis: pool size must not be negative")
	}
	if c.URL != "" {
		if _, err := c.target(); err != nil {
			return err
		}
	}
	return nil
}

// Kinds of deployment a URL selects.
const (
	modeEmbedded   = "embedded"
	modeStandalone = "standalone"
	modeCluster    = "cluster"
)

type target struct {
	mode       string
	standalone *redis.Options
	cluster    *redis.ClusterOptions
}

// target parses the URL into client options (timeouts not applied yet).
func (c Config) target() (target, error) {
	raw := strings.TrimSpace(c.URL)
	if raw == "" {
		return target{mode: modeEmbedded}, nil
	}
	scheme, rest, hasScheme := strings.Cut(raw, "://")
	if !hasScheme {
		if !strings.Contains(raw, ",") {
			scheme, rest = "redis", raw // a lone host:port is a standalone server
		} else {
			scheme, rest = "redis-cluster", raw
		}
	}
	switch strings.ToLower(scheme) {
	case "redis", "rediss", "unix":
		opt, err := redis.ParseURL(strings.ToLower(scheme) + "://" + rest)
		if err != nil {
			return target{}, fmt.Errorf("redis: invalid URL %s: %w", Redact(raw), hideURL(err))
		}
		return target{mode: modeStandalone, standalone: opt}, nil
	case "redis-cluster", "rediss-cluster":
		opt, err := parseClusterURL(strings.TrimSuffix(strings.ToLower(scheme), "-cluster"), rest)
		if err != nil {
			return target{}, fmt.Errorf("redis: invalid cluster URL %s: %w", Redact(raw), hideURL(err))
		}
		return target{mode: modeCluster, cluster: opt}, nil
	default:
		return target{}, fmt.Errorf("redis: unsupported URL scheme %q in %s (want redis, rediss, unix, redis-cluster or rediss-cluster)", scheme, Redact(raw))
	}
}

// parseClusterURL turns "[user:pass@]h1:p1,h2:p2[?options]" into cluster
// options by rewriting it as go-redis's redis://h1:p1?addr=h2:p2 form.
func parseClusterURL(scheme, rest string) (*redis.ClusterOptions, error) {
	hostPart, query, _ := strings.Cut(rest, "?")
	userinfo := ""
	if i := strings.LastIndex(hostPart, "@"); i >= 0 {
		userinfo, hostPart = hostPart[:i+1], hostPart[i+1:]
	}
	hostPart = strings.TrimSuffix(hostPart, "/")
	var addrs []string
	for _, a := range strings.Split(hostPart, ",") {
		if a = strings.TrimSpace(a); a != "" {
			addrs = append(addrs, a)
		}
	}
	if len(addrs) == 0 {
		return nil, errors.New("no host:port given")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return nil, err
	}
	for _, a := range addrs[1:] {
		q.Add("addr", a)
	}
	u := scheme + "://" + userinfo + addrs[0]
	if len(q) > 0 {
		u += "?" + q.Encode()
	}
	return redis.ParseClusterURL(u)
}

// Redact hides the password of a Redis URL, for logs and errors. It errs
// on the side of hiding: everything before the last '@' but the user name
// goes.
func Redact(raw string) string {
	scheme, rest, ok := strings.Cut(raw, "://")
	if !ok {
		return raw
	}
	i := strings.LastIndex(rest, "@")
	if i < 0 {
		return raw
	}
	user, _, hasPass := strings.Cut(rest[:i], ":")
	if !hasPass {
		return raw
	}
	if strings.ContainsAny(user, "/?#") {
		user = ""
	}
	return scheme + "://" + user + ":xxxxx" + rest[i:]
}

// hideURL drops the URL (and its password) that *url.Error repeats.
func hideURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// Conn is an open Redis connection.
type Conn struct {
	// Client is the go-redis client: a *redis.Client or *redis.ClusterClient.
	Client redis.UniversalClient
	// Embedded tells that Client talks to an in-process miniredis.
	Embedded bool
	// Cluster tells that Client is a Redis Cluster client.
	Cluster bool
	// Prefix is the configured key prefix.
	Prefix string
	// Addr is where the client connects (the first seed for a cluster).
	Addr string

	mini *miniredis.Miniredis
}

// Mini returns the embedded miniredis server, or nil.
func (c *Conn) Mini() *miniredis.Miniredis { return c.mini }

// Close closes the client and stops the embedded server, if any.
func (c *Conn) Close() error {
	if c == nil {
		return nil
	}
	var err error
	if c.Client != nil {
		err = c.Client.Close()
	}
	if c.mini != nil {
		c.mini.Close()
	}
	return err
}

// Open connects to Redis as cfg says (after WithDefaults and Validate) and
// pings it; it fails fast, with an error matching domain.ErrUnavailable,
// when the server cannot be reached. A nil logger logs nothing.
func Open(ctx context.Context, cfg Config, logger *slog.Logger) (*Conn, error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	t, err := cfg.target()
	if err != nil {
		return nil, err
	}
	c := &Conn{Prefix: cfg.Prefix}
	switch t.mode {
	case modeEmbedded:
		m := miniredis.NewMiniRedis()
		if err := m.StartAddr("127.0.0.1:0"); err != nil {
			return nil, fmt.Errorf("redis: start embedded miniredis: %w", err)
		}
		c.mini, c.Embedded, c.Addr = m, true, m.Addr()
		opt := &redis.Options{Addr: m.Addr()}
		cfg.apply(opt)
		c.Client = redis.NewClient(opt)
	case modeStandalone:
		cfg.apply(t.standalone)
		c.Addr = t.standalone.Addr
		c.Client = redis.NewClient(t.standalone)
	case modeCluster:
		o := t.cluster
		cfg.applyCluster(o)
		c.Cluster, c.Addr = true, strings.Join(o.Addrs, ",")
		c.Client = redis.NewClusterClient(o)
	}
	pctx, cancel := context.WithTimeout(ctx, cfg.PingTimeout)
	defer cancel()
	if err := c.Client.Ping(pctx).Err(); err != nil {
		_ = c.Close()
		return nil, fmt.Errorf("%w: redis: cannot reach %s %s within %s: %w",
			domain.ErrUnavailable, t.mode, Redact(cfg.URL), cfg.PingTimeout, err)
	}
	logger.Info("redis connected", "mode", t.mode, "addr", c.Addr, "prefix", cfg.Prefix)
	return c, nil
}

// apply copies the timeouts and pool size onto standalone options; values
// given in the URL query win over the config's defaults.
func (c Config) apply(o *redis.Options) {
	if o.DialTimeout == 0 {
		o.DialTimeout = c.DialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = c.ReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = c.WriteTimeout
	}
	if c.PoolSize > 0 && o.PoolSize == 0 {
		o.PoolSize = c.PoolSize
	}
	o.MaxRetries = noRetries
}

// noRetries turns go-redis's automatic retries off. It retries a command
// whose reply timed out, i.e. one that may have run: for our Lua scripts
// (take a unit of stock, count a claim) a second run is a second effect. A
// failed command surfaces instead; the reconciler settles a reservation
// whose reply was lost.
const noRetries = -1

// applyCluster is apply for cluster options.
func (c Config) applyCluster(o *redis.ClusterOptions) {
	if o.DialTimeout == 0 {
		o.DialTimeout = c.DialTimeout
	}
	if o.ReadTimeout == 0 {
		o.ReadTimeout = c.ReadTimeout
	}
	if o.WriteTimeout == 0 {
		o.WriteTimeout = c.WriteTimeout
	}
	if c.PoolSize > 0 && o.PoolSize == 0 {
		o.PoolSize = c.PoolSize
	}
	o.MaxRetries = noRetries
}

// DeletePrefix deletes every key starting with prefix: SCAN + DEL, one key
// per command so it is cluster-safe; on a cluster every master is scanned.
func DeletePrefix(ctx context.Context, rdb redis.UniversalClient, prefix string) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return deletePrefix(ctx, c, prefix)
		})
	}
	return deletePrefix(ctx, rdb, prefix)
}

func deletePrefix(ctx context.Context, rdb redis.Cmdable, prefix string) error {
	var cursor uint64
	for {
		keys, next, err := rdb.Scan(ctx, cursor, prefix+"*", 1000).Result()
		if err != nil {
			return err
		}
		if len(keys) > 0 {
			if _, err := rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
				for _, k := range keys {
					p.Del(ctx, k)
				}
				return nil
			}); err != nil {
				return err
			}
		}
		if cursor = next; cursor == 0 {
			return nil
		}
	}
}

// Pipelined runs fn in a pipeline that calls scripts by SHA. A pipeline
// cannot fall back from EVALSHA to EVAL per command, so when Redis answers
// NOSCRIPT (first use, or after a restart flushed its script cache) the
// scripts are loaded and the pipeline is run once more. Scripts must be
// idempotent for this (ours skip what they already applied).
func Pipelined(ctx context.Context, rdb redis.UniversalClient, scripts []*redis.Script, fn func(redis.Pipeliner) error) error {
	_, err := rdb.Pipelined(ctx, fn)
	if err == nil || !strings.Contains(err.Error(), "NOSCRIPT") {
		return err
	}
	for _, s := range scripts {
		if err := loadScript(ctx, rdb, s); err != nil {
			return err
		}
	}
	_, err = rdb.Pipelined(ctx, fn)
	return err
}

func loadScript(ctx context.Context, rdb redis.UniversalClient, s *redis.Script) error {
	if cc, ok := rdb.(*redis.ClusterClient); ok {
		return cc.ForEachShard(ctx, func(ctx context.Context, c *redis.Client) error {
			return s.Load(ctx, c).Err()
		})
	}
	return s.Load(ctx, rdb).Err()
}

// Unavailable maps a go-redis error to domain.ErrUnavailable (keeping it in
// the chain); nil and redis.Nil (a missing key) map to nil.
func Unavailable(err error) error {
	if err == nil || errors.Is(err, redis.Nil) {
		return nil
	}
	return fmt.Errorf("%w: redis: %w", domain.ErrUnavailable, err)
}
