package commands

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/couponsd/couponsd/domain"
)

// ClaimOpeningIndex lists the batches with claim-opening reminders to send
// and their pending subscribers (kept by the reminders projection).
type ClaimOpeningIndex interface {
	// DueClaimOpenings lists batches with pending subscribers whose claim
	// start (as projected) is at or before now, earliest first.
	DueClaimOpenings(ctx context.Context, now time.Time, limit int) ([]string, error)
	// PendingClaimOpeningReminders lists up to limit subscribers of batchID
	// not yet reminded, in byte order, after the user id after ("" from the start).
	PendingClaimOpeningReminders(ctx context.Context, batchID, after string, limit int) ([]string, error)
	// DropClaimOpening forgets the batch's pending subscribers for good (the
	// batch will never open for them).
	DropClaimOpening(ctx context.Context, batchID string) error
}

// SendOpeningReminders sends the claim-opening reminders of one batch.
type SendOpeningReminders struct{ BatchID string }

// OpeningReport tells what SendOpeningReminders did.
type OpeningReport struct {
	Sent    int // reminders recorded by this call
	Skipped int // already sent (by an earlier pass, a restart or another instance)
	Failed  int // left pending for the next pass
	// NotYet: the batch's claim start is later than the index said (a rules
	// change not projected yet); nothing was sent.
	NotYet bool
	// Dropped: the batch will never open for its subscribers (stopped,
	// ended, made targeted, unknown); their subscriptions were dropped from
	// the index without a notification.
	Dropped bool
}

// SendOpeningRemindersHandler handles SendOpeningReminders.
type SendOpeningRemindersHandler struct {
	repo        *Repository
	clock       domain.Clock
	index       ClaimOpeningIndex
	pageSize    int
	concurrency int
}

// NewSendOpeningRemindersHandler fails fast on nil dependencies. pageSize is
// how many subscribers are read from the index at once, concurrency how many
// reminders are appended at once (both at least 1).
func NewSendOpeningRemindersHandler(repo *Repository, clock domain.Clock, index ClaimOpeningIndex, pageSize, concurrency int) (*SendOpeningRemindersHandler, error) {
	if repo == nil || clock == nil || index == nil {
		return nil, errors.New("commands: NewSendOpeningRemindersHandler needs a repository, a clock and an index")
	}
	if pageSize < 1 || concurrency < 1 {
		return nil, errors.New("commands: NewSendOpeningRemindersHandler needs a page size and a concurrency of at least 1")
	}
	return &SendOpeningRemindersHandler{repo: repo, clock: clock, index: index, pageSize: pageSize, concurrency: concurrency}, nil
}

// Handle re-checks the batch in the event store (domain.CheckOpening): when
// it is open, every pending subscriber gets reminder.sent.v1, appended with
// the subscription's exact revision so it is recorded once whatever the
// restarts or instances; when its start is later, nothing happens (NotYet);
// when it will never open (stopped, ended, targeted), the subscriptions are
// dropped from the index without a notification (Dropped). The error is the
// first failure of the index or the store; failed reminders stay pending.
func (h *SendOpeningRemindersHandler) Handle(ctx context.Context, cmd SendOpeningReminders) (OpeningReport, error) {
	var rep OpeningReport
	if err := domain.ValidateID("batch_id", cmd.BatchID); err != nil {
		return rep, err
	}
	b, err := h.repo.LoadBatch(ctx, cmd.BatchID)
	if err != nil {
		return rep, err
	}
	switch err := domain.CheckOpening(b, h.clock.Now()); {
	case errors.Is(err, domain.ErrConflict):
		rep.NotYet = true
		return rep, nil
	case err != nil:
		rep.Dropped = true
		return rep, h.index.DropClaimOpening(ctx, b.ID)
	}
	var first error
	for after := ""; ; {
		users, err := h.index.PendingClaimOpeningReminders(ctx, b.ID, after, h.pageSize)
		if err != nil {
			return rep, err
		}
		if len(users) == 0 {
			return rep, first
		}
		h.sendAll(ctx, b, users, &rep, &first)
		if len(users) < h.pageSize || ctx.Err() != nil {
			return rep, errors.Join(first, ctx.Err())
		}
		after = users[len(users)-1]
	}
}

// sendAll sends to users with at most h.concurrency appends at once.
func (h *SendOpeningRemindersHandler) sendAll(ctx context.Context, b *domain.Batch, users []string, rep *OpeningReport, first *error) {
	var mu sync.Mutex
	forEachBounded(ctx, users, h.concurrency, func(userID string) {
		err := h.sendOne(ctx, b, userID)
		mu.Lock()
		defer mu.Unlock()
		switch {
		case err == nil:
			rep.Sent++
		case errors.Is(err, domain.ErrConflict), errors.Is(err, domain.ErrNotFound), errors.Is(err, domain.ErrNotClaimable):
			// Already sent; or no such subscription; or the batch closed meanwhile.
			rep.Skipped++
		default:
			rep.Failed++
			if *first == nil {
				*first = err
			}
		}
	})
}

// sendOne records one reminder; a concurrent append reloads and decides
// again (and then finds it sent).
func (h *SendOpeningRemindersHandler) sendOne(ctx context.Context, b *domain.Batch, userID string) error {
	return retryOnConcurrency(ctx, func() error {
		r, err := h.repo.LoadReminder(ctx, b.ID, userID)
		if err != nil {
			return err
		}
		if err := r.Send(b, h.clock.Now()); err != nil {
			return err
		}
		_, err = h.repo.SaveReminder(ctx, r)
		return err
	})
}

// forEachBounded calls fn for every item, at most n at once, and returns
// when all calls have; items not started when ctx ends are skipped.
func forEachBounded[T any](ctx context.Context, items []T, n int, fn func(T)) {
	sem := make(chan struct{}, max(n, 1))
	var wg sync.WaitGroup
	for _, it := range items {
		select {
		case <-ctx.Done():
			wg.Wait()
			return
		case sem <- struct{}{}:
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			fn(it)
		}()
	}
	wg.Wait()
}
