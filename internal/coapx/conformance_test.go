package coapx

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// waitReply bounds the wait for an answer that must come (generous: the
// machine may be loaded; no assertion depends on it being short).
const waitReply = 10 * time.Second

// rt is roundTrip with the waitReply bound.
func (c *client) rt(m message.Message) *message.Message {
	c.t.Helper()
	c.send(encodeMsg(c.t, m))
	r := c.recv(waitReply)
	if r == nil {
		c.t.Fatalf("no response to %v", m.String())
	}
	return r
}

// startWith serves h on loopback and returns the server and its address.
func startWith(t *testing.T, cfg Config, h Handler) (*Server, *net.UDPAddr) {
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
	return s, conn.LocalAddr().(*net.UDPAddr)
}

// dialFrom is dial from a given loopback source address (127.0.0.0/8 is
// all loopback on Linux), so tests can play many peers.
func dialFrom(t *testing.T, src string, addr *net.UDPAddr) *client {
	t.Helper()
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP(src)}, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &client{t: t, conn: c}
}

// rawMsg encodes a message by hand (RFC 7252 §3), options in the order
// given and without any length check, so tests can send what a correct
// encoder refuses to. marker adds the payload marker even when payload is
// empty.
func rawMsg(typ message.Type, mid uint16, token []byte, opts []message.Option, payload []byte, marker bool) []byte {
	b := []byte{0x40 | byte(typ)<<4 | byte(len(token)), byte(codes.POST), byte(mid >> 8), byte(mid)}
	b = append(b, token...)
	prev := 0
	ext := func(v int) (nib byte, extra []byte) {
		switch {
		case v < 13:
			return byte(v), nil
		case v < 269:
			return 13, []byte{byte(v - 13)}
		default:
			return 14, binary.BigEndian.AppendUint16(nil, uint16(v-269))
		}
	}
	for _, o := range opts {
		dn, dx := ext(int(o.ID) - prev)
		ln, lx := ext(len(o.Value))
		b = append(b, dn<<4|ln)
		b = append(append(append(b, dx...), lx...), o.Value...)
		prev = int(o.ID)
	}
	if marker || len(payload) > 0 {
		b = append(append(b, 0xff), payload...)
	}
	return b
}

func pathOptions(path string) []message.Option {
	var o []message.Option
	for _, seg := range strings.Split(path, "/") {
		o = append(o, message.Option{ID: message.URIPath, Value: []byte(seg)})
	}
	return o
}

// RFC 7252 §3: a payload marker followed by a zero-length payload is a
// message format error: RST for a CON, silently ignored for a NON.
func TestPayloadMarkerWithEmptyPayload(t *testing.T) {
	h := &echo{}
	_, addr := startWith(t, Config{Workers: 1}, h)
	c := dial(t, addr)
	c.send(rawMsg(message.Confirmable, 0x101, []byte{1}, pathOptions("topic/a"), nil, true))
	r := c.recv(waitReply)
	if r == nil || r.Type != message.Reset || r.MessageID != 0x101 {
		t.Fatalf("CON with empty payload after marker: want RST 0x101, got %v", r)
	}
	// A NON with the same error is dropped: with one worker, the next
	// datagram answered is the CON sent after it.
	c.send(rawMsg(message.NonConfirmable, 0x102, []byte{2}, pathOptions("topic/a"), nil, true))
	c.send(rawMsg(message.Confirmable, 0x103, []byte{3}, pathOptions("topic/a"), []byte("x"), false))
	r = c.recv(waitReply)
	if r == nil || r.MessageID != 0x103 || r.Code != codes.Changed {
		t.Fatalf("want the ACK of 0x103 first (the NON dropped), got %v", r)
	}
	if n := h.calls.Load(); n != 1 {
		t.Fatalf("handler ran %d times, want 1 (only the well-formed request)", n)
	}
}

