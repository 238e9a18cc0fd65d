package pgstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/coapgate/coapgate/internal/storeerr"
)

// errorf is fmt.Errorf that marks errors caused by an unreachable server
// with storeerr.ErrUnavailable, so the gateway answers 5.03 and the API
// 503 instead of an internal error.
func errorf(format string, args ...any) error {
	err := fmt.Errorf(format, args...)
	if isUnavailable(err) {
		return storeerr.Unavailable(err)
	}
	return err
}

// isUnavailable reports whether err comes from the connection rather than
// from the server refusing a statement.
func isUnavailable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		// Class 08 connection exception, 57P01-57P05 shutdown / cannot
		// connect now / crash shutdown / database dropped, class 53
		// insufficient resources (too many connections, disk full).
		return strings.HasPrefix(pe.Code, "08") || strings.HasPrefix(pe.Code, "57P") || strings.HasPrefix(pe.Code, "53")
	}
	if errors.Is(err, context.Canceled) {
		return false // the caller gave up; not the server's fault
	}
	var ce *pgconn.ConnectError
	var ne net.Error
	return errors.As(err, &ce) || errors.As(err, &ne) || pgconn.Timeout(err) ||
		errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, context.DeadlineExceeded)
}
