package coapx

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// Request is one decoded CoAP request handed to a Handler. Options and
// Payload alias a buffer owned by the server: a Handler must copy what it
// keeps after ServeCoAP returns.
type Request struct {
	Peer      netip.AddrPort
	Type      message.Type
	Code      codes.Code
	MessageID uint16
	Token     []byte
	Options   message.Options
	// Path is the Uri-Path, one element per segment.
	Path     []string
	Payload  []byte
	Received time.Time
	// Session is the secured session the request arrived on (DTLS), nil on
	// plain UDP. Its Identity is set by the transport, never by the message.
	Session Session
	// Anonymous is set by an Admitter that admits a Block1 request without
	// a credential (an authentication request): its body is limited to
	// AnonymousMaxBody and reserved from a share of the reassembly budget
	// of its own, so anonymous transfers never take the whole budget.
	Anonymous bool
}

// Session is a secured transport's association with one peer (a DTLS
// session). The transport decrypts datagrams and hands them to
// Server.ServeSession; responses go back through WriteDatagram.
type Session interface {
	// SessionID identifies the session for duplicate detection and
	// block-wise transfers: unique among the server's live sessions and
	// never reused within EXCHANGE_LIFETIME.
	SessionID() uint64
	// WriteDatagram sends one encoded CoAP message to the peer. It is called
	// concurrently from the workers and must not retain b.
	WriteDatagram(b []byte) error
	// Identity is what the transport authenticated (the handshake's
	// principal), or nil when it authenticated no device.
	Identity() any
}

// Response is a Handler's answer. The server adds type, Message ID and token,
// and Block1/Block2 options as needed.
type Response struct {
	Code    codes.Code
	Options message.Options
	Payload []byte
}

// SetUint sets uint option id (replacing an existing one).
func (r *Response) SetUint(id message.OptionID, v uint32) *Response {
	return r.SetBytes(id, EncodeUint(v))
}

// SetBytes sets option id to v (replacing an existing one).
func (r *Response) SetBytes(id message.OptionID, v []byte) *Response {
	r.Options = r.Options.Remove(id)
	r.Options = append(r.Options, message.Option{ID: id, Value: v})
	return r
}

// Handler answers requests. ServeCoAP is called concurrently from the worker
// pool; it must not retain req's buffers, and must return a response (the
// server sends it piggybacked in the ACK of a CON, or as a NON response to
// a NON). A nil response sends nothing for NON and an empty ACK for CON.
type Handler interface {
	ServeCoAP(ctx context.Context, req *Request) *Response
}

// Admitter is implemented by a Handler that can judge a request from its
// options alone. The server asks it before it buffers the first block of a
// Block1 transfer (RFC 7959 §2.5): a non-nil response (4.01 for a missing
// or invalid credential, 4.04 for an unknown resource, ...) is sent at once
// and nothing is stored, so a peer that cannot authenticate holds no
// reassembly memory. Admit must not consume one-time state (sequence
// numbers): the Handler sees the whole request again once reassembled.
type Admitter interface {
	Admit(ctx context.Context, req *Request) *Response
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, req *Request) *Response

// ServeCoAP calls f.
func (f HandlerFunc) ServeCoAP(ctx context.Context, req *Request) *Response { return f(ctx, req) }

// Config tunes a Server. Zero fields take the defaults of config.Default().
type Config struct {
	Workers          int
	Queue            int
	ReadBuffer       int
	MaxBody          int
	BlockSize        int
	DedupEntries     int
	ExchangeLifetime time.Duration
	NonLifetime      time.Duration
	// Transport labels this listener's metrics ("coap", "coap-sym", ...).
	Transport string
	// AckTimeout and MaxRetransmit time server-initiated CON requests
	// (Request; RFC 7252 §4.8 ACK_TIMEOUT 2 s, MAX_RETRANSMIT 4).
	AckTimeout    time.Duration
	MaxRetransmit int
	// BlockPeerBudget and BlockBudget bound the bytes Block1 transfers in
	// progress may reserve, per peer (source address, or secured session)
	// and in total; BlockTransfers bounds their number. A transfer that
	// does not fit is answered 5.03 with Max-Age; none in progress is
	// evicted for it.
	BlockPeerBudget int
	BlockBudget     int
	BlockTransfers  int
}

