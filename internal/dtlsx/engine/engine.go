// Package engine is an event-driven DTLS 1.2 server (RFC 6347): its own
// handshake state machine, stateless cookie, session table and timers,
// built on pion/dtls's exported record, handshake and extension codecs and
// its record protection and PRF packages.
//
// The engine runs no goroutine of its own and none per session. The caller
// feeds it datagrams (HandleDatagram) and the time (Tick, at or after
// NextDeadline); it writes datagrams through Config.Send and hands decrypted
// application data to Config.OnData. Serve does both on a net.PacketConn
// from one goroutine. All methods are safe for concurrent use.
//
// A ClientHello without a valid cookie is answered with a HelloVerifyRequest
// computed from the client's address and ClientHello alone (HMAC with a
// rotated secret), so that spoofed sources cause no allocation of state.
package engine

import (
	"container/heap"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"sync"
	"time"
)

// Config configures an Engine. Zero values take the defaults in brackets.
type Config struct {
	// PSK returns the pre-shared key for a PSK identity; a *PSKRefusal
	// refuses it as that type says, any other error or an empty key with
	// an unknown_psk_identity alert. It runs on the caller of
	// HandleDatagram, under the engine's lock.
	PSK func(identity []byte, from netip.AddrPort) ([]byte, error)
	// Certificates are the server's chains: one with an RSA key enables the
	// RSA key transport suites (RSASuites), one with an ECDSA P-256 key the
	// ECDHE_ECDSA suites (ECDHESuites).
	Certificates []tls.Certificate
	// Suites is the server's preference order [ECDHESuites and RSASuites
	// for the certificates there are, then DefaultSuites if PSK is set].
	// The first suite of this list that the client offers (and, for
	// ECDHE, whose curve and signature algorithm it supports) is chosen.
	Suites []uint16
	// Send writes one datagram to addr. Required.
	Send func(b []byte, addr netip.AddrPort)
	// OnData receives the decrypted application data of a session. It is
	// called without the engine's lock held, so it may call Write.
	OnData func(s *Session, b []byte)
	// OnEstablished is called (without the lock) when a handshake
	// completes, before any of the session's data is delivered.
	OnEstablished func(s *Session)
	// SessionIdleTimeout, when set, gives the idle timeout of a new
	// session from its PSK identity (nil for certificate sessions); 0
	// keeps IdleTimeout. It runs under the engine's lock.
	SessionIdleTimeout func(identity []byte) time.Duration
	// OnHandshakeFailure, when set, is called for every failed handshake
	// (under the engine's lock: count or log, do not block).
	OnHandshakeFailure func(HandshakeFailure)
	// AdmitHandshake, when set, is asked about every verified ClientHello
	// that the engine's own limits admit, with whether the engine is under
	// pressure (at least half of MaxHandshakes in progress); a non-empty
	// reason refuses it (no state, no answer) and is reported as the
	// handshake's failure. It runs under the engine's lock.
	AdmitHandshake func(from netip.AddrPort, pressure bool) (reason string)
	// OnClose is called (without the lock) when a session ends.
	OnClose func(s *Session, reason string)
	// ConnectionID enables RFC 9146 Connection IDs: a client that offers
	// the extension gets an 8-byte CID, so that its session survives a
	// change of address (NAT rebinding).
	ConnectionID bool
	// MTU bounds every datagram the engine sends [1200].
	MTU int
	// MaxHandshakeMessage bounds the declared length of a handshake
	// message from a client [8192].
	MaxHandshakeMessage int
	// MaxHandshakes bounds handshakes in progress [1024].
	MaxHandshakes int
	// MaxSessions bounds established sessions plus handshakes in
	// progress: a verified ClientHello is refused once they reach it,
	// unless it comes from the address of an established session (a
	// client starting over) [100000].
	MaxSessions int
	// MaxHandshakesPerAddress bounds the handshakes in progress from one
	// source IP address while the engine is under pressure (at least half
	// of MaxHandshakes in progress), so that one busy address (or a NAT
	// in front of many devices) cannot hold every slot; below that, one
	// address may use any free slot [MaxHandshakes/8, at least 1].
	MaxHandshakesPerAddress int
	// RetransmitInitial is the first flight retransmission timeout; it
	// doubles on each retransmission up to RetransmitMax (RFC 6347
	// §4.2.4.1) [1s, 60s].
	RetransmitInitial, RetransmitMax time.Duration
	// MaxRetransmits bounds the retransmissions of one flight before the
	// handshake is dropped [4].
	MaxRetransmits int
	// HandshakeTimeout bounds a handshake from the verified ClientHello to
	// the server's Finished [10s].
	HandshakeTimeout time.Duration
	// IdleTimeout ends a session without any authenticated record from the
	// peer for this long [5m].
	IdleTimeout time.Duration
	// CipherCacheIdle: a session keeps its expanded record protection
	// (AES key schedules) while it has traffic and drops it after this long
	// without, keeping only the key block [10s].
	CipherCacheIdle time.Duration
	// CookieRotate is the lifetime of a cookie secret [2m].
	CookieRotate time.Duration
	// Rand is the source of randoms [crypto/rand.Reader].
	Rand io.Reader
}

