package httpapi

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
	"github.com/couponsd/couponsd/projections"
	"github.com/couponsd/couponsd/readapi"
)

// Queries are the read side's services. When Deps.Queries is nil the query
// routes answer 503 unavailable.
type Queries struct {
	Coupons *readapi.Coupons
	Reports *readapi.Reports
	Counts  readapi.ClaimCounts
	// Checkout prices carts and lists product and claimable batches.
	Checkout *readapi.Checkout
	// Ready reports whether back ends are reachable and projections caught
	// up within bounds (GET /readyz); nil means always ready.
	Ready func(ctx context.Context) error
}

func (s *Server) queryRoutes() {
	get := http.MethodGet
	s.Handle(get, "/readyz", s.readyz, nil)
	s.Handle(get, "/v1/me/coupons", s.myCoupons, user)
	s.Handle(get, "/v1/batches/claimable", s.claimable, user)
	s.Handle(get, "/v1/users/:uid/coupons", s.userCoupons, admin)
	s.Handle(get, "/v1/reports/batches/:id", s.batchReport, admin)
	s.Handle(get, "/v1/reports/top-batches", s.topBatches, admin)
	s.Handle(get, "/v1/reports/top-users", s.topUsers, admin)
}

func (s *Server) queries() (*Queries, error) {
	if s.q == nil || s.q.Coupons == nil || s.q.Reports == nil || s.q.Counts == nil {
		return nil, domain.Errorf(domain.ErrUnavailable, "the read side is not configured")
	}
	return s.q, nil
}

func (s *Server) readyz(c echo.Context) error {
	if s.q != nil && s.q.Ready != nil {
		if err := s.q.Ready(c.Request().Context()); err != nil {
			return domain.Errorf(domain.ErrUnavailable, "not ready: %v", err)
		}
	}
	return c.JSON(http.StatusOK, map[string]string{"status": "ready"})
}

func queryInt(c echo.Context, name string) (int64, error) {
	v := c.QueryParam(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 {
		return 0, domain.Invalid(name, "must be a non-negative integer")
	}
	return n, nil
}

func queryTime(c echo.Context, name string) (time.Time, error) {
	v := c.QueryParam(name)
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, domain.Invalid(name, "must be an RFC 3339 time")
	}
	return t.UTC(), nil
}

func (s *Server) listCoupons(c echo.Context, userID string) error {
	q, err := s.queries()
	if err != nil {
		return err
	}
	limit, err := queryInt(c, "limit")
	if err != nil {
		return err
	}
	minPos, err := queryInt(c, "min_position")
	if err != nil {
		return err
	}
	list, err := q.Coupons.List(c.Request().Context(), userID, c.QueryParam("status"), c.QueryParam("cursor"), int(limit), uint64(minPos))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, list)
}

func (s *Server) myCoupons(c echo.Context) error { return s.listCoupons(c, caller(c)) }

func (s *Server) userCoupons(c echo.Context) error {
	asOf, err := queryTime(c, "as_of")
	if err != nil {
		return err
	}
	if asOf.IsZero() {
		return s.listCoupons(c, c.Param("uid"))
	}
	items, err := readapi.AsOf(c.Request().Context(), s.repo, c.Param("uid"), asOf)
	if err != nil {
		return err
	}
	if st := c.QueryParam("status"); st != "" {
		switch st {
		case readapi.StatusUsable, readapi.StatusLocked, readapi.StatusUsed, readapi.StatusExpired:
		default:
			return domain.Invalid("status", "must be usable, locked, used or expired")
		}
		kept := items[:0]
		for _, it := range items {
			if it.Status == st {
				kept = append(kept, it)
			}
		}
		items = kept
	}
	return c.JSON(http.StatusOK, map[string]any{"as_of": asOf, "coupons": items})
}

func (s *Server) claimable(c echo.Context) error {
	q, err := s.queries()
	if err != nil {
		return err
	}
	minPos, err := queryInt(c, "min_position")
	if err != nil {
		return err
	}
	if err := q.Coupons.WaitFor(c.Request().Context(), uint64(minPos), "view"); err != nil {
		return err
	}
	if q.Checkout == nil {
		return domain.Errorf(domain.ErrUnavailable, "the read side is not configured")
	}
	bs, err := q.Checkout.Claimable(c.Request().Context(), caller(c), minPos > 0)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"batches": bs})
}

func timeRange(c echo.Context) (projections.TimeRange, error) {
	from, err := queryTime(c, "from")
	if err != nil {
		return projections.TimeRange{}, err
	}
	to, err := queryTime(c, "to")
	return projections.TimeRange{From: from, To: to}, err
}

func (s *Server) batchReport(c echo.Context) error {
	q, err := s.queries()
	if err != nil {
		return err
	}
	r, err := timeRange(c)
	if err != nil {
		return err
	}
	rep, err := q.Reports.Batch(c.Request().Context(), c.Param("id"), r)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, rep)
}

// topArgs reads the common arguments of the ranking reports.
func (s *Server) topArgs(c echo.Context) (*Queries, projections.TimeRange, int, error) {
	q, err := s.queries()
	if err != nil {
		return nil, projections.TimeRange{}, 0, err
	}
	r, err := timeRange(c)
	if err != nil {
		return nil, r, 0, err
	}
	limit, err := queryInt(c, "limit")
	return q, r, int(limit), err
}

func (s *Server) topBatches(c echo.Context) error {
	q, r, limit, err := s.topArgs(c)
	if err != nil {
		return err
	}
	reps, err := q.Reports.TopBatches(c.Request().Context(), r, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"batches": reps})
}

func (s *Server) topUsers(c echo.Context) error {
	q, r, limit, err := s.topArgs(c)
	if err != nil {
		return err
	}
	reps, err := q.Reports.TopUsers(c.Request().Context(), r, limit)
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, map[string]any{"users": reps})
}
