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
	// NoSync skips the fsync of each write. The index is a projection that
	// can be rebuilt from the event store (couponsd replay): a process crash
	// loses nothing (writes are in the OS page cache), an OS crash or power
	// loss may lose the last writes or damage the file, which a replay
	// repairs. The service turns it on: the fsync cost ~13% of a claim's CPU.
	NoSync bool
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
