package projections

import (
	"context"
	"errors"
	"strings"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// ViewTerms are the fixed facts of a coupon the checkout quote needs.
type ViewTerms struct {
	BatchID     string       `json:"b"`
	Kind        domain.Kind  `json:"k"`
	Issuer      string       `json:"i"`
	Threshold   int64        `json:"t,omitempty"`
	AmountOff   int64        `json:"a,omitempty"`
	PercentOff  int64        `json:"p,omitempty"`
	MaxDiscount int64        `json:"m,omitempty"`
	Scope       domain.Scope `json:"s"`
	Exclusive   bool         `json:"x,omitempty"`
	ValidFrom   int64        `json:"f"` // unix ms
	ValidUntil  int64        `json:"u"` // unix ms
	ObtainedAt  int64        `json:"o"` // unix ms
}

// ViewCoupon is a coupon in the usable view: its terms plus, when locked,
// the order holding it.
type ViewCoupon struct {
	CouponID  string
	UserID    string
	Terms     ViewTerms
	Locked    bool
	OrderID   string
	HoldUntil time.Time
	Version   uint64
}

// Status is usable or locked.
func (c ViewCoupon) Status() string {
	if c.Locked {
		return string(domain.CouponLockedSt)
	}
	return string(domain.CouponUsable)
}

// ViewTermsOf converts claim-time terms.
func ViewTermsOf(t domain.CouponTerms, obtained time.Time) ViewTerms {
	return ViewTerms{BatchID: t.BatchID, Kind: t.Kind, Issuer: t.Issuer, Threshold: t.Threshold, AmountOff: t.AmountOff,
		PercentOff: t.PercentOff, MaxDiscount: t.MaxDiscount, Scope: t.Scope, Exclusive: t.Exclusive,
		ValidFrom: t.ValidFrom.UnixMilli(), ValidUntil: t.ValidUntil.UnixMilli(), ObtainedAt: obtained.UnixMilli()}
}

// ViewOp is one change to a user's usable view. Every op carries the coupon
// revision; the store skips ops at or below the coupon's stored revision
// (and keeps that revision after a coupon leaves the view, so a redelivered
// old event cannot bring it back).
type ViewOp struct {
	UserID   string
	CouponID string
	Version  uint64
	Kind     ViewOpKind
	Terms    ViewTerms // ViewPut
	OrderID  string    // ViewLock
	Hold     time.Time // ViewLock
}

// ViewOpKind says what an op does.
type ViewOpKind int

// View op kinds.
const (
	ViewPut    ViewOpKind = iota + 1 // the coupon is usable with these terms
	ViewLock                         // held by an order
	ViewUnlock                       // usable again
	ViewRemove                       // used or expired: out of the view
	ViewTouch                        // no visible change; only the revision advances
)

// BatchEntry is a batch in the catalog the claimable list reads.
type BatchEntry struct {
	BatchID     string       `json:"id"`
	Rules       domain.Rules `json:"rules"`
	RuleVersion int          `json:"rule_version"`
	TotalStock  int64        `json:"total_stock"`
	Paused      bool         `json:"paused"`
	Stopped     bool         `json:"stopped"`
	Version     int64        `json:"version"`
}

// ViewStore keeps the usable view (per user) and the batch catalog.
type ViewStore interface {
	ApplyView(ctx context.Context, ops []ViewOp) error
	PutBatch(ctx context.Context, b BatchEntry) error
	Checkpoint(ctx context.Context) (uint64, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// ViewProjector feeds the usable view and the batch catalog.
type ViewProjector struct {
	store ViewStore
	repo  CouponLoader
	reg   *domain.Registry
}

// CouponLoader reads aggregates from the event store (for the rare events
// that need more than they carry: a returned coupon coming back).
type CouponLoader interface {
	LoadCouponAt(ctx context.Context, id string, rev uint64) (*domain.Coupon, error)
	LoadBatchAt(ctx context.Context, id string, rev uint64) (*domain.Batch, error)
}

// NewViewProjector fails fast on nil dependencies.
func NewViewProjector(store ViewStore, repo CouponLoader, reg *domain.Registry) (*ViewProjector, error) {
	if store == nil || repo == nil || reg == nil {
		return nil, errors.New("projections: NewViewProjector needs a store, a loader and a registry")
	}
	return &ViewProjector{store: store, repo: repo, reg: reg}, nil
}

// Name identifies the projector; never change it.
func (p *ViewProjector) Name() string { return "view" }

// Checkpoint is the last handled position.
func (p *ViewProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.store.Checkpoint(ctx)
}

// Handle projects one event.
func (p *ViewProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	if err := p.apply(ctx, rec); err != nil {
		return err
	}
	return p.store.SaveCheckpoint(ctx, rec.Position)
}

func (p *ViewProjector) apply(ctx context.Context, rec es.RecordedEvent) error {
	switch {
	case strings.HasPrefix(rec.Type, "batch."):
		b, err := p.repo.LoadBatchAt(ctx, strings.TrimPrefix(rec.StreamID, "batch-"), rec.Revision)
		if err != nil || !b.Exists() {
			return err
		}
		return p.store.PutBatch(ctx, BatchEntry{BatchID: b.ID, Rules: b.Rules, RuleVersion: b.RuleVersion,
			TotalStock: b.TotalStock, Paused: b.Paused, Stopped: b.Stopped, Version: b.Version()})
	case strings.HasPrefix(rec.Type, "coupon."):
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		op, ok, err := p.viewOp(ctx, e, rec)
		if err != nil || !ok {
			return err
		}
		return p.store.ApplyView(ctx, []ViewOp{op})
	}
	return nil
}

func (p *ViewProjector) viewOp(ctx context.Context, e domain.Event, rec es.RecordedEvent) (ViewOp, bool, error) {
	op := ViewOp{Version: rec.Revision}
	switch e := e.(type) {
	case *domain.CouponClaimed:
		op.UserID, op.CouponID, op.Kind, op.Terms = e.UserID, e.CouponID, ViewPut, ViewTermsOf(e.Terms, e.At)
	case *domain.CouponGranted:
		op.UserID, op.CouponID, op.Kind, op.Terms = e.UserID, e.CouponID, ViewPut, ViewTermsOf(e.Terms, e.At)
	case *domain.CouponLocked:
		op.UserID, op.CouponID, op.Kind, op.OrderID, op.Hold = e.UserID, e.CouponID, ViewLock, e.OrderID, e.HoldUntil
	case *domain.CouponUnlocked:
		op.UserID, op.CouponID, op.Kind = e.UserID, e.CouponID, ViewUnlock
	case *domain.CouponRedeemed:
		op.UserID, op.CouponID, op.Kind = e.UserID, e.CouponID, ViewRemove
	case *domain.CouponExpired:
		op.UserID, op.CouponID, op.Kind = e.UserID, e.CouponID, ViewRemove
	case *domain.CouponExpiryReminded:
		op.UserID, op.CouponID, op.Kind = e.UserID, e.CouponID, ViewTouch
	case *domain.CouponReturned:
		op.UserID, op.CouponID, op.Kind = e.UserID, e.CouponID, ViewTouch
		if e.UsableAgain {
			c, err := p.repo.LoadCouponAt(ctx, e.CouponID, rec.Revision)
			if err != nil {
				return op, false, err
			}
			op.Kind, op.Terms = ViewPut, ViewTermsOf(c.Terms, c.ObtainedAt)
		}
	default:
		return op, false, nil
	}
	return op, true, nil
}

// ViewGenerations is a view store that can build a fresh generation while
// the current one serves, then switch to it.
type ViewGenerations interface {
	ViewStore
	NextGeneration(ctx context.Context) (next ViewStore, commit, abort func(context.Context) error, err error)
}

// BeginRebuild starts a fresh generation of the view (the store must
// implement ViewGenerations).
func (p *ViewProjector) BeginRebuild(ctx context.Context) (Generation, error) {
	gens, ok := p.store.(ViewGenerations)
	if !ok {
		return nil, errors.New("projections: this view store cannot be rebuilt into a new generation")
	}
	next, commit, abort, err := gens.NextGeneration(ctx)
	if err != nil {
		return nil, err
	}
	np := &ViewProjector{store: next, repo: p.repo, reg: p.reg}
	return funcGeneration{cp: next.Checkpoint, batch: np.HandleBatch, commit: commit, abort: abort}, nil
}

// HandleBatch applies events in order (coupon ops pipelined) and saves the
// checkpoint of the last one.
func (p *ViewProjector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	var ops []ViewOp
	flush := func() error {
		err := p.store.ApplyView(ctx, ops)
		ops = ops[:0]
		return err
	}
	for _, rec := range recs {
		if strings.HasPrefix(rec.Type, "batch.") {
			if err := flush(); err != nil {
				return err
			}
			if err := p.apply(ctx, rec); err != nil {
				return err
			}
			continue
		}
		if !strings.HasPrefix(rec.Type, "coupon.") {
			continue
		}
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		op, ok, err := p.viewOp(ctx, e, rec)
		if err != nil {
			return err
		}
		if ok {
			ops = append(ops, op)
		}
	}
	if err := flush(); err != nil {
		return err
	}
	if len(recs) == 0 {
		return nil
	}
	return p.store.SaveCheckpoint(ctx, recs[len(recs)-1].Position)
}

// funcGeneration adapts functions to Generation.
type funcGeneration struct {
	cp     func(context.Context) (uint64, error)
	batch  func(context.Context, []es.RecordedEvent) error
	commit func(context.Context) error
	abort  func(context.Context) error
}

func (g funcGeneration) Checkpoint(ctx context.Context) (uint64, error) { return g.cp(ctx) }
func (g funcGeneration) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	return g.batch(ctx, recs)
}
func (g funcGeneration) Commit(ctx context.Context) error { return g.commit(ctx) }
func (g funcGeneration) Abort(ctx context.Context) error  { return g.abort(ctx) }
