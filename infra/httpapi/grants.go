package httpapi

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/commands"
	"github.com/couponsd/couponsd/domain"
)

// GrantJobAccepted is the 202 answer of a grant request.
type GrantJobAccepted struct {
	JobID      string `json:"job_id"`
	Total      int    `json:"total"`
	Duplicates int    `json:"duplicates"`
	Shards     int    `json:"shards"`
}

var grantJobNamespace = uuid.NewSHA1(uuid.NameSpaceURL, []byte("urn:couponsd:grant-job-id"))

const grantsPath = "/v1/batches/:id/grants"

func (s *Server) grantRoutes() {
	// No generic Idempotency-Key replay (it would hold the body in memory):
	// the job id is derived from the key, and a repeat is answered from the
	// stored job after comparing the list's fingerprint.
	var m []echo.MiddlewareFunc
	m = append(m, s.mw.Auth, s.mw.Require(admin...))
	s.e.Add(http.MethodPost, grantsPath, s.createGrants, m...)
	s.Handle(http.MethodGet, "/v1/grant-jobs/:id", s.getGrantJob, admin)
}

// isGrantUpload tells whether c is a grant upload (its own body limit and timeout).
func isGrantUpload(c echo.Context) bool {
	return c.Request().Method == http.MethodPost && c.Path() == grantsPath
}

// createGrants streams a JSON list ({"user_ids": [...]}) or a CSV body
// (text/csv: one user id in the first column of each row; a header row
// named user_id is skipped) into a grant job, never holding the list in
// memory, and answers 202 with the job id once the list is stored.
func (s *Server) createGrants(c echo.Context) error {
	if s.cmd.Grants == nil {
		return domain.Errorf(domain.ErrUnavailable, "grant jobs are not configured")
	}
	key, err := idempotencyKeyOf(c)
	if err != nil {
		return err
	}
	// The upload may take longer than the server's read and write timeouts
	// (the write deadline runs from the end of the request's headers).
	rc := http.NewResponseController(c.Response().Writer)
	if err := errors.Join(rc.SetReadDeadline(time.Now().Add(s.cfg.GrantUploadTimeout)),
		rc.SetWriteDeadline(time.Now().Add(s.cfg.GrantUploadTimeout+10*time.Second))); err != nil {
		s.log.Warn("grant upload: cannot extend the connection deadlines; a long upload may be cut by the server timeouts", "err", err)
	}
	body := c.Request().Body
	if body == nil {
		body = http.NoBody
	}
	defer body.Close()
	var users commands.GrantUsers
	if isCSV(c.Request().Header.Get(echo.HeaderContentType)) {
		users = csvUsers(body)
	} else {
		users = jsonUsers(body)
	}
	jobID := s.newID()
	if key != "" {
		jobID = uuid.NewSHA1(grantJobNamespace, []byte(caller(c)+"\x00"+key)).String()
	}
	res, err := s.cmd.Grants.Create.Handle(c.Request().Context(), commands.CreateGrantJob{
		JobID: jobID, BatchID: c.Param("id"), Users: users, By: caller(c)})
	if err != nil {
		return err
	}
	if s.wakeGrants != nil {
		s.wakeGrants()
	}
	j := res.Aggregate
	if !res.Changed {
		c.Response().Header().Set(HeaderIdempotentReplayed, "true")
	}
	return c.JSON(http.StatusAccepted, GrantJobAccepted{JobID: j.ID, Total: j.Total, Duplicates: j.Duplicates, Shards: j.Shards})
}

// isCSV tells whether a Content-Type is text/csv (media types are
// case-insensitive: "Text/CSV; charset=utf-8" is CSV too).
func isCSV(contentType string) bool {
	mt, _, _ := strings.Cut(contentType, ";")
	return strings.EqualFold(strings.TrimSpace(mt), "text/csv")
}

// bodyErr maps a body read error: too large (413) or unreadable (400).
func bodyErr(err error) error {
	var mbe *http.MaxBytesError
	if errors.As(err, &mbe) {
		return domain.Errorf(ErrPayloadTooLarge, "request body is larger than %d bytes", mbe.Limit)
	}
	return domain.Invalid("body", "cannot be read: %v", err)
}

// utf8BOM starts CSV files saved by some spreadsheets; it is not part of the
// first user id.
const utf8BOM = "\ufeff"

