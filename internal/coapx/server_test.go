package coapx

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// echo is a test Handler: it counts calls and echoes path and payload.
type echo struct {
	calls atomic.Int64
	mu    sync.Mutex
	last  []byte
}

func (e *echo) ServeCoAP(_ context.Context, req *Request) *Response {
	e.calls.Add(1)
	e.mu.Lock()
	e.last = append([]byte(nil), req.Payload...)
	e.mu.Unlock()
	switch strings.Join(req.Path, "/") {
	case "big":
		return &Response{Code: codes.Content, Payload: bytes.Repeat([]byte("x"), 3000)}
	case "panic":
		panic("boom")
	case "nil":
		return nil
	}
	return &Response{Code: codes.Changed, Payload: append([]byte(strings.Join(req.Path, "/")+":"), req.Payload...)}
}

func startServer(t *testing.T, cfg Config, h Handler) *net.UDPAddr {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, h, NewMetrics(nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, conn); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return conn.LocalAddr().(*net.UDPAddr)
}

type client struct {
	t    *testing.T
	conn *net.UDPConn
}

func dial(t *testing.T, addr *net.UDPAddr) *client {
	t.Helper()
	c, err := net.DialUDP("udp", nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c}
}

func encodeMsg(t testing.TB, m message.Message) []byte {
	t.Helper()
	sortOptions(m.Options)
	n, err := coder.DefaultCoder.Size(m)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	return b
}

func pathOpts(path string, extra ...message.Option) message.Options {
	var o message.Options
	for _, seg := range strings.Split(path, "/") {
		o = append(o, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	return append(o, extra...)
}

func (c *client) send(b []byte) {
	if _, err := c.conn.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

// recv reads one datagram or returns nil after d.
func (c *client) recv(d time.Duration) *message.Message {
	c.t.Helper()
	buf := make([]byte, 2048)
	c.conn.SetReadDeadline(time.Now().Add(d))
	n, err := c.conn.Read(buf)
	if err != nil {
		return nil
	}
	m := &message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], m); err != nil {
		c.t.Fatalf("server sent undecodable datagram %x: %v", buf[:n], err)
	}
	return m
}

func (c *client) roundTrip(m message.Message) *message.Message {
	c.t.Helper()
	c.send(encodeMsg(c.t, m))
	r := c.recv(2 * time.Second)
	if r == nil {
		c.t.Fatalf("no response to %v", m.String())
	}
	return r
}

func con(mid int32, path string, payload string, extra ...message.Option) message.Message {
	return message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid,
		Token: []byte{1, 2, 3, 4}, Options: pathOpts(path, extra...), Payload: []byte(payload)}
}

func TestPiggybackedACK(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{}, h))
	r := c.roundTrip(con(100, "topic/a", "hello"))
	if r.Type != message.Acknowledgement || r.MessageID != 100 || !bytes.Equal(r.Token, []byte{1, 2, 3, 4}) {
		t.Fatalf("not a piggybacked ACK: %v", r.String())
	}
	if r.Code != codes.Changed || string(r.Payload) != "topic/a:hello" {
		t.Fatalf("got %v %q", r.Code, r.Payload)
	}
}

func TestDuplicateCONReplaysCachedResponse(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{}, h))
	m := con(7, "topic/a", "one")
	first := c.roundTrip(m)
	m.Payload = []byte("changed payload, same MID") // a duplicate is matched on MID, not content
	m.Token = []byte{9}
	second := c.roundTrip(m)
	if h.calls.Load() != 1 {
		t.Fatalf("handler called %d times for one exchange", h.calls.Load())
	}
	if !bytes.Equal(encodeMsg(t, *first), encodeMsg(t, *second)) {
		t.Fatalf("duplicate got a different response: %v vs %v", first.String(), second.String())
	}
	// Same MID from another peer is a different exchange.
	c2 := dial(t, c.conn.RemoteAddr().(*net.UDPAddr))
	c2.roundTrip(con(7, "topic/a", "other peer"))
	if h.calls.Load() != 2 {
		t.Fatalf("other peer's MID 7 treated as duplicate")
	}
}

func TestNONIngestedOnceWithNONResponse(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{}, h))
	m := con(55, "topic/n", "x")
	m.Type = message.NonConfirmable
	b := encodeMsg(t, m)
	c.send(b)
	r := c.recv(2 * time.Second)
	if r == nil || r.Type != message.NonConfirmable || r.Code != codes.Changed {
		t.Fatalf("want NON 2.04 response, got %v", r)
	}
	c.send(b) // duplicate NON: dropped silently
	if r := c.recv(300 * time.Millisecond); r != nil {
		t.Fatalf("duplicate NON answered: %v", r.String())
	}
	if h.calls.Load() != 1 {
		t.Fatalf("NON handled %d times", h.calls.Load())
	}
}

