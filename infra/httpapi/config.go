package httpapi

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Defaults applied by Config.WithDefaults.
const (
	DefaultBodyLimit      = "1M"
	DefaultRequestTimeout = 10 * time.Second
	// DefaultGrantUploadLimit caps a grant list upload: 10 million ids of
	// up to ~200 bytes each.
	DefaultGrantUploadLimit = "2G"
	// DefaultGrantUploadTimeout bounds reading and storing a grant list.
	DefaultGrantUploadTimeout = 15 * time.Minute
	DefaultIdempotencyTTL     = 24 * time.Hour
	DefaultIdempotencyWait    = 2 * time.Second
	// MinJWTSecretLen is the shortest accepted HS256 key.
	MinJWTSecretLen = 32
)

// Config tunes the HTTP API.
type Config struct {
	// JWTSecret is the HS256 key of bearer tokens (required, >= 32 bytes).
	JWTSecret []byte
	// BodyLimit caps request bodies: a number of bytes with an optional
	// binary suffix K, M or G (KiB, MiB, GiB; "1M" = 1 MiB). Larger bodies
	// are answered 413. Default "1M".
	BodyLimit string
	// GrantUploadLimit caps the body of POST /v1/batches/{id}/grants, which
	// is streamed, never held in memory (default "2G").
	GrantUploadLimit string
	// GrantUploadTimeout bounds a grant list upload (default 15m).
	GrantUploadTimeout time.Duration
	// RequestTimeout bounds each request's work (default 10s); a request
	// that runs out of time is answered 503.
	RequestTimeout time.Duration
	// IdempotencyTTL is how long a POST outcome is kept for replays by
	// Idempotency-Key (default 24h).
	IdempotencyTTL time.Duration
	// IdempotencyWait is how long a duplicate request waits for the first
	// one to finish before it is answered 409 (default 2s).
	IdempotencyWait time.Duration
	// MaxInflightClaims sheds load: past this many claims in progress in
	// this process, a claim is answered 429 at once (default 4096).
	MaxInflightClaims int
}

// WithDefaults returns c with zero fields set to their defaults.
func (c Config) WithDefaults() Config {
	if strings.TrimSpace(c.BodyLimit) == "" {
		c.BodyLimit = DefaultBodyLimit
	}
	if strings.TrimSpace(c.GrantUploadLimit) == "" {
		c.GrantUploadLimit = DefaultGrantUploadLimit
	}
	if c.GrantUploadTimeout == 0 {
		c.GrantUploadTimeout = DefaultGrantUploadTimeout
	}
	if c.RequestTimeout == 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.IdempotencyTTL == 0 {
		c.IdempotencyTTL = DefaultIdempotencyTTL
	}
	if c.MaxInflightClaims == 0 {
		c.MaxInflightClaims = 4096
	}
	if c.IdempotencyWait == 0 {
		c.IdempotencyWait = DefaultIdempotencyWait
	}
	return c
}

// Validate reports the first invalid setting (call it after WithDefaults).
func (c Config) Validate() error {
	if len(c.JWTSecret) < MinJWTSecretLen {
		return fmt.Errorf("httpapi: the JWT secret must be at least %d bytes (got %d)", MinJWTSecretLen, len(c.JWTSecret))
	}
	if _, err := ParseByteSize(c.BodyLimit); err != nil {
		return fmt.Errorf("httpapi: body limit: %w", err)
	}
	if _, err := ParseByteSize(c.GrantUploadLimit); err != nil {
		return fmt.Errorf("httpapi: grant upload limit: %w", err)
	}
	if c.GrantUploadTimeout <= 0 {
		return errors.New("httpapi: grant upload timeout must be positive")
	}
	if c.RequestTimeout <= 0 {
		return errors.New("httpapi: request timeout must be positive")
	}
	if c.IdempotencyTTL <= 0 {
		return errors.New("httpapi: idempotency TTL must be positive")
	}
	if c.IdempotencyWait < 0 {
		return errors.New("httpapi: idempotency wait must not be negative")
	}
	return nil
}

// ParseByteSize parses "1048576", "512K", "1M", "1MiB", "2G" (binary units).
func ParseByteSize(s string) (int64, error) {
	t := strings.ToUpper(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		m      int64
	}{{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"KB", 1 << 10}, {"MB", 1 << 20}, {"GB", 1 << 30},
		{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"B", 1}} {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.m
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<40)/mult {
		return 0, fmt.Errorf("invalid size %q (want e.g. 1M, 512K or a number of bytes)", s)
	}
	return n * mult, nil
}