func (c *Config) fill() {
	def := func(p *int, v int) {
		if *p <= 0 {
			*p = v
		}
	}
	def(&c.Workers, 512)
	def(&c.Queue, 8192)
	def(&c.MaxBody, 64<<10)
	def(&c.BlockSize, 1024)
	def(&c.DedupEntries, 1<<18)
	def(&c.BlockPeerBudget, 1<<20)
	def(&c.BlockBudget, 32<<20)
	def(&c.BlockTransfers, 4096)
	if c.ExchangeLifetime <= 0 {
		c.ExchangeLifetime = 247 * time.Second
	}
	if c.NonLifetime <= 0 {
		c.NonLifetime = 145 * time.Second
	}
	if c.Transport == "" {
		c.Transport = "coap"
	}
	if c.AckTimeout <= 0 {
		c.AckTimeout = 2 * time.Second
	}
	if c.MaxRetransmit <= 0 {
		c.MaxRetransmit = 4
	}
}

// Server serves CoAP over one UDP socket: one read loop, a bounded worker
// pool, a bounded dedup/response cache and block-wise transfers.
type Server struct {
	cfg    Config
	h      Handler
	log    *slog.Logger
	m      *listenerMetrics
	dedup  *dedupCache
	blocks *blockStore
	mid    atomic.Uint32
	now    func() time.Time
	outs   outTable // server-initiated requests awaiting their ACK

	conn *net.UDPConn // set once by Serve
	// serving is conn once Serve has set it (Request checks it first, so
	// its later reads of conn are ordered after the write).
	serving atomic.Pointer[net.UDPConn]
	jobs    chan job
	// closing guards closing jobs against concurrent ServeSession callers.
	closing sync.RWMutex
	closed  bool // guarded by closing
	// out replaces the socket write in tests (fuzzing without a socket).
	out func(b []byte, peer netip.AddrPort)
}

type job struct {
	data []byte
	peer netip.AddrPort
	sess Session // nil on plain UDP
	at   time.Time
}

// key returns the exchange key of a message from peer (or sess).
func exchangeKeyOf(peer netip.AddrPort, sess Session, mid uint16) exchangeKey {
	if sess != nil {
		return exchangeKey{sess: sess.SessionID(), mid: mid}
	}
	return exchangeKey{peer: peer, mid: mid}
}

// NewServer returns a Server; m may be nil (no metrics).
func NewServer(cfg Config, h Handler, m *Metrics, log *slog.Logger) *Server {
	cfg.fill()
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	lim := BlockLimits{MaxBody: cfg.MaxBody, PeerBudget: cfg.BlockPeerBudget, Budget: cfg.BlockBudget, MaxTransfers: cfg.BlockTransfers}
	s := &Server{
		cfg:    cfg,
		h:      h,
		log:    log.With("component", "coap", "transport", cfg.Transport),
		m:      m.forListener(cfg.Transport),
		dedup:  newDedupCache(cfg.DedupEntries),
		blocks: newBlockStore(lim, cfg.ExchangeLifetime),
		now:    time.Now,
		jobs:   make(chan job, cfg.Queue),
	}
	var b [2]byte
	randRead(b[:])
	s.mid.Store(uint32(binary.BigEndian.Uint16(b[:])))
	return s
}

