package api

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/storeerr"
)

// Stable error codes carried in the "code" field of error responses.
const (
	codeInvalidArgument  = "invalid_argument"
	codeUnauthorized     = "unauthorized"
	codeNotFound         = "not_found"
	codeMethodNotAllowed = "method_not_allowed"
	codeConflict         = "conflict"
	codeTooLarge         = "too_large"
	codeUnavailable      = "unavailable"
	codeInternal         = "internal"
)

// Sentinels for failures detected by the API layer itself.
var (
	// errBadRequest is a malformed request: bad JSON, an unknown field, a bad
	// query parameter.
	errBadRequest = errors.New("api: bad request")
	// errUnauthorized is a missing or unknown bearer key.
	errUnauthorized = errors.New("api: unauthorized")
	// errTooLarge is a request body over maxBodyBytes.
	errTooLarge = errors.New("api: request body too large")
	// errUnavailable is a failed health check.
	errUnavailable = errors.New("api: unavailable")
)

// errorTable maps domain errors to HTTP statuses and stable codes; the first
// entry whose err matches (errors.Is) wins. Errors matching none are 500
// internal: logged, and answered with a generic message.
var errorTable = []struct {
	err    error
	status int
	code   string
}{
	{registry.ErrNotFound, http.StatusNotFound, codeNotFound},
	{apikey.ErrNotFound, http.StatusNotFound, codeNotFound},
	{forward.ErrNotFound, http.StatusNotFound, codeNotFound},
	{registry.ErrConflict, http.StatusConflict, codeConflict},
	{forward.ErrInvalid, http.StatusBadRequest, codeInvalidArgument},
	{registry.ErrInvalid, http.StatusBadRequest, codeInvalidArgument},
	{errCommandNotFound, http.StatusNotFound, codeNotFound},
	{errCommandState, http.StatusConflict, codeConflict},
	{command.ErrInvalid, http.StatusBadRequest, codeInvalidArgument},
	{errBadRequest, http.StatusBadRequest, codeInvalidArgument},
	{point.ErrInvalid, http.StatusBadRequest, codeInvalidArgument},
	{errUnauthorized, http.StatusUnauthorized, codeUnauthorized},
	{errTooLarge, http.StatusRequestEntityTooLarge, codeTooLarge},
	{errUnavailable, http.StatusServiceUnavailable, codeUnavailable},
	{storeerr.ErrUnavailable, http.StatusServiceUnavailable, codeUnavailable},
}

// Error is the body of every error response; Client returns it (with
// Status set) for any non-2xx answer.
type Error struct {
	Status  int    `json:"-"` // HTTP status, set by Client
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error formats e as "code: message".
func (e *Error) Error() string { return e.Code + ": " + e.Message }

// badRequest returns an errBadRequest with a human message.
func badRequest(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadRequest, fmt.Sprintf(format, args...))
}

// storeError phrases a store failure about what (e.g. `device "p/d"`) for
// the client: "... not found" or "... already exists" for the sentinels,
// whose store-level text (adapter and SQL context) stays out of the
// response. Other errors pass through wrapped, to be logged as internal.
func storeError(err error, what string) error {
	switch {
	case errors.Is(err, registry.ErrNotFound), errors.Is(err, apikey.ErrNotFound):
		return &clientError{msg: what + " not found", err: err}
	case errors.Is(err, registry.ErrConflict):
		return &clientError{msg: what + " already exists", err: err}
	}
	return fmt.Errorf("%s: %w", what, err)
}

// clientError is an error whose message is meant for the API client as is.
type clientError struct {
	msg string
	err error
}

func (e *clientError) Error() string { return e.msg }
func (e *clientError) Unwrap() error { return e.err }

// unavailableError is a failed health check; its message hides the cause,
// which is logged.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return "store unavailable" }
func (e *unavailableError) Unwrap() []error {
	return []error{errUnavailable, e.err}
}

// writeError answers err through errorTable. 4xx messages are the error
// text (which the handlers phrase for humans and which never contains a
// secret); 5xx details are only logged.
func (s *server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	for _, e := range errorTable {
		if !errors.Is(err, e.err) {
			continue
		}
		// The message is the error text without the sentinel's own text
		// ("registry: invalid: " and the like add nothing for a client).
		msg := err.Error()
		if t := strings.ReplaceAll(msg, e.err.Error()+": ", ""); t != "" {
			msg = t
		}
		switch e.status {
		case http.StatusUnauthorized:
			w.Header().Set("WWW-Authenticate", `Bearer realm="coapgate"`)
		case http.StatusServiceUnavailable:
			var ue *unavailableError
			if errors.As(err, &ue) {
				s.log.Warn("health check failed", "err", ue.err)
			} else if errors.Is(err, storeerr.ErrUnavailable) {
				// The cause names hosts and statements: log it, answer plainly.
				s.log.Warn("storage unavailable", "method", r.Method, "path", r.URL.Path, "err", err)
				msg = "storage unavailable; retry later"
			}
		}
		writeJSONError(w, e.status, e.code, msg)
		return
	}
	s.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	writeJSONError(w, http.StatusInternalServerError, codeInternal, "internal error")
}

func writeJSONError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, Error{Code: code, Message: msg})
}
