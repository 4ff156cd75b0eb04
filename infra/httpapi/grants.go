package httpapi

import (
	"bytes"
	"encoding/csv"
	"errors"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

// grantRequest is the JSON body of POST /v1/batches/{id}/grants.
type grantRequest struct {
	UserIDs []string `json:"user_ids"`
}

// GrantJobAccepted is the 202 answer of a grant request.
type GrantJobAccepted struct {
	JobID string `json:"job_id"`
	Total int    `json:"total"`
}

var grantJobNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:couponsd:grant-job-id"))

func (s *Server) grantRoutes() {
	s.Handle(http.MethodPost, "/v1/batches/:id/grants", s.createGrants, admin)
	s.Handle(http.MethodGet, "/v1/grant-jobs/:id", s.getGrantJob, admin)
}

// createGrants takes a JSON list ({"user_ids": [...]}) or a CSV body
// (text/csv: one user id in the first column of each row; a header row
// named user_id is skipped) and answers 202 with the job id at once.
func (s *Server) createGrants(c echo.Context) error {
	if s.cmd.Grants == nil {
		return domain.Errorf(domain.ErrUnavailable, "grant jobs are not configured")
	}
	var users []string
	if isCSV(c.Request().Header.Get(echo.HeaderContentType)) {
		body, err := readBody(c)
		if err != nil {
			return err
		}
		if users, err = csvUserIDs(body); err != nil {
			return err
		}
	} else {
		var req grantRequest
		if err := DecodeJSON(c, &req, true); err != nil {
			return err
		}
		users = req.UserIDs
	}
	key, err := idempotencyKeyOf(c)
	if err != nil {
		return err
	}
	jobID := s.newID()
	if key != "" {
		jobID = uuid.NewSHA1(grantJobNamespace, []byte(caller(c)+"\x00"+key)).String()
	}
	res, err := s.cmd.Grants.Create.Handle(c.Request().Context(), commands.CreateGrantJob{
		JobID: jobID, BatchID: c.Param("id"), UserIDs: users, By: caller(c)})
	if err != nil {
		return err
	}
	if s.wakeGrants != nil {
		s.wakeGrants()
	}
	return c.JSON(http.StatusAccepted, GrantJobAccepted{JobID: res.Aggregate.ID, Total: len(res.Aggregate.UserIDs)})
}

// isCSV tells whether a Content-Type is text/csv (media types are
// case-insensitive: "Text/CSV; charset=utf-8" is CSV too).
func isCSV(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/csv")
}

// utf8BOM starts CSV files saved by some spreadsheets; it is not part of the
// first user id.
var utf8BOM = []byte("\ufeff")

func csvUserIDs(body []byte) ([]string, error) {
	r := csv.NewReader(bytes.NewReader(bytes.TrimPrefix(body, utf8BOM)))
	r.FieldsPerRecord = -1
	var out []string
	for line := 1; ; line++ {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, domain.Invalid("body", "malformed CSV at line %d", line)
		}
		id := strings.TrimSpace(rec[0])
		if line == 1 && strings.EqualFold(id, "user_id") {
			continue
		}
		if id == "" {
			continue
		}
		out = append(out, id)
	}
	if len(out) == 0 {
		return nil, domain.Invalid("body", "holds no user ids")
	}
	return out, nil
}

func (s *Server) getGrantJob(c echo.Context) error {
	if s.cmd.Grants == nil {
		return domain.Errorf(domain.ErrUnavailable, "grant jobs are not configured")
	}
	st, err := s.cmd.Grants.GetGrantJob(c.Request().Context(), c.Param("id"))
	if err != nil {
		return err
	}
	return c.JSON(http.StatusOK, st)
}
