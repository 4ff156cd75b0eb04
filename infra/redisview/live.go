package redisview

import (
	"context"
	"errors"
	"strconv"
	"sync"

	"github.com/couponsd/couponsd/infra/redisx"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
	"github.com/redis/go-redis/v9"
)

// Live is the view as served: the current generation of the Redis view.
// A rebuild writes generation N+1 under its own key prefix while N serves,
// then flips the generation key and drops N.
type Live struct {
	rdb  redis.UniversalClient
	base string // service prefix + "view:"
	mu   sync.RWMutex
	gen  int64
	cur  *Store
}

var (
	_ projections.ViewGenerations = (*Live)(nil)
	_ readapi.UsableView          = (*Live)(nil)
)

// OpenLive opens the current generation (0 on an empty Redis).
func OpenLive(ctx context.Context, rdb redis.UniversalClient, prefix string) (*Live, error) {
	if rdb == nil {
		return nil, errors.New("redisview: nil redis client")
	}
	l := &Live{rdb: rdb, base: prefix + "view:"}
	gen, err := rdb.Get(ctx, l.genKey()).Int64()
	if err != nil && !errors.Is(err, redis.Nil) {
		return nil, unavailable(err)
	}
	l.gen, l.cur = gen, l.store(gen)
	return l, nil
}

func (l *Live) genKey() string { return l.base + "generation" }

func (l *Live) store(gen int64) *Store {
	return &Store{rdb: l.rdb, prefix: l.base + "g" + strconv.FormatInt(gen, 10) + ":",
		apply: redis.NewScript(applyLua), batch: redis.NewScript(batchLua)}
}

// Current is the generation serving now.
func (l *Live) Current() *Store {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.cur
}

// Generation is the current generation number.
func (l *Live) Generation() int64 {
	l.mu.RLock()
	defer l.mu.RUnlock()
	return l.gen
}

// ApplyView writes to the current generation.
func (l *Live) ApplyView(ctx context.Context, ops []projections.ViewOp) error {
	return l.Current().ApplyView(ctx, ops)
}

// PutBatch writes to the current generation.
func (l *Live) PutBatch(ctx context.Context, b projections.BatchEntry) error {
	return l.Current().PutBatch(ctx, b)
}

// Checkpoint of the current generation.
func (l *Live) Checkpoint(ctx context.Context) (uint64, error) { return l.Current().Checkpoint(ctx) }

// SaveCheckpoint of the current generation.
func (l *Live) SaveCheckpoint(ctx context.Context, pos uint64) error {
	return l.Current().SaveCheckpoint(ctx, pos)
}

// List reads the current generation.
func (l *Live) List(ctx context.Context, userID, status, cursor string, limit int) (readapi.ViewPage, error) {
	return l.Current().List(ctx, userID, status, cursor, limit)
}

// Batches reads the current generation's catalog.
func (l *Live) Batches(ctx context.Context) ([]projections.BatchEntry, error) {
	return l.Current().Batches(ctx)
}

// All reads a user's whole view from the current generation.
func (l *Live) All(ctx context.Context, userID string) ([]projections.ViewCoupon, error) {
	return l.Current().All(ctx, userID)
}

// NextGeneration prepares generation N+1 (emptied first, in case an aborted
// rebuild left keys behind). commit flips the generation key and drops N.
func (l *Live) NextGeneration(ctx context.Context) (projections.ViewStore, func(context.Context) error, func(context.Context) error, error) {
	l.mu.RLock()
	gen := l.gen + 1
	l.mu.RUnlock()
	next := l.store(gen)
	if err := redisx.DeletePrefix(ctx, l.rdb, next.prefix); err != nil {
		return nil, nil, nil, unavailable(err)
	}
	commit := func(ctx context.Context) error {
		if err := l.rdb.Set(ctx, l.genKey(), gen, 0).Err(); err != nil {
			return unavailable(err)
		}
		l.mu.Lock()
		old := l.cur
		l.gen, l.cur = gen, next
		l.mu.Unlock()
		return unavailable(redisx.DeletePrefix(ctx, l.rdb, old.prefix))
	}
	abort := func(ctx context.Context) error { return unavailable(redisx.DeletePrefix(ctx, l.rdb, next.prefix)) }
	return next, commit, abort, nil
}

// Users lists the users of the current generation (for verify).
func (l *Live) Users(ctx context.Context) ([]string, error) { return l.Current().Users(ctx) }

// InspectUsers reads users' raw view entries from the current generation.
func (l *Live) InspectUsers(ctx context.Context, userIDs []string) (map[string][]readapi.ViewEntry, error) {
	return l.Current().InspectUsers(ctx, userIDs)
}

// InspectCatalog reads the raw catalog of the current generation.
func (l *Live) InspectCatalog(ctx context.Context) ([]readapi.CatalogEntry, error) {
	return l.Current().InspectCatalog(ctx)
}

// Reset drops every generation of the view and starts again at generation
// 0 (after Redis lost its data: the view is replayed from the first event).
func (l *Live) Reset(ctx context.Context) error {
	if err := redisx.DeletePrefix(ctx, l.rdb, l.base); err != nil {
		return unavailable(err)
	}
	l.mu.Lock()
	l.gen, l.cur = 0, l.store(0)
	l.mu.Unlock()
	return nil
}