// Reasons a handshake fails or a session ends (Stats map keys).
const (
	ReasonTimeout        = "timeout"
	ReasonUnknownPSK     = "unknown_psk_identity"
	ReasonBadFinished    = "bad_finished"
	ReasonNoSuite        = "no_common_suite"
	ReasonBadMessage     = "bad_message"
	ReasonPeerAlert      = "peer_alert"
	ReasonLimit          = "limit_handshakes"
	ReasonLimitSessions  = "limit_sessions"
	ReasonLimitAddress   = "limit_address"
	ReasonBadVersion     = "protocol_version"
	ReasonReplaced       = "replaced"
	ReasonRestarted      = "client_restarted"
	CloseIdle            = "idle"
	ClosePeer            = "close_notify"
	CloseFatal           = "peer_fatal_alert"
	CloseLocal           = "local"
	reasonFragmentedHell = "fragmented_client_hello"
)

// Stats are the engine's counters; the figures the tests assert on.
type Stats struct {
	HelloVerifyRequests uint64 // HelloVerifyRequests sent (stateless)
	BadCookies          uint64 // ClientHellos with a non-empty, invalid cookie
	HandshakeStates     uint64 // handshake states ever allocated
	HandshakesActive    int    // handshakes in progress now
	HandshakesDone      uint64 // handshakes completed
	HandshakeFailures   map[string]uint64
	Sessions            int // established sessions now
	SessionsClosed      map[string]uint64
	Retransmits         uint64 // flights retransmitted
	RecordsBadMAC       uint64 // records failing authentication
	RecordsReplayed     uint64 // records rejected by the replay window
	RecordsMalformed    uint64 // records or fragments rejected by parsing
	RecordsDropped      uint64 // well-formed records with no use in the current state
	Renegotiations      uint64 // renegotiation attempts refused
	Migrations          uint64 // sessions moved to a new address by a CID record
	Imports             uint64 // sessions installed by Import
}

// Engine is a DTLS 1.2 server.
type Engine struct {
	cfg     Config
	rsaCert *tls.Certificate
	ecCert  *tls.Certificate

	mu       sync.Mutex
	cookies  *cookieJar
	hs       map[netip.AddrPort]*handshake
	hsPerIP  map[netip.Addr]int // handshakes in progress by source IP
	sessions map[netip.AddrPort]*Session
	byCID    map[cidKey]*Session
	cidLen   int
	timers   timerHeap   // handshake retransmissions and deadlines
	stimers  sessionHeap // one entry per established session
	base     time.Time   // time 0 of the sessions' clock (New's now)
	now      time.Time   // the latest time the caller gave
	st       Stats
	out      []byte // datagram under construction
	deliver  []delivery
	closed   []closing
	repl     *Replication // hooks for sessions shared between nodes (repl.go)
}

type delivery struct {
	s  *Session
	b  []byte
	up bool // the session was established (OnEstablished)
}

type closing struct {
	s      *Session
	reason string
}

