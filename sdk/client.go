package sdk

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
)

// tokenLen is the length of the CoAP token of every request (RFC 7252 §5.3.1
// recommends random tokens; 8 bytes keeps collisions between parallel
// requests out of the question).
const tokenLen = 8

// recvBufSize is the read buffer: the largest UDP payload.
const recvBufSize = 65535

// Client is a CoAP device client bound to one server address. It is safe for
// concurrent use; Close stops its reader goroutine.
type Client struct {
	conn net.Conn // a connected UDP socket, or a DTLS session over one
	cfg  config
	szx  blockwise.SZX

	mu         sync.Mutex
	closed     bool                 // guarded by mu
	nextMID    uint16               // guarded by mu
	byMID      map[uint16]*exchange // guarded by mu; CON (and awaited NON) messages not yet ACKed
	byToken    map[string]*exchange // guarded by mu; requests awaiting a response
	recentACK  midRing              // guarded by mu; CON responses we ACKed (RFC 7252 §4.5)
	recentPush midRing              // guarded by mu; pushed commands we took
	token      string               // guarded by mu; the auth token
	sym        *symSession          // guarded by mu; the symmetric session of token (WithSymmetric)

	cmds chan cmdJob // commands for the handler (WithCommandHandler)

	authMu  sync.Mutex // serialises POST /auth
	thingID atomic.Uint64

	done      chan struct{} // closed by Close
	wg        sync.WaitGroup
	closeOnce sync.Once
	closeErr  error
}

// exchange is one request waiting for its ACK and response.
type exchange struct {
	token     []byte
	mid       uint16
	acked     chan struct{}        // closed on an empty ACK (RFC 7252 §5.2.2)
	resp      chan message.Message // capacity 1: the response or the RST
	ackClosed bool                 // guarded by Client.mu
	finished  bool                 // guarded by Client.mu
}

// Dial returns a Client for the CoAP server at addr ("host:port"). The UDP
// socket is connected, so datagrams from other addresses are never read.
func Dial(ctx context.Context, addr string, opts ...Option) (*Client, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	szx, _ := blockSZX(cfg.blockSize) // validated above
	var conn net.Conn
	if cfg.dtlsPSK != nil || cfg.dtlsCert != nil {
		var err error
		if conn, err = dialDTLS(ctx, addr, cfg.dtlsPSK, cfg.dtlsCert); err != nil {
			return nil, err
		}
	} else {
		var d net.Dialer
		uc, err := d.DialContext(ctx, "udp", addr)
		if err != nil {
			return nil, fmt.Errorf("sdk: dial %s: %w", addr, err)
		}
		if _, ok := uc.(*net.UDPConn); !ok {
			_ = uc.Close()
			return nil, fmt.Errorf("sdk: dial %s: not a UDP connection", addr)
		}
		conn = uc
	}
	c := &Client{
		conn:    conn,
		cfg:     cfg,
		szx:     szx,
		nextMID: uint16(mrand.Uint32()), // RFC 7252 §4.4: randomised start
		byMID:   make(map[uint16]*exchange),
		byToken: make(map[string]*exchange),
		token:   cfg.token,
		done:    make(chan struct{}),
	}
	c.wg.Add(1)
	go c.readLoop()
	if cfg.cmdHandler != nil {
		c.cmds = make(chan cmdJob, cmdQueueLen)
		c.wg.Add(1)
		go c.serveCommands()
	}
	return c, nil
}

// Close stops the reader goroutine, waits for it and closes the socket.
// Pending requests fail with ErrClosed. Close is idempotent.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.closed = true
		c.mu.Unlock()
		close(c.done)
		c.closeErr = c.conn.Close()
		c.wg.Wait()
	})
	return c.closeErr
}

// LocalAddr returns the client's local UDP address.
func (c *Client) LocalAddr() net.Addr { return c.conn.LocalAddr() }

// Token returns the stored auth token, "" before the first Auth.
func (c *Client) Token() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.token
}

// auth returns the stored token with its session.
func (c *Client) auth() authState {
	c.mu.Lock()
	defer c.mu.Unlock()
	return authState{token: c.token, sym: c.sym}
}

func (c *Client) setAuth(st authState) {
	c.mu.Lock()
	c.token, c.sym = st.token, st.sym
	c.mu.Unlock()
}

