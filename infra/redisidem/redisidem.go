// Package redisidem is the Redis adapter of the HTTP layer's idempotency
// store (httpapi.IdempotencyStore, i.e. idempotency.Store).
//
// One Redis string per key, under "<prefix>idem:<key>":
//
//	"P:<token>:<fingerprint>"      a request holds the key (SET NX PX lease)
//	"D:<JSON of status, content type, body, fingerprint>"  the recorded outcome (PX ttl)
//
// Complete and Abandon are compare-and-set / compare-and-delete scripts on
// the "P:<token>:" prefix, so only the holder can record or free the key, and
// a holder whose lease ran out cannot overwrite a newer holder. Every command
// touches one key, so it works on Redis Cluster too.
package redisidem

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
)

// Store is the Redis idempotency store.
type Store struct {
	client redis.UniversalClient
	prefix string
}

var _ idempotency.Store = (*Store)(nil)

// New returns a store writing keys under prefix (e.g. "couponsd:").
func New(client redis.UniversalClient, prefix string) (*Store, error) {
	if client == nil {
		return nil, errors.New("redisidem: New needs a redis client")
	}
	if strings.ContainsAny(prefix, "{}") {
		return nil, fmt.Errorf("redisidem: prefix %q must not contain '{' or '}'", prefix)
	}
	return &Store{client: client, prefix: prefix + "idem:"}, nil
}

const (
	tagPending = "P:"
	tagDone    = "D:"
)

type doneRecord struct {
	Fingerprint string `json:"fp"`
	Status      int    `json:"status"`
	ContentType string `json:"ct,omitempty"`
	Body        []byte `json:"body,omitempty"`
}

func (s *Store) key(k string) string { return s.prefix + k }

func holdPrefix(token string) string { return tagPending + token + ":" }

// completeScript replaces the holder's marker with the outcome.
var completeScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0`)

// abandonScript deletes the holder's marker.
var abandonScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
if v and string.sub(v, 1, string.len(ARGV[1])) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0`)

// Begin implements idempotency.Store.
func (s *Store) Begin(ctx context.Context, key, fingerprint string, lease time.Duration) (idempotency.Entry, error) {
	if lease <= 0 {
		return idempotency.Entry{}, errors.New("redisidem: lease must be positive")
	}
	k := s.key(key)
	// The marker may expire between a refused SET NX and the GET: retry.
	for range 3 {
		tok := idempotency.NewToken()
		ok, err := s.client.SetNX(ctx, k, holdPrefix(tok)+fingerprint, lease).Result()
		if err != nil {
			return idempotency.Entry{}, unavailable("begin", err)
		}
		if ok {
			return idempotency.Entry{State: idempotency.Acquired, Fingerprint: fingerprint, Token: tok}, nil
		}
		v, err := s.client.Get(ctx, k).Result()
		if errors.Is(err, redis.Nil) {
			continue
		}
		if err != nil {
			return idempotency.Entry{}, unavailable("begin", err)
		}
		return decode(v)
	}
	return idempotency.Entry{}, unavailable("begin", errors.New("key keeps expiring"))
}

func decode(v string) (idempotency.Entry, error) {
	switch {
	case strings.HasPrefix(v, tagPending):
		rest := v[len(tagPending):]
		_, fp, ok := strings.Cut(rest, ":")
		if !ok {
			return idempotency.Entry{}, fmt.Errorf("redisidem: corrupt in-flight marker")
		}
		return idempotency.Entry{State: idempotency.InFlight, Fingerprint: fp}, nil
	case strings.HasPrefix(v, tagDone):
		var r doneRecord
		if err := json.Unmarshal([]byte(v[len(tagDone):]), &r); err != nil {
			return idempotency.Entry{}, fmt.Errorf("redisidem: corrupt stored response: %w", err)
		}
		return idempotency.Entry{State: idempotency.Completed, Fingerprint: r.Fingerprint,
			Response: &idempotency.Response{Status: r.Status, ContentType: r.ContentType, Body: r.Body}}, nil
	default:
		return idempotency.Entry{}, fmt.Errorf("redisidem: unknown value format")
	}
}

// Complete implements idempotency.Store.
func (s *Store) Complete(ctx context.Context, key, token string, resp idempotency.Response, ttl time.Duration) error {
	if ttl <= 0 {
		return errors.New("redisidem: ttl must be positive")
	}
	k := s.key(key)
	// The fingerprint is kept from the marker: read it first (the script
	// checks the hold again atomically).
	v, err := s.client.Get(ctx, k).Result()
	if errors.Is(err, redis.Nil) {
		return idempotency.ErrNotHeld
	}
	if err != nil {
		return unavailable("complete", err)
	}
	hp := holdPrefix(token)
	if !strings.HasPrefix(v, hp) {
		return idempotency.ErrNotHeld
	}
	val, err := json.Marshal(doneRecord{Fingerprint: v[len(hp):], Status: resp.Status, ContentType: resp.ContentType, Body: resp.Body})
	if err != nil {
		return err
	}
	n, err := completeScript.Run(ctx, s.client, []string{k}, hp, tagDone+string(val), strconv.FormatInt(max(ttl.Milliseconds(), 1), 10)).Int()
	if err != nil {
		return unavailable("complete", err)
	}
	if n == 0 {
		return idempotency.ErrNotHeld
	}
	return nil
}

// Abandon implements idempotency.Store.
func (s *Store) Abandon(ctx context.Context, key, token string) error {
	if token == "" {
		return nil
	}
	if err := abandonScript.Run(ctx, s.client, []string{s.key(key)}, holdPrefix(token)).Err(); err != nil {
		return unavailable("abandon", err)
	}
	return nil
}

func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	return fmt.Errorf("%w: redisidem %s: %w", domain.ErrUnavailable, op, err)
}