// New returns an engine; now starts the cookie secret's first period.
func New(cfg Config, now time.Time) (*Engine, error) {
	if cfg.Send == nil {
		return nil, errors.New("engine: Config.Send is required")
	}
	var rsaCert, ecCert *tls.Certificate
	for i := range cfg.Certificates {
		c := &cfg.Certificates[i]
		if len(c.Certificate) == 0 {
			return nil, errors.New("engine: a certificate without its chain")
		}
		switch k := c.PrivateKey.(type) {
		case *rsa.PrivateKey:
			rsaCert = c
		case *ecdsa.PrivateKey:
			if k.Curve != elliptic.P256() {
				return nil, errors.New("engine: ECDSA certificates must use P-256")
			}
			ecCert = c
		default:
			return nil, fmt.Errorf("engine: unsupported private key %T", c.PrivateKey)
		}
	}
	if len(cfg.Suites) == 0 {
		if ecCert != nil {
			cfg.Suites = append(cfg.Suites, ECDHESuites...)
		}
		if rsaCert != nil {
			cfg.Suites = append(cfg.Suites, RSASuites...)
		}
		if cfg.PSK != nil {
			cfg.Suites = append(cfg.Suites, DefaultSuites...)
		}
	}
	for _, id := range cfg.Suites {
		st := suites[id]
		switch {
		case st == nil:
			return nil, fmt.Errorf("engine: unsupported cipher suite %s", SuiteName(id))
		case st.psk && cfg.PSK == nil:
			return nil, fmt.Errorf("engine: %s needs Config.PSK", st.name)
		case st.ecdhe && ecCert == nil:
			return nil, fmt.Errorf("engine: %s needs an ECDSA certificate", st.name)
		case !st.psk && !st.ecdhe && rsaCert == nil:
			return nil, fmt.Errorf("engine: %s needs an RSA certificate", st.name)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defi := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	defi(&cfg.MTU, 1200)
	defi(&cfg.MaxHandshakeMessage, 8192)
	defi(&cfg.MaxHandshakes, 1024)
	defi(&cfg.MaxSessions, 100000)
	defi(&cfg.MaxHandshakesPerAddress, max(cfg.MaxHandshakes/8, 1))
	defi(&cfg.MaxRetransmits, 4)
	def(&cfg.RetransmitInitial, time.Second)
	def(&cfg.RetransmitMax, 60*time.Second)
	def(&cfg.HandshakeTimeout, 10*time.Second)
	def(&cfg.IdleTimeout, 5*time.Minute)
	def(&cfg.CookieRotate, 2*time.Minute)
	def(&cfg.CipherCacheIdle, 10*time.Second)
	if cfg.MTU < 256 {
		return nil, fmt.Errorf("engine: MTU %d below 256", cfg.MTU)
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Reader
	}
	cidLen := 0
	if cfg.ConnectionID {
		cidLen = cidSize
	}
	return &Engine{
		rsaCert:  rsaCert,
		ecCert:   ecCert,
		cfg:      cfg,
		now:      now,
		base:     now,
		cidLen:   cidLen,
		byCID:    make(map[cidKey]*Session),
		cookies:  newCookieJar(now, cfg.CookieRotate),
		hs:       make(map[netip.AddrPort]*handshake),
		hsPerIP:  make(map[netip.Addr]int),
		sessions: make(map[netip.AddrPort]*Session),
		st:       Stats{HandshakeFailures: map[string]uint64{}, SessionsClosed: map[string]uint64{}},
	}, nil
}

// Stats returns a copy of the counters.
func (e *Engine) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.st
	s.HandshakesActive = len(e.hs)
	s.Sessions = len(e.sessions)
	s.HandshakeFailures = make(map[string]uint64, len(e.st.HandshakeFailures))
	for k, v := range e.st.HandshakeFailures {
		s.HandshakeFailures[k] = v
	}
	s.SessionsClosed = make(map[string]uint64, len(e.st.SessionsClosed))
	for k, v := range e.st.SessionsClosed {
		s.SessionsClosed[k] = v
	}
	return s
}

// Session returns the established session of addr, or nil.
func (e *Engine) Session(addr netip.AddrPort) *Session {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.sessions[addr]
}

// HandleDatagram processes one datagram received from addr at now.
func (e *Engine) HandleDatagram(b []byte, addr netip.AddrPort, now time.Time) {
	e.mu.Lock()
	e.now = now
	e.cookies.rotate(now)
	for len(b) > 0 {
		r, rest, err := splitRecord(b, e.cidLen)
		if err != nil {
			e.st.RecordsMalformed++
			break
		}
		b = rest
		if !r.validVersion() {
			e.st.RecordsMalformed++
			continue
		}
		e.handleRecord(&r, addr, now)
	}
	e.unlockAndNotify()
}

// unlockAndNotify releases the lock, then runs the callbacks collected
// while it was held.
// A handshake completed by ProvidePSK runs OnEstablished on that
// goroutine, so OnData of the session's first records may run before or
// during it on the read loop's.
func (e *Engine) unlockAndNotify() {
	d, c := e.deliver, e.closed
	e.deliver, e.closed = nil, nil
	e.mu.Unlock()
	for _, x := range d {
		switch {
		case x.up:
			if e.cfg.OnEstablished != nil {
				e.cfg.OnEstablished(x.s)
			}
		case e.cfg.OnData != nil:
			e.cfg.OnData(x.s, x.b)
		}
	}
	for _, x := range c {
		if e.cfg.OnClose != nil {
			e.cfg.OnClose(x.s, x.reason)
		}
	}
}

func (e *Engine) handleRecord(r *record, addr netip.AddrPort, now time.Time) {
	if r.typ == ctCID {
		if h := e.hs[addr]; h != nil && len(h.rcid) > 0 && string(h.rcid) == string(r.cid) {
			e.handshakeRecord(h, r, now) // the client's Finished (kept if early)
			return
		}
		if s := e.byCID[cidKey(r.cid)]; s != nil {
			e.sessionRecord(s, r, addr, now)
			return
		}
		e.unknownRecord(r, addr)
		return
	}
	if h := e.hs[addr]; h != nil {
		e.handshakeRecord(h, r, now)
		return
	}
	if r.epoch == 0 {
		if r.typ == ctHandshake && len(r.body) > 0 && r.body[0] == htClientHello {
			e.clientHello(r, addr, now)
			return
		}
		if s := e.sessions[addr]; s != nil && s.final != nil && r.typ == ctHandshake {
			// A retransmitted ClientKeyExchange: the server's final
			// flight was lost.
			e.resendFinal(s)
			e.st.Retransmits++
			return
		}
		e.st.RecordsDropped++
		return
	}
	if s := e.sessions[addr]; s != nil {
		e.sessionRecord(s, r, addr, now)
		return
	}
	e.unknownRecord(r, addr)
}

// HandshakeFailure is a failed handshake, for Config.OnHandshakeFailure.
type HandshakeFailure struct {
	Reason string
	Addr   netip.AddrPort
	// Identity is the PSK identity of the ClientKeyExchange (nil before
	// it, or for a certificate suite). Valid only during the call.
	Identity []byte
}

// fail ends a handshake, sending a fatal alert when desc >= 0.
// A handshake whose PSK identity was refused in secret (PSKRefusal) fails
// for that refusal, whatever ended it.
func (e *Engine) fail(h *handshake, reason string, desc int) {
	if h.refused != "" {
		reason = h.refused
	}
	if desc >= 0 {
		e.sendPlainAlert(h, alertFatal, byte(desc))
	}
	e.st.HandshakeFailures[reason]++
	if e.cfg.OnHandshakeFailure != nil {
		f := HandshakeFailure{Reason: reason, Addr: h.addr, Identity: h.pendingID}
		if h.sess != nil {
			f.Identity = h.sess.Identity()
		}
		e.cfg.OnHandshakeFailure(f)
	}
	e.dropHandshake(h)
	h.gen++
}

// addHandshake enters h in the table of handshakes in progress.
func (e *Engine) addHandshake(h *handshake) {
	e.hs[h.addr] = h
	e.hsPerIP[h.addr.Addr()]++
}

// dropHandshake removes h from the table of handshakes in progress.
func (e *Engine) dropHandshake(h *handshake) {
	if e.hs[h.addr] != h {
		return
	}
	delete(e.hs, h.addr)
	ip := h.addr.Addr()
	if n := e.hsPerIP[ip] - 1; n > 0 {
		e.hsPerIP[ip] = n
	} else {
		delete(e.hsPerIP, ip)
	}
}

// admit reports why a verified ClientHello from addr may not start a
// handshake ("": it may).
func (e *Engine) admit(addr netip.AddrPort) string {
	n := len(e.hs)
	switch {
	case n >= e.cfg.MaxHandshakes:
		return ReasonLimit
	case n*2 >= e.cfg.MaxHandshakes && e.hsPerIP[addr.Addr()] >= e.cfg.MaxHandshakesPerAddress:
		return ReasonLimitAddress
	case e.sessions[addr] == nil && len(e.sessions)+n >= e.cfg.MaxSessions:
		return ReasonLimitSessions
	}
	return ""
}

// closeSession removes s from the table.
func (e *Engine) closeSession(s *Session, reason string) {
	if e.sessions[s.addr] == s {
		delete(e.sessions, s.addr)
	}
	if rcid := s.rcid(); len(rcid) > 0 && e.byCID[cidKey(rcid)] == s {
		delete(e.byCID, cidKey(rcid))
	}
	s.closed = true
	s.final = nil
	s.cipher = nil
	if s.hidx >= 0 {
		heap.Remove(&e.stimers, int(s.hidx))
	}
	e.st.SessionsClosed[reason]++
	e.closed = append(e.closed, closing{s, reason})
}

// sendPlainAlert sends an epoch-0 alert during a handshake.
func (e *Engine) sendPlainAlert(h *handshake, level, desc byte) {
	b := make([]byte, recordHeaderLen+2)
	putRecordHeader(b, ctAlert, 0, h.nextSeq0(), 2)
	b[13], b[14] = level, desc
	e.cfg.Send(b, h.addr)
}

// Tick runs the timers due at now and returns the next deadline (zero when
// none is pending).
func (e *Engine) Tick(now time.Time) time.Time {
	e.mu.Lock()
	e.now = now
	e.cookies.rotate(now)
	n := e.clock(now)
	for {
		if len(e.timers) > 0 && !e.timers[0].at.After(now) {
			t := heap.Pop(&e.timers).(timer)
			e.fireHandshake(t, now)
			continue
		}
		if len(e.stimers) > 0 && e.stimers[0].at <= n {
			e.fireSession(e.stimers[0], now)
			continue
		}
		break
	}
	next := e.nextDeadline()
	e.unlockAndNotify()
	return next
}

// NextDeadline returns when Tick should next run (zero: no timer).
func (e *Engine) NextDeadline() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.nextDeadline()
}