// RFC 7252 §5.4.3, §5.4.5: a critical option outside its length range, or
// repeated when not repeatable, is treated as unrecognized: 4.02. An
// elective one is ignored.
func TestCriticalOptionRules(t *testing.T) {
	h := &echo{}
	_, addr := startWith(t, Config{}, h)
	c := dial(t, addr)
	long := strings.Repeat("p", 256)
	tests := []struct {
		name string
		opts []message.Option
		want codes.Code
		path string // echoed path on success
	}{
		{"Uri-Path of 256 bytes", append(pathOptions("topic"), message.Option{ID: message.URIPath, Value: []byte(long)}), codes.BadOption, ""},
		{"Block1 of 4 bytes", append(pathOptions("topic/a"), message.Option{ID: message.Block1, Value: []byte{0, 0, 0, 0x0e}}), codes.BadOption, ""},
		{"Accept of 3 bytes", append(pathOptions("topic/a"), message.Option{ID: message.Accept, Value: []byte{0, 0, 50}}), codes.BadOption, ""},
		{"Uri-Host twice", append([]message.Option{{ID: message.URIHost, Value: []byte("a")}, {ID: message.URIHost, Value: []byte("b")}}, pathOptions("topic/a")...), codes.BadOption, ""},
		{"If-None-Match with a value", append([]message.Option{{ID: message.IfNoneMatch, Value: []byte{1}}}, pathOptions("topic/a")...), codes.BadOption, ""},
		{"Uri-Host empty", append([]message.Option{{ID: message.URIHost, Value: nil}}, pathOptions("topic/a")...), codes.BadOption, ""},
		{"option 2101 twice", append(pathOptions("topic/a"), message.Option{ID: OptionSignE, Value: []byte("x")}, message.Option{ID: OptionSignE, Value: []byte("y")}), codes.BadOption, ""},
		{"elective Content-Format of 3 bytes ignored", append(pathOptions("topic/a"), message.Option{ID: message.ContentFormat, Value: []byte{0, 0, 50}}), codes.Changed, "topic/a"},
		{"elective Size1 repeated: second ignored", append(pathOptions("topic/a"), message.Option{ID: message.Size1, Value: []byte{1}}, message.Option{ID: message.Size1, Value: []byte{2}}), codes.Changed, "topic/a"},
		{"Uri-Path of 255 bytes served", append(pathOptions("topic"), message.Option{ID: message.URIPath, Value: []byte(long[:255])}), codes.Changed, "topic/" + long[:255]},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := h.calls.Load()
			c.send(rawMsg(message.Confirmable, uint16(0x200+i), []byte{9}, tt.opts, []byte("b"), false))
			r := c.recv(waitReply)
			if r == nil || r.MessageID != int32(0x200+i) {
				t.Fatalf("no answer: %v", r)
			}
			if r.Code != tt.want {
				t.Fatalf("code %v (%s), want %v", r.Code, r.Payload, tt.want)
			}
			called := h.calls.Load() - before
			if tt.want == codes.BadOption && called != 0 {
				t.Fatal("handler ran for a request answered 4.02")
			}
			if tt.want == codes.Changed && string(r.Payload) != tt.path+":b" {
				t.Fatalf("served %q, want path %q", r.Payload, tt.path)
			}
		})
	}
}

// A valid request with more than 32 options is processed (8 path segments,
// a token option and 24 Uri-Query options); an absurd number is 4.00.
func TestManyOptions(t *testing.T) {
	h := &echo{}
	_, addr := startWith(t, Config{}, h)
	c := dial(t, addr)
	opts := pathOptions("topic/sys/pk/dk/thing/event/property/post")
	for i := range 24 {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: fmt.Appendf(nil, "q%d=%d", i, i)})
	}
	opts = append(opts, message.Option{ID: OptionAuthToken, Value: []byte("token")})
	c.send(rawMsg(message.Confirmable, 0x300, []byte{1}, opts, []byte("v"), false))
	r := c.recv(waitReply)
	if r == nil || r.Type != message.Acknowledgement || r.Code != codes.Changed || string(r.Payload) != "topic/sys/pk/dk/thing/event/property/post:v" {
		t.Fatalf("33 options: want 2.04 for the whole path, got %v", r)
	}
	opts = pathOptions("topic/a")
	for range MaxOptions {
		opts = append(opts, message.Option{ID: message.URIQuery, Value: []byte("q")})
	}
	c.send(rawMsg(message.Confirmable, 0x301, []byte{1}, opts, nil, false))
	if r := c.recv(waitReply); r == nil || r.Code != codes.BadRequest {
		t.Fatalf("%d options: want 4.00, got %v", len(opts), r)
	}
}

