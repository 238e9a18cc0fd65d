// Package dtlsx serves CoAP over DTLS 1.2 (RFC 6347, RFC 7252 §9) on
// pion/dtls, for dialect E's PSK devices (docs/protocol.md §2) and certificate
// clients (§3.6). It owns the UDP socket and demultiplexes datagrams to
// sessions itself, by address or by Connection ID (RFC 9146), so that it
// can bound and account for session state: pion drives each session's
// handshake and record protection, and the decrypted CoAP datagrams go to a
// coapx.Server through ServeSession.
//
// Only a datagram whose first record is a well-formed ClientHello creates
// state for an unknown address, and only within the limits (sessions,
// handshakes in flight, handshakes held per source address, and under
// pressure a fair share per address and a per-address rate; see admit);
// pion answers it with a HelloVerifyRequest cookie. A handshake whose
// cookie is not echoed within Config.CookieTimeout, or that then makes no
// progress (no datagram from the peer) for Config.HandshakeIdleTimeout, is
// dropped (RFC 6347 §4.2.4: a live peer retransmits its flight within a
// few seconds). A session closes when its lifetime passes without a
// datagram from the peer, and at once when its device's credentials
// change (Session.Revoke).
package dtlsx

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/ratelog"
	"github.com/pion/dtls/v3"
	"github.com/prometheus/client_golang/prometheus"
)

// Reasons a handshake fails besides the dtlspsk ones (label values of
// coapgate_dtls_handshake_failures_total{reason}).
const (
	ReasonNoCookieEcho    = "no_cookie_echo"   // HelloVerifyRequest never answered (spoofed source)
	ReasonTimeout         = "timeout"          // handshake did not finish in time
	ReasonPeerAlert       = "peer_alert"       // the client aborted
	ReasonHandshakeError  = "handshake_error"  // protocol error (no common suite, bad message…)
	ReasonLimitSessions   = "limit_sessions"   // dtls.max_sessions reached
	ReasonLimitHandshakes = "limit_handshakes" // dtls.max_handshakes reached
	ReasonRateLimited     = "rate_limited"     // dtls.handshake_rate exceeded for the source address (under pressure)
	ReasonLimitAddress    = "limit_address"    // dtls.max_handshakes_per_address held by the source address
	ReasonFairShare       = "fair_share"       // under pressure, the source address holds its share of the slots
	ReasonStalled         = "stalled"          // no datagram from the peer for dtls.handshake_idle_timeout after the cookie echo
)

// Reasons a session ends (coapgate_dtls_sessions_closed_total{reason}).
const (
	CloseIdle     = "idle"     // lifetime passed without a datagram
	ClosePeer     = "peer"     // close_notify, fatal alert or read error
	CloseShutdown = "shutdown" // server stopping
	CloseReplaced = "replaced" // a new handshake from the same address
	// CloseResumeFailed: a hibernated session could not be rebuilt from
	// its snapshot (counted in coapgate_dtls_resume_failures_total too).
	CloseResumeFailed = "resume_failed"
	// CloseRevoked: the device's credentials changed (secret rotated,
	// tokens revoked, disabled, deleted or re-created): Session.Revoke.
	CloseRevoked = "revoked"
)

