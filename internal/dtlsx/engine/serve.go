package engine

import (
	"errors"
	"fmt"
	"net"
	"time"
)

// Serve runs the engine on conn from the calling goroutine: it reads
// datagrams, runs the timers when they are due (the read deadline is the
// next timer, at most idleWake away) and returns nil once conn is closed.
// cfg.Send of the engine must write to the same conn (see SendTo).
func Serve(e *Engine, conn *net.UDPConn) error {
	const idleWake = time.Second
	buf := make([]byte, 65535)
	var dl time.Time // the read deadline in force
	arm := func(now time.Time) error {
		want := now.Add(idleWake)
		if next := e.NextDeadline(); !next.IsZero() && next.Before(want) {
			want = next
		}
		// Only move the deadline when a timer is due earlier (or the old
		// one passed): a syscall-free read loop under load.
		if dl.IsZero() || want.Before(dl) || !now.Before(dl) {
			dl = want
			return conn.SetReadDeadline(dl)
		}
		return nil
	}
	if err := arm(time.Now()); err != nil {
		return closedOr(err)
	}
	for {
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		now := time.Now()
		if err != nil {
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				return closedOr(err)
			}
		} else {
			e.HandleDatagram(buf[:n], addr, now)
		}
		if next := e.NextDeadline(); !next.IsZero() && !now.Before(next) {
			e.Tick(now)
		}
		if err := arm(now); err != nil {
			return closedOr(err)
		}
	}
}

func closedOr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("engine: read: %w", err)
}
