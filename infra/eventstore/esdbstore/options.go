package esdbstore

import (
	"errors"
	"log/slog"
	"strings"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// DefaultStreamPrefixes are the service's stream categories (the composition
// root passes commands.StreamPrefixes; this default serves the tests).
var DefaultStreamPrefixes = []string{"batch-", "coupon-", "grantjob-", "grantshard-", "reminder-"}

// Defaults used for zero Options fields.
const (
	DefaultResubscribeMin = 50 * time.Millisecond
	DefaultResubscribeMax = 5 * time.Second
	DefaultRequestTimeout = 30 * time.Second
	DefaultCloseTimeout   = 5 * time.Second
)

// Options configures a Store. The zero value is valid: every zero field
// takes its default.
type Options struct {
	// StreamPrefixes are the stream-name prefixes (categories) of the
	// service's streams. ReadAll, LastPosition and Subscribe only see events
	// of streams starting with Namespace+prefix (Subscribe filters on the
	// server), and Append rejects other streams, which those would never
	// see. An empty prefix ("") admits every stream of the namespace.
	// Default DefaultStreamPrefixes.
	StreamPrefixes []string
	// Namespace is prepended to every stream name on the server and
	// stripped from what is read, so several stores (test runs, tenants)
	// can share one database without seeing each other. End it with a
	// separator ("t42-") so that no namespace is a prefix of another.
	// Default "" (stream names are used as they are).
	Namespace string
	// ResubscribeMin and ResubscribeMax bound the exponential backoff
	// (with jitter) between the attempts of a subscription to re-subscribe
	// after an error. Defaults DefaultResubscribeMin and
	// DefaultResubscribeMax.
	ResubscribeMin time.Duration
	ResubscribeMax time.Duration
	// RequestTimeout bounds a call (Append, ReadStream, ReadAll,
	// LastPosition) whose context has no deadline. Default
	// DefaultRequestTimeout.
	RequestTimeout time.Duration
	// CloseTimeout bounds how long Close waits for calls still inside the
	// client before closing it. Default DefaultCloseTimeout.
	CloseTimeout time.Duration
	// Logger receives resubscriptions, dropped connections and the
	// client's own log lines (at debug level). Default: discard.
	Logger *slog.Logger
}

// Validate reports invalid settings. Zero values are valid and mean the
// defaults.
func (o Options) Validate() error {
	var errs []error
	if o.StreamPrefixes != nil && len(o.StreamPrefixes) == 0 {
		errs = append(errs, domain.Invalid("StreamPrefixes", "must not be empty (nil means the default)"))
	}
	seen := make(map[string]bool, len(o.StreamPrefixes))
	for _, p := range o.StreamPrefixes {
		if strings.HasPrefix(o.Namespace+p, "$") {
			errs = append(errs, domain.Invalid("StreamPrefixes", "%q: system streams ($...) are not supported", p))
		}
		if seen[p] {
			errs = append(errs, domain.Invalid("StreamPrefixes", "%q listed twice", p))
		}
		seen[p] = true
	}
	if strings.HasPrefix(o.Namespace, "$") {
		errs = append(errs, domain.Invalid("Namespace", "%q: must not start with $", o.Namespace))
	}
	if o.ResubscribeMin < 0 {
		errs = append(errs, domain.Invalid("ResubscribeMin", "must not be negative, got %v", o.ResubscribeMin))
	}
	if o.ResubscribeMax < 0 {
		errs = append(errs, domain.Invalid("ResubscribeMax", "must not be negative, got %v", o.ResubscribeMax))
	}
	if o.ResubscribeMin > 0 && o.ResubscribeMax > 0 && o.ResubscribeMin > o.ResubscribeMax {
		errs = append(errs, domain.Invalid("ResubscribeMin", "%v is above ResubscribeMax %v", o.ResubscribeMin, o.ResubscribeMax))
	}
	if o.RequestTimeout < 0 {
		errs = append(errs, domain.Invalid("RequestTimeout", "must not be negative, got %v", o.RequestTimeout))
	}
	if o.CloseTimeout < 0 {
		errs = append(errs, domain.Invalid("CloseTimeout", "must not be negative, got %v", o.CloseTimeout))
	}
	return errors.Join(errs...)
}

// withDefaults fills in zero fields.
func (o Options) withDefaults() Options {
	if o.StreamPrefixes == nil {
		o.StreamPrefixes = DefaultStreamPrefixes
	}
	o.StreamPrefixes = append([]string(nil), o.StreamPrefixes...)
	if o.ResubscribeMin == 0 {
		o.ResubscribeMin = DefaultResubscribeMin
	}
	if o.ResubscribeMax == 0 {
		o.ResubscribeMax = max(DefaultResubscribeMax, o.ResubscribeMin)
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.CloseTimeout == 0 {
		o.CloseTimeout = DefaultCloseTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}
