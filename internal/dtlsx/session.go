package dtlsx

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	"github.com/pion/transport/v5/deadline"
)

// queueLen bounds the datagrams waiting for a session's pion reader.
const queueLen = 8

// readBufLen is a session's plaintext read buffer: one CoAP message over
// DTLS (the dialect recommends payloads of at most 1 KB, PROTOCOL.md §2).
const readBufLen = 2048

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// Session is one DTLS association: the peer's state from its first
// ClientHello until close. It is all the per-peer state the server keeps
// besides pion's *dtls.Conn, and it is the coapx.Session of the CoAP
// requests it carries.
type Session struct {
	srv     *Server
	id      uint64
	addr    netip.AddrPort // first address: the byAddr key
	created time.Time

	in     chan datagram // to pion's reader
	done   chan struct{} // closed by closeConn
	once   sync.Once
	rdl    *deadline.Deadline
	log    pionLogger
	remote atomic.Pointer[netip.AddrPort] // latest authenticated address

	verified atomic.Bool  // a ClientHello with a cookie arrived
	up       atomic.Bool  // handshake complete
	lastSeen atomic.Int64 // unix nanoseconds of the last datagram

	mu       sync.Mutex
	conn     *dtls.Conn         // guarded by mu
	cancelHS context.CancelFunc // guarded by mu; aborts the handshake
	refused  string             // guarded by mu; refusal reason
	closeWhy string             // guarded by mu; why the server closed it
	cids     []string           // guarded by srv.mu

	// ident is set by the PSK callback during the handshake and read only
	// after it completed.
	ident    *dtlspsk.Identity
	lifetime time.Duration
}

var _ coapx.Session = (*Session)(nil)

func (s *Server) newSession(from netip.AddrPort, now time.Time) *Session {
	ss := &Session{
		srv: s, id: s.nextID.Add(1), addr: from, created: now,
		in: make(chan datagram, queueLen), done: make(chan struct{}),
		rdl: deadline.New(), lifetime: s.cfg.IdleTimeout,
	}
	ss.log.s = ss
	ss.remote.Store(&from)
	ss.lastSeen.Store(now.UnixNano())
	return ss
}

// SessionID implements coapx.Session.
func (ss *Session) SessionID() uint64 { return ss.id }

// Identity implements coapx.Session: the *dtlspsk.Identity of a PSK
// session, nil for a certificate session.
func (ss *Session) Identity() any {
	if ss.ident == nil || !ss.up.Load() {
		return nil
	}
	return ss.ident
}

// PSKIdentity returns the PSK identity (nil for a certificate session).
func (ss *Session) PSKIdentity() *dtlspsk.Identity { return ss.ident }

// Lifetime is how long the session lives without a datagram.
func (ss *Session) Lifetime() time.Duration { return ss.lifetime }

// Peer is the latest address the peer sent an authenticated record from.
func (ss *Session) Peer() netip.AddrPort { return *ss.remote.Load() }

// WriteDatagram implements coapx.Session: it encrypts b as one record.
func (ss *Session) WriteDatagram(b []byte) error {
	ss.mu.Lock()
	c := ss.conn
	ss.mu.Unlock()
	if c == nil {
		return net.ErrClosed
	}
	_, err := c.Write(b)
	return err
}

// Close ends the session (close_notify to the peer).
func (ss *Session) Close() { ss.close(CloseShutdown) }

func (ss *Session) logAttrs() []any {
	a := []any{"peer", ss.Peer().String(), "session", ss.id}
	if ss.ident != nil {
		a = append(a, "productKey", ss.ident.ProductKey, "deviceKey", ss.ident.DeviceKey, "secureMode", ss.ident.SecureMode)
	}
	return a
}

// deliver queues a datagram for pion; it never blocks the read loop.
func (ss *Session) deliver(b []byte, from netip.AddrPort) {
	if !ss.up.Load() {
		if ch, ok := parseClientHello(b); ok && ch.cookie {
			ss.verified.Store(true)
		}
	}
	d := datagram{b: append([]byte(nil), b...), from: from}
	select {
	case ss.in <- d:
	case <-ss.done:
	default:
		ss.srv.m.dropped.Inc()
	}
}

func (ss *Session) setConn(c *dtls.Conn, cancel context.CancelFunc) {
	ss.mu.Lock()
	ss.conn, ss.cancelHS = c, cancel
	ss.mu.Unlock()
}

func (ss *Session) refusal() string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return ss.refused
}

// abort fails the handshake with reason (first reason wins).
func (ss *Session) abort(reason string) {
	ss.mu.Lock()
	if ss.refused == "" {
		ss.refused = reason
	}
	cancel := ss.cancelHS
	ss.mu.Unlock()
	if cancel != nil {
		cancel()
	}
}

// close ends an established session for reason.
func (ss *Session) close(reason string) {
	ss.mu.Lock()
	if ss.closeWhy == "" {
		ss.closeWhy = reason
	}
	c, cancel := ss.conn, ss.cancelHS
	ss.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	if c != nil {
		_ = c.Close()
	} else {
		ss.closeConn()
	}
}

func (ss *Session) established(now time.Time) {
	ss.lastSeen.Store(now.UnixNano())
	if ss.ident != nil {
		ss.lifetime = ss.ident.Lifetime
	}
	ss.up.Store(true)
}