func block1Opt(num uint32, more bool, szx uint8) message.Option {
	return message.Option{ID: message.Block1, Value: EncodeUint(block{num: num, more: more, szx: szx}.encode())}
}

// RFC 7959 §2.3: a client may change the block size mid-transfer; the block
// is placed at NUM × size. A block that overlaps what is held, or repeats
// an offset with other bytes, is 4.08, never concatenated.
func TestBlock1SizeChangeAndOverlap(t *testing.T) {
	h := &echo{}
	s, addr := startWith(t, Config{MaxBody: 8192}, h)
	c := dial(t, addr)
	body := make([]byte, 4096)
	for i := range body {
		body[i] = byte(i*7 + i/251)
	}
	mid := int32(0x400)
	send := func(path string, num uint32, more bool, szx uint8, payload []byte) *message.Message {
		t.Helper()
		mid++
		return c.rt(con(mid, path, string(payload), block1Opt(num, more, szx)))
	}
	// 2 × 1024 (SZX 6), then 4 × 256 (SZX 4, NUM 8..11), then 2 × 512 (SZX 5, NUM 6, 7).
	steps := []struct {
		num uint32
		szx uint8
	}{{0, 6}, {1, 6}, {8, 4}, {9, 4}, {10, 4}, {11, 4}, {6, 5}, {7, 5}}
	off := 0
	for i, st := range steps {
		size := 16 << st.szx
		if int(st.num)*size != off {
			t.Fatalf("test table: step %d at %d, want %d", i, int(st.num)*size, off)
		}
		more := i < len(steps)-1
		r := send("topic/sz", st.num, more, st.szx, body[off:off+size])
		want := codes.Continue
		if !more {
			want = codes.Changed
		}
		if r.Code != want {
			t.Fatalf("step %d (NUM %d SZX %d): %v %s, want %v", i, st.num, st.szx, r.Code, r.Payload, want)
		}
		off += size
	}
	h.mu.Lock()
	got := h.last
	h.mu.Unlock()
	if !bytes.Equal(got, body) {
		t.Fatalf("reassembled %d bytes, not the body sent", len(got))
	}

	// Overlap: after 1024 bytes, NUM 1 at SZX 4 is offset 256, NUM 1 at
	// SZX 5 offset 512 (here with other bytes than held there).
	if r := send("topic/ov", 0, true, 6, body[:1024]); r.Code != codes.Continue {
		t.Fatalf("block 0: %v", r.Code)
	}
	if r := send("topic/ov", 1, true, 4, body[1024:1280]); r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("overlapping block at 256: %v, want 4.08", r.Code)
	}
	if r := send("topic/ov", 1, true, 5, bytes.Repeat([]byte("z"), 512)); r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("inconsistent block at 512: %v, want 4.08", r.Code)
	}
	// The last block again with the same bytes is acknowledged; with other
	// bytes it is 4.08.
	if r := send("topic/ov", 0, true, 6, body[:1024]); r.Code != codes.Continue { // restart
		t.Fatalf("restart: %v", r.Code)
	}
	if r := send("topic/ov", 1, true, 6, body[1024:2048]); r.Code != codes.Continue {
		t.Fatalf("block 1: %v", r.Code)
	}
	if r := send("topic/ov", 1, true, 6, body[1024:2048]); r.Code != codes.Continue {
		t.Fatalf("block 1 repeated: %v, want 2.31", r.Code)
	}
	if r := send("topic/ov", 1, true, 6, body[:1024]); r.Code != codes.RequestEntityIncomplete {
		t.Fatalf("block 1 with other bytes: %v, want 4.08", r.Code)
	}
	if st := s.BlockStats(); st.Buffered != 2048 || st.Transfers != 1 {
		t.Fatalf("after the refusals: %+v, want the 2048 bytes of one transfer", st)
	}
}