// Serve reads datagrams from conn until ctx is done or conn is closed, and
// returns after every worker has finished. It closes conn when ctx ends.
func (s *Server) Serve(ctx context.Context, conn *net.UDPConn) error {
	s.conn = conn
	s.serving.Store(conn)
	if s.cfg.ReadBuffer > 0 {
		if err := conn.SetReadBuffer(s.cfg.ReadBuffer); err != nil {
			s.log.Warn("cannot set socket receive buffer", "want", s.cfg.ReadBuffer, "err", err)
		}
	}
	return s.run(ctx, func(ctx context.Context) error {
		go func() { <-ctx.Done(); conn.Close() }()
		return s.readLoop(ctx, conn)
	})
}

// Run serves datagrams that a secured transport hands over through
// ServeSession, with no socket of its own: it runs the workers and cache
// sweeps until ctx is done, then returns after every worker has finished.
// ServeSession must not be called after Run returned.
func (s *Server) Run(ctx context.Context) error {
	return s.run(ctx, func(ctx context.Context) error {
		<-ctx.Done()
		return nil
	})
}

// ServeSession hands one decrypted datagram received on sess from peer to
// the request path (header check, duplicate detection, queue); responses
// are written through sess. Safe for concurrent use while Run runs.
func (s *Server) ServeSession(b []byte, peer netip.AddrPort, sess Session) {
	s.receiveFrom(b, peer, sess)
}

// run starts the workers and the sweeper, calls feed until it returns, then
// stops the workers.
func (s *Server) run(ctx context.Context, feed func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for j := range s.jobs {
				s.process(ctx, j)
			}
		})
	}
	wg.Go(func() { // sweeps caches until shutdown
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				now := s.now()
				s.dedup.sweep(now)
				s.blocks.sweep(now)
				s.m.setDedupSize(s.dedup.len())
				s.m.setBlockStats(s.blocks.stats())
			}
		}
	})
	err := feed(ctx)
	cancel()
	s.closing.Lock()
	s.closed = true
	close(s.jobs)
	s.closing.Unlock()
	wg.Wait()
	return err
}

// Addr returns the local address (valid once Serve has started).
func (s *Server) Addr() net.Addr {
	if s.conn == nil {
		return nil
	}
	return s.conn.LocalAddr()
}

func (s *Server) readLoop(ctx context.Context, conn *net.UDPConn) error {
	buf := make([]byte, 65536)
	for {
		n, peer, err := conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			s.log.Warn("udp read failed", "err", err)
			continue
		}
		s.receive(buf[:n], netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port()))
	}
}

// receive runs on the read loop: the cheap header checks, duplicate
// detection and hand-off to a worker. Nothing here allocates peer state for
// a datagram that is not a well-formed request header.
func (s *Server) receive(b []byte, peer netip.AddrPort) { s.receiveFrom(b, peer, nil) }

func (s *Server) receiveFrom(b []byte, peer netip.AddrPort, sess Session) {
	now := s.now()
	if len(b) < 4 || b[0]>>6 != 1 {
		s.m.malformed("header") // not CoAP v1: silently ignored (RFC 7252 §3)
		return
	}
	typ := message.Type(b[0] >> 4 & 3)
	tkl := int(b[0] & 0xf)
	code := codes.Code(b[1])
	mid := binary.BigEndian.Uint16(b[2:4])
	switch {
	case typ == message.Acknowledgement || typ == message.Reset:
		s.matchOutgoing(b, peer, sess, mid) // answers to Request
		return
	case code == codes.Empty:
		if typ == message.Confirmable {
			s.m.ping()
			s.write(s.reset(mid), peer, sess) // CoAP ping (RFC 7252 §4.3)
		}
		return
	case tkl > 8 || len(b) < 4+tkl || code>>5 != 0:
		// Format error, or a response where a request belongs: reject.
		s.m.malformed("header")
		if typ == message.Confirmable {
			s.write(s.reset(mid), peer, sess)
		}
		return
	}
	k := exchangeKeyOf(peer, sess, mid)
	ttl := s.cfg.NonLifetime
	if typ == message.Confirmable {
		ttl = s.cfg.ExchangeLifetime
	}
	st, resp, evicted := s.dedup.begin(k, ttl, now)
	if evicted > 0 {
		s.m.dedupEvicted(evicted)
	}
	switch st {
	case dedupDone:
		s.m.duplicate()
		if typ == message.Confirmable && resp != nil {
			s.write(resp, peer, sess) // RFC 7252 §4.5: replay the cached response
		}
		return
	case dedupInFlight:
		s.m.duplicate()
		return
	}
	data := make([]byte, len(b))
	copy(data, b)
	s.closing.RLock()
	queued := false
	if !s.closed {
		select {
		case s.jobs <- job{data: data, peer: peer, sess: sess, at: now}:
			queued = true
		default:
		}
	}
	s.closing.RUnlock()
	if !queued {
		// Overload: forget the exchange so a retransmission is processed,
		// and tell a CON sender to back off.
		s.dedup.abort(k)
		s.m.overload()
		if typ == message.Confirmable {
			r := &Response{Code: codes.ServiceUnavailable}
			r.SetUint(message.MaxAge, 1)
			if out, err := s.encode(r, message.Acknowledgement, mid, b[4:4+tkl]); err == nil {
				s.write(out, peer, sess)
			}
		}
	}
}

