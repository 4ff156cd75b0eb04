package projections

import (
	"container/list"
	"context"
	"errors"
	"strings"
	"time"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

// HistoryWriter is what the history projector writes to: the live index or
// a rebuild generation.
type HistoryWriter interface {
	Upsert(ctx context.Context, recs []CouponRecord) error
	Get(ctx context.Context, couponIDs []string) (map[string]CouponRecord, error)
	SaveCheckpoint(ctx context.Context, pos uint64) error
}

// HistoryProjector folds coupon events into CouponRecords. Events other
// than a claim or grant carry only what changed, so the projector needs the
// coupon's previous record: from a small LRU cache, else from the index.
type HistoryProjector struct {
	index HistoryIndex
	reg   *domain.Registry
	cache *recordCache
}

// NewHistoryProjector fails fast on nil dependencies; cacheSize bounds the
// records kept in memory (default 100,000).
func NewHistoryProjector(index HistoryIndex, reg *domain.Registry, cacheSize int) (*HistoryProjector, error) {
	if index == nil || reg == nil {
		return nil, errors.New("projections: NewHistoryProjector needs an index and a registry")
	}
	if cacheSize <= 0 {
		cacheSize = 100_000
	}
	return &HistoryProjector{index: index, reg: reg, cache: newRecordCache(cacheSize)}, nil
}

// Name identifies the projector; never change it.
func (p *HistoryProjector) Name() string { return "history" }

// Checkpoint is the last handled position.
func (p *HistoryProjector) Checkpoint(ctx context.Context) (uint64, error) {
	return p.index.Checkpoint(ctx)
}

// Handle projects one event into the live index.
func (p *HistoryProjector) Handle(ctx context.Context, rec es.RecordedEvent) error {
	return p.HandleBatchTo(ctx, p.index, []es.RecordedEvent{rec})
}

// HandleBatchTo projects events in order into w with one bulk upsert, then
// saves the checkpoint of the last one.
func (p *HistoryProjector) HandleBatchTo(ctx context.Context, w HistoryWriter, recs []es.RecordedEvent) error {
	if len(recs) == 0 {
		return nil
	}
	changed := map[string]CouponRecord{}
	var order []string
	for _, rec := range recs {
		if !strings.HasPrefix(rec.Type, "coupon.") {
			continue
		}
		e, err := p.reg.Unmarshal(rec.Type, rec.Data)
		if err != nil {
			return err
		}
		id := strings.TrimPrefix(rec.StreamID, "coupon-")
		prev, ok := changed[id]
		if !ok {
			if prev, ok, err = p.previous(ctx, w, id); err != nil {
				return err
			}
		}
		if ok && prev.Version >= rec.Revision && prev.CouponID != "" {
			continue // already folded in
		}
		next, keep := FoldRecord(prev, e, rec.Revision)
		if !keep {
			continue
		}
		if _, seen := changed[id]; !seen {
			order = append(order, id)
		}
		changed[id] = next
	}
	if len(order) > 0 {
		out := make([]CouponRecord, len(order))
		for i, id := range order {
			out[i] = changed[id]
		}
		if err := w.Upsert(ctx, out); err != nil {
			p.cache.clear()
			return err
		}
		for _, r := range out {
			p.cache.put(r)
		}
	}
	return w.SaveCheckpoint(ctx, recs[len(recs)-1].Position)
}

func (p *HistoryProjector) previous(ctx context.Context, w HistoryWriter, id string) (CouponRecord, bool, error) {
	if r, ok := p.cache.get(id); ok {
		return r, true, nil
	}
	m, err := w.Get(ctx, []string{id})
	if err != nil {
		return CouponRecord{}, false, err
	}
	r, ok := m[id]
	return r, ok, nil
}

// ResetCache forgets cached records (before a rebuild into a fresh index).
func (p *HistoryProjector) ResetCache() { p.cache.clear() }

// FoldRecord applies one coupon event at revision rev to the previous record.
// keep is false for events the index does not record (a voided claim).
func FoldRecord(prev CouponRecord, e domain.Event, rev uint64) (r CouponRecord, keep bool) {
	r = prev
	r.Version = rev
	switch e := e.(type) {
	case *domain.CouponClaimed:
		r = newRecord(e.CouponID, e.UserID, "claimed", e.Terms, e.At, rev)
	case *domain.CouponGranted:
		r = newRecord(e.CouponID, e.UserID, "granted", e.Terms, e.At, rev)
	case *domain.CouponLocked:
		r.Status, r.OrderID, r.UpdatedAt = string(domain.CouponLockedSt), e.OrderID, e.At
	case *domain.CouponUnlocked:
		r.Status, r.OrderID, r.UpdatedAt = string(domain.CouponUsable), "", e.At
	case *domain.CouponRedeemed:
		r.Status, r.OrderID, r.PaymentID, r.Discount = string(domain.CouponUsed), e.OrderID, e.PaymentID, e.Discount
		r.RedeemedAt, r.EndedAt, r.UpdatedAt = e.At, e.At, e.At
	case *domain.CouponReturned:
		r.Status, r.OrderID, r.PaymentID, r.Discount = string(domain.CouponUsable), "", "", 0
		r.RedeemedAt, r.EndedAt, r.ReturnedAt, r.UpdatedAt = time.Time{}, time.Time{}, e.At, e.At
	case *domain.CouponExpired:
		r.Status, r.ExpiredAt, r.EndedAt, r.UpdatedAt = string(domain.CouponExpiredS), e.At, e.At, e.At
	default:
		return prev, false
	}
	return r, true
}

func newRecord(id, user, source string, t domain.CouponTerms, at time.Time, rev uint64) CouponRecord {
	return CouponRecord{CouponID: id, BatchID: t.BatchID, UserID: user, Status: string(domain.CouponUsable), Source: source,
		Kind: string(t.Kind), Issuer: t.Issuer, Threshold: t.Threshold, AmountOff: t.AmountOff, PercentOff: t.PercentOff,
		MaxDiscount: t.MaxDiscount, ObtainedAt: at, ValidFrom: t.ValidFrom, ValidUntil: t.ValidUntil, UpdatedAt: at, Version: rev}
}

// recordCache is a small LRU of the latest records.
type recordCache struct {
	max int
	ll  *list.List
	m   map[string]*list.Element
}

func newRecordCache(max int) *recordCache {
	return &recordCache{max: max, ll: list.New(), m: map[string]*list.Element{}}
}

func (c *recordCache) get(id string) (CouponRecord, bool) {
	if e, ok := c.m[id]; ok {
		c.ll.MoveToFront(e)
		return e.Value.(CouponRecord), true
	}
	return CouponRecord{}, false
}

func (c *recordCache) put(r CouponRecord) {
	if e, ok := c.m[r.CouponID]; ok {
		e.Value = r
		c.ll.MoveToFront(e)
		return
	}
	c.m[r.CouponID] = c.ll.PushFront(r)
	if c.ll.Len() > c.max {
		last := c.ll.Back()
		c.ll.Remove(last)
		delete(c.m, last.Value.(CouponRecord).CouponID)
	}
}

func (c *recordCache) clear() {
	c.ll.Init()
	c.m = map[string]*list.Element{}
}

// BeginRebuild starts a fresh generation of the history index.
func (p *HistoryProjector) BeginRebuild(ctx context.Context) (Generation, error) {
	rb, err := p.index.Rebuild(ctx)
	if err != nil {
		return nil, err
	}
	np := &HistoryProjector{index: p.index, reg: p.reg, cache: newRecordCache(p.cache.max)}
	return funcGeneration{
		cp:    func(context.Context) (uint64, error) { return 0, nil },
		batch: func(ctx context.Context, recs []es.RecordedEvent) error { return np.HandleBatchTo(ctx, rb, recs) },
		commit: func(ctx context.Context) error {
			if err := rb.Commit(ctx); err != nil {
				return err
			}
			p.ResetCache() // the gate is held: no live Handle runs now
			return nil
		},
		abort: rb.Abort,
	}, nil
}

// HandleBatch applies events to the live index in one bulk upsert.
func (p *HistoryProjector) HandleBatch(ctx context.Context, recs []es.RecordedEvent) error {
	return p.HandleBatchTo(ctx, p.index, recs)
}