// admitToken admits requests that carry option 2088 = "ok".
type admitToken struct{ echo }

func (a *admitToken) Admit(_ context.Context, req *Request) *Response {
	if v, ok := Bytes(req.Options, OptionAuthToken); ok && string(v) == "ok" {
		return nil
	}
	return &Response{Code: codes.Unauthorized}
}

// A Block1 transfer whose credential the handler refuses is answered at
// its first block, before anything is buffered.
func TestBlock1RefusedBeforeBuffering(t *testing.T) {
	h := &admitToken{}
	s, addr := startWith(t, Config{}, h)
	c := dial(t, addr)
	for i, tok := range []string{"", "bad"} {
		opts := []message.Option{block1Opt(0, true, 6)}
		if tok != "" {
			opts = append(opts, message.Option{ID: OptionAuthToken, Value: []byte(tok)})
		}
		r := c.rt(con(int32(0x500+i), "topic/a", strings.Repeat("x", 1024), opts...))
		if r.Code != codes.Unauthorized {
			t.Fatalf("token %q: block 0 answered %v, want 4.01", tok, r.Code)
		}
	}
	if st := s.BlockStats(); st.Transfers != 0 || st.Reserved != 0 || st.Buffered != 0 {
		t.Fatalf("refused transfers hold state: %+v", st)
	}
	ok := message.Option{ID: OptionAuthToken, Value: []byte("ok")}
	if r := c.rt(con(0x510, "topic/a", strings.Repeat("x", 1024), block1Opt(0, true, 6), ok)); r.Code != codes.Continue {
		t.Fatalf("admitted block 0: %v", r.Code)
	}
	if r := c.rt(con(0x511, "topic/a", "end", block1Opt(1, false, 6), ok)); r.Code != codes.Changed {
		t.Fatalf("admitted last block: %v", r.Code)
	}
	if h.calls.Load() != 1 {
		t.Fatalf("handler ran %d times, want 1", h.calls.Load())
	}
}

