package main

import (
	"errors"
	"fmt"
	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/outbound"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"time"
)

// Config is the service configuration, read from COUPONS_* variables.
type Config struct {
	Addr               string        // COUPONS_ADDR
	DataDir            string        // COUPONS_DATA_DIR
	RedisURL           string        // COUPONS_REDIS_URL (empty: embedded)
	RedisPrefix        string        // COUPONS_REDIS_PREFIX
	EventStoreURL      string        // COUPONS_EVENTSTORE_URL (empty: embedded)
	KafkaBrokers       string        // COUPONS_KAFKA_BROKERS
	GrantShardSize     int           // COUPONS_GRANT_SHARD_SIZE: distinct users per grant shard (default 1000)
	GrantConcurrency   int           // COUPONS_GRANT_CONCURRENCY: grant shards granted at once per instance (default 4)
	ExpiryReminderLead time.Duration // COUPONS_EXPIRY_REMINDER_LEAD: how long before expiry a usable coupon is reminded (default 24h)
	WebhookURL         string        // COUPONS_WEBHOOK_URL: outbound events as signed webhooks (embedded mode)
	WebhookSecret      string        // COUPONS_WEBHOOK_SECRET: their HMAC key (at least 16 bytes)
	GrantTempDir       string        // COUPONS_GRANT_TEMP_DIR: where uploads are split (default: the OS temp dir)
	ElasticsearchURL   string        // COUPONS_ELASTICSEARCH_URL
	JWTSecret          string        // COUPONS_JWT_SECRET
	HoldTimeout        time.Duration // COUPONS_HOLD_TIMEOUT
	ReservationTimeout time.Duration // COUPONS_RESERVATION_TIMEOUT
	WorkerInterval     time.Duration // COUPONS_WORKER_INTERVAL
	ReconcileInterval  time.Duration // COUPONS_RECONCILE_INTERVAL
	ShutdownTimeout    time.Duration // COUPONS_SHUTDOWN_TIMEOUT
	GuardSettle        time.Duration // COUPONS_GUARD_SETTLE: wait before rebuilding a guard that lost its data
	LogLevel           slog.Level    // COUPONS_LOG_LEVEL
	ClaimsPerMinute    int           // COUPONS_CLAIMS_PER_MINUTE: per shopper (0 disables)
	MaxInflightClaims  int           // COUPONS_MAX_INFLIGHT_CLAIMS: load shedding per instance
}

// DefaultConfig holds the defaults.
func DefaultConfig() Config {
	return Config{
		Addr: ":8080", DataDir: "./data", RedisPrefix: "couponsd:",
		HoldTimeout: 30 * time.Minute, ReservationTimeout: 30 * time.Second,
		WorkerInterval: time.Second, ReconcileInterval: 10 * time.Second, ExpiryReminderLead: 24 * time.Hour,
		ShutdownTimeout: 10 * time.Second, LogLevel: slog.LevelInfo, GuardSettle: 15 * time.Second,
		ClaimsPerMinute: 10, MaxInflightClaims: 4096,
	}
}