func TestProtocolErrors(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{MaxBody: 100}, h))
	tests := []struct {
		name string
		msg  message.Message
		code codes.Code
	}{
		{"unknown critical option", con(1, "topic/a", "", message.Option{ID: 9, Value: []byte{1}}), codes.BadOption},
		{"unknown elective option ignored", con(2, "topic/a", "", message.Option{ID: 2050, Value: []byte{1}}), codes.Changed},
		{"vendor critical option 61 known", con(3, "topic/a", "", message.Option{ID: OptionToken61, Value: []byte("t")}), codes.Changed},
		{"proxy-uri", con(4, "topic/a", "", message.Option{ID: message.ProxyURI, Value: []byte("coap://x")}), codes.ProxyingNotSupported},
		{"body too large", con(5, "topic/a", strings.Repeat("a", 101)), codes.RequestEntityTooLarge},
		{"Size1 announces too large", con(6, "topic/a", "", message.Option{ID: message.Size1, Value: EncodeUint(5000)}), codes.RequestEntityTooLarge},
		{"handler panic", con(8, "panic", ""), codes.InternalServerError},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := c.roundTrip(tt.msg)
			if r.Code != tt.code {
				t.Fatalf("code = %v, want %v", r.Code, tt.code)
			}
			if tt.code == codes.RequestEntityTooLarge {
				if v, ok := Uint(r.Options, message.Size1); !ok || v != 100 {
					t.Fatalf("4.13 without Size1=100: %v %v", v, ok)
				}
			}
		})
	}
	// nil from the handler on a CON: an empty ACK.
	r := c.roundTrip(con(9, "nil", ""))
	if r.Type != message.Acknowledgement || r.Code != codes.Empty {
		t.Fatalf("nil response: %v", r.String())
	}
}

func TestPingAndGarbage(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{}, h))
	c.send([]byte{0x40, 0, 0x12, 0x34}) // empty CON = ping
	r := c.recv(2 * time.Second)
	if r == nil || r.Type != message.Reset || r.MessageID != 0x1234 {
		t.Fatalf("ping: want RST 0x1234, got %v", r)
	}
	for _, g := range [][]byte{{}, {0xff}, {0x80, 1, 0, 0}, {0x50, 0x45, 0, 0}} {
		c.send(g) // too short, bad version, NON response: ignored
	}
	// Format errors in a CON (token length 15; truncated token): RST.
	for i, g := range [][]byte{{0x4f, 1, 0, 1}, {0x44, 1, 0, 2, 1}} {
		c.send(g)
		if r := c.recv(2 * time.Second); r == nil || r.Type != message.Reset || r.MessageID != int32(i+1) {
			t.Fatalf("format error %x: want RST, got %v", g, r)
		}
	}
	// Truncated option in a CON: RST; the server keeps serving.
	c.send([]byte{0x40, 0x02, 0x00, 0x09, 0xbd})
	if r := c.recv(2 * time.Second); r == nil || r.Type != message.Reset || r.MessageID != 9 {
		t.Fatalf("malformed CON: want RST, got %v", r)
	}
	c.roundTrip(con(10, "topic/a", "still alive"))
}

func TestBlock1Upload(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{MaxBody: 4096}, h))
	body := bytes.Repeat([]byte("0123456789abcdef"), 100) // 1600 bytes
	const szx = 4                                         // 256-byte blocks
	var mid int32 = 200
	var final *message.Message
	for num := 0; num*256 < len(body); num++ {
		end := min((num+1)*256, len(body))
		more := end < len(body)
		b := block{num: uint32(num), more: more, szx: szx}
		r := c.roundTrip(con(mid, "topic/up", string(body[num*256:end]), message.Option{ID: message.Block1, Value: EncodeUint(b.encode())}))
		mid++
		if more && r.Code != codes.Continue {
			t.Fatalf("block %d: %v, want 2.31", num, r.Code)
		}
		final = r
	}
	if final.Code != codes.Changed {
		t.Fatalf("final block: %v", final.Code)
	}
	h.mu.Lock()
	last := h.last
	h.mu.Unlock()
	if h.calls.Load() != 1 || !bytes.Equal(last, body) {
		t.Fatalf("handler calls %d, body len %d, want 1 call with %d bytes", h.calls.Load(), len(last), len(body))
	}
	// A block out of sequence: 4.08.
	b := block{num: 3, more: true, szx: szx}
	r := c.roundTrip(con(mid, "topic/up", string(body[:256]), message.Option{ID: message.Block1, Value: EncodeUint(b.encode())}))
	if r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("out of sequence: %v, want 4.08", r.Code)
	}
}

func TestBlock1TooLarge(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{MaxBody: 300}, h))
	var r *message.Message
	for num := 0; num < 3; num++ {
		b := block{num: uint32(num), more: true, szx: 4}
		r = c.roundTrip(con(int32(300+num), "topic/up", strings.Repeat("z", 256), message.Option{ID: message.Block1, Value: EncodeUint(b.encode())}))
		if r.Code != codes.Continue {
			break
		}
	}
	if r.Code != codes.RequestEntityTooLarge {
		t.Fatalf("want 4.13, got %v", r.Code)
	}
	if h.calls.Load() != 0 {
		t.Fatal("handler called for an oversized body")
	}
}