func (e *Engine) nextDeadline() time.Time {
	var next time.Time
	if len(e.timers) > 0 {
		next = e.timers[0].at
	}
	if len(e.stimers) > 0 {
		if at := e.timeAt(e.stimers[0].at); next.IsZero() || at.Before(next) {
			next = at
		}
	}
	return next
}

// clock returns t on the sessions' clock: nanoseconds since New's now.
func (e *Engine) clock(t time.Time) int64 { return int64(t.Sub(e.base)) }

// timeAt is the inverse of clock.
func (e *Engine) timeAt(c int64) time.Time { return e.base.Add(time.Duration(c)) }

func (e *Engine) fireHandshake(t timer, now time.Time) {
	h := t.h
	if e.hs[h.addr] != h || h.gen != t.gen {
		return
	}
	if !now.Before(h.deadline) || h.tries >= e.cfg.MaxRetransmits {
		e.fail(h, ReasonTimeout, -1)
		return
	}
	h.tries++
	h.timeout = min(2*h.timeout, e.cfg.RetransmitMax)
	e.sendFlight(h)
	e.st.Retransmits++
	e.armHandshake(h, now)
}

// fireSession runs a session's due timer: the end of its idle timeout, the
// release of its record protection or of its final flight. It leaves s
// closed or scheduled later than now.
func (e *Engine) fireSession(s *Session, now time.Time) {
	n := e.clock(now)
	if s.lastSeen+s.idle <= n {
		e.closeSession(s, CloseIdle)
		return
	}
	if s.cipher != nil && s.lastUse+int64(e.cfg.CipherCacheIdle) <= n {
		s.cipher = nil // rebuilt from the key block on the next record
	}
	if s.final != nil && s.final.until <= n {
		s.final = nil
	}
	e.armSession(s, now)
}