// Config configures a Server. Zero values take the defaults in brackets.
type Config struct {
	// LookupPSK returns the key of a parsed PSK identity; a refusal is a
	// *dtlspsk.Error whose Reason is counted and logged. It runs on the
	// session's handshake goroutine, never on the read loop. Nil disables
	// PSK suites.
	LookupPSK func(ctx context.Context, id dtlspsk.Identity) ([]byte, error)
	// Certificate enables ECDHE-ECDSA suites; nil: PSK only.
	Certificate *tls.Certificate
	// ConnectionID enables RFC 9146 Connection IDs (8 bytes) when a client
	// offers them.
	ConnectionID bool
	// MaxSessions bounds established sessions plus handshakes [100000].
	MaxSessions int
	// MaxHandshakes bounds handshakes in flight [1024]. Half of it is the
	// pressure mark: above it, each source address is held to a fair share
	// of the slots and to HandshakeRate.
	MaxHandshakes int
	// MaxHandshakesPerAddress bounds the handshakes in flight from one
	// source IP address, always [MaxHandshakes/2].
	MaxHandshakesPerAddress int
	// HandshakeRate is the handshakes per second allowed per source IP
	// address while the node is under pressure, with a burst of the same
	// size [20]; < 0 disables the limit. Below the pressure mark an address
	// may start handshakes as fast as the node completes them (thousands of
	// devices behind one carrier NAT address reconnecting together).
	HandshakeRate float64
	// HandshakeTimeout bounds a handshake [30s].
	HandshakeTimeout time.Duration
	// CookieTimeout bounds the wait for the cookie echo [5s].
	CookieTimeout time.Duration
	// HandshakeIdleTimeout drops a handshake whose peer sent nothing for
	// this long after the cookie echo [10s]: a live peer answers within a
	// round trip, or retransmits its last flight when its timer fires
	// (RFC 6347 §4.2.4: 1 s; RFC 7925 §11 for constrained networks: up to
	// 9 s).
	HandshakeIdleTimeout time.Duration
	// IdleTimeout closes sessions without a PSK lifetime (certificate
	// clients) after this long without a datagram [1h].
	IdleTimeout time.Duration
	// HibernateAfter hibernates an established session after this long
	// without a datagram in either direction: its pion Conn is closed and
	// only a snapshot of its DTLS state (about 200 bytes) is kept until the
	// next datagram resumes it (docs/architecture.md). 0 disables it. The
	// sweeper checks once a second.
	HibernateAfter time.Duration
	// ReadBuffer is the socket receive buffer to ask for (0: system default).
	ReadBuffer int
	// OnUp is called once a session is established, OnDown when it ends
	// (only for sessions that were up). Both run on the session's goroutine.
	OnUp   func(s *Session)
	OnDown func(s *Session, reason string)
	// Registerer receives the metrics (nil: none).
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	// Now is the clock of idle and cookie expiry (default time.Now).
	Now func() time.Time
}

