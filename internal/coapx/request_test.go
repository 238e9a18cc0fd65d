package coapx

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

func TestRetransmitTimeout(t *testing.T) {
	for _, tt := range []struct {
		rnd     float64
		attempt int
		want    time.Duration
	}{
		{1, 0, 2 * time.Second},
		{1.5, 0, 3 * time.Second},
		{1, 1, 4 * time.Second},
		{1.5, 4, 48 * time.Second}, // the last wait of MAX_RETRANSMIT 4 (RFC 7252 §4.8.2)
	} {
		if got := retransmitTimeout(2*time.Second, tt.rnd, tt.attempt); got != tt.want {
			t.Errorf("rnd %v attempt %d: %v, want %v", tt.rnd, tt.attempt, got, tt.want)
		}
	}
}

// startRequester serves on loopback and returns the server for Request.
func startRequester(t *testing.T, cfg Config) (*Server, *net.UDPAddr) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(cfg, &echo{}, NewMetrics(nil), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, conn); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	for s.serving.Load() == nil {
		time.Sleep(time.Millisecond)
	}
	return s, conn.LocalAddr().(*net.UDPAddr)
}

// peer is a real UDP socket playing the device.
func peer(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c, c.LocalAddr().(*net.UDPAddr).AddrPort()
}

func readMsg(t *testing.T, c *net.UDPConn) (*message.Message, *net.UDPAddr) {
	t.Helper()
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, from, err := c.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("peer read: %v", err)
	}
	m := &message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], m); err != nil {
		t.Fatal(err)
	}
	return m, from
}

func TestRequest(t *testing.T) {
	cfg := Config{AckTimeout: 50 * time.Millisecond, MaxRetransmit: 2}
	req := &OutRequest{Code: codes.POST, Options: message.Options{{ID: message.URIPath, Value: []byte("topic")}}, Payload: []byte("cmd")}

	t.Run("piggybacked ACK after a lost first transmission", func(t *testing.T) {
		s, _ := startRequester(t, cfg)
		pc, addr := peer(t)
		res := make(chan error, 1)
		var resp *Response
		go func() {
			var err error
			resp, err = s.Request(context.Background(), addr, nil, req)
			res <- err
		}()
		first, _ := readMsg(t, pc) // "lost": not answered
		m, from := readMsg(t, pc)  // the retransmission
		if m.MessageID != first.MessageID || m.Type != message.Confirmable || string(m.Payload) != "cmd" || len(m.Token) == 0 {
			t.Fatalf("retransmission %+v differs from %+v", m, first)
		}
		ack := encodeMsg(t, message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: m.Token, Payload: []byte("ok")})
		// An ACK with the wrong token does not complete it; the right one does.
		wrong := encodeMsg(t, message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: m.MessageID, Token: []byte("x"), Payload: []byte("no")})
		pc.WriteToUDP(wrong, from)
		pc.WriteToUDP(ack, from)
		if err := <-res; err != nil {
			t.Fatal(err)
		}
		if resp.Code != codes.Changed || string(resp.Payload) != "ok" {
			t.Fatalf("response %+v", resp)
		}
	})
	t.Run("RST", func(t *testing.T) {
		s, _ := startRequester(t, cfg)
		pc, addr := peer(t)
		res := make(chan error, 1)
		go func() { _, err := s.Request(context.Background(), addr, nil, req); res <- err }()
		m, from := readMsg(t, pc)
		pc.WriteToUDP([]byte{0x70, 0, byte(m.MessageID >> 8), byte(m.MessageID)}, from)
		if err := <-res; !errors.Is(err, ErrReset) {
			t.Fatalf("err %v, want ErrReset", err)
		}
	})
	t.Run("timeout after MAX_RETRANSMIT", func(t *testing.T) {
		s, _ := startRequester(t, cfg)
		pc, addr := peer(t)
		res := make(chan error, 1)
		go func() { _, err := s.Request(context.Background(), addr, nil, req); res <- err }()
		for range 1 + cfg.MaxRetransmit {
			readMsg(t, pc)
		}
		if err := <-res; !errors.Is(err, ErrTimeout) {
			t.Fatalf("err %v, want ErrTimeout", err)
		}
	})
	t.Run("requests still served beside it", func(t *testing.T) {
		_, addr := startRequester(t, cfg)
		c := dial(t, addr)
		b := encodeMsg(t, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 7, Token: []byte{1},
			Options: message.Options{{ID: message.URIPath, Value: []byte("a")}}})
		c.conn.Write(b)
		buf := make([]byte, 512)
		c.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c.conn.Read(buf); err != nil {
			t.Fatal(err)
		}
	})
}
