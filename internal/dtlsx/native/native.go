// Package native serves CoAP over DTLS 1.2 with the native engine
// (internal/dtlsx/engine): the engine runs the handshakes and record
// protection on the socket's read loop, this package maps its sessions to
// coapx sessions and PSK identities (dtlspsk) to keys, and counts and logs
// them.
//
// Identities are hidden: an unknown product or device, a disabled device,
// a product without dynamic registration or a malformed identity is
// refused exactly as a wrong key is — the handshake goes on with a decoy
// key derived from the identity (so a retry looks the same), the client's
// Finished fails and gets decrypt_error. Only the metrics
// (coapgate_dtls_handshake_failures_total{reason}) and the rate-limited
// log tell the reasons apart.
package native

import (
	"context"
	"crypto/ecdsa"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/engine"
	"github.com/coapgate/coapgate/internal/ratelog"
	"github.com/prometheus/client_golang/prometheus"
)

// Config configures a Server. Zero values take the engine's defaults.
type Config struct {
	// LookupPSK returns the key of a parsed PSK identity; a refusal is a
	// *dtlspsk.Error whose Reason is counted. It runs on a small pool of
	// lookup workers, never on the read loop, so a slow store delays only
	// the handshakes waiting for it.
	LookupPSK func(ctx context.Context, id dtlspsk.Identity) ([]byte, error)
	// Certificate enables the certificate suites (RSA and/or ECDSA P-256).
	Certificate *tls.Certificate
	// Suites, when set, replaces the default suites (the certificate's,
	// then the dialect's two PSK suites) as the server's preference order.
	Suites       []uint16
	ConnectionID bool
	// MaxSessions bounds established sessions plus handshakes in progress.
	MaxSessions int
	// MaxHandshakes bounds handshakes in progress; from half of them in
	// progress the engine is under pressure.
	MaxHandshakes int
	// MaxHandshakesPerAddress bounds the handshakes in progress from one
	// source IP address under pressure [MaxHandshakes/8].
	MaxHandshakesPerAddress int
	// HandshakeRate is the new handshakes per second (and burst) one
	// source IP address may start under pressure; <= 0: unlimited.
	HandshakeRate float64
	// ReadBuffer is the socket receive buffer to ask for (0: the system's).
	ReadBuffer       int
	HandshakeTimeout time.Duration
	// IdleTimeout ends certificate sessions without traffic; PSK sessions
	// end after their identity's lifetime.
	IdleTimeout time.Duration
	OnUp        func(*Session)
	OnDown      func(*Session, string)
	Registerer  prometheus.Registerer
	Logger      *slog.Logger
	// Replication, when set, shares sessions with the other nodes of a
	// cluster (repl.go).
	Replication *Replication
}

// Server is a DTLS listener on the native engine.
type Server struct {
	cfg    Config
	coap   *coapx.Server
	e      *engine.Engine
	conn   atomic.Pointer[net.UDPConn]
	nextID atomic.Uint64
	log    *slog.Logger

	mu       sync.Mutex
	sessions map[*engine.Session]*Session

	lookups  chan lookup // PSK lookups for the workers
	repl     *repl       // nil: sessions stay on this node
	decoy    []byte      // HMAC key of the decoy PSKs of refused identities
	refusals *ratelog.Limiter
	rate     *rateLimiter // under the engine's lock (AdmitHandshake)

	// keys holds the PSK a lookup gave a handshake in progress, by address
	// and identity, until its session is attached (Session.KeyMatches).
	keys map[string]keyed // guarded by mu

	failures *prometheus.CounterVec
	done     *prometheus.CounterVec
	closed   *prometheus.CounterVec
	active   prometheus.GaugeFunc
}

// lookup is a PSK identity waiting for its key.
type lookup struct {
	addr     netip.AddrPort
	identity []byte
	id       dtlspsk.Identity
	err      error // the identity did not parse
}