func (c *Config) fill() {
	if c.MaxSessions <= 0 {
		c.MaxSessions = 100000
	}
	if c.MaxHandshakes <= 0 {
		c.MaxHandshakes = 1024
	}
	if c.MaxHandshakesPerAddress <= 0 {
		c.MaxHandshakesPerAddress = max(1, c.MaxHandshakes/2)
	}
	if c.HandshakeIdleTimeout <= 0 {
		c.HandshakeIdleTimeout = 10 * time.Second
	}
	if c.HandshakeRate == 0 {
		c.HandshakeRate = 20
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 30 * time.Second
	}
	if c.CookieTimeout <= 0 {
		c.CookieTimeout = 5 * time.Second
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = time.Hour
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// cidLen is the length of the Connection IDs the server issues.
const cidLen = 8

// Server is a DTLS listener in front of a coapx.Server.
type Server struct {
	cfg  Config
	coap *coapx.Server
	log  *slog.Logger
	m    *metrics
	opts []dtls.ServerOption // shared part of every session's options
	ropt []dtls.Option       // the same for resumed sessions
	// refusals writes refused handshakes at a bounded rate (per reason).
	refusals *ratelog.Limiter

	conn *net.UDPConn // set once by Serve
	ctx  context.Context
	wg   sync.WaitGroup // session goroutines

	nextID     atomic.Uint64
	inflight   atomic.Int64
	sessions   atomic.Int64
	rate       *rateLimiter // read loop only
	mu         sync.Mutex
	byAddr     map[netip.AddrPort]*Session // guarded by mu; every live session by its first address
	pending    map[netip.AddrPort]*Session // guarded by mu; handshakes that may replace a session at their address
	byCID      map[string]*Session         // guarded by mu
	hsByAddr   map[netip.Addr]int          // guarded by mu; handshakes in flight per source address
	nextSweep  time.Time                   // read loop only
	released   time.Time                   // guarded by mu: last memory release after mass hibernation
	unreleased int                         // guarded by mu: hibernations since then
	shutdownMu sync.Mutex
	stopping   bool // guarded by shutdownMu
}

// New returns a Server whose sessions feed coap (which must be Run by the
// caller).
func New(cfg Config, coap *coapx.Server) (*Server, error) {
	cfg.fill()
	if cfg.LookupPSK == nil && cfg.Certificate == nil {
		return nil, errors.New("dtlsx: neither PSK lookup nor certificate configured")
	}
	s := &Server{
		cfg:      cfg,
		coap:     coap,
		log:      cfg.Logger.With("component", "dtls"),
		m:        newMetrics(cfg.Registerer),
		byAddr:   make(map[netip.AddrPort]*Session),
		pending:  make(map[netip.AddrPort]*Session),
		byCID:    make(map[string]*Session),
		hsByAddr: make(map[netip.Addr]int),
		rate:     newRateLimiter(cfg.HandshakeRate, 1<<16),
	}
	s.refusals = ratelog.New(s.log, ratelog.Config{})
	var suites []dtls.CipherSuiteID
	if cfg.LookupPSK != nil {
		// Exactly the dialect's suites (docs/protocol.md §2): offering more
		// (GCM, ECDHE-PSK) makes stock clients pick those instead, which
		// the platform's devices were never tested against.
		suites = append(suites,
			dtls.TLS_PSK_WITH_AES_128_CCM_8,
			dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
		)
	}
	if cfg.Certificate != nil {
		suites = append(suites,
			dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
			dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM,
			dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
		)
		s.opts = append(s.opts, dtls.WithCertificates(*cfg.Certificate))
		s.ropt = append(s.ropt, dtls.WithCertificates(*cfg.Certificate))
	}
	s.opts = append(s.opts,
		dtls.WithCipherSuites(suites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
		// Cookies are pion's default as a server (never
		// WithInsecureSkipVerifyHello); TestSpoofedClientHellos checks it.
	)
	s.ropt = append(s.ropt,
		dtls.WithCipherSuites(suites...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	)
	return s, nil
}

// Serve reads datagrams from conn until ctx ends; it then closes every
// session and returns once their goroutines are done. It closes conn.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	s.conn = conn
	s.ctx = ctx
	if s.cfg.ReadBuffer > 0 {
		if err := conn.SetReadBuffer(s.cfg.ReadBuffer); err != nil {
			s.log.Warn("cannot set socket receive buffer", "want", s.cfg.ReadBuffer, "err", err)
		}
	}
	stop := make(chan struct{})
	var loops sync.WaitGroup
	loops.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				conn.Close()
				return
			case <-stop:
				return
			case <-t.C:
				s.sweep(s.cfg.Now())
			}
		}
	})
	err := s.readLoop(ctx, conn)
	close(stop)
	loops.Wait()
	s.shutdownMu.Lock()
	s.stopping = true
	s.shutdownMu.Unlock()
	s.mu.Lock()
	all := make([]*Session, 0, len(s.byAddr)+len(s.pending))
	for _, ss := range s.byAddr {
		all = append(all, ss)
	}
	for _, ss := range s.pending {
		all = append(all, ss)
	}
	s.mu.Unlock()
	for _, ss := range all {
		ss.close(CloseShutdown)
	}
	s.wg.Wait()
	return err
}

// Addr returns the bound address (valid once Serve has started).
func (s *Server) Addr() net.Addr {
	if s.conn == nil {
		return nil
	}
	return s.conn.LocalAddr()
}

// Sessions returns the number of established sessions.
func (s *Server) Sessions() int { return int(s.sessions.Load()) }

// Handshakes returns the number of handshakes in flight.
func (s *Server) Handshakes() int { return int(s.inflight.Load()) }

func (s *Server) readLoop(ctx context.Context, conn *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, from, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("udp read failed", "err", err)
			continue
		}
		s.dispatch(buf[:n], netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), s.cfg.Now())
	}
}

