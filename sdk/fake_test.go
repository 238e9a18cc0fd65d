package sdk

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// docs/protocol.md §3.5 test vectors (public demo credentials).
const (
	vecPK   = "a1MZxOdcBnO"
	vecDN   = "test_01"
	vecDS   = "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56"
	vecCID  = "a1MZxOdcBnO.test_01"
	vecSign = "2db0e24ea7eb7f2570fa153fa5559f74" // hmacmd5, without seq
)

var vecCreds = Credentials{ProductKey: vecPK, DeviceName: vecDN, DeviceSecret: vecDS}

// fakeServer is a CoAP server on 127.0.0.1:0 built on the go-coap codec only.
// handle runs on the fake's single read goroutine for every datagram.
type fakeServer struct {
	t      *testing.T
	conn   *net.UDPConn
	handle func(f *fakeServer, m message.Message, from *net.UDPAddr)

	mu  sync.Mutex
	got []message.Message // guarded by mu; every decoded datagram, in order

	wg sync.WaitGroup
}

func newFakeServer(t *testing.T, handle func(f *fakeServer, m message.Message, from *net.UDPAddr)) *fakeServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeServer{t: t, conn: conn, handle: handle}
	f.wg.Add(1)
	go f.loop()
	t.Cleanup(func() {
		_ = conn.Close()
		f.wg.Wait()
	})
	return f
}

func (f *fakeServer) loop() {
	defer f.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := f.conn.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		data := append([]byte(nil), buf[:n]...)
		m := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
			f.t.Errorf("fake: undecodable datagram %x: %v", data, err)
			continue
		}
		f.mu.Lock()
		f.got = append(f.got, m)
		f.mu.Unlock()
		f.handle(f, m, from)
	}
}

func (f *fakeServer) addr() string { return f.conn.LocalAddr().String() }

func (f *fakeServer) received() []message.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]message.Message(nil), f.got...)
}

func (f *fakeServer) send(to *net.UDPAddr, m message.Message) {
	f.t.Helper()
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		f.t.Errorf("fake: size: %v", err)
		return
	}
	buf := make([]byte, size)
	if _, err := coder.DefaultCoder.Encode(m, buf); err != nil {
		f.t.Errorf("fake: encode: %v", err)
		return
	}
	if _, err := f.conn.WriteToUDP(buf, to); err != nil && !errors.Is(err, net.ErrClosed) {
		f.t.Errorf("fake: write: %v", err)
	}
}

// reply answers req with a piggybacked response.
func (f *fakeServer) reply(to *net.UDPAddr, req message.Message, code codes.Code, payload []byte, opts ...message.Option) {
	f.t.Helper()
	typ := message.Acknowledgement
	if req.Type == message.NonConfirmable {
		typ = message.NonConfirmable
	}
	var o message.Options
	for _, op := range opts {
		o = o.Add(op)
	}
	f.send(to, message.Message{Type: typ, Code: code, MessageID: req.MessageID, Token: req.Token, Options: o, Payload: payload})
}

// requests returns the received requests (no ACK/RST) whose first Uri-Path
// segment is first.
func (f *fakeServer) requests(first string) []message.Message {
	var out []message.Message
	for _, m := range f.received() {
		if p := uriPath(m); len(p) > 0 && p[0] == first {
			out = append(out, m)
		}
	}
	return out
}

func uriPath(m message.Message) []string {
	var p []string
	for _, o := range m.Options {
		if o.ID == message.URIPath {
			p = append(p, string(o.Value))
		}
	}
	return p
}

func optString(m message.Message, id message.OptionID) string {
	v, err := m.Options.GetBytes(id)
	if err != nil {
		return ""
	}
	return string(v)
}

// stdServer answers /auth with tokens tok-1, tok-2… and /topic/… with 2.04,
// option 2090 = 1000+n and a reply echoing the request's thing-model id.
type stdServer struct {
	mu       sync.Mutex
	auths    int // guarded by mu
	topics   int // guarded by mu
	validTok map[string]bool
	// onTopic, if set, may answer a topic request itself (return true).
	onTopic func(f *fakeServer, m message.Message, from *net.UDPAddr, n int) bool
	// onAuth, if set, may answer an auth request itself (return true).
	onAuth func(f *fakeServer, m message.Message, from *net.UDPAddr, n int) bool
}

func (s *stdServer) handle(f *fakeServer, m message.Message, from *net.UDPAddr) {
	if m.Type == message.Acknowledgement || m.Type == message.Reset {
		return
	}
	p := uriPath(m)
	if len(p) == 0 {
		f.reply(from, m, codes.NotFound, nil)
		return
	}
	switch p[0] {
	case "auth":
		s.mu.Lock()
		s.auths++
		n := s.auths
		tok := fmt.Sprintf("tok-%d", n)
		if s.validTok == nil {
			s.validTok = map[string]bool{}
		}
		s.validTok[tok] = true
		s.mu.Unlock()
		if s.onAuth != nil && s.onAuth(f, m, from, n) {
			return
		}
		cf, _ := m.Options.ContentFormat()
		body := []byte(`{"token":"` + tok + `"}`)
		if cf == CBOR {
			body, _ = cbor.Marshal(map[string]string{"token": tok})
		}
		f.reply(from, m, codes.Content, body, message.Option{ID: message.ContentFormat, Value: encodeUint(uint32(cf))})
	case "topic":
		s.mu.Lock()
		s.topics++
		n := s.topics
		s.mu.Unlock()
		if s.onTopic != nil && s.onTopic(f, m, from, n) {
			return
		}
		f.reply(from, m, codes.Changed, replyFor(m), message.Option{ID: OptionMessageID, Value: []byte(fmt.Sprint(1000 + n))})
	default:
		f.reply(from, m, codes.NotFound, nil)
	}
}

// replyFor builds the reply JSON echoing the id of a JSON thing-model body.
func replyFor(m message.Message) []byte {
	var req struct {
		ID string `json:"id"`
	}
	_ = json.Unmarshal(m.Payload, &req)
	b, _ := json.Marshal(map[string]any{"id": req.ID, "code": 200, "data": map[string]any{}, "message": "success"})
	return b
}

func (s *stdServer) counts() (auths, topics int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.auths, s.topics
}

// dialTest dials f with the vector credentials unless opts override them.
func dialTest(t *testing.T, f *fakeServer, opts ...Option) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	c, err := Dial(ctx, f.addr(), append([]Option{WithCredentials(vecCreds)}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// fastParams are short transmission parameters for retransmission tests.
var fastParams = TransmissionParams{AckTimeout: 5 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 3}

func joinPath(p []string) string { return strings.Join(p, "/") }
