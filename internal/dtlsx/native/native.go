// Package native serves CoAP over DTLS 1.2 with the native engine
// (internal/dtlsx/engine): the engine runs the handshakes and record
// protection on the socket's read loop, this package maps its sessions to
// coapx sessions, PSK identities (dtlspsk) to keys, and counts them in the
// same metrics as the pion-based listener.
package native

import (
	"context"
	"crypto/ecdsa"
	"crypto/rsa"
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
	// MaxHandshakes bounds handshakes in progress; under pressure (half of
	// them in progress) one source IP address gets at most an eighth.
	MaxHandshakes    int
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
	gone     map[*engine.Session]struct{} // ended before their OnEstablished ran

	lookups chan lookup // PSK lookups for the workers
	repl    *repl       // nil: sessions stay on this node

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
}

// lookupWorkers run the PSK lookups of handshakes.
const lookupWorkers = 8

// Session is an established DTLS session, a coapx.Session.
type Session struct {
	srv   *Server
	es    *engine.Session
	id    uint64
	ident *dtlspsk.Identity
	ready chan struct{} // closed once OnUp has run
	// revokeUp: Revoke was called from OnUp (the gateway found the device
	// changed); the session ends once OnUp returns, since ending it
	// inside OnUp would wait for OnUp (onDown waits for ready).
	revokeUp atomic.Bool
}

// SessionID implements coapx.Session.
func (s *Session) SessionID() uint64 { return s.id }

// WriteDatagram implements coapx.Session.
func (s *Session) WriteDatagram(b []byte) error { return s.srv.e.WriteSession(s.es, b) }

// Identity implements coapx.Session: the *dtlspsk.Identity of a PSK
// session, nil for a certificate session.
func (s *Session) Identity() any {
	if s.ident == nil {
		return nil
	}
	return s.ident
}

// PSKIdentity returns the session's PSK identity (nil: certificate).
func (s *Session) PSKIdentity() *dtlspsk.Identity { return s.ident }

// Peer returns the peer's current address (IPv4 unmapped).
func (s *Session) Peer() netip.AddrPort {
	ap := s.srv.e.Peer(s.es)
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}

// Close ends the session with close_notify.
func (s *Session) Close() { s.srv.e.CloseSession(s.es) }

// Revoke ends the session because its device's credentials changed
// (gateway.BoundSession): close_notify, then its records are refused.
func (s *Session) Revoke() {
	select {
	case <-s.ready:
		s.Close()
	default: // inside OnUp: attach ends it when OnUp returns
		s.revokeUp.Store(true)
	}
}

// New returns a server handing decrypted CoAP datagrams to coap.
func New(cfg Config, coap *coapx.Server) (*Server, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	s := &Server{cfg: cfg, coap: coap, log: cfg.Logger, sessions: map[*engine.Session]*Session{}, gone: map[*engine.Session]struct{}{}}
	s.lookups = make(chan lookup, max(cfg.MaxHandshakes, 64))
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
		ConnectionID:       cfg.ConnectionID,
		MaxSessions:        cfg.MaxSessions,
		MaxHandshakes:      cfg.MaxHandshakes,
		HandshakeTimeout:   cfg.HandshakeTimeout,
		IdleTimeout:        cfg.IdleTimeout,
		Send:               s.send,
		OnData:             s.onData,
		OnEstablished:      s.onUp,
		OnClose:            s.onDown,
		SessionIdleTimeout: lifetime,
		OnHandshakeFailure: s.handshakeFailed,
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

// psk parses the identity and queues its lookup for the workers (the
// engine's read loop must not wait on the store); a malformed identity or
// a full queue is refused at once.
func (s *Server) psk(identity []byte, from netip.AddrPort) ([]byte, error) {
	id, err := dtlspsk.Parse(identity)
	if err != nil {
		s.refused(err, from)
		return nil, err
	}
	select {
	case s.lookups <- lookup{addr: from, identity: identity, id: id}:
		return nil, engine.ErrPSKPending
	default:
		err := &dtlspsk.Error{Reason: dtlspsk.ReasonStore, Msg: "too many PSK lookups waiting"}
		s.refused(err, from)
		return nil, err
	}
}

func (s *Server) lookupWorker(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case l := <-s.lookups:
			key, err := s.cfg.LookupPSK(ctx, l.id)
			if err != nil {
				s.refused(err, l.addr)
			}
			s.e.ProvidePSK(l.addr, l.identity, key, err)
		}
	}
}

func (s *Server) refused(err error, from netip.AddrPort) {
	reason := dtlspsk.Reason(err)
	s.failures.WithLabelValues(reason).Inc()
	s.log.Debug("handshake refused", "reason", reason, "peer", from.String())
}

// handshakeFailed counts the engine's failures under the listener's
// reason names; refusals of the PSK lookup are counted by psk.
func (s *Server) handshakeFailed(reason string) {
	switch reason {
	case engine.ReasonUnknownPSK:
		return
	case engine.ReasonBadFinished:
		reason = dtlspsk.ReasonBadKey
	case engine.ReasonLimit:
		reason = "limit_handshakes"
	case engine.ReasonTimeout, engine.ReasonPeerAlert, engine.ReasonLimitSessions, engine.ReasonLimitAddress:
	default:
		reason = "handshake_error"
	}
	s.failures.WithLabelValues(reason).Inc()
}

func (s *Server) onUp(es *engine.Session) { s.attach(es) }

// attach returns the Session of es, creating it (and running OnUp) on
// first sight: the engine may hand over the first data of a session whose
// handshake a lookup worker completed before that worker has run
// OnEstablished. Whoever gets here second waits until OnUp has run, so the
// gateway sees a session up before any of its requests. Nil: es already
// ended.
func (s *Server) attach(es *engine.Session) *Session {
	s.mu.Lock()
	if ss := s.sessions[es]; ss != nil {
		s.mu.Unlock()
		<-ss.ready
		return ss
	}
	if _, ok := s.gone[es]; ok {
		delete(s.gone, es)
		s.mu.Unlock()
		return nil
	}
	ss := &Session{srv: s, es: es, id: s.nextID.Add(1), ready: make(chan struct{})}
	if idb := es.Identity(); idb != nil {
		if id, err := dtlspsk.Parse(idb); err == nil {
			ss.ident = &id
		}
	}
	s.sessions[es] = ss
	s.mu.Unlock()
	adopted := s.repl != nil && s.repl.established(es) // before any of its data
	if !adopted {
		s.done.WithLabelValues(suiteLabel(es.CipherSuite())).Inc()
	}
	if s.cfg.OnUp != nil {
		s.cfg.OnUp(ss)
	}
	close(ss.ready)
	if ss.revokeUp.Load() {
		ss.Close()
	}
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
	if ss == nil {
		s.gone[es] = struct{}{} // its OnEstablished is still to come
	}
	delete(s.sessions, es)
	s.mu.Unlock()
	if ss != nil {
		<-ss.ready
	}
	s.closed.WithLabelValues(reason).Inc()
	if s.repl != nil {
		s.repl.closed(es, reason)
	}
	if ss != nil && s.cfg.OnDown != nil {
		s.cfg.OnDown(ss, reason)
	}
}

// suiteLabel names a suite as the listener's metrics do:
// TLS_PSK_WITH_AES_128_CCM_8 is psk_aes_128_ccm_8.
func suiteLabel(id uint16) string {
	n := strings.TrimPrefix(engine.SuiteName(id), "TLS_")
	return strings.ToLower(strings.Replace(n, "WITH_", "", 1))
}