// process decodes and answers one request on a worker.
func (s *Server) process(ctx context.Context, j job) {
	typ := message.Type(j.data[0] >> 4 & 3)
	mid := binary.BigEndian.Uint16(j.data[2:4])
	k := exchangeKeyOf(j.peer, j.sess, mid)
	msg, err := parseRequest(j.data)
	var resp *Response
	switch {
	case errors.Is(err, errTooManyOptions):
		s.m.malformed("too_many_options")
		resp = &Response{Code: codes.BadRequest, Payload: []byte(err.Error())}
	case err != nil:
		// RFC 7252 §3, §4.2/§4.3: a message format error is rejected: RST
		// for a CON, silently ignored for a NON.
		reason := "options"
		if errors.Is(err, ErrEmptyPayload) {
			reason = "empty_payload"
		}
		s.m.malformed(reason)
		var out []byte
		if typ == message.Confirmable {
			out = s.reset(mid)
		}
		s.dedup.complete(k, out, s.now())
		if out != nil {
			s.write(out, j.peer, j.sess)
		}
		return
	}
	req := &Request{
		Peer: j.peer, Type: typ, Code: msg.code, MessageID: mid,
		Token: msg.token, Options: msg.options, Payload: msg.payload, Received: j.at,
		Session: j.sess,
	}
	if resp == nil {
		resp = s.serve(ctx, req)
	}
	var out []byte
	if resp != nil || typ == message.Confirmable {
		if resp == nil {
			resp = &Response{Code: codes.Empty}
		}
		rtyp, rmid := message.Acknowledgement, mid
		if typ == message.NonConfirmable {
			rtyp, rmid = message.NonConfirmable, s.nextMID()
		}
		var err error
		out, err = s.encode(resp, rtyp, rmid, req.Token)
		if err != nil {
			s.log.Error("encode response failed", "err", err)
			resp = &Response{Code: codes.InternalServerError}
			out, _ = s.encode(resp, rtyp, rmid, req.Token)
		}
	}
	// Record the exchange before answering, so a duplicate that races the
	// answer finds the cached response rather than an in-flight entry.
	// A refusal (4.xx: the request was not acted upon, RFC 7252 §5.9.2)
	// goes to the refusals' own table, so that floods of refused requests
	// cannot push out the exchanges of devices that were served.
	cached := out
	if typ != message.Confirmable {
		cached = nil // duplicates of a NON are dropped, never answered
	}
	if resp != nil && resp.Code>>5 == 4 {
		if n := s.dedup.refuse(k, cached, s.now()); n > 0 {
			s.m.dedupEvicted(n)
		}
	} else {
		s.dedup.complete(k, cached, s.now())
	}
	if out != nil {
		s.m.response(resp.Code, s.now().Sub(j.at))
		s.write(out, j.peer, j.sess)
	}
}