// dispatch routes one datagram: by Connection ID, else by address, else —
// for a ClientHello within the limits — to a new session. Anything else
// from an unknown address is dropped without state.
func (s *Server) dispatch(b []byte, from netip.AddrPort, now time.Time) {
	if len(b) < recordHeaderLen {
		s.m.dropped.Inc()
		return
	}
	s.mu.Lock()
	var ss *Session
	if cid, ok := recordCID(b, cidLen); ok && s.cfg.ConnectionID {
		ss = s.byCID[string(cid)]
	}
	byAddr := false
	if ss == nil {
		ss, byAddr = s.byAddr[from], true
	}
	if ss == nil {
		// The session a pending handshake was to replace ended meanwhile
		// (its close_notify came first): the handshake takes the address.
		if next := s.pending[from]; next != nil {
			delete(s.pending, from)
			s.byAddr[from] = next
			ss = next
		}
	}
	s.mu.Unlock()
	ch, isHello := parseClientHello(b)
	if ss != nil && byAddr && isHello && (ss.up.Load() || ch.random != ss.hello) {
		// A ClientHello on an established session's address, or one of
		// another handshake (its client random differs) on the address of
		// a handshake in progress: the device restarted (NB-IoT modules
		// often reuse their source port). The new handshake runs beside
		// the old session, which it replaces only once the cookie came
		// back (RFC 6347 §4.2.8): a spoofed ClientHello cannot end a
		// session or a handshake. The pending handshake is told apart by
		// its client random, which its cookie echo repeats.
		s.mu.Lock()
		next := s.pending[from]
		if next != nil && ch.random != next.hello {
			next = nil // not the pending one's: another restart
		}
		if next != nil && ch.cookie {
			delete(s.pending, from)
			s.byAddr[from] = next
		}
		s.mu.Unlock()
		switch {
		case next != nil && ch.cookie:
			old := ss
			s.wg.Go(func() { old.replaced() }) // never block the read loop
			next.deliver(b, from)
			return
		case next != nil:
			next.deliver(b, from)
			return
		case !ch.cookie:
			s.startSession(b, from, now, true)
			return
		}
		if !ss.up.Load() {
			// A cookie echo of no handshake at this address.
			s.m.dropped.Inc()
			return
		}
	}
	if ss != nil {
		ss.deliver(b, from)
		return
	}
	if !isHello {
		s.m.dropped.Inc()
		return
	}
	s.startSession(b, from, now, false)
}

// startSession creates the state of a new handshake for a ClientHello,
// within the limits. A replacement waits in pending until its cookie echo.
func (s *Server) startSession(b []byte, from netip.AddrPort, now time.Time, replacement bool) {
	switch {
	case int(s.sessions.Load()+s.inflight.Load()) >= s.cfg.MaxSessions:
		s.refuse(ReasonLimitSessions, from)
		return
	case int(s.inflight.Load()) >= s.cfg.MaxHandshakes:
		s.refuse(ReasonLimitHandshakes, from)
		return
	}
	if reason := s.admit(from.Addr(), now); reason != "" {
		s.refuse(reason, from)
		return
	}
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	if s.stopping {
		return
	}
	ss := s.newSession(from, now)
	if ch, ok := parseClientHello(b); ok {
		ss.hello = ch.random
	}
	l := newLink(ss)
	ss.attach(l)
	s.mu.Lock()
	var superseded *Session
	if replacement {
		superseded = s.pending[from] // an earlier restart that never echoed its cookie
		s.pending[from] = ss
	} else {
		s.byAddr[from] = ss
	}
	s.hsByAddr[from.Addr()]++
	s.mu.Unlock()
	if superseded != nil {
		s.wg.Go(func() { superseded.abort(CloseReplaced) })
	}
	s.inflight.Add(1)
	s.m.inflight.Inc()
	s.wg.Go(func() { s.run(ss, l) })
	ss.deliver(b, from)
}

// admit applies the per-address limits to a new handshake from a (read
// loop only) and returns the refusal reason, or "".
//
//   - Always: a source address holds at most MaxHandshakesPerAddress
//     handshakes in flight.
//   - Below the pressure mark (MaxHandshakes/2 in flight) nothing else: a
//     reconnect storm from one carrier NAT address runs as fast as the node
//     completes handshakes.
//   - Under pressure, the slots are shared: with n addresses holding
//     handshakes (counting a newcomer), an address that holds
//     MaxHandshakes/(n+1) or more is refused; the last quarter of the
//     slots is kept for addresses that hold none (a device behind its own
//     address needs one); and each address is held to HandshakeRate new
//     handshakes per second.
//
// A flood from a few addresses therefore fills at most three quarters of
// the slots (each freed after CookieTimeout or HandshakeIdleTimeout when
// the flood goes silent), and every other address still gets a slot at
// once.
func (s *Server) admit(a netip.Addr, now time.Time) string {
	s.mu.Lock()
	held, active := s.hsByAddr[a], len(s.hsByAddr)
	s.mu.Unlock()
	if held >= s.cfg.MaxHandshakesPerAddress {
		return ReasonLimitAddress
	}
	inflight := int(s.inflight.Load())
	if inflight < s.cfg.MaxHandshakes/2 {
		return ""
	}
	if held == 0 {
		active++
	}
	if held > 0 && (held >= max(1, s.cfg.MaxHandshakes/(active+1)) || inflight >= s.cfg.MaxHandshakes-s.cfg.MaxHandshakes/4) {
		return ReasonFairShare
	}
	if !s.allowRate(a, now) {
		return ReasonRateLimited
	}
	return ""
}