// keyed is a looked-up PSK waiting for its session.
type keyed struct {
	key []byte
	at  time.Time
}

// ReasonRateLimited: dtls.handshake_rate exceeded by the source address
// while the engine is under pressure.
const ReasonRateLimited = "rate_limited"

// CloseRevoked: a session ended by Revoke (its device's credentials
// changed), in coapgate_dtls_sessions_closed_total{reason}.
const CloseRevoked = "revoked"

// lookupWorkers run the PSK lookups of handshakes.
const lookupWorkers = 8

// Session is an established DTLS session, a coapx.Session.
type Session struct {
	srv    *Server
	es     *engine.Session
	id     uint64
	ready  chan struct{} // closed once OnUp has run; then closedReady (guarded by srv.mu)
	ident  dtlspsk.Identity
	hasPSK bool                 // ident is set
	hasKey bool                 // key is set
	key    [dtlspsk.KeyLen]byte // the PSK the session was keyed with (none: certificate)
	// revoked: ended by Revoke (closed as "revoked"); closeAfterUp: Close
	// was called before OnUp returned, onUp closes it then.
	revoked, closeAfterUp atomic.Bool
}

// closedReady replaces a Session's own ready channel once it is closed, so
// that an idle session does not keep a channel.
var closedReady = func() chan struct{} { c := make(chan struct{}); close(c); return c }()

// SessionID implements coapx.Session.
func (s *Session) SessionID() uint64 { return s.id }

// WriteDatagram implements coapx.Session.
func (s *Session) WriteDatagram(b []byte) error { return s.srv.e.WriteSession(s.es, b) }

// Identity implements coapx.Session: the *dtlspsk.Identity of a PSK
// session, nil for a certificate session.
func (s *Session) Identity() any {
	if !s.hasPSK {
		return nil
	}
	return &s.ident
}

// PSKIdentity returns the session's PSK identity (nil: certificate).
func (s *Session) PSKIdentity() *dtlspsk.Identity {
	if !s.hasPSK {
		return nil
	}
	return &s.ident
}

