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
	for {
		now := time.Now()
		dl := now.Add(idleWake)
		if next := e.NextDeadline(); !next.IsZero() && next.Before(dl) {
			dl = next
		}
		if err := conn.SetReadDeadline(dl); err != nil {
			return closedOr(err)
		}
		n, addr, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				e.Tick(time.Now())
				continue
			}
			return closedOr(err)
		}
		e.HandleDatagram(buf[:n], addr, time.Now())
		if next := e.NextDeadline(); !next.IsZero() && !time.Now().Before(next) {
			e.Tick(time.Now())
		}
	}
}

func closedOr(err error) error {
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return fmt.Errorf("engine: read: %w", err)
}
