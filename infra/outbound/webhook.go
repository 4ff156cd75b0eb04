package outbound

import (
	"bytes"
	"container/list"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// Webhook request headers (Standard Webhooks), plus the topic the message
// would have on Kafka.
const (
	// HeaderWebhookID carries the envelope id; receivers deduplicate by it.
	HeaderWebhookID = "webhook-id"
	// HeaderWebhookTimestamp carries the attempt's time in unix seconds.
	HeaderWebhookTimestamp = "webhook-timestamp"
	// HeaderWebhookSignature carries "v1,<base64 HMAC-SHA256>" (see Sign).
	HeaderWebhookSignature = "webhook-signature"
	// HeaderWebhookTopic carries the message's Kafka topic (not signed).
	HeaderWebhookTopic = "couponsd-topic"
)

// Defaults of the zero WebhookConfig fields.
const (
	// DefaultWebhookTimeout bounds one delivery attempt.
	DefaultWebhookTimeout = 10 * time.Second
	// DefaultWebhookMinBackoff is the first retry's backoff.
	DefaultWebhookMinBackoff = 500 * time.Millisecond
	// DefaultWebhookMaxBackoff caps the retry backoff.
	DefaultWebhookMaxBackoff = time.Minute
	// DefaultWebhookDedupSize is how many delivered ids the sender remembers.
	DefaultWebhookDedupSize = 100_000
	// DefaultSignatureTolerance is VerifySignature's tolerance when given 0.
	DefaultSignatureTolerance = 5 * time.Minute
	// MinWebhookSecretLen is the shortest accepted secret, in bytes.
	MinWebhookSecretLen = 16
)

// WebhookConfig configures a WebhookSink. Zero fields but URL and Secret
// take their defaults.
type WebhookConfig struct {
	// URL receives every envelope as a POST. Absolute http or https URL.
	URL string
	// Secret is the HMAC-SHA256 key (its bytes, as given), at least
	// MinWebhookSecretLen bytes. Share it with the receiver only.
	Secret string
	// Timeout bounds one delivery attempt. Default 10s.
	Timeout time.Duration
	// MinBackoff and MaxBackoff bound the retry backoff (doubling, with
	// jitter). Defaults 500ms and 1m.
	MinBackoff, MaxBackoff time.Duration
	// DedupSize is how many delivered ids the sender remembers to skip a
	// repeat. Default 100000.
	DedupSize int
	// Client sends the requests. Default: an http.Client that does not
	// follow redirects (a 3xx is a failed attempt).
	Client *http.Client
}

// WithDefaults returns c with every zero field set to its default.
func (c WebhookConfig) WithDefaults() WebhookConfig {
	if c.Timeout == 0 {
		c.Timeout = DefaultWebhookTimeout
	}
	if c.MinBackoff == 0 {
		c.MinBackoff = DefaultWebhookMinBackoff
	}
	if c.MaxBackoff == 0 {
		c.MaxBackoff = DefaultWebhookMaxBackoff
	}
	if c.DedupSize == 0 {
		c.DedupSize = DefaultWebhookDedupSize
	}
	if c.Client == nil {
		c.Client = &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	}
	return c
}

// Validate reports an invalid URL, a short secret, negative durations or
// sizes, or MinBackoff above MaxBackoff.
func (c WebhookConfig) Validate() error {
	var errs []error
	if u, err := url.Parse(c.URL); err != nil || !u.IsAbs() || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		errs = append(errs, domain.Invalid("URL", "must be an absolute http or https URL, got %q", c.URL))
	}
	if len(c.Secret) < MinWebhookSecretLen {
		errs = append(errs, domain.Invalid("Secret", "must be at least %d bytes, got %d", MinWebhookSecretLen, len(c.Secret)))
	}
	for name, d := range map[string]time.Duration{"Timeout": c.Timeout, "MinBackoff": c.MinBackoff, "MaxBackoff": c.MaxBackoff} {
		if d < 0 {
			errs = append(errs, domain.Invalid(name, "must not be negative, got %v", d))
		}
	}
	if c.DedupSize < 0 {
		errs = append(errs, domain.Invalid("DedupSize", "must not be negative, got %d", c.DedupSize))
	}
	if d := c.WithDefaults(); d.MinBackoff > d.MaxBackoff {
		errs = append(errs, domain.Invalid("MinBackoff", "must not exceed MaxBackoff (%v > %v)", d.MinBackoff, d.MaxBackoff))
	}
	return errors.Join(errs...)
}