// Peer returns the peer's current address (IPv4 unmapped).
func (s *Session) Peer() netip.AddrPort {
	ap := s.srv.e.Peer(s.es)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close ends the session with close_notify. Called before OnUp has
// returned (from OnUp itself, or from another goroutine meanwhile), it
// takes effect once OnUp returns (onUp): OnDown never runs before OnUp is
// done.
func (s *Session) Close() {
	s.closeAfterUp.Store(true)
	s.srv.mu.Lock()
	ready := s.ready
	s.srv.mu.Unlock()
	select {
	case <-ready:
		s.srv.e.CloseSession(s.es)
	default: // onUp closes it after OnUp
	}
}

// Revoke ends the session because its device's credentials changed
// (gateway.BoundSession): close_notify, then its records are refused.
func (s *Session) Revoke() {
	s.revoked.Store(true)
	s.Close()
}

// KeyMatches reports whether key is the PSK the session was established
// with (constant time); a certificate session matches nothing. The
// gateway binds a session only if it matches the device's secret as it is
// at establishment (gateway.BindSession).
func (s *Session) KeyMatches(key []byte) bool {
	return s.hasKey && subtle.ConstantTimeCompare(s.key[:], key) == 1
}

// New returns a server handing decrypted CoAP datagrams to coap.
func New(cfg Config, coap *coapx.Server) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, coap: coap, log: cfg.Logger.With("component", "dtls"), sessions: map[*engine.Session]*Session{}, keys: map[string]keyed{}}
	s.lookups = make(chan lookup, max(cfg.MaxHandshakes, 64))
	s.decoy = make([]byte, 32)
	if _, err := rand.Read(s.decoy); err != nil {
		return nil, fmt.Errorf("dtls decoy key: %w", err)
	}
	s.refusals = ratelog.New(s.log, ratelog.Config{})
	rate := cfg.HandshakeRate
	if rate <= 0 {
		rate = -1
	}
	s.rate = newRateLimiter(rate, 1<<16)
	s.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgate_dtls_handshake_failures_total", Help: "DTLS handshakes that failed, by reason.",
	}, []string{"reason"})
	s.done = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgate_dtls_handshakes_total", Help: "DTLS handshakes completed, by cipher suite.",
	}, []string{"suite"})
	s.closed = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "coapgate_dtls_sessions_closed_total", Help: "DTLS sessions ended, by reason.",
	}, []string{"reason"})
	s.active = prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "coapgate_dtls_sessions", Help: "Established DTLS sessions.",
	}, func() float64 { return float64(s.e.Stats().Sessions) })
	stat := func(f func(engine.Stats) float64) func() float64 {
		return func() float64 { return f(s.e.Stats()) }
	}
	collectors := []prometheus.Collector{s.failures, s.done, s.closed, s.active,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgate_dtls_handshakes_in_flight", Help: "DTLS handshakes in progress.",
		}, stat(func(st engine.Stats) float64 { return float64(st.HandshakesActive) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_dtls_hello_verify_requests_total", Help: "HelloVerifyRequests sent (stateless cookie round trips asked for).",
		}, stat(func(st engine.Stats) float64 { return float64(st.HelloVerifyRequests) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_dtls_bad_cookies_total", Help: "ClientHellos with an invalid cookie (no state was allocated).",
		}, stat(func(st engine.Stats) float64 { return float64(st.BadCookies) })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_dtls_retransmits_total", Help: "DTLS handshake flights retransmitted.",
		}, stat(func(st engine.Stats) float64 { return float64(st.Retransmits) })),
	}
	for _, r := range []struct {
		reason string
		f      func(engine.Stats) uint64
	}{
		{"bad_mac", func(st engine.Stats) uint64 { return st.RecordsBadMAC }},
		{"replayed", func(st engine.Stats) uint64 { return st.RecordsReplayed }},
		{"malformed", func(st engine.Stats) uint64 { return st.RecordsMalformed }},
		{"unexpected", func(st engine.Stats) uint64 { return st.RecordsDropped }},
	} {
		collectors = append(collectors, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_dtls_records_rejected_total", Help: "DTLS records dropped, by reason.",
			ConstLabels: prometheus.Labels{"reason": r.reason},
		}, stat(func(st engine.Stats) float64 { return float64(r.f(st)) })))
	}
	if cfg.Replication != nil {
		r, err := newRepl(s, *cfg.Replication)
		if err != nil {
			return nil, err
		}
		s.repl = r
		collectors = append(collectors, r.events)
	}
	if cfg.Registerer != nil {
		for _, c := range collectors {
			if err := cfg.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("dtls metrics: %w", err)
			}
		}
	}
	ecfg := engine.Config{
		ConnectionID:            cfg.ConnectionID,
		MaxSessions:             cfg.MaxSessions,
		MaxHandshakes:           cfg.MaxHandshakes,
		HandshakeTimeout:        cfg.HandshakeTimeout,
		AdmitHandshake:          s.admit,
		MaxHandshakesPerAddress: cfg.MaxHandshakesPerAddress,
		IdleTimeout:             cfg.IdleTimeout,
		Send:                    s.send,
		OnData:                  s.onData,
		OnEstablished:           s.onUp,
		OnClose:                 s.onDown,
		SessionIdleTimeout:      lifetime,
		OnHandshakeFailure:      s.handshakeFailed,
	}
	if cfg.Certificate != nil {
		ecfg.Certificates = []tls.Certificate{*cfg.Certificate}
		switch cfg.Certificate.PrivateKey.(type) {
		case *ecdsa.PrivateKey:
			ecfg.Suites = append(ecfg.Suites, engine.ECDHESuites...)
		case *rsa.PrivateKey:
			ecfg.Suites = append(ecfg.Suites, engine.RSASuites...)
		}
	}
	if cfg.LookupPSK != nil {
		ecfg.PSK = s.psk
		// The dialect's two PSK suites (docs/protocol.md §2), as on the pion
		// listener; the engine has more (Config.Suites).
		ecfg.Suites = append(ecfg.Suites, engine.TLS_PSK_WITH_AES_128_CCM_8, engine.TLS_PSK_WITH_AES_128_CBC_SHA256)
	}
	if len(cfg.Suites) > 0 {
		ecfg.Suites = cfg.Suites
	}
	e, err := engine.New(ecfg, time.Now())
	if err != nil {
		return nil, fmt.Errorf("dtls engine: %w", err)
	}
	s.e = e
	if s.repl != nil {
		e.SetReplication(engine.Replication{OnUnknown: s.repl.unknown, OnLowWater: s.repl.lowWater})
	}
	return s, nil
}