// armSession schedules the session's next check: the release of its
// record protection or final flight, or the end of its idle timeout,
// whichever is first.
func (e *Engine) armSession(s *Session, now time.Time) {
	if s.idle == 0 {
		idle := e.cfg.IdleTimeout
		if e.cfg.SessionIdleTimeout != nil {
			if d := e.cfg.SessionIdleTimeout(s.Identity()); d > 0 {
				idle = d
			}
		}
		s.idle = int64(idle)
	}
	at := s.lastSeen + s.idle
	if s.cipher != nil {
		at = min(at, s.lastUse+int64(e.cfg.CipherCacheIdle))
	}
	if s.final != nil {
		at = min(at, s.final.until)
	}
	if n := e.clock(now); at <= n {
		at = n + int64(time.Millisecond)
	}
	s.at = at
	if s.hidx < 0 {
		heap.Push(&e.stimers, s)
	} else {
		heap.Fix(&e.stimers, int(s.hidx))
	}
}

// touch notes a use of the session's record protection; if it has to be
// rebuilt, the session's timer is brought forward to release it again.
func (e *Engine) touch(s *Session, now time.Time) {
	s.lastUse = e.clock(now)
	if s.cipher == nil {
		s.rc()
		e.armSession(s, now)
	}
}

// armHandshake schedules the next retransmission (or the handshake's end).
func (e *Engine) armHandshake(h *handshake, now time.Time) {
	h.gen++
	at := now.Add(h.timeout)
	if at.After(h.deadline) {
		at = h.deadline
	}
	heap.Push(&e.timers, timer{at: at, h: h, gen: h.gen})
}

