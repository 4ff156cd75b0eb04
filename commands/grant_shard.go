package commands

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// GrantShard grants the users of one shard of a job (a command sent by the
// job's coordinator over the grant shard bus; delivered at least once).
type GrantShard struct {
	JobID   string `json:"job_id"`
	BatchID string `json:"batch_id"`
	Shard   int    `json:"shard"`
}

// GrantShardConfig tunes the shard consumer.
type GrantShardConfig struct {
	LeaseTTL     time.Duration // a shard's lease, never renewed (default 10s; a shard takes well under a second, and a slower one run twice at once is still exact)
	ReserveChunk int           // users reserved per guard call (default 250)
	Window       int           // coupon appends in flight per shard (default 64)
	Owner        string        // this instance's name in lease tokens
}

// WithDefaults fills zero fields.
func (c GrantShardConfig) WithDefaults() GrantShardConfig {
	if c.LeaseTTL <= 0 {
		c.LeaseTTL = 10 * time.Second
	}
	if c.ReserveChunk <= 0 {
		c.ReserveChunk = 250
	}
	if c.Window <= 0 {
		c.Window = 64
	}
	if c.Owner == "" {
		c.Owner = "couponsd"
	}
	return c
}

// GrantShardHandler handles GrantShard.
type GrantShardHandler struct {
	d      Deps
	leases JobLeases
	cfg    GrantShardConfig
	// settleTimeout bounds the clean-up after a failed append.
	settleTimeout time.Duration
}

// NewGrantShardHandler fails fast on missing dependencies.
func NewGrantShardHandler(d Deps, leases JobLeases, cfg GrantShardConfig) (*GrantShardHandler, error) {
	if err := d.validate("GrantShardHandler"); err != nil {
		return nil, err
	}
	if leases == nil {
		return nil, errors.New("commands: GrantShardHandler needs leases")
	}
	return &GrantShardHandler{d: d, leases: leases, cfg: cfg.WithDefaults(), settleTimeout: 5 * time.Second}, nil
}

// Handle grants every user of the shard and records grantshard.done.v1. A
// done shard, or one leased by another consumer, is left alone (nil). A
// shard seen for the first time (it records grantshard.started.v1) takes the
// fast path: users reserved in bulk, coupons appended, reservations
// confirmed in bulk. A shard started before (a crash, a redelivery) takes
// the careful path: each user's grant is looked up first, so nothing is
// granted or counted twice. Per user: granted, skipped (the user already
// holds the batch's per-user limit), not granted (sold out) or failed (the
// batch closed, or an append failed and was settled).
//
// An infrastructure error, or a cancelled ctx, leaves the shard unfinished:
// redelivered (or re-sent by the coordinator), it resumes.
func (h *GrantShardHandler) Handle(ctx context.Context, cmd GrantShard) (*domain.GrantShardDone, error) {
	if err := domain.ValidateID("job_id", cmd.JobID); err != nil {
		return nil, err
	}
	if cmd.Shard < 0 {
		return nil, domain.Invalid("shard", "must not be negative")
	}
	if done, err := shardDone(ctx, h.d.Repo, cmd.JobID, cmd.Shard); err != nil || done != nil {
		return done, err
	}
	token, err := leaseToken(h.cfg.Owner)
	if err != nil {
		return nil, err
	}
	key := fmt.Sprintf("%s/%d", cmd.JobID, cmd.Shard)
	ok, err := h.leases.TryLease(ctx, key, token, h.cfg.LeaseTTL)
	if err != nil || !ok {
		return nil, err // another consumer has it; the coordinator re-sends it if that one dies
	}
	defer func() {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
		defer cancel()
		_ = h.leases.ReleaseLease(rctx, key, token)
	}()

	s, err := loadGrantShard(ctx, h.d.Repo, cmd.JobID, cmd.Shard)
	if err != nil {
		return nil, err
	}
	if !s.Exists() {
		return nil, domain.Errorf(domain.ErrNotFound, "grant shard %s/%d not found", cmd.JobID, cmd.Shard)
	}
	if s.Done {
		return shardDone(ctx, h.d.Repo, s.JobID, s.Shard)
	}
	fresh := false
	if !s.Started {
		if err := s.Start(h.d.Clock.Now()); err != nil {
			return nil, err
		}
		switch err := saveGrantShard(ctx, h.d.Repo, s); {
		case err == nil:
			fresh = true
		case errors.Is(err, domain.ErrConcurrency): // started meanwhile: the careful path
		default:
			return nil, err
		}
		if s, err = loadGrantShard(ctx, h.d.Repo, cmd.JobID, cmd.Shard); err != nil {
			return nil, err
		}
		if s.Done {
			return shardDone(ctx, h.d.Repo, s.JobID, s.Shard)
		}
	}
	r, err := newShardRun(ctx, h, s)
	if err != nil {
		return nil, err
	}
	if fresh {
		err = r.fast(ctx)
	} else {
		err = r.careful(ctx)
	}
	r.wg.Wait()
	if err == nil {
		err = ctx.Err() // appends cut short: settled on resume
	}
	if err != nil {
		return nil, err
	}
	if err := s.Finish(r.counts(), r.outcome(), h.d.Clock.Now()); err != nil {
		return nil, fmt.Errorf("grant shard %s/%d: %w", s.JobID, s.Shard, err)
	}
	switch err := saveGrantShard(ctx, h.d.Repo, s); {
	case err == nil:
		ch := s.Changes()
		return ch[len(ch)-1].(*domain.GrantShardDone), nil
	case errors.Is(err, domain.ErrConcurrency):
		// Done by another run meanwhile: its counts stand.
		return shardDone(ctx, h.d.Repo, s.JobID, s.Shard)
	default:
		return nil, err
	}
}