// lifetime: a PSK session ends after its identity's lifetime without a
// datagram (docs/protocol.md §2).
func lifetime(identity []byte) time.Duration {
	if identity == nil {
		return 0
	}
	id, err := dtlspsk.Parse(identity)
	if err != nil {
		return 0
	}
	return id.Lifetime
}

// Serve runs the listener on conn until ctx ends.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	s.conn.Store(conn)
	if s.cfg.ReadBuffer > 0 {
		if err := conn.SetReadBuffer(s.cfg.ReadBuffer); err != nil {
			s.log.Warn("cannot set socket receive buffer", "want", s.cfg.ReadBuffer, "err", err)
		}
	}
	wctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for range lookupWorkers {
		wg.Go(func() { s.lookupWorker(wctx) })
	}
	if s.repl != nil {
		wg.Go(func() { s.repl.run(wctx) })
	}
	defer func() { cancel(); wg.Wait() }()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetReadDeadline(time.Unix(1, 0)); conn.Close() })
	defer stop()
	err := engine.Serve(s.e, conn)
	if ctx.Err() != nil {
		return nil
	}
	return err
}

func (s *Server) send(b []byte, to netip.AddrPort) {
	if c := s.conn.Load(); c != nil {
		_, _ = c.WriteToUDPAddrPort(b, to)
	}
}

// psk queues the identity's lookup for the workers (the engine's read
// loop must not wait on the store); a malformed identity takes the same
// way, so that neither its answer nor its timing tells it apart. A full
// queue is refused at once with handshake_failure.
func (s *Server) psk(identity []byte, from netip.AddrPort) ([]byte, error) {
	id, err := dtlspsk.Parse(identity)
	select {
	case s.lookups <- lookup{addr: from, identity: identity, id: id, err: err}:
		return nil, engine.ErrPSKPending
	default:
		s.logRefusal(dtlspsk.ReasonStore, from, nil, "too many PSK lookups waiting")
		return nil, &engine.PSKRefusal{Reason: dtlspsk.ReasonStore}
	}
}

func (s *Server) lookupWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-s.lookups:
			key, err := l.key(ctx, s.cfg.LookupPSK)
			if err != nil {
				reason := dtlspsk.Reason(err)
				if reason == "" {
					reason = dtlspsk.ReasonStore
				}
				var id *dtlspsk.Identity
				if l.err == nil {
					id = &l.id
				}
				s.logRefusal(reason, l.addr, id, err.Error())
				ref := &engine.PSKRefusal{Reason: reason, Hide: hidesIdentity(reason)}
				key = nil
				if ref.Hide {
					key = s.decoyKey(l.identity)
				}
				s.e.ProvidePSK(l.addr, l.identity, key, ref)
				continue
			}
			s.remember(l.addr, l.identity, key)
			s.e.ProvidePSK(l.addr, l.identity, key, nil)
		}
	}
}

