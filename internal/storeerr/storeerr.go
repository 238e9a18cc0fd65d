// Package storeerr holds the error storage adapters return when the
// storage itself cannot be reached (a database server down, a network
// partition), as opposed to a request it refuses. Callers answer it with
// "try again later" (CoAP 5.03 + Max-Age, HTTP 503) rather than as an
// internal error.
package storeerr

import "errors"

// ErrUnavailable marks an error caused by unreachable storage.
var ErrUnavailable = errors.New("storage unavailable")

// unavailable wraps an error as ErrUnavailable, keeping it for errors.As.
type unavailable struct{ err error }

func (e *unavailable) Error() string   { return e.err.Error() }
func (e *unavailable) Unwrap() []error { return []error{ErrUnavailable, e.err} }

// Unavailable marks err (nil stays nil).
func Unavailable(err error) error {
	if err == nil || errors.Is(err, ErrUnavailable) {
		return err
	}
	return &unavailable{err: err}
}