// expired reports whether the sweeper should end the session: an idle
// established one, or a handshake whose cookie never came back.
func (ss *Session) expired(now time.Time, cookieTimeout time.Duration) bool {
	if ss.up.Load() {
		return now.UnixNano()-ss.lastSeen.Load() >= int64(ss.lifetime)
	}
	return !ss.verified.Load() && now.Sub(ss.created) >= cookieTimeout
}

// readLoop hands decrypted datagrams to coap until the session ends and
// returns why it ended.
func (ss *Session) readLoop(coap *coapx.Server, now func() time.Time) string {
	ss.mu.Lock()
	c := ss.conn
	ss.mu.Unlock()
	buf := make([]byte, readBufLen)
	for {
		n, err := c.Read(buf)
		if err != nil {
			ss.mu.Lock()
			why := ss.closeWhy
			ss.mu.Unlock()
			if why == "" {
				why = ClosePeer
			}
			return why
		}
		ss.lastSeen.Store(now().UnixNano())
		if ra, ok := c.RemoteAddr().(*net.UDPAddr); ok {
			if ap := ra.AddrPort(); ap != *ss.remote.Load() {
				ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
				ss.remote.Store(&ap)
			}
		}
		coap.ServeSession(buf[:n], ss.Peer(), ss)
	}
}

// psk is pion's PSK callback: it runs on the handshake goroutine.
func (ss *Session) psk(identity []byte) ([]byte, error) {
	id, err := dtlspsk.Parse(identity)
	if err != nil {
		ss.abortWith(dtlspsk.Reason(err))
		return nil, err
	}
	ss.ident = &id
	ctx, cancel := context.WithTimeout(ss.srv.ctx, 5*time.Second)
	defer cancel()
	key, err := ss.srv.cfg.LookupPSK(ctx, id)
	if err != nil {
		reason := dtlspsk.Reason(err)
		if reason == "" {
			reason = dtlspsk.ReasonStore
		}
		ss.abortWith(reason)
		return nil, err
	}
	return key, nil
}

// abortWith records a refusal reason without cancelling: pion answers the
// callback's error with a fatal alert itself.
func (ss *Session) abortWith(reason string) {
	ss.mu.Lock()
	if ss.refused == "" {
		ss.refused = reason
	}
	ss.mu.Unlock()
}

func (ss *Session) newCID() []byte {
	cid := newCIDBytes()
	ss.srv.registerCID(ss, cid)
	return cid
}

// badKey is called when pion could not decrypt the client's Finished: the
// key is wrong. It fails the handshake at once.
func (ss *Session) badKey() {
	if !ss.up.Load() {
		ss.abort(dtlspsk.ReasonBadKey)
	}
}

func (ss *Session) writeRaw(b []byte) {
	_, _ = ss.srv.conn.WriteToUDPAddrPort(b, ss.Peer())
}

func (ss *Session) closeConn() {
	ss.once.Do(func() { close(ss.done) })
}

// NewLogger implements logging.LoggerFactory for pion: the session's
// logger watches for the one event pion does not report otherwise.
func (ss *Session) NewLogger(string) logging.LeveledLogger { return &ss.log }

// pionLogger discards pion's logs except "decrypt failed" during the
// handshake, which means the client's Finished was sealed with another key.
type pionLogger struct{ s *Session }

func (l *pionLogger) Trace(string)          {}
func (l *pionLogger) Tracef(string, ...any) {}
func (l *pionLogger) Debug(string)          {}
func (l *pionLogger) Debugf(format string, _ ...any) {
	if strings.Contains(format, "decrypt failed") {
		l.s.badKey()
	}
}
func (l *pionLogger) Info(string)           {}
func (l *pionLogger) Infof(string, ...any)  {}
func (l *pionLogger) Warn(string)           {}
func (l *pionLogger) Warnf(string, ...any)  {}
func (l *pionLogger) Error(string)          {}
func (l *pionLogger) Errorf(string, ...any) {}

// pconn is the session seen as pion's net.PacketConn: reads come from the
// server's read loop, writes go to the shared socket.
type pconn Session

var _ net.PacketConn = (*pconn)(nil)

func (p *pconn) ReadFrom(b []byte) (int, net.Addr, error) {
	select {
	case d := <-p.in:
		if len(d.b) > len(b) {
			return 0, nil, fmt.Errorf("dtlsx: datagram of %d bytes exceeds read buffer", len(d.b))
		}
		return copy(b, d.b), net.UDPAddrFromAddrPort(d.from), nil
	case <-p.done:
		return 0, nil, net.ErrClosed
	case <-p.rdl.Done():
		return 0, nil, errTimeout{}
	}
}

func (p *pconn) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-p.done:
		return 0, net.ErrClosed
	default:
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("dtlsx: not a UDP address: %v", addr)
	}
	return p.srv.conn.WriteToUDPAddrPort(b, ua.AddrPort())
}

func (p *pconn) Close() error {
	(*Session)(p).closeConn()
	return nil
}

func (p *pconn) LocalAddr() net.Addr { return p.srv.conn.LocalAddr() }

func (p *pconn) SetDeadline(t time.Time) error { return p.SetReadDeadline(t) }

func (p *pconn) SetReadDeadline(t time.Time) error {
	p.rdl.Set(t)
	return nil
}

func (p *pconn) SetWriteDeadline(time.Time) error { return nil }

// errTimeout is a net.Error timeout, as a socket's read deadline gives.
type errTimeout struct{}

func (errTimeout) Error() string   { return "dtlsx: i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