// key looks the identity's key up (or returns why it did not parse).
func (l *lookup) key(ctx context.Context, f func(context.Context, dtlspsk.Identity) ([]byte, error)) ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	return f(ctx, l.id)
}

// hidesIdentity reports whether a refusal is answered as a wrong key
// (decrypt_error), not with an alert of its own: every refusal that says
// something about the identity. Only an unreachable store gets
// handshake_failure (the device should retry, not re-provision).
func hidesIdentity(reason string) bool {
	return reason != dtlspsk.ReasonStore
}

// decoyKey is the PSK a refused identity's handshake goes on with: derived
// from the identity under a per-process random key, so that every attempt
// with one identity looks the same, and no client can know it.
func (s *Server) decoyKey(identity []byte) []byte {
	m := hmac.New(sha256.New, s.decoy)
	m.Write(identity)
	return m.Sum(nil)[:dtlspsk.KeyLen]
}

// logRefusal logs a refused PSK identity at a bounded rate per reason (the
// metric counts every one).
func (s *Server) logRefusal(reason string, from netip.AddrPort, id *dtlspsk.Identity, msg string) {
	attrs := []any{"reason", reason, "peer", from.String()}
	if id != nil {
		attrs = append(attrs, "productKey", id.ProductKey, "deviceKey", id.DeviceKey, "secureMode", id.SecureMode)
	}
	attrs = append(attrs, "err", msg)
	s.refusals.Log(context.Background(), slog.LevelInfo, "handshake refused/"+reason, "handshake refused", attrs...)
}

// remember keeps the key a lookup gave the handshake of identity at addr
// until its session attaches; entries of handshakes that never completed
// are dropped once they are older than any handshake can be.
func (s *Server) remember(addr netip.AddrPort, identity, key []byte) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if limit := max(s.cfg.MaxHandshakes, 64); len(s.keys) >= limit {
		ttl := max(s.cfg.HandshakeTimeout, 10*time.Second) * 2
		for k, v := range s.keys {
			if now.Sub(v.at) > ttl {
				delete(s.keys, k)
			}
		}
		// Bounded whatever the peers do: beyond 4×, arbitrary entries go
		// (such a session is refused at binding and reconnects).
		for k := range s.keys {
			if len(s.keys) < 4*limit {
				break
			}
			delete(s.keys, k)
		}
	}
	s.keys[keyOf(addr, identity)] = keyed{key: append([]byte(nil), key...), at: now}
}

func keyOf(addr netip.AddrPort, identity []byte) string {
	return addr.String() + "\x00" + string(identity)
}

// admit is the engine's AdmitHandshake: under pressure, each source IP
// address is held to HandshakeRate new handshakes per second.
func (s *Server) admit(from netip.AddrPort, pressure bool) string {
	if !pressure {
		return ""
	}
	if !s.rate.allow(from.Addr(), time.Now()) {
		return ReasonRateLimited
	}
	return ""
}

// handshakeFailed counts a failed handshake: the engine's reasons under
// the metric's names, the refusals of this package (PSK lookups, rate) as
// they are. A wrong key is also logged (at the refusals' bounded rate)
// with the identity it was tried for: the refusals of the lookup workers
// were logged there, and this one is the device maker's commonest
// mistake.
func (s *Server) handshakeFailed(f engine.HandshakeFailure) {
	reason := f.Reason
	switch reason {
	case engine.ReasonBadFinished:
		reason = dtlspsk.ReasonBadKey
		var id *dtlspsk.Identity
		if parsed, err := dtlspsk.Parse(f.Identity); err == nil {
			id = &parsed
		}
		s.logRefusal(reason, f.Addr, id, "the client's Finished did not verify: the device holds another key than its secret here")
	case engine.ReasonTimeout, engine.ReasonPeerAlert, engine.ReasonLimit, engine.ReasonLimitSessions, engine.ReasonLimitAddress, engine.ReasonUnknownPSK:
	case engine.ReasonNoSuite, engine.ReasonBadMessage, engine.ReasonBadVersion, engine.ReasonReplaced, engine.ReasonRestarted:
		reason = "handshake_error"
	}
	s.failures.WithLabelValues(reason).Inc()
}