// readLoop is the Client's only reader of the socket.
func (c *Client) readLoop() {
	defer c.wg.Done()
	buf := make([]byte, recvBufSize)
	for {
		n, err := c.conn.Read(buf)
		if err != nil {
			select {
			case <-c.done:
				return
			default:
			}
			if errors.Is(err, net.ErrClosed) || c.cfg.dtlsPSK != nil || c.cfg.dtlsCert != nil {
				// A DTLS session that ended (close_notify, fatal alert)
				// does not come back: requests time out; dial again.
				return
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				// Unexpected read error: do not spin.
				select {
				case <-c.done:
					return
				case <-time.After(10 * time.Millisecond):
				}
			}
			continue // an ICMP port unreachable is just a lost datagram
		}
		c.handleDatagram(append([]byte(nil), buf[:n]...))
	}
}

// handleDatagram dispatches one received datagram; data is owned by the callee.
func (c *Client) handleDatagram(data []byte) {
	m, err := decodeMessage(data)
	if err != nil {
		return // RFC 7252 §4.2: unparsable messages are silently ignored (we cannot reject what we cannot address)
	}
	mid := uint16(m.MessageID)
	switch classify(&m) {
	case kindEmptyACK:
		c.mu.Lock()
		if ex := c.byMID[mid]; ex != nil && !ex.ackClosed {
			ex.ackClosed = true
			close(ex.acked)
			delete(c.byMID, mid)
		}
		c.mu.Unlock()
	case kindPiggybacked, kindReset:
		c.mu.Lock()
		ex := c.byMID[mid]
		if ex != nil && (m.Type == message.Reset || string(ex.token) == string(m.Token)) {
			c.deliverLocked(ex, m)
		}
		c.mu.Unlock()
	case kindConResponse:
		// RFC 7252 §5.2.2: ACK a separate response; a duplicate is ACKed again,
		// a response to nothing we remember is rejected with RST.
		c.mu.Lock()
		ex := c.byToken[string(m.Token)]
		reply := message.Reset
		if ex != nil {
			c.deliverLocked(ex, m)
			c.recentACK.add(mid)
			reply = message.Acknowledgement
		} else if c.recentACK.has(mid) {
			reply = message.Acknowledgement
		}
		c.mu.Unlock()
		c.sendEmpty(reply, mid)
	case kindNonResponse:
		c.mu.Lock()
		if ex := c.byToken[string(m.Token)]; ex != nil {
			c.deliverLocked(ex, m)
		}
		c.mu.Unlock()
	case kindConRequestOrPing:
		// Pushed commands go to the handler; anything else (and a CoAP
		// ping) is answered by RST (RFC 7252 §4.3).
		c.handleRequest(&m)
	}
}

// deliverLocked hands m to ex once and unregisters ex. c.mu must be held.
func (c *Client) deliverLocked(ex *exchange, m message.Message) {
	if ex.finished {
		return
	}
	c.unregisterLocked(ex)
	ex.resp <- m
}

func (c *Client) unregisterLocked(ex *exchange) {
	ex.finished = true
	if c.byMID[ex.mid] == ex {
		delete(c.byMID, ex.mid)
	}
	if c.byToken[string(ex.token)] == ex {
		delete(c.byToken, string(ex.token))
	}
}

func (c *Client) sendEmpty(typ message.Type, mid uint16) {
	data, err := encodeMessage(message.Message{Type: typ, Code: codes.Empty, MessageID: int32(mid)})
	if err == nil {
		_ = c.write(data) // best effort: the peer retransmits if this is lost
	}
}

// write sends one datagram. An ICMP error left over from an earlier datagram
// (ECONNREFUSED) counts as a lost datagram, not as a failure.
func (c *Client) write(data []byte) error {
	_, err := c.conn.Write(data)
	if err != nil && !errors.Is(err, syscall.ECONNREFUSED) {
		select {
		case <-c.done:
			return ErrClosed
		default:
		}
		return fmt.Errorf("sdk: write: %w", err)
	}
	return nil
}

// newToken returns fresh random token bytes.
func newToken() []byte {
	t := make([]byte, tokenLen)
	_, _ = rand.Read(t) // crypto/rand.Read never fails (Go 1.24+)
	return t
}

