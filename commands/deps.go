package commands

import (
	"context"
	"errors"

	"github.com/couponsd/couponsd/domain"
)

// Deps are what the command handlers share.
type Deps struct {
	Repo  *Repository
	Guard StockGuard
	Clock domain.Clock
}

func (d Deps) validate(name string) error {
	if d.Repo == nil || d.Guard == nil || d.Clock == nil {
		return errors.New("commands: " + name + " needs a repository, a stock guard and a clock")
	}
	return nil
}

// Result is what a command left behind: the aggregate's state and, when it
// appended, where its last event landed (0 when nothing changed).
type Result[A any] struct {
	Aggregate A
	Position  uint64
	Changed   bool
}

// changeCoupon loads a coupon, lets decide record changes, and appends them
// with the loaded version; a version conflict reloads and decides again.
func changeCoupon(ctx context.Context, repo *Repository, id string, decide func(c *domain.Coupon) error) (Result[*domain.Coupon], error) {
	if err := domain.ValidateID("coupon_id", id); err != nil {
		return Result[*domain.Coupon]{}, err
	}
	var out Result[*domain.Coupon]
	err := retryOnConcurrency(ctx, func() error {
		c, err := repo.LoadCoupon(ctx, id)
		if err != nil {
			return err
		}
		if err := decide(c); err != nil {
			return err
		}
		out = Result[*domain.Coupon]{Aggregate: c}
		if len(c.Changes()) == 0 {
			return nil
		}
		res, err := repo.SaveCoupon(ctx, c)
		if err != nil {
			return err
		}
		out.Position, out.Changed = res.Position, true
		return nil
	})
	return out, err
}

// changeBatch is changeCoupon for batches; after a change it syncs the guard.
func changeBatch(ctx context.Context, d Deps, id string, decide func(b *domain.Batch) error) (Result[*domain.Batch], error) {
	if err := domain.ValidateID("batch_id", id); err != nil {
		return Result[*domain.Batch]{}, err
	}
	var out Result[*domain.Batch]
	err := retryOnConcurrency(ctx, func() error {
		b, err := d.Repo.LoadBatch(ctx, id)
		if err != nil {
			return err
		}
		if !b.Exists() {
			return domain.Errorf(domain.ErrNotFound, "batch %s not found", id)
		}
		if err := decide(b); err != nil {
			return err
		}
		out = Result[*domain.Batch]{Aggregate: b}
		if len(b.Changes()) == 0 {
			return nil
		}
		res, err := d.Repo.SaveBatch(ctx, b)
		if err != nil {
			return err
		}
		out.Position, out.Changed = res.Position, true
		return nil
	})
	if err != nil {
		return out, err
	}
	// The event is durable; the guard follows. SyncBatch is idempotent by
	// version, so a failure here is healed by a retry or the start-up sync.
	return out, d.Guard.SyncBatch(ctx, GuardBatchOf(out.Aggregate))
}

// couponHandler is what the order-flow handlers share.
type couponHandler struct {
	repo  *Repository
	clock domain.Clock
}

func newCouponHandler(name string, repo *Repository, clock domain.Clock) (couponHandler, error) {
	if repo == nil || clock == nil {
		return couponHandler{}, errors.New("commands: " + name + " needs a repository and a clock")
	}
	return couponHandler{repo: repo, clock: clock}, nil
}