// WebhookSink POSTs every envelope as JSON to one URL, signed per Standard
// Webhooks (webhook-id, webhook-timestamp, webhook-signature: v1,<base64
// HMAC-SHA256(secret, id.timestamp.body)>). Delivery is in order, one
// request per envelope; only a 2xx delivers. Any other outcome is logged and
// retried with exponential backoff and jitter, for as long as the context
// lasts: an envelope is never dropped. Ids delivered since start are
// remembered (bounded LRU) and not sent again; receivers must still
// deduplicate by webhook-id (a restart, or a 2xx lost on the way back,
// sends an envelope again).
type WebhookSink struct {
	cfg    WebhookConfig
	secret []byte
	log    *slog.Logger

	mu        sync.Mutex // serialises Publish: delivery in order
	closed    bool
	delivered *lru
}

// NewWebhookSink validates cfg and returns a sink posting to cfg.URL. It
// fails on an invalid config or a nil log.
func NewWebhookSink(cfg WebhookConfig, log *slog.Logger) (*WebhookSink, error) {
	if log == nil {
		return nil, errors.New("outbound: NewWebhookSink needs a logger")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("outbound: webhook config: %w", err)
	}
	cfg = cfg.WithDefaults()
	return &WebhookSink{cfg: cfg, secret: []byte(cfg.Secret), log: log, delivered: newLRU(cfg.DedupSize)}, nil
}

// Publish delivers msgs one by one, in order, each retried until it is
// delivered or ctx is done (then it returns ctx's error: the messages from
// that one on are not delivered).
func (s *WebhookSink) Publish(ctx context.Context, msgs []Message) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return errors.New("outbound: webhook sink closed")
	}
	for _, m := range msgs {
		if s.delivered.contains(m.Envelope.ID) {
			continue
		}
		body, err := m.Envelope.Encode()
		if err != nil {
			return err
		}
		if err := s.deliver(ctx, m, body); err != nil {
			return err
		}
		s.delivered.add(m.Envelope.ID)
	}
	return nil
}

// deliver retries one envelope until a 2xx or ctx is done.
func (s *WebhookSink) deliver(ctx context.Context, m Message, body []byte) error {
	for attempt := 1; ; attempt++ {
		status, err := s.attempt(ctx, m, body)
		if err == nil {
			if attempt > 1 {
				s.log.Info("webhook delivered after retries", "id", m.Envelope.ID, "type", m.Envelope.Type, "attempts", attempt)
			}
			return nil
		}
		if ctx.Err() != nil {
			return fmt.Errorf("outbound: deliver webhook %s: %w", m.Envelope.ID, ctx.Err())
		}
		wait := s.backoff(attempt)
		s.log.Warn("webhook delivery failed; retrying", "id", m.Envelope.ID, "type", m.Envelope.Type,
			"attempt", attempt, "status", status, "err", err, "backoff", wait)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("outbound: deliver webhook %s after %d attempts: %w", m.Envelope.ID, attempt, ctx.Err())
		case <-t.C:
		}
	}
}

// attempt sends one signed request; nil means a 2xx.
func (s *WebhookSink) attempt(ctx context.Context, m Message, body []byte) (int, error) {
	actx, cancel := context.WithTimeout(ctx, s.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodPost, s.cfg.URL, bytes.NewReader(body))
	if err != nil {
		return 0, fmt.Errorf("build request: %w", err)
	}
	ts := strconv.FormatInt(time.Now().Unix(), 10)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderWebhookID, m.Envelope.ID)
	req.Header.Set(HeaderWebhookTimestamp, ts)
	req.Header.Set(HeaderWebhookSignature, Sign(s.secret, m.Envelope.ID, ts, body))
	req.Header.Set(HeaderWebhookTopic, m.Topic)
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, fmt.Errorf("receiver answered %s", resp.Status)
	}
	return resp.StatusCode, nil
}