// allowRate applies the per-address handshake rate (read loop only).
func (s *Server) allowRate(a netip.Addr, now time.Time) bool {
	if now.After(s.nextSweep) {
		s.rate.prune(now)
		s.nextSweep = now.Add(time.Second)
	}
	return s.rate.allow(a, now)
}

// refuse counts a handshake refused by a limit; nothing is allocated.
func (s *Server) refuse(reason string, from netip.AddrPort) {
	s.m.failures.WithLabelValues(reason).Inc()
	s.log.Debug("handshake refused", "reason", reason, "peer", from.String())
}

// sweep closes idle sessions and handshakes whose cookie was not echoed,
// and asks sessions idle for HibernateAfter to hibernate.
func (s *Server) sweep(now time.Time) {
	s.mu.Lock()
	var expired, idle []*Session
	for _, m := range []map[netip.AddrPort]*Session{s.byAddr, s.pending} {
		for _, ss := range m {
			switch {
			case ss.expired(now, s.cfg.CookieTimeout, s.cfg.HandshakeIdleTimeout):
				expired = append(expired, ss)
			case s.cfg.HibernateAfter > 0 && ss.idleFor(now, s.cfg.HibernateAfter):
				idle = append(idle, ss)
			}
		}
	}
	s.mu.Unlock()
	for _, ss := range idle {
		ss.requestHibernate()
	}
	s.releaseAfterHibernation(len(idle), now)
	for _, ss := range expired {
		switch {
		case ss.up.Load():
			ss.close(CloseIdle)
		case ss.verified.Load():
			ss.abort(ReasonStalled)
		default:
			ss.abort(ReasonNoCookieEcho)
		}
	}
}

// Memory release after mass hibernation: once at least releaseBatch
// sessions have hibernated since the last release, the connections' freed
// memory (pion's buffers, goroutine stacks) is returned to the OS by a
// forced GC — when a wave of hibernations has ended (a sweep finds none to
// hibernate), or every releaseInterval during a long wave. Without it the
// runtime keeps the pages mapped while its heap goal falls only slowly, and
// a node that just hibernated 100k sessions would hold their peak RSS for
// minutes.
const (
	releaseBatch    = 256
	releaseInterval = 30 * time.Second
	releaseDelay    = 2 * time.Second // let the requested sessions finish hibernating
)

func (s *Server) releaseAfterHibernation(n int, now time.Time) {
	s.mu.Lock()
	s.unreleased += n
	due := s.unreleased >= releaseBatch && s.ctx != nil && (n == 0 || now.Sub(s.released) >= releaseInterval)
	if due {
		s.released, s.unreleased = now, 0
	}
	s.mu.Unlock()
	if !due {
		return
	}
	s.wg.Go(func() {
		t := time.NewTimer(releaseDelay)
		defer t.Stop()
		select {
		case <-t.C:
			debug.FreeOSMemory()
			s.m.memoryReleases.Inc()
		case <-s.ctx.Done():
		}
	})
}