// Write sends b as one application data record to the session of addr.
func (e *Engine) Write(addr netip.AddrPort, b []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sessions[addr]
	if s == nil {
		return ErrNoSession
	}
	if len(b) > maxRecordPlaintext {
		return fmt.Errorf("engine: %d bytes exceed one record", len(b))
	}
	e.touch(s, e.now)
	rec, err := s.seal(ctApplicationData, b)
	if err != nil {
		return err
	}
	e.cfg.Send(rec, addr)
	return nil
}

// WriteSession sends b as one application data record on s, wherever its
// peer is now (a CID session may have moved).
func (e *Engine) WriteSession(s *Session, b []byte) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.closed {
		return ErrNoSession
	}
	if len(b) > maxRecordPlaintext {
		return fmt.Errorf("engine: %d bytes exceed one record", len(b))
	}
	e.touch(s, e.now)
	rec, err := s.seal(ctApplicationData, b)
	if err != nil {
		return err
	}
	e.cfg.Send(rec, s.addr)
	return nil
}

// Peer returns the current address of s's peer.
func (e *Engine) Peer(s *Session) netip.AddrPort {
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.addr
}

// CloseSession ends s with a close_notify alert.
func (e *Engine) CloseSession(s *Session) {
	e.mu.Lock()
	if !s.closed {
		if rec, err := s.seal(ctAlert, []byte{alertWarning, alertCloseNotify}); err == nil {
			e.cfg.Send(rec, s.addr)
		}
		e.closeSession(s, CloseLocal)
	}
	e.unlockAndNotify()
}

// Close ends the session of addr with a close_notify alert.
func (e *Engine) Close(addr netip.AddrPort) {
	e.mu.Lock()
	if s := e.sessions[addr]; s != nil {
		if rec, err := s.seal(ctAlert, []byte{alertWarning, alertCloseNotify}); err == nil {
			e.cfg.Send(rec, addr)
		}
		e.closeSession(s, CloseLocal)
	}
	e.unlockAndNotify()
}

// ErrNoSession: no established session for the address.
var ErrNoSession = errors.New("engine: no session for the address")

// timer is a handshake's retransmission or end.
type timer struct {
	at  time.Time
	h   *handshake
	gen uint32
}

// timerHeap is a min-heap of handshake timers; stale entries (generation
// moved on) are skipped when they fire.
type timerHeap []timer

func (h timerHeap) Len() int           { return len(h) }
func (h timerHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h timerHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *timerHeap) Push(x any)        { *h = append(*h, x.(timer)) }
func (h *timerHeap) Pop() any {
	old := *h
	t := old[len(old)-1]
	old[len(old)-1] = timer{} // drop the references held by the backing array
	*h = old[:len(old)-1]
	if cap(*h) > 64 && len(*h) < cap(*h)/4 {
		*h = append(timerHeap(nil), *h...) // give back a drained heap's memory
	}
	return t
}

// sessionHeap is a min-heap of established sessions by their next timer
// (Session.at); each session is in it once, at Session.hidx, so a
// session's timer costs one pointer and is moved, not duplicated, when it
// changes.
type sessionHeap []*Session

func (h sessionHeap) Len() int           { return len(h) }
func (h sessionHeap) Less(i, j int) bool { return h[i].at < h[j].at }
func (h sessionHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = int32(i), int32(j)
}
func (h *sessionHeap) Push(x any) {
	s := x.(*Session)
	s.hidx = int32(len(*h))
	*h = append(*h, s)
}
func (h *sessionHeap) Pop() any {
	old := *h
	s := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	s.hidx = -1
	if cap(*h) > 64 && len(*h) < cap(*h)/4 {
		*h = append(sessionHeap(nil), *h...) // give back a drained heap's memory
	}
	return s
}
