package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/labstack/echo/v4"

	"github.com/couponsd/couponsd/domain"
)

// readBody reads the whole request body (bounded by the body-limit
// middleware) and puts it back so it can be read again.
func readBody(c echo.Context) ([]byte, error) {
	req := c.Request()
	if req.Body == nil || req.Body == http.NoBody {
		return nil, nil
	}
	b, err := io.ReadAll(req.Body)
	_ = req.Body.Close()
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, domain.Errorf(ErrPayloadTooLarge, "request body is larger than %d bytes", mbe.Limit)
		}
		return nil, domain.Errorf(domain.ErrInvalidArgument, "cannot read the request body")
	}
	req.Body = io.NopCloser(bytes.NewReader(b))
	return b, nil
}

// DecodeJSON strictly decodes the request body, a single JSON object, into
// dst: unknown fields, trailing data, null and wrong types are refused with
// ErrInvalidArgument naming the field; so are bodies that are not valid
// UTF-8 and objects naming a field twice (names compared without regard to
// case, as encoding/json matches them: mind this for map destinations). An empty body is refused when
// required, and leaves dst untouched otherwise.
func DecodeJSON(c echo.Context, dst any, required bool) error {
	b, err := readBody(c)
	if err != nil {
		return err
	}
	return decodeStrict(b, dst, required)
}

func decodeStrict(b []byte, dst any, required bool) error {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		if required {
			return domain.Invalid("body", "a JSON object is required")
		}
		return nil
	}
	// encoding/json silently turns invalid UTF-8 into U+FFFD, which would
	// let ids the domain refuses as invalid UTF-8 through, altered.
	if !utf8.Valid(trimmed) {
		return domain.Invalid("body", "is not valid UTF-8")
	}
	if trimmed[0] != '{' {
		if bytes.Equal(trimmed, []byte("null")) {
			return domain.Invalid("body", "must be a JSON object, not null")
		}
		if json.Valid(trimmed) {
			return domain.Invalid("body", "must be a JSON object")
		}
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	if err := dec.Decode(dst); err != nil {
		return jsonError(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return domain.Invalid("body", "unexpected data after the JSON object")
	}
	return noDuplicateNames(trimmed)
}

// noDuplicateNames refuses an object holding the same name twice, at any
// depth. encoding/json keeps the last one and matches names without regard
// to case, so {"audience":"public","Audience":"targeted"} would be read as
// targeted while a proxy, log or audit tool reading the first one sees
// public. b has been decoded already: it is valid JSON, nested at most
// encoding/json's depth limit.
func noDuplicateNames(b []byte) error {
	type frame struct {
		object, wantName bool
		names            map[string]struct{}
	}
	var stack []*frame
	valueEnded := func() {
		if n := len(stack); n > 0 && stack[n-1].object {
			stack[n-1].wantName = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			return nil // io.EOF (anything else was reported by the first decoding)
		}
		switch tok {
		case json.Delim('}'), json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueEnded()
			continue
		}
		if n := len(stack); n > 0 && stack[n-1].wantName {
			top := stack[n-1]
			name, _ := tok.(string)
			key := foldName(name)
			if _, dup := top.names[key]; dup {
				return domain.Invalid("body", "duplicate field %q", name)
			}
			top.names[key] = struct{}{}
			top.wantName = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, wantName: true, names: map[string]struct{}{}})
		case json.Delim('['):
			stack = append(stack, &frame{})
		default:
			valueEnded()
		}
	}
}

// foldName maps names equal under Unicode case folding (how encoding/json
// matches them to fields) onto one key: each rune becomes the smallest of
// its folding orbit.
func foldName(s string) string {
	return strings.Map(func(r rune) rune {
		least := r
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			least = min(least, f)
		}
		return least
	}, s)
}

// jsonError explains a decoding error, naming the field when there is one.
func jsonError(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return domain.Invalid("body", "malformed JSON at byte %d: %s", se.Offset, se.Error())
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return domain.Invalid("body", "malformed JSON: unexpected end of input")
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = "body"
		}
		want := jsonTypeName(te.Type.Kind().String(), te.Type.String())
		if timeFields[field] {
			want = "an RFC 3339 time string"
		}
		return domain.Invalid(field, "must be %s, got %s", want, te.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return domain.Invalid("body", "unknown field %s", strings.TrimPrefix(err.Error(), "json: unknown field "))
	default:
		var de *domain.Error
		if errors.As(err, &de) {
			return de
		}
		return domain.Invalid("body", "invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
}

func jsonTypeName(kind, typ string) string {
	switch kind {
	case "int", "int8", "int16", "int32", "int64", "uint", "uint8", "uint16", "uint32", "uint64":
		return "an integer"
	case "float32", "float64":
		return "a number"
	case "string":
		return "a string"
	case "bool":
		return "a boolean"
	case "slice", "array":
		return "an array"
	case "struct", "map":
		return "an object"
	}
	return "a " + typ
}

// timeFields are the request fields holding times (decoded as strings).
var timeFields = map[string]bool{"claim_starts_at": true, "claim_ends_at": true, "valid_from": true, "valid_until": true}

// timeField parses an optional RFC 3339 time; "" is the zero time.
func timeField(field, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, domain.Invalid(field, "must be an RFC 3339 time such as 2030-01-02T15:04:05Z, got %q", s)
	}
	return t.UTC(), nil
}

// noBody accepts an empty body or an empty JSON object.
func noBody(c echo.Context) error {
	var empty struct{}
	if err := DecodeJSON(c, &empty, false); err != nil {
		return err
	}
	return nil
}