// run drives one session: handshake, then the read loop feeding coapx.
func (s *Server) run(ss *Session, l *link) {
	opts := append([]dtls.ServerOption{dtls.WithLoggerFactory(ss)}, s.opts...)
	if s.cfg.LookupPSK != nil {
		opts = append(opts, dtls.WithPSK(ss.psk))
	}
	if s.cfg.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(ss.newCID))
	}
	conn, err := dtls.ServerWithOptions(l, net.UDPAddrFromAddrPort(ss.addr), opts...)
	if err != nil {
		s.handshakeDone(ss)
		s.fail(ss, ReasonHandshakeError, err)
		s.remove(ss)
		return
	}
	hctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	ss.setConn(conn, cancel)
	err = conn.HandshakeContext(hctx)
	timedOut := hctx.Err() != nil
	cancel()
	ss.mu.Lock()
	ss.cancelHS = nil // its context and timer would outlive the handshake
	ss.mu.Unlock()
	if err == nil {
		// Counted as a session before its handshake slot is released, so
		// admission (sessions + handshakes) never sees it in neither.
		s.sessions.Add(1)
	}
	s.handshakeDone(ss)
	if err != nil {
		reason := ss.refusal()
		switch {
		case reason != "":
		case timedOut && s.ctx.Err() != nil:
			reason = CloseShutdown
		case timedOut && !ss.verified.Load():
			reason = ReasonNoCookieEcho
		case timedOut:
			reason = ReasonTimeout
		case isPeerAlert(err):
			reason = ReasonPeerAlert
		default:
			reason = ReasonHandshakeError
		}
		if hidesIdentity(reason) && ss.badFinished.Load() {
			// pion drops a Finished it cannot decrypt without a word: tell
			// the client now rather than let it retransmit until timeout.
			// A refused identity was given a random key and ends here too
			// (RFC 4279 §2).
			ss.writeRaw(fatalAlert(alertDecryptError))
		}
		_ = conn.Close()
		if reason != CloseShutdown {
			s.fail(ss, reason, err)
		}
		s.remove(ss)
		return
	}
	if st, ok := conn.ConnectionState(); ok {
		s.m.handshakes.WithLabelValues(cipherName(st.CipherSuiteID)).Inc()
	}
	ss.established(s.cfg.Now())
	s.m.sessions.Inc()
	if s.cfg.OnUp != nil {
		s.cfg.OnUp(ss)
	}
	s.log.Debug("session up", ss.logAttrs()...)
	s.serveConn(ss, conn)
}

// serveConn runs an established session's read loop on conn until the
// session ends or hibernates.
func (s *Server) serveConn(ss *Session, conn *dtls.Conn) {
	reason := ss.readLoop(conn, s.coap, s.cfg.Now)
	if reason == closeHibernated {
		return // conn is closed; the session lives on as its snapshot
	}
	ss.mu.Lock()
	ss.ended = true
	ss.mu.Unlock()
	_ = conn.Close() // sends close_notify through the link, so routes go after it
	s.remove(ss)
	s.ended(ss, reason) // after remove: a session counted gone has no routes left
}

// ended does the accounting of an established session that ended.
func (s *Server) ended(ss *Session, reason string) {
	s.sessions.Add(-1)
	s.m.sessions.Dec()
	s.m.closed.WithLabelValues(reason).Inc()
	if s.cfg.OnDown != nil {
		s.cfg.OnDown(ss, reason)
	}
	s.log.Debug("session down", append(ss.logAttrs(), "reason", reason)...)
}

// wakeAsync resumes a hibernated session off the read loop.
func (s *Server) wakeAsync(ss *Session) {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	if s.stopping {
		return // Serve closes every session
	}
	s.wg.Go(func() { _ = s.wake(ss) })
}

// wake resumes a hibernated session: a new pion Conn from its snapshot,
// fed from the session's queue. It is a no-op for an active session and
// fails for an ended one. A snapshot that cannot be restored ends the
// session (CloseResumeFailed).
func (s *Server) wake(ss *Session) error {
	s.shutdownMu.Lock()
	defer s.shutdownMu.Unlock()
	if s.stopping {
		return net.ErrClosed
	}
	ss.mu.Lock()
	if ss.conn != nil {
		ss.mu.Unlock()
		return nil
	}
	sn := ss.snap
	if sn == nil || ss.ended {
		ss.mu.Unlock()
		return net.ErrClosed
	}
	l := newLink(ss)
	conn, err := s.resumeConn(ss, sn, l)
	if err != nil {
		ss.mu.Unlock()
		s.m.resumeFailures.Inc()
		s.log.Warn("hibernated session cannot resume; closed", append(ss.logAttrs(), "err", err.Error())...)
		ss.close(CloseResumeFailed)
		return fmt.Errorf("dtlsx: resume session %d: %w", ss.id, err)
	}
	ss.snap, ss.conn = nil, conn
	sn.wipe()
	ss.asleep.Store(false)
	ss.mu.Unlock()
	s.m.hibernated.Dec()
	s.m.resumes.Inc()
	ss.attach(l)
	s.wg.Go(func() { s.serveConn(ss, conn) })
	return nil
}