// backoff is MinBackoff doubled per failed attempt, capped at MaxBackoff,
// with equal jitter (between half and all of it).
func (s *WebhookSink) backoff(attempt int) time.Duration {
	d := s.cfg.MinBackoff
	for i := 1; i < attempt && d < s.cfg.MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, s.cfg.MaxBackoff)
	if half := d / 2; half > 0 {
		d = half + rand.N(half+1)
	}
	return d
}

// Close makes later Publish calls fail and closes idle connections. It
// waits for a Publish in progress (cancel its context to end it).
func (s *WebhookSink) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	s.cfg.Client.CloseIdleConnections()
	return nil
}

// Sign returns the webhook-signature header value of one request:
// "v1," + base64(HMAC-SHA256(secret, id + "." + timestamp + "." + body)).
func Sign(secret []byte, id, timestamp string, body []byte) string {
	return "v1," + base64.StdEncoding.EncodeToString(mac(secret, id, timestamp, body))
}

func mac(secret []byte, id, timestamp string, body []byte) []byte {
	h := hmac.New(sha256.New, secret)
	h.Write([]byte(id))
	h.Write([]byte("."))
	h.Write([]byte(timestamp))
	h.Write([]byte("."))
	h.Write(body)
	return h.Sum(nil)
}

// Signature verification errors.
var (
	// ErrBadTimestamp: webhook-timestamp is not unix seconds.
	ErrBadTimestamp = errors.New("outbound: malformed webhook timestamp")
	// ErrTimestampOutOfTolerance: the timestamp is too far from now (a replay, or a skewed clock).
	ErrTimestampOutOfTolerance = errors.New("outbound: webhook timestamp outside tolerance")
	// ErrNoValidSignature: no v1 signature of the header matches.
	ErrNoValidSignature = errors.New("outbound: no valid webhook signature")
)

// VerifySignature checks a received webhook, for receivers: timestamp must
// be unix seconds within tolerance of now (0 means
// DefaultSignatureTolerance), and one of the space-separated signatures of
// signatureHeader must be "v1,<base64 HMAC-SHA256(secret, id.timestamp.body)>"
// (compared in constant time; other versions are ignored). body must be the
// raw request body.
func VerifySignature(secret []byte, id, timestamp string, body []byte, signatureHeader string, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultSignatureTolerance
	}
	sec, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrBadTimestamp, timestamp)
	}
	if skew := now.Sub(time.Unix(sec, 0)); skew > tolerance || skew < -tolerance {
		return fmt.Errorf("%w: %s is %v from now (tolerance %v)", ErrTimestampOutOfTolerance, timestamp, skew.Round(time.Second), tolerance)
	}
	want := mac(secret, id, timestamp, body)
	for _, sig := range strings.Fields(signatureHeader) {
		version, b64, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			continue
		}
		if hmac.Equal(got, want) {
			return nil
		}
	}
	return fmt.Errorf("%w for webhook %s", ErrNoValidSignature, id)
}

// lru is a bounded set of recently delivered ids (oldest evicted first).
type lru struct {
	max   int
	order *list.List // front: newest
	items map[string]*list.Element
}

func newLRU(max int) *lru {
	return &lru{max: max, order: list.New(), items: make(map[string]*list.Element)}
}

func (l *lru) contains(id string) bool {
	e, ok := l.items[id]
	if ok {
		l.order.MoveToFront(e)
	}
	return ok
}

func (l *lru) add(id string) {
	if l.max <= 0 {
		return
	}
	if e, ok := l.items[id]; ok {
		l.order.MoveToFront(e)
		return
	}
	l.items[id] = l.order.PushFront(id)
	for l.order.Len() > l.max {
		old := l.order.Back()
		l.order.Remove(old)
		delete(l.items, old.Value.(string))
	}
}