// serve applies the protocol rules around the Handler: critical options,
// proxying, Block1 reassembly, Block2 slicing.
func (s *Server) serve(ctx context.Context, req *Request) *Response {
	opts, err := checkOptions(req.Options)
	if err != nil {
		s.m.malformed("bad_option")
		return &Response{Code: codes.BadOption, Payload: []byte(err.Error())}
	}
	req.Options = opts
	if req.Options.HasOption(message.ProxyURI) || req.Options.HasOption(message.ProxyScheme) {
		return &Response{Code: codes.ProxyingNotSupported}
	}
	for _, o := range req.Options {
		if o.ID == message.URIPath {
			req.Path = append(req.Path, string(o.Value))
		}
	}
	tk := transferKey{peer: req.Peer, code: req.Code, path: strings.Join(req.Path, "/")}
	if req.Session != nil {
		tk.peer, tk.sess = netip.AddrPort{}, req.Session.SessionID()
	}

	// RFC 7959 §2.4: a Block2 request for a later block of a stored body.
	var b2 block
	hasB2 := false
	if v, ok := Uint(req.Options, message.Block2); ok {
		if b2, ok = decodeBlock(v); !ok {
			return &Response{Code: codes.BadRequest, Payload: []byte("invalid Block2 option")}
		}
		hasB2 = true
		if b2.num > 0 {
			d, ok := s.blocks.getDownload(tk, req.Received)
			if !ok {
				return &Response{Code: codes.RequestEntityIncomplete, Payload: []byte("no body to continue")}
			}
			return s.slice(d, b2)
		}
	}

	// RFC 7959 §2.5: Block1 request bodies.
	var b1 block
	hasB1 := false
	size1, hasSize1 := Uint(req.Options, message.Size1)
	if hasSize1 && int(size1) > s.cfg.MaxBody {
		return s.tooLarge()
	}
	if v, ok := Uint(req.Options, message.Block1); ok {
		if b1, ok = decodeBlock(v); !ok {
			return &Response{Code: codes.BadRequest, Payload: []byte("invalid Block1 option")}
		}
		if b1.more && len(req.Payload) != b1.size() {
			return &Response{Code: codes.BadRequest, Payload: []byte("Block1 payload size does not match SZX")}
		}
		hasB1 = true
		if b1.num == 0 && b1.more {
			// Judge the request before its first block is buffered.
			if a, ok := s.h.(Admitter); ok {
				if r := s.admit(ctx, a, req); r != nil {
					s.m.blockRefused("not_admitted")
					return r
				}
			}
			if req.Anonymous && hasSize1 && size1 > AnonymousMaxBody {
				s.m.blockRefused("too_large")
				r := &Response{Code: codes.RequestEntityTooLarge, Payload: []byte("request body too large")}
				return r.SetUint(message.Size1, AnonymousMaxBody)
			}
		}
		res, body := s.blocks.addBlock1(tk, b1, req.Payload, int(size1), req.Anonymous, req.Received)
		switch res {
		case block1Continue:
			r := &Response{Code: codes.Continue}
			return r.SetUint(message.Block1, b1.encode())
		case block1Incomplete:
			return &Response{Code: codes.RequestEntityIncomplete, Payload: []byte("Block1 out of sequence")}
		case block1TooLarge:
			s.m.blockRefused("too_large")
			return s.tooLarge()
		case block1Busy:
			s.m.blockRefused("budget")
			r := &Response{Code: codes.ServiceUnavailable, Payload: []byte("reassembly budget spent")}
			return r.SetUint(message.MaxAge, blockRetryAfter)
		}
		req.Payload = body
	} else if len(req.Payload) > s.cfg.MaxBody {
		return s.tooLarge()
	}

	resp := s.callHandler(ctx, req)
	if resp == nil {
		return nil
	}
	if hasB1 {
		resp.SetUint(message.Block1, block{num: b1.num, szx: b1.szx}.encode())
	}
	size := s.cfg.BlockSize
	if hasB2 && b2.size() < size {
		size = b2.size()
	}
	if len(resp.Payload) > size {
		d := &download{code: resp.Code, options: resp.Options, body: resp.Payload}
		s.blocks.putDownload(tk, d, req.Received)
		return s.slice(d, block{num: 0, szx: szxFor(size)})
	}
	return resp
}