// onUp attaches the session (if its first data has not) and then ends it
// if it was closed while OnUp ran (the gateway revokes a stale session
// from OnUp; OnDown must not come before OnUp returned).
func (s *Server) onUp(es *engine.Session) {
	if ss := s.attach(es); ss != nil && ss.closeAfterUp.Load() {
		s.e.CloseSession(es)
	}
}

// attach returns the Session of es, creating it (and running OnUp) on
// first sight: the engine may hand over the first data of a session whose
// handshake a lookup worker completed before that worker has run
// OnEstablished. Whoever gets here second waits until OnUp has run, so the
// gateway sees a session up before any of its requests. Nil: es already
// ended — its OnEstablished or data came after (or raced with) its
// OnClose; the engine's closed flag decides, read under s.mu so that
// onDown sees either no Session or the one made here.
func (s *Server) attach(es *engine.Session) *Session {
	peer := s.e.Peer(es)
	s.mu.Lock()
	if ss := s.sessions[es]; ss != nil {
		ready := ss.ready
		s.mu.Unlock()
		<-ready
		return ss
	}
	if s.e.Closed(es) { // lock order: s.mu, then the engine's
		s.mu.Unlock()
		return nil
	}
	ss := &Session{srv: s, es: es, id: s.nextID.Add(1), ready: make(chan struct{})}
	if idb := es.Identity(); idb != nil {
		if id, err := dtlspsk.Parse(idb); err == nil {
			ss.ident, ss.hasPSK = id, true
		}
		k := keyOf(peer, idb)
		if key := s.keys[k].key; len(key) == len(ss.key) { // a PSK of another length cannot match a device's
			copy(ss.key[:], key)
			ss.hasKey = true
		}
		delete(s.keys, k)
	}
	s.sessions[es] = ss
	s.mu.Unlock()
	var psk []byte
	if ss.hasKey {
		psk = ss.key[:]
	}
	adopted := s.repl != nil && s.repl.established(es, psk) // before any of its data
	if !adopted {
		s.done.WithLabelValues(suiteLabel(es.CipherSuite())).Inc()
	}
	if s.cfg.OnUp != nil {
		s.cfg.OnUp(ss)
	}
	close(ss.ready)
	s.mu.Lock()
	ss.ready = closedReady
	s.mu.Unlock()
	return ss
}

func (s *Server) onData(es *engine.Session, b []byte) {
	if ss := s.attach(es); ss != nil {
		s.coap.ServeSession(b, ss.Peer(), ss)
	}
}

func (s *Server) onDown(es *engine.Session, reason string) {
	s.mu.Lock()
	ss := s.sessions[es]
	var ready chan struct{}
	if ss != nil {
		ready = ss.ready
	}
	delete(s.sessions, es)
	s.mu.Unlock()
	if ss != nil {
		<-ready
	}
	s.closed.WithLabelValues(closeReason(ss, reason)).Inc()
	if s.repl != nil {
		s.repl.closed(es, reason)
	}
	if ss != nil && s.cfg.OnDown != nil {
		s.cfg.OnDown(ss, reason)
	}
}

// closeReason is the reason a session ended: revoked when Revoke ended it.
func closeReason(ss *Session, reason string) string {
	if ss != nil && ss.revoked.Load() {
		return CloseRevoked
	}
	return reason
}

// suiteLabel names a suite as the listener's metrics do:
// TLS_PSK_WITH_AES_128_CCM_8 is psk_aes_128_ccm_8.
func suiteLabel(id uint16) string {
	n := strings.TrimPrefix(engine.SuiteName(id), "TLS_")
	return strings.ToLower(strings.Replace(n, "WITH_", "", 1))
}