// csvUsers streams the user ids of a CSV body.
func csvUsers(body io.Reader) commands.GrantUsers {
	return func(yield func(string, error) bool) {
		br := bufio.NewReaderSize(body, 64<<10)
		if b, err := br.Peek(len(utf8BOM)); err == nil && string(b) == utf8BOM {
			_, _ = br.Discard(len(utf8BOM))
		}
		r := csv.NewReader(br)
		r.FieldsPerRecord = -1
		r.ReuseRecord = true
		n := 0
		for line := 1; ; line++ {
			rec, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				var pe *csv.ParseError
				if errors.As(err, &pe) {
					yield("", domain.Invalid("body", "malformed CSV at line %d", pe.Line))
				} else {
					yield("", bodyErr(err))
				}
				return
			}
			id := strings.TrimSpace(rec[0])
			if (line == 1 && strings.EqualFold(id, "user_id")) || id == "" {
				continue
			}
			if !utf8.ValidString(id) {
				yield("", domain.Invalid(fmt.Sprintf("user_ids[%d]", n), "(line %d) is not valid UTF-8", line))
				return
			}
			n++
			if !yield(id, nil) {
				return
			}
		}
		if n == 0 {
			yield("", domain.Invalid("body", "holds no user ids"))
		}
	}
}

// jsonUsers streams the user ids of {"user_ids": ["...", ...]}: strictly one
// object with that one field, an array of strings, nothing after it.
func jsonUsers(body io.Reader) commands.GrantUsers {
	return func(yield func(string, error) bool) {
		dec := json.NewDecoder(bufio.NewReaderSize(body, 64<<10))
		fail := func(format string, args ...any) { yield("", domain.Invalid("body", format, args...)) }
		tok := func() (json.Token, bool) {
			t, err := dec.Token()
			if err == nil {
				return t, true
			}
			if errors.Is(err, io.EOF) {
				fail("ends early; want {\"user_ids\": [...]}")
			} else if _, ok := errors.AsType[*json.SyntaxError](err); ok {
				fail("is not valid JSON: %v", err)
			} else {
				yield("", bodyErr(err))
			}
			return nil, false
		}
		t, ok := tok()
		if !ok {
			return
		}
		if d, isDelim := t.(json.Delim); !isDelim || d != '{' {
			fail("must be a JSON object {\"user_ids\": [...]}")
			return
		}
		seen := false
		for dec.More() {
			t, ok := tok()
			if !ok {
				return
			}
			name, _ := t.(string)
			if !strings.EqualFold(name, "user_ids") {
				yield("", domain.Invalid(fmt.Sprint(name), "unknown field"))
				return
			}
			if seen {
				fail("names user_ids twice")
				return
			}
			seen = true
			t, ok = tok()
			if !ok {
				return
			}
			if d, isDelim := t.(json.Delim); !isDelim || d != '[' {
				yield("", domain.Invalid("user_ids", "must be an array of strings"))
				return
			}
			for i := 0; dec.More(); i++ {
				// Raw first: encoding/json would turn invalid UTF-8 into U+FFFD.
				var raw json.RawMessage
				if err := dec.Decode(&raw); err != nil {
					if errors.As(err, new(*http.MaxBytesError)) {
						yield("", bodyErr(err))
					} else {
						yield("", domain.Invalid(fmt.Sprintf("user_ids[%d]", i), "is not valid JSON: %v", err))
					}
					return
				}
				if !utf8.Valid(raw) {
					yield("", domain.Invalid(fmt.Sprintf("user_ids[%d]", i), "is not valid UTF-8"))
					return
				}
				var id string
				if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &id) != nil {
					yield("", domain.Invalid(fmt.Sprintf("user_ids[%d]", i), "must be a string"))
					return
				}
				if !yield(id, nil) {
					return
				}
			}
			if _, ok := tok(); !ok { // ]
				return
			}
		}
		if _, ok := tok(); !ok { // }
			return
		}
		if !seen {
			yield("", domain.Invalid("user_ids", "is required"))
			return
		}
		switch _, err := dec.Token(); {
		case errors.Is(err, io.EOF):
		case err != nil && errors.As(err, new(*http.MaxBytesError)):
			yield("", bodyErr(err))
		default:
			fail("has data after the JSON object")
		}
	}
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
