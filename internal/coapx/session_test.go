package coapx

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// fakeSession records what the server writes back through it.
type fakeSession struct {
	id   uint64
	who  string
	mu   sync.Mutex
	sent [][]byte
	got  chan struct{}
}

func (f *fakeSession) SessionID() uint64 { return f.id }
func (f *fakeSession) Identity() any     { return f.who }
func (f *fakeSession) WriteDatagram(b []byte) error {
	f.mu.Lock()
	f.sent = append(f.sent, append([]byte(nil), b...))
	f.mu.Unlock()
	f.got <- struct{}{}
	return nil
}

// TestServeSession: datagrams of a secured session are answered through
// the session, the handler sees its identity, and a duplicate from a new
// address (RFC 9146 address change) is still a duplicate of the session.
func TestServeSession(t *testing.T) {
	var seen any
	h := HandlerFunc(func(_ context.Context, req *Request) *Response {
		seen = req.Session.Identity()
		return &Response{Code: codes.Changed}
	})
	s := NewServer(Config{Workers: 2}, h, NewMetrics(nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	sess := &fakeSession{id: 7, who: "pk/dk", got: make(chan struct{}, 4)}
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 42, Token: []byte{1}}
	m.Options = message.Options{{ID: message.URIPath, Value: []byte("x")}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	coder.DefaultCoder.Encode(m, b)

	s.ServeSession(b, netip.MustParseAddrPort("127.0.0.1:1000"), sess)
	select {
	case <-sess.got:
	case <-time.After(10 * time.Second):
		t.Fatal("no response through the session")
	}
	s.ServeSession(b, netip.MustParseAddrPort("127.0.0.1:2000"), sess)
	select {
	case <-sess.got:
	case <-time.After(10 * time.Second):
		t.Fatal("duplicate not answered from the cache")
	}
	if seen != "pk/dk" {
		t.Fatalf("identity %v", seen)
	}
	sess.mu.Lock()
	defer sess.mu.Unlock()
	var r message.Message
	if _, err := coder.DefaultCoder.Decode(sess.sent[1], &r); err != nil || r.Code != codes.Changed || r.MessageID != 42 {
		t.Fatalf("replayed response %v %v", r, err)
	}
	if string(sess.sent[0]) != string(sess.sent[1]) {
		t.Fatal("duplicate got a different response")
	}
}