// ConfigFromEnv reads the environment over the defaults.
func ConfigFromEnv(getenv func(string) string) (Config, error) {
	c := DefaultConfig()
	str := func(name string, dst *string) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			*dst = v
		}
	}
	var errs []error
	dur := func(name string, dst *time.Duration) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			d, err := time.ParseDuration(v)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", name, err))
				return
			}
			*dst = d
		}
	}
	str("COUPONS_ADDR", &c.Addr)
	str("COUPONS_DATA_DIR", &c.DataDir)
	str("COUPONS_REDIS_URL", &c.RedisURL)
	str("COUPONS_REDIS_PREFIX", &c.RedisPrefix)
	str("COUPONS_EVENTSTORE_URL", &c.EventStoreURL)
	str("COUPONS_KAFKA_BROKERS", &c.KafkaBrokers)
	str("COUPONS_GRANT_TEMP_DIR", &c.GrantTempDir)
	str("COUPONS_WEBHOOK_URL", &c.WebhookURL)
	c.WebhookSecret = getenv("COUPONS_WEBHOOK_SECRET")
	str("COUPONS_ELASTICSEARCH_URL", &c.ElasticsearchURL)
	c.JWTSecret = getenv("COUPONS_JWT_SECRET")
	dur("COUPONS_HOLD_TIMEOUT", &c.HoldTimeout)
	dur("COUPONS_RESERVATION_TIMEOUT", &c.ReservationTimeout)
	dur("COUPONS_WORKER_INTERVAL", &c.WorkerInterval)
	dur("COUPONS_RECONCILE_INTERVAL", &c.ReconcileInterval)
	dur("COUPONS_SHUTDOWN_TIMEOUT", &c.ShutdownTimeout)
	dur("COUPONS_GUARD_SETTLE", &c.GuardSettle)
	dur("COUPONS_EXPIRY_REMINDER_LEAD", &c.ExpiryReminderLead)
	num := func(name string, dst *int) {
		if v := strings.TrimSpace(getenv(name)); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				errs = append(errs, fmt.Errorf("%s: want a non-negative integer, got %q", name, v))
				return
			}
			*dst = n
		}
	}
	num("COUPONS_CLAIMS_PER_MINUTE", &c.ClaimsPerMinute)
	num("COUPONS_MAX_INFLIGHT_CLAIMS", &c.MaxInflightClaims)
	num("COUPONS_GRANT_SHARD_SIZE", &c.GrantShardSize)
	num("COUPONS_GRANT_CONCURRENCY", &c.GrantConcurrency)
	if v := strings.TrimSpace(getenv("COUPONS_LOG_LEVEL")); v != "" {
		if err := c.LogLevel.UnmarshalText([]byte(v)); err != nil {
			errs = append(errs, fmt.Errorf("COUPONS_LOG_LEVEL: %w", err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate checks the configuration.
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("COUPONS_ADDR is empty"))
	}
	if c.DataDir == "" {
		errs = append(errs, errors.New("COUPONS_DATA_DIR is empty"))
	}
	for name, d := range map[string]time.Duration{
		"COUPONS_HOLD_TIMEOUT": c.HoldTimeout, "COUPONS_RESERVATION_TIMEOUT": c.ReservationTimeout,
		"COUPONS_WORKER_INTERVAL": c.WorkerInterval, "COUPONS_RECONCILE_INTERVAL": c.ReconcileInterval,
		"COUPONS_SHUTDOWN_TIMEOUT": c.ShutdownTimeout, "COUPONS_EXPIRY_REMINDER_LEAD": c.ExpiryReminderLead,
	} {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s must be positive", name))
		}
	}
	if c.MaxInflightClaims < 1 {
		errs = append(errs, errors.New("COUPONS_MAX_INFLIGHT_CLAIMS must be at least 1"))
	}
	if c.GrantShardSize > domain.MaxGrantShardSize {
		errs = append(errs, fmt.Errorf("COUPONS_GRANT_SHARD_SIZE must be at most %d", domain.MaxGrantShardSize))
	}
	if c.WebhookURL != "" {
		if err := (outbound.WebhookConfig{URL: c.WebhookURL, Secret: c.WebhookSecret}).WithDefaults().Validate(); err != nil {
			errs = append(errs, fmt.Errorf("COUPONS_WEBHOOK_URL / COUPONS_WEBHOOK_SECRET: %w", err))
		}
	}
	if c.JWTSecret != "" && len(c.JWTSecret) < 32 {
		errs = append(errs, errors.New("COUPONS_JWT_SECRET must be at least 32 bytes"))
	}
	if c.EventStoreURL != "" && !strings.HasPrefix(c.EventStoreURL, "esdb://") && !strings.HasPrefix(c.EventStoreURL, "esdb+discover://") &&
		!strings.HasPrefix(c.EventStoreURL, "kurrentdb://") && !strings.HasPrefix(c.EventStoreURL, "kurrentdb+discover://") {
		errs = append(errs, errors.New("COUPONS_EVENTSTORE_URL must be an esdb:// or kurrentdb:// URL"))
	}
	if rest, ok := strings.CutPrefix(c.EventStoreURL, "esdb+discover://"); ok && strings.Contains(strings.SplitN(rest, "?", 2)[0], ",") {
		// The v4 client dials only the first host in discover mode.
		errs = append(errs, errors.New("COUPONS_EVENTSTORE_URL: esdb+discover:// takes one DNS name; give a seed list as esdb://h1,h2,h3?tls=false"))
	}
	return errors.Join(errs...)
}

func getenv(name string) string { return os.Getenv(name) }
