package httpapi

import (
	"context"
	"net/http"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

// ReminderSubscriber subscribes a shopper to a batch's claim opening
// (commands.SubscribeReminderHandler).
type ReminderSubscriber interface {
	Handle(ctx context.Context, cmd commands.SubscribeReminder) (commands.Result[*domain.Reminder], error)
}

// ReminderView is the answer of POST /v1/batches/{id}/reminders.
type ReminderView struct {
	BatchID string    `json:"batch_id"`
	UserID  string    `json:"user_id"`
	OpensAt time.Time `json:"opens_at"`
}

// reminderRoutes registers the claim-opening reminder route; without a
// subscriber it answers 503.
func (s *Server) reminderRoutes(sub ReminderSubscriber) {
	s.Handle(http.MethodPost, "/v1/batches/:id/reminders", s.subscribeReminder(sub), user)
}

// subscribeReminder answers 201 for a new subscription and 200 for a repeat,
// both with the subscription.
func (s *Server) subscribeReminder(sub ReminderSubscriber) echo.HandlerFunc {
	return func(c echo.Context) error {
		if sub == nil {
			return domain.Errorf(domain.ErrUnavailable, "claim-opening reminders are not configured")
		}
		if err := noBody(c); err != nil {
			return err
		}
		res, err := sub.Handle(c.Request().Context(), commands.SubscribeReminder{BatchID: c.Param("id"), UserID: caller(c)})
		if err != nil {
			return err
		}
		r := res.Aggregate
		status := http.StatusOK
		if res.Changed {
			status = http.StatusCreated
		}
		return c.JSON(status, ReminderView{BatchID: r.BatchID, UserID: r.UserID, OpensAt: r.OpensAt})
	}
}
