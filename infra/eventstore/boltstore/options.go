package boltstore

import (
	"errors"
	"log/slog"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// Defaults used for zero Options fields.
const (
	DefaultMaxBatch          = 1024
	DefaultOpenTimeout       = 5 * time.Second
	DefaultHeadCacheSize     = 1 << 18
	DefaultSubscribePageSize = 256
)

// Options configures a Store. The zero value is valid: every zero field takes
// its default.
type Options struct {
	// MaxBatch is the most appends written by one commit (one fsync).
	// Default DefaultMaxBatch.
	MaxBatch int
	// MaxBatchDelay is how long the committer waits for more appends after
	// the first one of a batch. 0 (the default) commits as soon as the
	// committer is free, taking whatever queued while the previous commit
	// was syncing.
	MaxBatchDelay time.Duration
	// Logger receives commit failures. Default: discard.
	Logger *slog.Logger
	// OnCommit, if set, is called by the committer after every successful
	// commit with the number of appends it held (e.g. to feed a histogram).
	// It runs on the committer goroutine and must be quick.
	OnCommit func(batchSize int)
	// Now stamps RecordedAt. Default time.Now.
	Now func() time.Time
	// OpenTimeout bounds the wait for the file lock held by another
	// process. Default DefaultOpenTimeout.
	OpenTimeout time.Duration
	// HeadCacheSize bounds the in-memory cache of stream heads (last
	// revisions) used to check expected versions. Default
	// DefaultHeadCacheSize entries; misses are read from the db.
	HeadCacheSize int
	// SubscribePageSize is how many events a subscription reads per read
	// transaction. Default DefaultSubscribePageSize.
	SubscribePageSize int
}

// Validate reports invalid settings (negative values). Zero values are valid
// and mean the defaults.
func (o Options) Validate() error {
	var errs []error
	if o.MaxBatch < 0 {
		errs = append(errs, domain.Invalid("MaxBatch", "must not be negative, got %d", o.MaxBatch))
	}
	if o.MaxBatchDelay < 0 {
		errs = append(errs, domain.Invalid("MaxBatchDelay", "must not be negative, got %v", o.MaxBatchDelay))
	}
	if o.OpenTimeout < 0 {
		errs = append(errs, domain.Invalid("OpenTimeout", "must not be negative, got %v", o.OpenTimeout))
	}
	if o.HeadCacheSize < 0 {
		errs = append(errs, domain.Invalid("HeadCacheSize", "must not be negative, got %d", o.HeadCacheSize))
	}
	if o.SubscribePageSize < 0 {
		errs = append(errs, domain.Invalid("SubscribePageSize", "must not be negative, got %d", o.SubscribePageSize))
	}
	return errors.Join(errs...)
}

// withDefaults fills in zero fields.
func (o Options) withDefaults() Options {
	if o.MaxBatch == 0 {
		o.MaxBatch = DefaultMaxBatch
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	if o.HeadCacheSize == 0 {
		o.HeadCacheSize = DefaultHeadCacheSize
	}
	if o.SubscribePageSize == 0 {
		o.SubscribePageSize = DefaultSubscribePageSize
	}
	return o
}
