package idempotency_test

import (
	"sync"
	"testing"
	"time"

	"github.com/couponsd/couponsd/infra/httpapi/idempotency"
	"github.com/couponsd/couponsd/infra/httpapi/idempotency/storetest"
)

func TestMemoryConformance(t *testing.T) {
	var (
		mu  sync.Mutex
		now = time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	)
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	storetest.Run(t, storetest.Harness{
		New: func(t *testing.T) idempotency.Store { return idempotency.NewMemory(clock) },
		Advance: func(t *testing.T, d time.Duration) {
			mu.Lock()
			now = now.Add(d)
			mu.Unlock()
		},
	})
}
