package api

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// maxBodyBytes bounds request bodies.
const maxBodyBytes = 1 << 20

// Listing limits shared by every paged route.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	// The client may have gone; there is nothing useful to do with the error.
	_ = json.NewEncoder(w).Encode(v)
}

// decodeJSON reads one JSON object from the request body into v, rejecting
// unknown fields, trailing data and bodies over maxBodyBytes. An empty body
// is an error unless allowEmpty.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, allowEmpty bool) error {
	body := http.MaxBytesReader(w, r.Body, maxBodyBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		switch {
		case errors.As(err, &mbe):
			return errTooLarge
		case errors.Is(err, io.EOF):
			if allowEmpty {
				return nil
			}
			return badRequest("request body is empty; a JSON object is required")
		}
		return badRequest("request body: %s", jsonErrorText(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return errTooLarge
		}
		return badRequest("request body: trailing data after the JSON object")
	}
	return nil
}

// jsonErrorText phrases a decoding error without Go type names.
func jsonErrorText(err error) string {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		if te.Field != "" {
			return "field " + strconv.Quote(te.Field) + " has the wrong type (got " + te.Value + ")"
		}
		return "expected a JSON object (got " + te.Value + ")"
	case errors.As(err, &se):
		return "invalid JSON at offset " + strconv.FormatInt(se.Offset, 10)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return "truncated JSON"
	}
	// Unknown fields come back as `json: unknown field "x"`.
	return strings.TrimPrefix(err.Error(), "json: ")
}

// parseLimit reads the limit query parameter (1..maxLimit, default defaultLimit).
func parseLimit(r *http.Request) (int, error) {
	v := r.URL.Query().Get("limit")
	if v == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > maxLimit {
		return 0, badRequest("limit must be an integer in 1..%d", maxLimit)
	}
	return n, nil
}

// List is the body of every listing. NextCursor, present only when the page
// is full, is the value to pass as "cursor" (or its older name "after") for
// the next page.
// pageCursor returns the paging cursor of a listing: the query parameter
// "cursor", or "after", the name some routes used first (both accepted on
// every listing). Both with different values is a 400.
func pageCursor(q url.Values) (string, error) {
	c, a := q.Get("cursor"), q.Get("after")
	if c != "" && a != "" && c != a {
		return "", badRequest("cursor and after are the same parameter: give one")
	}
	if c != "" {
		return c, nil
	}
	return a, nil
}

type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"nextCursor,omitempty"`
}
