package esindex

import (
	"errors"
	"strings"

	"github.com/couponsd/couponsd/domain"
)

// Refresh policies of bulk writes (the refresh parameter of _bulk).
const (
	// RefreshWaitFor (the default) answers once the writes are visible to
	// searches, waiting for the next periodic refresh (index
	// refresh_interval, 1s by default): read-your-writes at the cost of up
	// to one refresh interval per Upsert, without forcing extra segments.
	RefreshWaitFor = "wait_for"
	// RefreshTrue refreshes the shard right after the writes: immediate
	// visibility, but a small segment per call; for tests and low write
	// rates.
	RefreshTrue = "true"
	// RefreshFalse does not wait: writes become visible to ListByUser and
	// the reports within refresh_interval. Get (a realtime _mget) and
	// Checkpoint see them at once. For bulk rebuilds where no one reads the
	// new generation's listings before Commit.
	RefreshFalse = "false"
)

// DefaultMaxBulkItems bounds the records of one _bulk request when
// Options.MaxBulkItems is zero.
const DefaultMaxBulkItems = 1000

// Options configures an Index. The zero value is valid.
type Options struct {
	// Prefix starts every index name: the alias <Prefix>history, the
	// generation indices <Prefix>history-v<N> behind it, and the meta index
	// <Prefix>history-meta. Lowercase letters, digits, '-', '_' and '.';
	// it must not start with '-', '_' or '+'. May be empty.
	Prefix string
	// Refresh is the refresh policy of Upsert: RefreshWaitFor (default),
	// RefreshTrue or RefreshFalse.
	Refresh string
	// Replicas is index.number_of_replicas of the indices New and Rebuild
	// create (0: none, right for a single node; production clusters set 1).
	// Every index has one primary shard so that the terms aggregations of
	// the reports are exact.
	Replicas int
	// MaxBulkItems bounds the records of one _bulk request; a larger Upsert
	// is sent in several requests, in order. Default DefaultMaxBulkItems.
	MaxBulkItems int
}

// Validate reports invalid settings.
func (o Options) Validate() error {
	var errs []error
	if !validPrefix(o.Prefix) {
		errs = append(errs, domain.Invalid("Prefix", "%q is not a valid index name prefix", o.Prefix))
	}
	switch o.Refresh {
	case "", RefreshWaitFor, RefreshTrue, RefreshFalse:
	default:
		errs = append(errs, domain.Invalid("Refresh", "must be %q, %q or %q, got %q", RefreshWaitFor, RefreshTrue, RefreshFalse, o.Refresh))
	}
	if o.Replicas < 0 {
		errs = append(errs, domain.Invalid("Replicas", "must not be negative, got %d", o.Replicas))
	}
	if o.MaxBulkItems < 0 {
		errs = append(errs, domain.Invalid("MaxBulkItems", "must not be negative, got %d", o.MaxBulkItems))
	}
	return errors.Join(errs...)
}

func (o Options) withDefaults() Options {
	if o.Refresh == "" {
		o.Refresh = RefreshWaitFor
	}
	if o.MaxBulkItems == 0 {
		o.MaxBulkItems = DefaultMaxBulkItems
	}
	return o
}

func validPrefix(p string) bool {
	if len(p) > 200 || strings.HasPrefix(p, "-") || strings.HasPrefix(p, "_") || strings.HasPrefix(p, "+") {
		return false
	}
	for _, c := range p {
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.':
		default:
			return false
		}
	}
	return true
}
