package boltindex

import (
	"time"

	"github.com/couponsd/couponsd/domain"
)

// DefaultOpenTimeout is the wait for the file lock used when
// Options.OpenTimeout is zero.
const DefaultOpenTimeout = 5 * time.Second

// Options configures an Index. The zero value is valid.
type Options struct {
	// OpenTimeout bounds the wait for the file lock held by another
	// process. Default DefaultOpenTimeout.
	OpenTimeout time.Duration
}

// Validate reports invalid settings.
func (o Options) Validate() error {
	if o.OpenTimeout < 0 {
		return domain.Invalid("OpenTimeout", "must not be negative, got %v", o.OpenTimeout)
	}
	return nil
}

func (o Options) withDefaults() Options {
	if o.OpenTimeout == 0 {
		o.OpenTimeout = DefaultOpenTimeout
	}
	return o
}