// Many peers start Block1 transfers and leave them unfinished (2,220
// attempts from 37 addresses): the bytes reserved stay within the per-peer
// and the global budget, a newcomer beyond them gets 5.03 with Max-Age, and
// a slow transfer in progress is never evicted for one: it completes.
func TestBlock1Budgets(t *testing.T) {
	const maxBody, peerBudget, budget = 2048, 4096, 16384
	h := &echo{}
	s, addr := startWith(t, Config{MaxBody: maxBody, BlockPeerBudget: peerBudget, BlockBudget: budget, BlockTransfers: 1000}, h)
	check := func() BlockStats {
		t.Helper()
		st := s.BlockStats()
		if st.Reserved > budget || st.MaxPeer > peerBudget || st.Buffered > st.Reserved {
			t.Fatalf("accounting over budget: %+v", st)
		}
		return st
	}
	legit := dialFrom(t, "127.0.0.2", addr)
	payload := strings.Repeat("L", 512)
	if r := legit.rt(con(1, "topic/legit", payload, block1Opt(0, true, 5))); r.Code != codes.Continue {
		t.Fatalf("legit block 0: %v", r.Code)
	}
	var refused, held int
	mid := int32(100)
	for p := 3; p < 40; p++ {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", p), addr)
		for i := range 60 { // each peer tries 60 transfers: its budget holds 2
			mid++
			r := c.rt(con(mid, fmt.Sprintf("topic/x%d", i), strings.Repeat("a", 512), block1Opt(0, true, 5)))
			switch r.Code {
			case codes.Continue:
				held++
			case codes.ServiceUnavailable:
				refused++
				if v, ok := Uint(r.Options, message.MaxAge); !ok || v == 0 {
					t.Fatal("5.03 without Max-Age")
				}
			default:
				t.Fatalf("peer %d transfer %d: %v", p, i, r.Code)
			}
			check()
		}
	}
	st := check()
	if held != budget/maxBody-1 || st.Transfers != budget/maxBody || st.Reserved != budget {
		t.Fatalf("held %d newcomers, stats %+v; want the budget full (%d transfers)", held, st, budget/maxBody)
	}
	if refused != 37*60-held {
		t.Fatalf("refused %d", refused)
	}
	// The legitimate upload continues and completes meanwhile.
	for num := uint32(1); num < 4; num++ {
		r := legit.rt(con(int32(num+1), "topic/legit", payload, block1Opt(num, num < 3, 5)))
		if want := map[bool]codes.Code{true: codes.Continue, false: codes.Changed}[num < 3]; r.Code != want {
			t.Fatalf("legit block %d: %v, want %v", num, r.Code, want)
		}
	}
	h.mu.Lock()
	got := len(h.last)
	h.mu.Unlock()
	if got != 4*512 {
		t.Fatalf("legit body %d bytes", got)
	}
	if st := check(); st.Reserved != budget-maxBody {
		t.Fatalf("completed transfer did not return its reservation: %+v", st)
	}
	// Size1 announces a small body: it reserves only that, and fits.
	c := dialFrom(t, "127.0.0.50", addr)
	if r := c.rt(con(999, "topic/small", strings.Repeat("s", 512), block1Opt(0, true, 5),
		message.Option{ID: message.Size1, Value: EncodeUint(600)})); r.Code != codes.Continue {
		t.Fatalf("Size1 600 transfer: %v", r.Code)
	}
	if st := check(); st.Reserved != budget-maxBody+600 {
		t.Fatalf("Size1 reservation: %+v", st)
	}
}

// Replacing the same keys over and over does not grow the FIFO cache's
// queue (block-0 floods used to leave a queue item per request).
func TestFIFOCacheReplacementBounded(t *testing.T) {
	c := newFIFOCache[int, int](4096)
	now := time.Unix(1000, 0)
	c.put(-1, 0, time.Hour, now) // a live entry at the head of the queue
	for i := range 100000 {
		c.put(i%9, i, time.Hour, now)
		if q := c.queued(); q > 2*10+65 {
			t.Fatalf("after %d puts of 9 keys: %d queue items", i+1, q)
		}
	}
	if c.len() != 10 {
		t.Fatalf("len %d", c.len())
	}
	for i := range 9 {
		e, ok := c.get(i, now)
		if !ok || e.val%9 != i {
			t.Fatalf("key %d lost", i)
		}
	}
	for i := range 1000 {
		c.put(100+i, i, time.Hour, now)
		c.del(100 + i)
	}
	if q := c.queued(); q > 2*10+65 {
		t.Fatalf("after put+del: %d queue items", q)
	}
}

// A device's piggybacked answer to a server-initiated request is read
// whatever its number of options (go-coap's decoder with a small options
// buffer refused more than 8).
func TestRequestAnswerWithManyOptions(t *testing.T) {
	s, _ := startRequester(t, Config{AckTimeout: time.Second, MaxRetransmit: 4})
	pc, addr := peer(t)
	res := make(chan error, 1)
	var resp *Response
	go func() {
		var err error
		resp, err = s.Request(context.Background(), addr, nil, &OutRequest{Code: codes.POST, Options: message.Options{{ID: message.URIPath, Value: []byte("cmd")}}})
		res <- err
	}()
	m, from := readMsg(t, pc)
	var opts []message.Option
	for i := range 12 {
		opts = append(opts, message.Option{ID: message.LocationPath, Value: fmt.Appendf(nil, "l%d", i)})
	}
	ack := rawMsg(message.Acknowledgement, uint16(m.MessageID), m.Token, opts, []byte("ok"), false)
	ack[1] = byte(codes.Changed)
	pc.WriteToUDP(ack, from)
	if err := <-res; err != nil {
		t.Fatal(err)
	}
	if resp.Code != codes.Changed || len(resp.Options) != 12 || string(resp.Payload) != "ok" {
		t.Fatalf("response %v with %d options", resp.Code, len(resp.Options))
	}
}

