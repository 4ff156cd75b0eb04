package commands

import (
	"context"
	"sync"

	"github.com/couponsd/couponsd/domain"
)

// BatchCache keeps loaded batches for the claim path. A batch's rules are
// fixed once it has started, and the stock guard reports the rule version it
// admitted a claim under, so a cached batch is reloaded only when that
// version differs. Cached batches are shared: read them, never command them.
type BatchCache struct {
	repo *Repository
	mu   sync.RWMutex
	m    map[string]*domain.Batch
}

// NewBatchCache builds an empty cache.
func NewBatchCache(repo *Repository) *BatchCache {
	return &BatchCache{repo: repo, m: map[string]*domain.Batch{}}
}

// Get returns the batch, loading it when absent or when its rule version is
// not wantRuleVersion (pass -1 to accept any cached version).
func (c *BatchCache) Get(ctx context.Context, id string, wantRuleVersion int) (*domain.Batch, error) {
	c.mu.RLock()
	b, ok := c.m[id]
	c.mu.RUnlock()
	if ok && (wantRuleVersion < 0 || b.RuleVersion == wantRuleVersion) {
		return b, nil
	}
	b, err := c.repo.LoadBatch(ctx, id)
	if err != nil || !b.Exists() {
		return b, err
	}
	c.mu.Lock()
	c.m[id] = b
	c.mu.Unlock()
	return b, nil
}
