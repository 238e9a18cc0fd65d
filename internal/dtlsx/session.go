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
// DTLS (the dialect recommends payloads of at most 1 KB, docs/protocol.md §2).
const readBufLen = 2048

type datagram struct {
	b    []byte
	from netip.AddrPort
}

// Session is one DTLS association: the peer's state from its first
// ClientHello until close. It is all the per-peer state the server keeps
// besides pion's *dtls.Conn, and it is the coapx.Session of the CoAP
// requests it carries.
//
// An established session idle for Config.HibernateAfter hibernates: its
// pion Conn is closed (without close_notify) and only a compact snapshot
// of its DTLS state stays (see snapshot). The next datagram for it, or the
// next response or request the server writes on it, resumes it from the
// snapshot on a new Conn, transparently for the peer and for coapx.
type Session struct {
	srv     *Server
	id      uint64
	addr    netip.AddrPort // first address: the byAddr key
	created time.Time

	log    pionLogger
	remote atomic.Pointer[netip.AddrPort] // latest authenticated address

	verified  atomic.Bool  // a ClientHello with a cookie arrived
	up        atomic.Bool  // handshake complete
	lastSeen  atomic.Int64 // unix nanoseconds of the last datagram
	lastWrite atomic.Int64 // unix nanoseconds of the last datagram written
	asleep    atomic.Bool  // hibernated (mirrors snap != nil)
	hibReq    atomic.Bool  // the sweeper asked the read loop to hibernate
	noHib     atomic.Bool  // its state could not be snapshotted: stays active

	// The inbound queue, between the server's read loop and pion's reader
	// on link. Datagrams stay here while the session hibernates.
	qmu      sync.Mutex
	q        []datagram // guarded by qmu
	link     *link      // guarded by qmu; the current Conn's packet conn, nil while hibernated
	busy     bool       // guarded by qmu; pion's reader holds a datagram
	parked   bool       // guarded by qmu; hibernating: pion's reader gets nothing
	resuming bool       // guarded by qmu; a resume is on its way
	epoch    uint16     // guarded by qmu; while asleep: the peer's epoch
	cutoff   uint64     // guarded by qmu; while asleep: lowest acceptable sequence number

	// mu is held shared around every write on conn, exclusively to change
	// conn: a snapshot is taken with no write in flight.
	mu       sync.RWMutex
	conn     *dtls.Conn         // guarded by mu; nil before the handshake and while hibernated
	snap     *snapshot          // guarded by mu; the hibernated state
	ended    bool               // guarded by mu; closed for good
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
		lifetime: s.cfg.IdleTimeout,
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

// Hibernated reports whether the session is hibernated.
func (ss *Session) Hibernated() bool { return ss.asleep.Load() }

// WriteDatagram implements coapx.Session: it encrypts b as one record,
// resuming a hibernated session first.
func (ss *Session) WriteDatagram(b []byte) error {
	for range 3 {
		ss.mu.RLock()
		if c := ss.conn; c != nil {
			_, err := c.Write(b)
			ss.mu.RUnlock()
			ss.lastWrite.Store(ss.srv.cfg.Now().UnixNano())
			return err
		}
		asleep := ss.snap != nil
		ss.mu.RUnlock()
		if !asleep {
			return net.ErrClosed
		}
		if err := ss.srv.wake(ss); err != nil {
			return err
		}
	}
	return net.ErrClosed
}

// Close ends the session (close_notify to the peer unless hibernated).
func (ss *Session) Close() { ss.close(CloseShutdown) }

func (ss *Session) logAttrs() []any {
	a := []any{"peer", ss.Peer().String(), "session", ss.id}
	if ss.ident != nil {
		a = append(a, "productKey", ss.ident.ProductKey, "deviceKey", ss.ident.DeviceKey, "secureMode", ss.ident.SecureMode)
	}
	return a
}

// deliver queues a datagram for pion, resuming a hibernated session for
// it; it never blocks the read loop.
func (ss *Session) deliver(b []byte, from netip.AddrPort) {
	if !ss.up.Load() {
		if ch, ok := parseClientHello(b); ok && ch.cookie {
			ss.verified.Store(true)
		}
	}
	ss.qmu.Lock()
	asleep := ss.link == nil && ss.up.Load()
	if asleep && ss.parked && !acceptAsleep(b, ss.epoch, ss.cutoff) {
		ss.qmu.Unlock()
		ss.srv.m.asleepRejected.Inc()
		ss.srv.log.Debug("record for a hibernated session refused (replayed, stale or unprotected)", "peer", from.String(), "session", ss.id)
		return
	}
	if len(ss.q) >= queueLen {
		ss.qmu.Unlock()
		ss.srv.m.dropped.Inc()
		return
	}
	ss.q = append(ss.q, datagram{b: append([]byte(nil), b...), from: from})
	var wake chan struct{}
	resume := false
	switch {
	case asleep && !ss.resuming:
		ss.resuming, resume = true, true
	case ss.link != nil && !ss.parked:
		wake = ss.link.wake
	}
	ss.qmu.Unlock()
	if wake != nil {
		select {
		case wake <- struct{}{}:
		default:
		}
	}
	if resume {
		ss.srv.wakeAsync(ss)
	}
}

// attach makes l the link pion's reader takes the queue from.
func (ss *Session) attach(l *link) {
	ss.qmu.Lock()
	ss.link, ss.parked, ss.resuming, ss.busy = l, false, false, false
	pending := len(ss.q) > 0
	ss.qmu.Unlock()
	if pending {
		select {
		case l.wake <- struct{}{}:
		default:
		}
	}
}

func (ss *Session) setConn(c *dtls.Conn, cancel context.CancelFunc) {
	ss.mu.Lock()
	ss.conn, ss.cancelHS = c, cancel
	ss.mu.Unlock()
}

func (ss *Session) refusal() string {
	ss.mu.RLock()
	defer ss.mu.RUnlock()
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

// close ends a session for reason. An active session's read loop ends and
// its goroutine does the accounting; a hibernated one is ended here,
// without a word to the peer (resuming it only to say close_notify would
// cost what hibernation saved).
func (ss *Session) close(reason string) {
	ss.mu.Lock()
	if ss.closeWhy == "" {
		ss.closeWhy = reason
	}
	c, cancel, sn := ss.conn, ss.cancelHS, ss.snap
	if sn != nil {
		ss.snap, ss.ended = nil, true
		sn.wipe()
	}
	ss.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	switch {
	case sn != nil:
		ss.asleep.Store(false)
		ss.srv.m.hibernated.Dec()
		ss.srv.ended(ss, ss.closeWhy)
		ss.srv.remove(ss)
	case c != nil:
		_ = c.Close()
	default:
		ss.closeLink()
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

// idleFor reports whether an active established session saw no datagram in
// either direction for d.
func (ss *Session) idleFor(now time.Time, d time.Duration) bool {
	last := max(ss.lastSeen.Load(), ss.lastWrite.Load())
	return ss.up.Load() && !ss.asleep.Load() && !ss.noHib.Load() && now.UnixNano()-last >= int64(d)
}

// requestHibernate interrupts the read loop's Read so that it hibernates
// the session if it is still idle.
func (ss *Session) requestHibernate() {
	ss.mu.RLock()
	c := ss.conn
	ss.mu.RUnlock()
	if c == nil {
		return
	}
	ss.hibReq.Store(true)
	_ = c.SetReadDeadline(time.Unix(1, 0))
}

// closeHibernated is readLoop's answer when the session hibernated.
const closeHibernated = "hibernated"

// readLoop hands decrypted datagrams to coap until the session ends or
// hibernates, and returns why.
func (ss *Session) readLoop(c *dtls.Conn, coap *coapx.Server, now func() time.Time) string {
	buf := make([]byte, readBufLen)
	for {
		n, err := c.Read(buf)
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() && ss.hibReq.Swap(false) {
				_ = c.SetReadDeadline(time.Time{})
				hib, n := ss.hibernate(c, buf)
				if hib {
					return closeHibernated
				}
				if n > 0 {
					ss.serve(c, buf[:n], coap, now)
				}
				continue
			}
			ss.mu.RLock()
			why := ss.closeWhy
			ss.mu.RUnlock()
			if why == "" {
				why = ClosePeer
			}
			return why
		}
		ss.serve(c, buf[:n], coap, now)
	}
}

func (ss *Session) serve(c *dtls.Conn, b []byte, coap *coapx.Server, now func() time.Time) {
	ss.lastSeen.Store(now().UnixNano())
	if ra, ok := c.RemoteAddr().(*net.UDPAddr); ok {
		if ap := ra.AddrPort(); ap != *ss.remote.Load() {
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			ss.remote.Store(&ap)
		}
	}
	coap.ServeSession(b, ss.Peer(), ss)
}

// hibernate replaces c by a snapshot when the session is quiescent: no
// datagram queued or inside pion, none decrypted but unread, no write in
// flight. It returns false (and possibly a datagram read meanwhile, in
// buf[:n]) when the session must stay active.
//
// Order matters for the two DTLS invariants: (1) pion's reader gets no
// datagram after the snapshot, so the snapshot's remote sequence number
// is above every record accepted (replay protection holds across resume);
// (2) no record is sent after the snapshot — writers are excluded by mu,
// and the link is sealed before Close, whose close_notify is dropped — so
// the resumed Conn's sequence numbers never repeat one already used under
// the epoch (CCM nonces are never reused).
func (ss *Session) hibernate(c *dtls.Conn, buf []byte) (bool, int) {
	now := ss.srv.cfg.Now()
	if !ss.idleFor(now, ss.srv.cfg.HibernateAfter) {
		return false, 0
	}
	ss.qmu.Lock()
	l := ss.link
	if len(ss.q) > 0 || ss.busy || l == nil {
		ss.qmu.Unlock()
		return false, 0
	}
	ss.parked = true
	ss.qmu.Unlock()
	// pion's reader is back in ReadFrom: every datagram it took is
	// processed. One may still wait decrypted in pion's channel.
	_ = c.SetReadDeadline(time.Now().Add(time.Millisecond))
	n, err := c.Read(buf)
	_ = c.SetReadDeadline(time.Time{})
	unpark := func() {
		ss.qmu.Lock()
		ss.parked = false
		pending := len(ss.q) > 0
		ss.qmu.Unlock()
		if pending {
			select {
			case l.wake <- struct{}{}:
			default:
			}
		}
	}
	if err == nil {
		unpark()
		return false, n
	}
	ss.mu.Lock()
	if ss.closeWhy != "" {
		ss.mu.Unlock()
		unpark()
		return false, 0
	}
	l.sealed.Store(true)
	sn, err := takeSnapshot(c)
	if err != nil {
		l.sealed.Store(false)
		ss.mu.Unlock()
		unpark()
		ss.srv.hibernateFailed(ss, err)
		return false, 0
	}
	ss.conn, ss.snap = nil, sn
	ss.srv.m.hibernated.Inc()
	ss.srv.m.hibernations.Inc()
	ss.asleep.Store(true)
	ss.mu.Unlock()
	_ = c.Close() // close_notify goes nowhere: the link is sealed
	ss.qmu.Lock()
	ss.link, ss.busy = nil, false
	ss.epoch, ss.cutoff = sn.remoteEpoch, sn.remoteSeq
	// Datagrams that arrived while parking were queued before the
	// session counted as asleep: check them now.
	kept := ss.q[:0]
	for _, d := range ss.q {
		if acceptAsleep(d.b, ss.epoch, ss.cutoff) {
			kept = append(kept, d)
		} else {
			ss.srv.m.asleepRejected.Inc()
		}
	}
	ss.q = kept
	if len(ss.q) == 0 {
		ss.q = nil
	}
	resume := len(ss.q) > 0 && !ss.resuming
	if resume {
		ss.resuming = true
	}
	ss.qmu.Unlock()
	if resume {
		ss.srv.wakeAsync(ss)
	}
	return true, 0
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

// closeLink closes the current link (a handshake that has no Conn yet).
func (ss *Session) closeLink() {
	ss.qmu.Lock()
	l := ss.link
	ss.qmu.Unlock()
	if l != nil {
		l.Close()
	}
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

// link is one pion Conn's view of the session as a net.PacketConn: reads
// come from the session's queue (fed by the server's read loop), writes go
// to the shared socket. Each Conn — the handshake's, and one per resume —
// has its own link, so closing one never disturbs the next.
type link struct {
	ss     *Session
	wake   chan struct{} // a datagram was queued
	done   chan struct{} // closed by Close
	once   sync.Once
	rdl    *deadline.Deadline
	sealed atomic.Bool // no more writes: the session is being snapshotted
}

var _ net.PacketConn = (*link)(nil)

func newLink(ss *Session) *link {
	return &link{ss: ss, wake: make(chan struct{}, 1), done: make(chan struct{}), rdl: deadline.New()}
}

// ReadFrom gives pion the next queued datagram. pion's reader calls it
// again only after it processed the previous datagram, so entering it
// clears busy: that is how hibernate knows pion is quiescent.
func (l *link) ReadFrom(b []byte) (int, net.Addr, error) {
	ss := l.ss
	for {
		ss.qmu.Lock()
		if ss.link == l {
			ss.busy = false
			if !ss.parked && len(ss.q) > 0 {
				d := ss.q[0]
				ss.q[0] = datagram{}
				ss.q = ss.q[1:]
				if len(ss.q) == 0 {
					ss.q = nil
				}
				ss.busy = true
				ss.qmu.Unlock()
				if len(d.b) > len(b) {
					return 0, nil, fmt.Errorf("dtlsx: datagram of %d bytes exceeds read buffer", len(d.b))
				}
				return copy(b, d.b), net.UDPAddrFromAddrPort(d.from), nil
			}
		}
		ss.qmu.Unlock()
		select {
		case <-l.wake:
		case <-l.done:
			return 0, nil, net.ErrClosed
		case <-l.rdl.Done():
			return 0, nil, errTimeout{}
		}
	}
}

func (l *link) WriteTo(b []byte, addr net.Addr) (int, error) {
	select {
	case <-l.done:
		return 0, net.ErrClosed
	default:
	}
	if l.sealed.Load() {
		return len(b), nil // dropped: see Session.hibernate
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("dtlsx: not a UDP address: %v", addr)
	}
	return l.ss.srv.conn.WriteToUDPAddrPort(b, ua.AddrPort())
}

func (l *link) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *link) LocalAddr() net.Addr { return l.ss.srv.conn.LocalAddr() }

func (l *link) SetDeadline(t time.Time) error { return l.SetReadDeadline(t) }

func (l *link) SetReadDeadline(t time.Time) error {
	l.rdl.Set(t)
	return nil
}

func (l *link) SetWriteDeadline(time.Time) error { return nil }

// errTimeout is a net.Error timeout, as a socket's read deadline gives.
type errTimeout struct{}

func (errTimeout) Error() string   { return "dtlsx: i/o timeout" }
func (errTimeout) Timeout() bool   { return true }
func (errTimeout) Temporary() bool { return true }