func leaseToken(owner string) (string, error) {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return owner + "/" + hex.EncodeToString(b), nil
}

// shardRun is one run of one shard.
type shardRun struct {
	h        *GrantShardHandler
	s        *domain.GrantShard
	batch    *domain.Batch
	closed   bool // the batch stopped or ended during the run
	granted  atomic.Int64
	skipped  atomic.Int64
	notGrant atomic.Int64
	failed   atomic.Int64
	sem      chan struct{}
	wg       sync.WaitGroup
	// pending: coupon ids of this batch reserved but not confirmed when a
	// careful run started (an earlier run stopped mid-grant).
	pending map[string]bool
}

func newShardRun(ctx context.Context, h *GrantShardHandler, s *domain.GrantShard) (*shardRun, error) {
	r := &shardRun{h: h, s: s, sem: make(chan struct{}, h.cfg.Window)}
	b, err := h.d.Repo.LoadBatch(ctx, s.BatchID)
	if err != nil {
		return nil, err
	}
	if !b.Exists() {
		return nil, domain.Errorf(domain.ErrNotFound, "batch %s of grant job %s not found", s.BatchID, s.JobID)
	}
	r.batch = b
	return r, nil
}

func (r *shardRun) counts() domain.GrantCounts {
	return domain.GrantCounts{Total: len(r.s.UserIDs), Granted: int(r.granted.Load()), Skipped: int(r.skipped.Load()),
		NotGranted: int(r.notGrant.Load()), Failed: int(r.failed.Load())}
}

func (r *shardRun) outcome() string {
	switch {
	case r.notGrant.Load() > 0:
		return domain.GrantJobSoldOut
	case r.closed:
		return domain.GrantJobBatchClosed
	}
	return domain.GrantJobCompleted
}

