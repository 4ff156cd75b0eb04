package idempotency

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"sync"
	"time"
)

// Memory is an in-process Store, for tests and single-instance tools. Entries
// live until their lease or TTL runs out.
type Memory struct {
	mu      sync.Mutex
	now     func() time.Time
	entries map[string]memEntry
}

type memEntry struct {
	fingerprint string
	token       string // set while in flight
	resp        *Response
	expires     time.Time
}

// NewMemory returns an empty store; a nil now uses time.Now.
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, entries: map[string]memEntry{}}
}

// NewToken returns a random hold token (32 hex digits).
func NewToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// Begin implements Store.
func (m *Memory) Begin(ctx context.Context, key, fingerprint string, lease time.Duration) (Entry, error) {
	if err := ctx.Err(); err != nil {
		return Entry{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if e, ok := m.entries[key]; ok && now.Before(e.expires) {
		if e.resp != nil {
			r := *e.resp
			r.Body = append([]byte(nil), e.resp.Body...)
			return Entry{State: Completed, Fingerprint: e.fingerprint, Response: &r}, nil
		}
		return Entry{State: InFlight, Fingerprint: e.fingerprint}, nil
	}
	tok := NewToken()
	m.entries[key] = memEntry{fingerprint: fingerprint, token: tok, expires: now.Add(lease)}
	return Entry{State: Acquired, Fingerprint: fingerprint, Token: tok}, nil
}

// Complete implements Store.
func (m *Memory) Complete(ctx context.Context, key, token string, resp Response, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	e, ok := m.entries[key]
	if !ok || e.token != token || e.resp != nil || !now.Before(e.expires) {
		return ErrNotHeld
	}
	r := resp
	r.Body = append([]byte(nil), resp.Body...)
	m.entries[key] = memEntry{fingerprint: e.fingerprint, resp: &r, expires: now.Add(ttl)}
	return nil
}

// Abandon implements Store.
func (m *Memory) Abandon(ctx context.Context, key, token string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if e, ok := m.entries[key]; ok && e.resp == nil && e.token == token {
		delete(m.entries, key)
	}
	return nil
}