// Restarting the same transfers over and over (block 0 again and again)
// keeps one entry and one reservation per transfer.
func TestBlock1RestartsDoNotAccumulate(t *testing.T) {
	s := newBlockStore(BlockLimits{MaxBody: 1024, PeerBudget: 16 << 10, Budget: 64 << 10, MaxTransfers: 100}, time.Minute)
	now := time.Unix(1000, 0)
	payload := make([]byte, 64)
	for i := range 100000 {
		k := transferKey{peer: netip.MustParseAddrPort("10.0.0.1:5683"), path: fmt.Sprint(i % 9)}
		if res, _ := s.addBlock1(k, block{num: 0, more: true, szx: 2}, payload, 0, false, now); res != block1Continue {
			t.Fatalf("restart %d: %v", i, res)
		}
	}
	if st := s.stats(); st.Transfers != 9 || st.Reserved != 9*1024 || st.Buffered != 9*64 {
		t.Fatalf("after 100000 restarts of 9 transfers: %+v", st)
	}
}

// admitAnonymous admits "auth" without a credential, as anonymous.
type admitAnonymous struct{ echo }

func (a *admitAnonymous) Admit(_ context.Context, req *Request) *Response {
	if len(req.Path) == 1 && req.Path[0] == "auth" {
		req.Anonymous = true
	}
	return nil
}

// Transfers admitted without a credential are capped at AnonymousMaxBody
// each and an eighth of the budget together: many of them (from many
// addresses) cannot keep an authenticated upload out.
func TestBlock1AnonymousShare(t *testing.T) {
	const budget = 64 << 10
	h := &admitAnonymous{}
	s, addr := startWith(t, Config{MaxBody: 16 << 10, BlockPeerBudget: 32 << 10, BlockBudget: budget}, h)
	mid := int32(0x700)
	admitted := 0
	for p := 2; p < 10; p++ {
		c := dialFrom(t, fmt.Sprintf("127.0.0.%d", p), addr)
		mid++
		r := c.rt(con(mid, "auth", strings.Repeat("a", 1024), block1Opt(0, true, 6)))
		switch r.Code {
		case codes.Continue:
			admitted++
		case codes.ServiceUnavailable:
		default:
			t.Fatalf("anonymous transfer: %v", r.Code)
		}
	}
	st := s.BlockStats()
	if admitted != budget/8/AnonymousMaxBody || st.Anonymous != budget/8 {
		t.Fatalf("%d anonymous transfers admitted, stats %+v; want %d holding an eighth of the budget", admitted, st, budget/8/AnonymousMaxBody)
	}
	// An anonymous body beyond AnonymousMaxBody is 4.13.
	c := dialFrom(t, "127.0.0.20", addr)
	if r := c.rt(con(0x7f0, "auth", strings.Repeat("b", 1024), block1Opt(0, true, 6),
		message.Option{ID: message.Size1, Value: EncodeUint(AnonymousMaxBody + 1)})); r.Code != codes.RequestEntityTooLarge {
		t.Fatalf("anonymous Size1 over the cap: %v, want 4.13", r.Code)
	} else if v, _ := Uint(r.Options, message.Size1); v != AnonymousMaxBody {
		t.Fatalf("4.13 with Size1 %d, want %d", v, AnonymousMaxBody)
	}
	// An authenticated (not anonymous) upload still gets its reservation.
	if r := c.rt(con(0x7f1, "topic/a", strings.Repeat("c", 1024), block1Opt(0, true, 6))); r.Code != codes.Continue {
		t.Fatalf("upload during the anonymous flood: %v", r.Code)
	}
}
