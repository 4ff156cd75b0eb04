package commands

import (
	"context"

	"github.com/couponsd/couponsd/domain"
)

// Batch activity actions.
const (
	ActionPause  = "pause"
	ActionResume = "resume"
	ActionStop   = "stop"
)

// ChangeBatchActivity pauses, resumes or stops a batch.
type ChangeBatchActivity struct {
	BatchID string
	Action  string
	By      string
}

// ChangeBatchActivityHandler handles ChangeBatchActivity.
type ChangeBatchActivityHandler struct{ d Deps }

// NewChangeBatchActivityHandler fails fast on missing dependencies.
func NewChangeBatchActivityHandler(d Deps) (*ChangeBatchActivityHandler, error) {
	if err := d.validate("ChangeBatchActivityHandler"); err != nil {
		return nil, err
	}
	return &ChangeBatchActivityHandler{d: d}, nil
}

// Handle applies the action; repeating it changes nothing.
func (h *ChangeBatchActivityHandler) Handle(ctx context.Context, cmd ChangeBatchActivity) (Result[*domain.Batch], error) {
	return changeBatch(ctx, h.d, cmd.BatchID, func(b *domain.Batch) error {
		now := h.d.Clock.Now()
		switch cmd.Action {
		case ActionPause:
			return b.Pause(cmd.By, now)
		case ActionResume:
			return b.Resume(cmd.By, now)
		case ActionStop:
			return b.Stop(cmd.By, now)
		default:
			return domain.Invalid("action", "must be pause, resume or stop")
		}
	})
}