// register allocates a Message ID and registers an exchange. token nil means
// a fresh random token. byMID registers for ACK/RST matching, byToken for
// response matching.
func (c *Client) register(token []byte, byMID, byToken bool) (*exchange, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	if token == nil {
		for {
			token = newToken()
			if _, dup := c.byToken[string(token)]; !dup {
				break
			}
		}
	}
	mid := c.nextMID
	for i := 0; i < 1<<16; i++ { // skip Message IDs still in flight
		if _, busy := c.byMID[mid]; !busy {
			break
		}
		mid++
	}
	c.nextMID = mid + 1
	ex := &exchange{token: token, mid: mid, acked: make(chan struct{}), resp: make(chan message.Message, 1)}
	if byMID {
		c.byMID[mid] = ex
	}
	if byToken {
		c.byToken[string(token)] = ex
	}
	return ex, nil
}

func (c *Client) unregister(ex *exchange) {
	c.mu.Lock()
	if !ex.finished {
		c.unregisterLocked(ex)
	}
	c.mu.Unlock()
}

// roundTrip sends one request (a single message) and waits for its response.
// token nil means a fresh random token. A NON request returns (nil, nil)
// once sent unless waitNON > 0.
func (c *Client) roundTrip(ctx context.Context, r *request, token []byte, waitNON time.Duration) (*Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	wait := r.confirmable || waitNON > 0
	ex, err := c.register(token, wait, wait)
	if err != nil {
		return nil, err
	}
	defer c.unregister(ex)
	msg, err := buildMessage(r, ex.mid, ex.token)
	if err != nil {
		return nil, err
	}
	data, err := encodeMessage(msg)
	if err != nil {
		return nil, err
	}
	if err := c.write(data); err != nil {
		return nil, err
	}
	if !wait {
		return nil, nil
	}

	p := c.cfg.params
	rnd := mrand.Float64()
	timeout := waitNON
	if r.confirmable {
		timeout = retransmitTimeout(p, 0, rnd)
	}
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	acked := ex.acked
	wasAcked := !r.confirmable // a NON is never retransmitted
	for attempt := 0; ; {
		select {
		case m := <-ex.resp:
			if m.Type == message.Reset {
				return nil, ErrReset
			}
			return newResponse(&m), nil
		case <-acked:
			acked, wasAcked = nil, true
			timer.Reset(separateTimeout(p))
		case <-timer.C:
			if wasAcked || attempt >= p.MaxRetransmit {
				return nil, ErrTimeout
			}
			attempt++
			if err := c.write(data); err != nil {
				return nil, err
			}
			timer.Reset(retransmitTimeout(p, attempt, rnd))
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-c.done:
			return nil, ErrClosed
		}
	}
}

// send sends a request, block-wise (RFC 7959 Block1) when its payload is
// larger than the block size, and returns the final response whatever its
// code. A block-wise transfer is always confirmable and keeps one token for
// all its blocks, so the server can correlate them.
func (c *Client) send(ctx context.Context, r *request, waitNON time.Duration) (*Response, error) {
	if len(r.payload) <= c.cfg.blockSize {
		return c.roundTrip(ctx, r, nil, waitNON)
	}
	token := newToken()
	body := r.payload
	szx := c.szx
	for offset := 0; ; {
		size := int(szx.Size())
		end := min(offset+size, len(body))
		more := end < len(body)
		br := *r
		br.confirmable = true
		br.payload = body[offset:end]
		br.block1 = &blockOpt{num: int64(offset / size), more: more, szx: szx}
		if offset == 0 {
			br.size1 = len(body)
		}
		resp, err := c.roundTrip(ctx, &br, token, 0)
		if err != nil {
			return nil, err
		}
		if !more || !isSuccess(resp.Code) {
			return resp, nil
		}
		// 2.31 Continue (or a lenient 2.xx) asks for the next block; the
		// server may ask for smaller blocks (RFC 7959 §2.3).
		if v, err := resp.Options.GetUint32(message.Block1); err == nil {
			if b, err := decodeBlock(v); err == nil && b.szx < szx {
				szx = b.szx
			}
		}
		offset = end
	}
}

// midRing remembers the last Message IDs of CON responses we acknowledged.
type midRing struct {
	mids [64]uint16
	n    int // entries used
	next int // next slot to overwrite
}

func (r *midRing) add(mid uint16) {
	r.mids[r.next] = mid
	r.next = (r.next + 1) % len(r.mids)
	if r.n < len(r.mids) {
		r.n++
	}
}

func (r *midRing) has(mid uint16) bool {
	for i := 0; i < r.n; i++ {
		if r.mids[i] == mid {
			return true
		}
	}
	return false
}
