package commands

import (
	"context"
	"errors"
	"fmt"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
	"github.com/google/uuid"
)

// Stream names.
func batchStream(id string) string  { return "batch-" + id }
func couponStream(id string) string { return "coupon-" + id }

// BatchStream and CouponStream name the event streams of the aggregates.
func BatchStream(id string) string  { return batchStream(id) }
func CouponStream(id string) string { return couponStream(id) }

// maxConcurrencyRetries bounds reload-and-retry after a version conflict.
const maxConcurrencyRetries = 8

// Repository loads and saves aggregates through the event store port.
type Repository struct {
	store es.Store
	reg   *domain.Registry
}

// NewRepository fails fast on nil dependencies.
func NewRepository(store es.Store, reg *domain.Registry) (*Repository, error) {
	if store == nil || reg == nil {
		return nil, errors.New("commands: NewRepository needs a store and a registry")
	}
	return &Repository{store: store, reg: reg}, nil
}

// Store exposes the event store (for queries that read streams).
func (r *Repository) Store() es.Store { return r.store }

// Registry exposes the event registry.
func (r *Repository) Registry() *domain.Registry { return r.reg }

// Decode turns stored events into domain events.
func (r *Repository) Decode(recs []es.RecordedEvent) ([]domain.Event, error) {
	out := make([]domain.Event, 0, len(recs))
	for _, rec := range recs {
		e, err := r.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

func (r *Repository) load(ctx context.Context, stream string) ([]domain.Event, error) {
	recs, err := r.store.ReadStream(ctx, stream, 0)
	if err != nil {
		return nil, err
	}
	return r.Decode(recs)
}

// LoadBatch reads a batch; a missing batch is returned with Exists() false.
func (r *Repository) LoadBatch(ctx context.Context, id string) (*domain.Batch, error) {
	evs, err := r.load(ctx, batchStream(id))
	if err != nil {
		return nil, err
	}
	return domain.NewBatchFromHistory(id, evs), nil
}

// LoadCoupon reads a coupon; a missing coupon is returned with Exists() false.
func (r *Repository) LoadCoupon(ctx context.Context, id string) (*domain.Coupon, error) {
	evs, err := r.load(ctx, couponStream(id))
	if err != nil {
		return nil, err
	}
	return domain.NewCouponFromHistory(id, evs), nil
}

// eventID derives a deterministic event id from the stream and revision, so
// a retried append of the same change carries the same ids (EventStoreDB
// deduplicates on them).
func eventID(stream string, rev int64) string {
	return uuid.NewSHA1(uuid.NameSpaceOID, fmt.Appendf(nil, "%s/%d", stream, rev)).String()
}

func (r *Repository) save(ctx context.Context, stream string, base int64, changes []domain.Event) (es.AppendResult, error) {
	data := make([]es.EventData, len(changes))
	for i, e := range changes {
		name, b, err := r.reg.Marshal(e)
		if err != nil {
			return es.AppendResult{}, err
		}
		data[i] = es.EventData{ID: eventID(stream, base+1+int64(i)), Type: name, Data: b}
	}
	exp := es.NoStream
	if base >= 0 {
		exp = es.Exact(uint64(base))
	}
	return r.store.Append(ctx, stream, exp, data...)
}

// SaveBatch appends the batch's pending changes with its base version.
func (r *Repository) SaveBatch(ctx context.Context, b *domain.Batch) (es.AppendResult, error) {
	return r.save(ctx, batchStream(b.ID), b.BaseVersion(), b.Changes())
}

// SaveCoupon appends the coupon's pending changes with its base version.
func (r *Repository) SaveCoupon(ctx context.Context, c *domain.Coupon) (es.AppendResult, error) {
	return r.save(ctx, couponStream(c.ID), c.BaseVersion(), c.Changes())
}

// GuardBatchOf projects a batch onto what the stock guard needs.
func GuardBatchOf(b *domain.Batch) GuardBatch {
	return GuardBatch{
		BatchID: b.ID, Version: b.Version(), RuleVersion: b.RuleVersion, Paused: b.Paused, Stopped: b.Stopped,
		Public: b.Rules.Audience == domain.AudiencePublic, PerUserLimit: b.Rules.PerUserLimit,
		ClaimStartsAt: b.Rules.ClaimStartsAt, ClaimEndsAt: b.Rules.ClaimEndsAt, TotalStock: b.TotalStock,
	}
}

// retryOnConcurrency runs attempt until it does not fail with a version
// conflict: each attempt reloads the aggregate and decides again.
func retryOnConcurrency(ctx context.Context, attempt func() error) error {
	var err error
	for i := 0; i < maxConcurrencyRetries; i++ {
		if err = attempt(); !errors.Is(err, domain.ErrConcurrency) {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return domain.Errorf(domain.ErrConflict, "too many concurrent changes, retry: %v", err)
}

func (r *Repository) loadUpTo(ctx context.Context, stream string, rev uint64) ([]domain.Event, error) {
	recs, err := r.store.ReadStream(ctx, stream, 0)
	if err != nil {
		return nil, err
	}
	if uint64(len(recs)) > rev+1 {
		recs = recs[:rev+1]
	}
	return r.Decode(recs)
}

// LoadCouponAt rebuilds a coupon as it was at revision rev.
func (r *Repository) LoadCouponAt(ctx context.Context, id string, rev uint64) (*domain.Coupon, error) {
	evs, err := r.loadUpTo(ctx, couponStream(id), rev)
	if err != nil {
		return nil, err
	}
	return domain.NewCouponFromHistory(id, evs), nil
}

// LoadBatchAt rebuilds a batch as it was at revision rev.
func (r *Repository) LoadBatchAt(ctx context.Context, id string, rev uint64) (*domain.Batch, error) {
	evs, err := r.loadUpTo(ctx, batchStream(id), rev)
	if err != nil {
		return nil, err
	}
	return domain.NewBatchFromHistory(id, evs), nil
}

// StreamPrefixes are the categories of every stream the service writes (an
// event store adapter that filters by prefix, like EventStoreDB's, must
// know them all).
func StreamPrefixes() []string {
	return []string{"batch-", "coupon-", grantJobStreamPrefix, grantShardStreamPrefix, reminderStreamPrefix}
}