// resumeConn rebuilds a server Conn over l from sn.
func (s *Server) resumeConn(ss *Session, sn *snapshot, l *link) (*dtls.Conn, error) {
	st, err := sn.state()
	if err != nil {
		return nil, err
	}
	opts := append([]dtls.Option{dtls.WithLoggerFactory(ss)}, s.ropt...)
	if s.cfg.LookupPSK != nil {
		opts = append(opts, dtls.WithPSK(ss.psk))
	}
	conn, err := dtls.ResumeWithOptions(st, l, net.UDPAddrFromAddrPort(ss.Peer()), opts...)
	if err != nil {
		return nil, fmt.Errorf("dtlsx: resume: %w", err)
	}
	ctx, cancel := context.WithTimeout(s.ctx, s.cfg.HandshakeTimeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close()
		return nil, fmt.Errorf("dtlsx: resume: %w", err)
	}
	return conn, nil
}

// hibernateFailed logs and counts a session that could not be snapshotted
// (it stays active and is not asked again).
func (s *Server) hibernateFailed(ss *Session, err error) {
	ss.noHib.Store(true)
	s.m.hibernateFailures.Inc()
	s.log.Warn("session cannot hibernate", append(ss.logAttrs(), "err", err.Error())...)
}

func (s *Server) handshakeDone(ss *Session) {
	s.inflight.Add(-1)
	s.m.inflight.Dec()
	a := ss.addr.Addr()
	s.mu.Lock()
	if s.hsByAddr[a]--; s.hsByAddr[a] <= 0 {
		delete(s.hsByAddr, a)
	}
	s.mu.Unlock()
}

// fail counts and logs a refused handshake.
func (s *Server) fail(ss *Session, reason string, err error) {
	s.m.failures.WithLabelValues(reason).Inc()
	lvl := slog.LevelInfo
	if reason == ReasonNoCookieEcho || reason == ReasonStalled {
		lvl = slog.LevelDebug // what a spoofed or half-open flood produces: do not flood the log
	}
	attrs := append(ss.logAttrs(), "reason", reason)
	if err != nil {
		attrs = append(attrs, "err", err.Error())
	}
	s.refusals.Log(context.Background(), lvl, "handshake refused/"+reason, "handshake refused", attrs...) // counted exactly above
}

// remove forgets a session's routes.
func (s *Server) remove(ss *Session) {
	ss.closeLink()
	s.mu.Lock()
	if s.byAddr[ss.addr] == ss {
		delete(s.byAddr, ss.addr)
	}
	if s.pending[ss.addr] == ss {
		delete(s.pending, ss.addr)
	}
	for _, c := range ss.cids {
		if s.byCID[c] == ss {
			delete(s.byCID, c)
		}
	}
	ss.cids = nil
	s.mu.Unlock()
}

// registerCID routes datagrams carrying cid to ss.
func (s *Server) registerCID(ss *Session, cid []byte) {
	s.mu.Lock()
	s.byCID[string(cid)] = ss
	ss.cids = append(ss.cids, string(cid))
	s.mu.Unlock()
}

func isPeerAlert(err error) bool {
	var ae interface{ IsFatalOrCloseNotify() bool }
	return errors.As(err, &ae)
}

// newCIDBytes returns a random Connection ID.
func newCIDBytes() []byte {
	b := make([]byte, cidLen)
	rand.Read(b)
	return b
}

func cipherName(id dtls.CipherSuiteID) string {
	switch id {
	case dtls.TLS_PSK_WITH_AES_128_CCM_8:
		return "psk_aes_128_ccm_8"
	case dtls.TLS_PSK_WITH_AES_128_CBC_SHA256:
		return "psk_aes_128_cbc_sha256"
	case dtls.TLS_PSK_WITH_AES_128_CCM:
		return "psk_aes_128_ccm"
	case dtls.TLS_PSK_WITH_AES_128_GCM_SHA256:
		return "psk_aes_128_gcm_sha256"
	case dtls.TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256:
		return "ecdhe_psk_aes_128_cbc_sha256"
	}
	return fmt.Sprintf("0x%04x", uint16(id))
}
