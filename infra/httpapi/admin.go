package httpapi

import (
	"context"
	"net/http"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/readapi"
)

// Admin are the operator endpoints behind couponsd replay, verify and audit.
// When Deps.Admin is nil they answer 503.
type Admin struct {
	Replays *readapi.Replays
	// Verify compares every derived state with the event store.
	Verify func(ctx context.Context) (any, error)
}

type replayRequest struct {
	Projection string  `json:"projection"`
	From       *uint64 `json:"from"`
}

func (s *Server) adminRoutes() {
	s.Handle(http.MethodPost, "/v1/admin/replays", s.startReplay, admin)
	s.Handle(http.MethodGet, "/v1/admin/replays/:id", s.replayStatus, admin)
	s.Handle(http.MethodPost, "/v1/admin/verify", s.verify, admin)
	s.Handle(http.MethodGet, "/v1/users/:uid/events", s.userEvents, admin)
}

func (s *Server) adminDeps() (*Admin, error) {
	if s.admin == nil || s.admin.Replays == nil {
		return nil, domain.Errorf(domain.ErrUnavailable, "operator endpoints are not configured")
	}
	return s.admin, nil
}

func (s *Server) startReplay(c echo.Context) error {
	a, err := s.adminDeps()
	if err != nil {
		return err
	}
	var req replayRequest
	if err := DecodeJSON(c, &req, true); err != nil {
		return err
	}
	st, err := a.Replays.Start(req.Projection, req.From)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusAccepted, st)
}

func (s *Server) replayStatus(c echo.Context) error {
	a, err := s.adminDeps()
	if err != nil {
		return err
	}
	st, err := a.Replays.Status(c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}

func (s *Server) verify(c echo.Context) error {
	if s.admin == nil || s.admin.Verify == nil {
		return domain.Errorf(domain.ErrUnavailable, "verify is not configured")
	}
	if err := noBody(c); err != nil {
		return err
	}
	rep, err := s.admin.Verify(c.Request().Context())
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

func (s *Server) userEvents(c echo.Context) error {
	evs, err := readapi.UserEvents(c.Request().Context(), s.repo, c.Param("uid"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"user_id": c.Param("uid"), "events": evs})
}