// fast grants a shard no run touched before: every user's first coupon id
// is free, so users are reserved in bulk without looking anything up.
func (r *shardRun) fast(ctx context.Context) error {
	d, users := r.h.d, r.s.UserIDs
	for start := 0; start < len(users); start += r.h.cfg.ReserveChunk {
		chunk := users[start:min(start+r.h.cfg.ReserveChunk, len(users))]
		if r.closed {
			r.failed.Add(int64(len(chunk)))
			continue
		}
		ids := make([]string, len(chunk))
		for i, u := range chunk {
			ids[i] = GrantCouponID(r.s.JobID, u, 0)
		}
		now := d.Clock.Now()
		slots, err := r.reserveAll(ctx, chunk, ids, now)
		if errors.Is(err, domain.ErrNotClaimable) { // stopped
			r.closed = true
			r.failed.Add(int64(len(chunk)))
			continue
		}
		if err != nil {
			return err
		}
		var confirm []string
		var mu sync.Mutex
		var cw sync.WaitGroup
		for i, slot := range slots {
			u, id := chunk[i], ids[i]
			switch slot {
			case GrantUserHoldsLimit:
				r.skipped.Add(1)
			case GrantSoldOut:
				r.notGrant.Add(1)
			case GrantCouponTaken:
				// Only a concurrent run of this shard reserves this id: look it up.
				if err := r.grantOne(ctx, u); err != nil {
					return err
				}
			case GrantReserved:
				c, gerr := domain.GrantCoupon(id, u, r.s.JobID, r.batch, now)
				if gerr != nil { // ended or born expired since the last load
					r.closed = true
					r.settle(id, u)
					r.failed.Add(1)
					continue
				}
				cw.Add(1)
				r.appendGrant(ctx, c, u, func() {
					mu.Lock()
					confirm = append(confirm, c.ID)
					mu.Unlock()
				}, &cw)
			}
		}
		cw.Wait()
		if len(confirm) > 0 {
			// Best effort: an unconfirmed grant is confirmed by the reconciler.
			_ = d.Guard.ConfirmMany(ctx, r.s.BatchID, confirm)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	return nil
}

// reserveAll reserves a chunk; a guard that does not know the batch (its
// sync failed) is synced from the event store and asked again.
func (r *shardRun) reserveAll(ctx context.Context, users, ids []string, now time.Time) ([]GrantSlot, error) {
	d := r.h.d
	slots, err := d.Guard.ReserveGrants(ctx, r.s.BatchID, users, ids, now.UnixMilli())
	if !errors.Is(err, domain.ErrNotFound) {
		return slots, err
	}
	if err := d.Guard.SyncBatch(ctx, GuardBatchOf(r.batch)); err != nil {
		return nil, err
	}
	return d.Guard.ReserveGrants(ctx, r.s.BatchID, users, ids, now.UnixMilli())
}

// careful grants a shard an earlier run started: each user is looked up.
func (r *shardRun) careful(ctx context.Context) error {
	prs, err := r.h.d.Guard.PendingIn(ctx, r.s.BatchID, r.h.d.Clock.Now().Add(24*time.Hour))
	if err != nil {
		return err
	}
	r.pending = make(map[string]bool, len(prs))
	for _, pr := range prs {
		r.pending[pr.CouponID] = true
	}
	for _, u := range r.s.UserIDs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := r.grantOne(ctx, u); err != nil {
			return err
		}
	}
	return nil
}

// grantOne grants user u carefully: an existing grant of this job counts as
// granted; a pending reservation of it is finished; otherwise a unit is
// reserved and the coupon appended. Only infrastructure errors are returned.
func (r *shardRun) grantOne(ctx context.Context, u string) error {
	d := r.h.d
	for attempt := range maxGrantAttempts {
		id := GrantCouponID(r.s.JobID, u, attempt)
		c, err := d.Repo.LoadCoupon(ctx, id)
		if err != nil {
			return err
		}
		if c.Exists() {
			if r.pending[id] {
				_ = d.Guard.Confirm(ctx, r.s.BatchID, id)
			}
			r.granted.Add(1)
			return nil
		}
		if c.Version() >= 0 {
			continue // voided: that attempt never completed; the next id is free
		}
		now := d.Clock.Now()
		grant, gerr := domain.GrantCoupon(id, u, r.s.JobID, r.batch, now)
		if r.pending[id] {
			// Reserved by an earlier run that stopped before or during the
			// append: finish it (NoStream: at most one append lands).
			if gerr != nil {
				r.closed = true
				if r.settle(id, u) {
					r.granted.Add(1)
				} else {
					r.failed.Add(1)
				}
				return nil
			}
			r.appendGrant(ctx, grant, u, func() { _ = d.Guard.Confirm(ctx, r.s.BatchID, id) }, nil)
			return nil
		}
		if gerr != nil || r.closed {
			r.closed = true
			r.failed.Add(1)
			return nil
		}
		slots, err := r.reserveAll(ctx, []string{u}, []string{id}, now)
		if errors.Is(err, domain.ErrNotClaimable) {
			r.closed = true
			r.failed.Add(1)
			return nil
		}
		if err != nil {
			return err
		}
		switch slots[0] {
		case GrantReserved, GrantCouponTaken:
			// Taken: reserved and unconfirmed, by an earlier run of this
			// shard: finish that reservation.
			r.appendGrant(ctx, grant, u, func() { _ = d.Guard.Confirm(ctx, r.s.BatchID, id) }, nil)
		case GrantUserHoldsLimit:
			r.skipped.Add(1)
		case GrantSoldOut:
			r.notGrant.Add(1)
		}
		return nil
	}
	r.failed.Add(1) // every attempt was voided
	return nil
}

// appendGrant appends a reserved grant in the background (at most Window at
// once) and counts it; confirmed runs after a successful append.
func (r *shardRun) appendGrant(ctx context.Context, c *domain.Coupon, u string, confirmed func(), done *sync.WaitGroup) {
	r.sem <- struct{}{}
	r.wg.Add(1)
	go func() {
		defer func() {
			<-r.sem
			r.wg.Done()
			if done != nil {
				done.Done()
			}
		}()
		_, err := r.h.d.Repo.SaveCoupon(ctx, c)
		switch {
		case err == nil:
			confirmed()
			r.granted.Add(1)
		case ctx.Err() != nil:
			// Stopping: the append may still land. The reservation stays
			// pending; a resumed run (or the reconciler) settles it, and the
			// shard ends unfinished.
		case r.settle(c.ID, u):
			r.granted.Add(1) // the void found the grant stored
		default:
			r.failed.Add(1)
		}
	}()
}

// settle makes a failed grant final like a failed claim: void (NoStream) and
// release, or confirm when the grant did land. It reports whether it landed.
func (r *shardRun) settle(couponID, userID string) (landed bool) {
	ctx, cancel := context.WithTimeout(context.Background(), r.h.settleTimeout)
	defer cancel()
	landed, err := voidReservation(ctx, r.h.d, r.s.BatchID, couponID, userID, "grant_failed")
	return err == nil && landed
}