// blockRetryAfter is the Max-Age (seconds) of a 5.03 for a spent budget.
const blockRetryAfter = 5

// admit runs the Admitter like the Handler: a panic is answered 5.00.
func (s *Server) admit(ctx context.Context, a Admitter, req *Request) (resp *Response) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("admitter panic", "panic", fmt.Sprint(p), "peer", req.Peer.String())
			resp = &Response{Code: codes.InternalServerError}
		}
	}()
	return a.Admit(ctx, req)
}

// BlockStats returns the Block1 reassembly accounting.
func (s *Server) BlockStats() BlockStats { return s.blocks.stats() }

// callHandler runs the Handler; a panic is logged and answered 5.00 so one
// bad request never takes the server down.
func (s *Server) callHandler(ctx context.Context, req *Request) (resp *Response) {
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("handler panic", "panic", fmt.Sprint(p), "peer", req.Peer.String())
			resp = &Response{Code: codes.InternalServerError}
		}
	}()
	return s.h.ServeCoAP(ctx, req)
}

// slice returns block b of a stored body (RFC 7959 §2.3).
func (s *Server) slice(d *download, b block) *Response {
	size := b.size()
	start := int(b.num) * size
	if start >= len(d.body) {
		return &Response{Code: codes.BadOption, Payload: []byte("Block2 beyond end of body")}
	}
	end := min(start+size, len(d.body))
	r := &Response{Code: d.code, Options: append(message.Options(nil), d.options...), Payload: d.body[start:end]}
	r.SetUint(message.Block2, block{num: b.num, more: end < len(d.body), szx: b.szx}.encode())
	if b.num == 0 {
		r.SetUint(message.Size2, uint32(len(d.body)))
	}
	return r
}

func (s *Server) tooLarge() *Response {
	r := &Response{Code: codes.RequestEntityTooLarge, Payload: []byte("request body too large")}
	return r.SetUint(message.Size1, uint32(s.cfg.MaxBody))
}

func (s *Server) nextMID() uint16 { return uint16(s.mid.Add(1)) }

// reset returns an RST for mid.
func (s *Server) reset(mid uint16) []byte {
	return []byte{0x70, 0, byte(mid >> 8), byte(mid)}
}

func (s *Server) encode(r *Response, typ message.Type, mid uint16, token []byte) ([]byte, error) {
	sortOptions(r.Options)
	m := message.Message{
		Token: token, Options: r.Options, Code: r.Code, Payload: r.Payload,
		MessageID: int32(mid), Type: typ,
	}
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, fmt.Errorf("coap: size response: %w", err)
	}
	out := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, out); err != nil {
		return nil, fmt.Errorf("coap: encode response: %w", err)
	}
	return out, nil
}

// write sends b to peer, or through sess when the message came on one.
func (s *Server) write(b []byte, peer netip.AddrPort, sess Session) {
	if sess == nil {
		s.writeRaw(b, peer)
		return
	}
	if err := sess.WriteDatagram(b); err != nil {
		s.m.writeError()
		s.log.Debug("session write failed", "peer", peer.String(), "err", err)
	}
}

func (s *Server) writeRaw(b []byte, peer netip.AddrPort) {
	if s.out != nil {
		s.out(b, peer)
		return
	}
	if _, err := s.conn.WriteToUDPAddrPort(b, peer); err != nil {
		s.m.writeError()
		s.log.Debug("udp write failed", "peer", peer.String(), "err", err)
	}
}
