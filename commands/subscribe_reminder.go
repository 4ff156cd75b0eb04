package commands

import (
	"context"
	"errors"
	"strconv"
	"strings"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/domain/es"
)

const reminderStreamPrefix = "reminder-"

// ReminderStream names the stream of userID's claim-opening reminder for
// batchID: reminder-<n>-<batchID>-<userID>, where n is the batch id's length
// in bytes. Ids may hold '-', so without the length "reminder-a-b-c" could be
// batch a-b and user c or batch a and user b-c.
func ReminderStream(batchID, userID string) string {
	return reminderStreamPrefix + strconv.Itoa(len(batchID)) + "-" + batchID + "-" + userID
}

// ReminderOfStream parses a ReminderStream name; ok is false for any other stream.
func ReminderOfStream(stream string) (batchID, userID string, ok bool) {
	rest, ok := strings.CutPrefix(stream, reminderStreamPrefix)
	if !ok {
		return "", "", false
	}
	digits, rest, ok := strings.Cut(rest, "-")
	n, err := strconv.Atoi(digits)
	if !ok || err != nil || n < 1 || strconv.Itoa(n) != digits || len(rest) < n+2 || rest[n] != '-' {
		return "", "", false
	}
	return rest[:n], rest[n+1:], true
}

// LoadReminder reads userID's claim-opening reminder for batchID; a missing
// one is returned with Exists() false.
func (r *Repository) LoadReminder(ctx context.Context, batchID, userID string) (*domain.Reminder, error) {
	evs, err := r.load(ctx, ReminderStream(batchID, userID))
	if err != nil {
		return nil, err
	}
	return domain.NewReminderFromHistory(batchID, userID, evs), nil
}

// SaveReminder appends the reminder's pending changes with its base version
// (NoStream for a new subscription, the exact revision otherwise).
func (r *Repository) SaveReminder(ctx context.Context, rm *domain.Reminder) (es.AppendResult, error) {
	return r.save(ctx, ReminderStream(rm.BatchID, rm.UserID), rm.BaseVersion(), rm.Changes())
}

// SubscribeReminder asks for a notification when a scheduled public batch
// opens for claims.
type SubscribeReminder struct {
	BatchID string
	UserID  string
}

// SubscribeReminderHandler handles SubscribeReminder.
type SubscribeReminderHandler struct {
	repo  *Repository
	clock domain.Clock
}

// NewSubscribeReminderHandler fails fast on nil dependencies.
func NewSubscribeReminderHandler(repo *Repository, clock domain.Clock) (*SubscribeReminderHandler, error) {
	if repo == nil || clock == nil {
		return nil, errors.New("commands: NewSubscribeReminderHandler needs a repository and a clock")
	}
	return &SubscribeReminderHandler{repo: repo, clock: clock}, nil
}

// Handle records reminder.subscribed.v1 with NoStream. Changed is true for a
// new subscription; a repeat (the stream exists) returns the stored
// subscription with Changed false. Refusals: ErrNotFound (unknown batch),
// ErrNotClaimable (targeted, stopped or ended batch), ErrConflict (the batch
// is already open), ErrInvalidArgument (ids).
func (h *SubscribeReminderHandler) Handle(ctx context.Context, cmd SubscribeReminder) (Result[*domain.Reminder], error) {
	if err := domain.ValidateID("batch_id", cmd.BatchID); err != nil {
		return Result[*domain.Reminder]{}, err
	}
	if err := domain.ValidateID("user_id", cmd.UserID); err != nil {
		return Result[*domain.Reminder]{}, err
	}
	b, err := h.repo.LoadBatch(ctx, cmd.BatchID)
	if err != nil {
		return Result[*domain.Reminder]{}, err
	}
	r, err := domain.SubscribeReminder(b, cmd.UserID, h.clock.Now())
	if err != nil {
		return Result[*domain.Reminder]{}, err
	}
	res, err := h.repo.SaveReminder(ctx, r)
	if errors.Is(err, domain.ErrConcurrency) {
		// The stream exists: the shopper subscribed before.
		prev, lerr := h.repo.LoadReminder(ctx, cmd.BatchID, cmd.UserID)
		if lerr != nil {
			return Result[*domain.Reminder]{}, lerr
		}
		if prev.Exists() {
			return Result[*domain.Reminder]{Aggregate: prev}, nil
		}
	}
	if err != nil {
		return Result[*domain.Reminder]{}, err
	}
	return Result[*domain.Reminder]{Aggregate: r, Position: res.Position, Changed: true}, nil
}