func TestBlock2Download(t *testing.T) {
	h := &echo{}
	c := dial(t, startServer(t, Config{BlockSize: 1024}, h))
	var got []byte
	var mid int32 = 400
	for num := uint32(0); ; num++ {
		m := con(mid, "big", "")
		m.Code = codes.GET
		if num > 0 {
			m.Options = append(m.Options, message.Option{ID: message.Block2, Value: EncodeUint(block{num: num, szx: 6}.encode())})
		}
		mid++
		r := c.roundTrip(m)
		v, ok := Uint(r.Options, message.Block2)
		if !ok {
			t.Fatalf("block %d: no Block2 option", num)
		}
		b, _ := decodeBlock(v)
		if b.num != num || b.szx != 6 {
			t.Fatalf("block %+v, want num %d szx 6", b, num)
		}
		if num == 0 {
			if s2, _ := Uint(r.Options, message.Size2); s2 != 3000 {
				t.Fatalf("Size2 = %d, want 3000", s2)
			}
		}
		got = append(got, r.Payload...)
		if !b.more {
			break
		}
	}
	if len(got) != 3000 || h.calls.Load() != 1 {
		t.Fatalf("assembled %d bytes with %d handler calls; want 3000 with 1", len(got), h.calls.Load())
	}
}

func TestOverloadAnswers503(t *testing.T) {
	block := make(chan struct{})
	h := HandlerFunc(func(context.Context, *Request) *Response {
		<-block
		return &Response{Code: codes.Changed}
	})
	c := dial(t, startServer(t, Config{Workers: 1, Queue: 1}, h))
	defer close(block)
	// 1 in the worker, 1 queued: of 4 requests at least one gets 5.03.
	for i := range 4 {
		c.send(encodeMsg(t, con(int32(500+i), "topic/a", "")))
	}
	r := c.recv(2 * time.Second)
	if r == nil || r.Code != codes.ServiceUnavailable || r.MessageID < 501 {
		t.Fatalf("want 5.03, got %v", r)
	}
	if v, ok := Uint(r.Options, message.MaxAge); !ok || v < 1 {
		t.Fatal("5.03 without Max-Age")
	}
}

// refuser answers 4.01 to everything but "ok", which it acts upon (2.04).
type refuser struct{ calls atomic.Int64 }

func (r *refuser) ServeCoAP(_ context.Context, req *Request) *Response {
	r.calls.Add(1)
	if strings.Join(req.Path, "/") == "ok" {
		return &Response{Code: codes.Changed}
	}
	return &Response{Code: codes.Unauthorized}
}

// TestRefusalsCannotPushOutServedExchanges: a flood of refused requests
// (a peer without credentials) far beyond the duplicate cache's size
// leaves the exchanges of requests that were acted upon in place: their
// duplicates are still answered from the cache, not processed again. A
// duplicate of a refusal still in the refusals' table is answered from it;
// the refusals' table stays within its bound.
func TestRefusalsCannotPushOutServedExchanges(t *testing.T) {
	h := &refuser{}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	const size = dedupShards * 32 // 32 exchanges per shard, 16 refusals (the floor)
	s := NewServer(Config{DedupEntries: size}, h, NewMetrics(nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, conn); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c := dial(t, conn.LocalAddr().(*net.UDPAddr))

	ok := con(60000, "ok", "")
	if r := c.roundTrip(ok); r.Code != codes.Changed {
		t.Fatalf("served request: %v", r.Code)
	}
	const flood = 4 * size
	for i := range flood {
		if r := c.roundTrip(con(int32(i), "topic/x", "no token")); r.Code != codes.Unauthorized {
			t.Fatalf("request %d: got %v, want 4.01", i, r.Code)
		}
	}
	if got := s.dedup.acted(); got != 1 {
		t.Fatalf("%d served exchanges held after the flood, want 1", got)
	}
	if got, bound := s.dedup.len()-s.dedup.acted(), dedupShards*16; got > bound {
		t.Fatalf("%d refusals held, want at most %d", got, bound)
	}
	calls := h.calls.Load()
	if r := c.roundTrip(ok); r.Code != codes.Changed || h.calls.Load() != calls {
		t.Fatalf("duplicate of the served request after the flood: %v, handler ran %d more times", r.Code, h.calls.Load()-calls)
	}
	last := con(flood-1, "topic/x", "retransmission")
	if r := c.roundTrip(last); r.Code != codes.Unauthorized || h.calls.Load() != calls {
		t.Fatalf("duplicate of the last refusal: %v, handler ran %d more times", r.Code, h.calls.Load()-calls)
	}
}
