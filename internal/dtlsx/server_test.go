package dtlsx

import (
	"context"
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const secret = "devsecret1"

// lookup knows one device, pk/dk, keyed with secret.
func lookup(_ context.Context, id dtlspsk.Identity) ([]byte, error) {
	if id.ProductKey != "pk" {
		return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonUnknownProduct, Msg: id.ProductKey}
	}
	if id.DeviceKey != "dk" {
		return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonUnknownDevice, Msg: id.DeviceKey}
	}
	return dtlspsk.Key(secret), nil
}

type testServer struct {
	*Server
	addr    *net.UDPAddr
	reg     *prometheus.Registry
	skew    atomic.Int64 // the server's clock runs this far ahead of time.Now
	handled atomic.Int64 // requests that reached the CoAP handler
	stop    func()       // ends Serve and waits for it (idempotent)
}

// start runs a dtlsx.Server whose CoAP handler answers 2.04 with the
// session's identity as payload.
func start(t *testing.T, mod func(*Config)) *testServer {
	return startCoAP(t, mod, coapx.Config{Workers: 4, Transport: "coap-dtls"})
}

func startCoAP(t *testing.T, mod func(*Config), ccfg coapx.Config) *testServer {
	t.Helper()
	ts := &testServer{reg: prometheus.NewRegistry()}
	h := coapx.HandlerFunc(func(_ context.Context, req *coapx.Request) *coapx.Response {
		ts.handled.Add(1)
		who := "none"
		if id, ok := req.Session.Identity().(*dtlspsk.Identity); ok {
			who = id.ProductKey + "/" + id.DeviceKey
		}
		return &coapx.Response{Code: codes.Changed, Payload: []byte(who)}
	})
	coap := coapx.NewServer(ccfg, h, nil, nil)
	cfg := Config{LookupPSK: lookup, ConnectionID: true, Registerer: ts.reg, HandshakeRate: -1,
		Now: func() time.Time { return time.Now().Add(time.Duration(ts.skew.Load())) }}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg, coap)
	if err != nil {
		t.Fatal(err)
	}
	ts.Server = srv
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = conn.LocalAddr().(*net.UDPAddr)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 2)
	go func() { coap.Run(ctx); done <- struct{}{} }()
	go func() { srv.Serve(ctx, conn); done <- struct{}{} }()
	var once sync.Once
	ts.stop = func() { once.Do(func() { cancel(); <-done; <-done }) }
	t.Cleanup(ts.stop)
	return ts
}

func (ts *testServer) failures(reason string) float64 {
	var d dto.Metric
	ts.m.failures.WithLabelValues(reason).Write(&d)
	return d.GetCounter().GetValue()
}

// dialPSK makes a PSK handshake with identity and key over a fresh socket.
func dialPSK(t *testing.T, addr *net.UDPAddr, identity string, key []byte, suite dtls.CipherSuiteID, cid bool) (*dtls.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	return handshake(t, pc, addr, identity, key, suite, cid)
}

func handshake(t *testing.T, pc net.PacketConn, addr net.Addr, identity string, key []byte, suite dtls.CipherSuiteID, cid bool) (*dtls.Conn, error) {
	t.Helper()
	opts := []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(suite),
	}
	if cid {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	c, err := dtls.ClientWithOptions(pc, addr, opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return c, nil
}

var mid atomic.Uint32

// post sends a CON POST over c and returns the response.
func post(t *testing.T, c net.Conn) message.Message {
	t.Helper()
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid.Add(1) & 0xffff), Token: []byte{1, 2}}
	m.Options = message.Options{{ID: message.URIPath, Value: []byte("topic")}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	coder.DefaultCoder.Encode(m, b)
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("read response: %v", err)
	}
	var r message.Message
	if _, err := coder.DefaultCoder.Decode(buf[:n], &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPSKSuites(t *testing.T) {
	ts := start(t, nil)
	for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256} {
		t.Run(cipherName(suite), func(t *testing.T) {
			c, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), suite, false)
			if err != nil {
				t.Fatal(err)
			}
			r := post(t, c)
			if r.Code != codes.Changed || string(r.Payload) != "pk/dk" {
				t.Fatalf("response %v %q", r.Code, r.Payload)
			}
		})
	}
	for _, suite := range []string{"psk_aes_128_ccm_8", "psk_aes_128_cbc_sha256"} {
		var d dto.Metric
		ts.m.handshakes.WithLabelValues(suite).Write(&d)
		if d.GetCounter().GetValue() != 1 {
			t.Errorf("handshakes{suite=%s} = %v", suite, d.GetCounter().GetValue())
		}
	}
	waitFor(t, func() bool { return ts.Sessions() == 0 }, "sessions closed by the clients' close_notify")
}

func TestRefusals(t *testing.T) {
	ts := start(t, nil)
	tests := []struct {
		name, identity, reason string
		key                    []byte
	}{
		{"malformed", "pk,dk,2", dtlspsk.ReasonMalformedIdentity, dtlspsk.Key(secret)},
		{"bad lifetime", "pk,dk,2,10", dtlspsk.ReasonBadLifetime, dtlspsk.Key(secret)},
		{"unknown product", "px,dk,2,60", dtlspsk.ReasonUnknownProduct, dtlspsk.Key(secret)},
		{"unknown device", "pk,dx,2,60", dtlspsk.ReasonUnknownDevice, dtlspsk.Key(secret)},
		{"wrong key", "pk,dk,2,60", dtlspsk.ReasonBadKey, dtlspsk.Key("other")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dialPSK(t, ts.addr, tt.identity, tt.key, dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			// Refused by an alert, not left to time out.
			if !strings.Contains(err.Error(), "alert:") {
				t.Errorf("refusal without an alert: %v", err)
			}
			waitFor(t, func() bool { return ts.failures(tt.reason) == 1 }, "failure "+tt.reason)
		})
	}
	// A good device still connects: refusals touched no other session.
	if _, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return ts.Handshakes() == 0 && ts.Sessions() == 1 }, "only the good session left")
}

// TestSpoofedClientHellos: ClientHellos whose HelloVerifyRequest is never
// answered (a spoofed source cannot) establish no session, stay within
// the handshake limit, and are dropped after the cookie timeout.
func TestSpoofedClientHellos(t *testing.T) {
	ts := start(t, func(c *Config) {
		c.MaxHandshakes = 50
		c.CookieTimeout = 500 * time.Millisecond
	})
	hello := clientHelloBytes(t)
	var socks []*net.UDPConn
	for range 200 {
		pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, pc)
		pc.WriteToUDP(hello, ts.addr)
	}
	defer func() {
		for _, s := range socks {
			s.Close()
		}
	}()
	// pion answers with a HelloVerifyRequest (cookie on by default).
	buf := make([]byte, 2048)
	socks[0].SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := socks[0].ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no HelloVerifyRequest: %v", err)
	}
	if n < 26 || buf[0] != contentHandshake || buf[13] != 3 { // hello_verify_request
		t.Fatalf("answer is not a HelloVerifyRequest: % x", buf[:min(n, 32)])
	}
	if h := ts.Handshakes(); h > 50 {
		t.Fatalf("%d handshakes in flight, limit 50", h)
	}
	waitFor(t, func() bool { return ts.failures(ReasonLimitHandshakes) == 150 }, "150 hellos refused by max_handshakes")
	waitFor(t, func() bool { return ts.Handshakes() == 0 }, "handshakes dropped after the cookie timeout")
	if ts.Sessions() != 0 {
		t.Fatalf("%d sessions from spoofed hellos", ts.Sessions())
	}
	ts.mu.Lock()
	left := len(ts.byAddr)
	ts.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d peers still tracked", left)
	}
	if ts.failures(ReasonNoCookieEcho) != 50 {
		t.Fatalf("no_cookie_echo = %v, want 50", ts.failures(ReasonNoCookieEcho))
	}
	// Legitimate clients are served once the flood is gone.
	if _, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false); err != nil {
		t.Fatal(err)
	}
}

// clientHelloBytes captures the first flight of a pion client.
func clientHelloBytes(t *testing.T) []byte {
	t.Helper()
	srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	c, err := dtls.ClientWithOptions(pc, srv.LocalAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return dtlspsk.Key(secret), nil }),
		dtls.WithPSKIdentityHint([]byte("pk,dk,2,60")), dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go c.HandshakeContext(ctx)
	buf := make([]byte, 2048)
	srv.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := srv.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := parseClientHello(buf[:n]); !ok {
		t.Fatalf("not a ClientHello: % x", buf[:n])
	}
	return append([]byte(nil), buf[:n]...)
}

func TestLimits(t *testing.T) {
	t.Run("rate", func(t *testing.T) {
		ts := start(t, func(c *Config) { c.HandshakeRate = 1 })
		if _, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false); err != nil {
			t.Fatal(err)
		}
		pc, _ := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		defer pc.Close()
		pc.WriteToUDP(clientHelloBytes(t), ts.addr)
		waitFor(t, func() bool { return ts.failures(ReasonRateLimited) >= 1 }, "rate_limited")
		if ts.Sessions() != 1 {
			t.Fatalf("sessions %d", ts.Sessions())
		}
	})
	t.Run("sessions", func(t *testing.T) {
		ts := start(t, func(c *Config) { c.MaxSessions = 1 })
		c, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false); err == nil {
			t.Fatal("second session accepted beyond max_sessions")
		}
		if ts.failures(ReasonLimitSessions) < 1 {
			t.Fatal("limit_sessions not counted")
		}
		// The established session is unaffected.
		if r := post(t, c); r.Code != codes.Changed {
			t.Fatalf("established session: %v", r.Code)
		}
	})
}

// TestIdleExpiry: a session idle for its lifetime is closed and released.
func TestIdleExpiry(t *testing.T) {
	var downs atomic.Int32
	ts := start(t, func(c *Config) {
		c.OnDown = func(s *Session, reason string) {
			if reason == CloseIdle {
				downs.Add(1)
			}
		}
	})
	c, err := dialPSK(t, ts.addr, "pk,dk,2,30", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c)
	ts.skew.Store(int64(29 * time.Second))
	ts.sweep(ts.cfg.Now())
	if ts.Sessions() != 1 {
		t.Fatal("closed before its lifetime")
	}
	ts.skew.Store(int64(31 * time.Second))
	ts.sweep(ts.cfg.Now())
	waitFor(t, func() bool { return ts.Sessions() == 0 && downs.Load() == 1 }, "idle session closed")
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.byAddr) != 0 || len(ts.byCID) != 0 {
		t.Fatalf("routes left: %d addr, %d cid", len(ts.byAddr), len(ts.byCID))
	}
}

// TestConnectionID: with a CID, the client continues from a new source
// port (NAT rebinding) on the same session; without one it cannot.
func TestConnectionID(t *testing.T) {
	ts := start(t, nil)
	for _, cid := range []bool{true, false} {
		t.Run(fmt.Sprintf("cid=%v", cid), func(t *testing.T) {
			relay := newRelay(t, ts.addr)
			c, err := handshake(t, relay.client, relay.addr(), "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, cid)
			if err != nil {
				t.Fatal(err)
			}
			if r := post(t, c); r.Code != codes.Changed {
				t.Fatal(r.Code)
			}
			relay.rebind(t) // the NAT gives the client a new public port
			if !cid {
				if err := tryPost(c); err == nil {
					t.Fatal("session survived an address change without CID")
				}
				return
			}
			// Like a device, retransmit the CON until answered: pion hands the
			// first record from the new address to the reader before it
			// moves the session's peer address (RFC 9146 update after the
			// data is queued), so the answer to that one record may still
			// go to the old address under load. The retransmission is
			// answered at the new one.
			if r := postRetransmit(t, c); r.Code != codes.Changed || string(r.Payload) != "pk/dk" {
				t.Fatalf("after rebinding: %v %q", r.Code, r.Payload)
			}
		})
	}
}

// postRetransmit sends one CON POST over c as a device does (RFC 7252
// §4.2: the same message again after ACK_TIMEOUT, doubling, at most 4
// times) and returns the first response.
func postRetransmit(t *testing.T, c net.Conn) message.Message {
	t.Helper()
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid.Add(1) & 0xffff), Token: []byte{1, 2}}
	m.Options = message.Options{{ID: message.URIPath, Value: []byte("topic")}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	coder.DefaultCoder.Encode(m, b)
	buf := make([]byte, 2048)
	wait := 2 * time.Second
	for try := 0; try <= 4; try, wait = try+1, wait*2 {
		if _, err := c.Write(b); err != nil {
			t.Fatal(err)
		}
		c.SetReadDeadline(time.Now().Add(wait))
		n, err := c.Read(buf)
		if err != nil {
			continue
		}
		var r message.Message
		if _, err := coder.DefaultCoder.Decode(buf[:n], &r); err != nil {
			t.Fatal(err)
		}
		return r
	}
	t.Fatal("no response after 4 retransmissions")
	return message.Message{}
}

func tryPost(c net.Conn) error {
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid.Add(1) & 0xffff), Token: []byte{1}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	coder.DefaultCoder.Encode(m, b)
	if _, err := c.Write(b); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(time.Second)) // the caller expects no answer
	_, err := c.Read(make([]byte, 2048))
	return err
}

// relay is a UDP NAT between a client socket and the server: it forwards
// from its own upstream socket, which rebind replaces.
type relay struct {
	client *net.UDPConn // the device's socket
	front  *net.UDPConn // what the device talks to
	up     atomic.Pointer[net.UDPConn]
	server *net.UDPAddr

	mu         sync.Mutex
	toServer   [][]byte // every datagram forwarded, in order
	fromServer [][]byte
}

// captured returns copies of the datagrams forwarded so far.
func (r *relay) captured() (toServer, fromServer [][]byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]byte(nil), r.toServer...), append([][]byte(nil), r.fromServer...)
}

func (r *relay) record(dst *[][]byte, b []byte) {
	r.mu.Lock()
	*dst = append(*dst, append([]byte(nil), b...))
	r.mu.Unlock()
}

func newRelay(t *testing.T, server *net.UDPAddr) *relay {
	t.Helper()
	r := &relay{server: server}
	var err error
	if r.client, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	if r.front, err = net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
		t.Fatal(err)
	}
	r.rebind(t)
	go func() { // device -> server
		buf := make([]byte, 65536)
		for {
			n, _, err := r.front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.record(&r.toServer, buf[:n])
			r.up.Load().WriteToUDP(buf[:n], r.server)
		}
	}()
	t.Cleanup(func() { r.front.Close(); r.up.Load().Close(); r.client.Close() })
	return r
}

func (r *relay) addr() net.Addr { return r.front.LocalAddr() }

func (r *relay) rebind(t *testing.T) {
	up, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if old := r.up.Swap(up); old != nil {
		old.Close()
	}
	go func() { // server -> device
		buf := make([]byte, 65536)
		for {
			n, _, err := up.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.record(&r.fromServer, buf[:n])
			r.front.WriteToUDP(buf[:n], r.client.LocalAddr().(*net.UDPAddr))
		}
	}()
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second) // bounds a failing test only
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestParseClientHello(t *testing.T) {
	if _, ok := parseClientHello([]byte{22, 0xfe, 0xfd}); ok {
		t.Fatal("short datagram accepted")
	}
	b := clientHelloBytes(t)
	ch, ok := parseClientHello(b)
	if !ok || ch.cookie {
		t.Fatalf("first ClientHello: %+v %v", ch, ok)
	}
	bad := append([]byte(nil), b...)
	bad[3] = 1 // epoch 1
	if _, ok := parseClientHello(bad); ok {
		t.Fatal("epoch 1 accepted")
	}
}

// TestRestartSamePort: a device that restarts and handshakes again from the
// same address and port replaces its old session, but only once the new
// handshake echoed its cookie.
func TestRestartSamePort(t *testing.T) {
	var replaced atomic.Int32
	ts := start(t, func(c *Config) {
		c.OnDown = func(_ *Session, reason string) {
			if reason == CloseReplaced {
				replaced.Add(1)
			}
		}
	})
	pc1, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c1, err := handshake(t, pc1, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c1)
	// A ClientHello from the session's address whose cookie never comes
	// back (spoofed) does not end the session.
	pc1.WriteToUDP(clientHelloBytes(t), ts.addr)
	waitFor(t, func() bool { return ts.Handshakes() == 1 }, "pending handshake")
	if r := post(t, c1); r.Code != codes.Changed {
		t.Fatalf("established session after a spoofed hello: %v", r.Code)
	}
	ts.skew.Store(int64(6 * time.Second)) // past the cookie timeout
	ts.sweep(ts.cfg.Now())
	ts.skew.Store(0)
	waitFor(t, func() bool { return ts.Handshakes() == 0 && ts.Sessions() == 1 }, "spoofed hello dropped, session kept")
	port := pc1.LocalAddr().(*net.UDPAddr).Port
	pc1.Close() // power loss: no close_notify
	pc2, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
	if err != nil {
		t.Skipf("port %d not reusable: %v", port, err)
	}
	c2, err := handshake(t, pc2, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
	if err != nil {
		t.Fatalf("second handshake from the same port: %v", err)
	}
	if r := post(t, c2); r.Code != codes.Changed {
		t.Fatal(r.Code)
	}
	waitFor(t, func() bool { return replaced.Load() == 1 && ts.Sessions() == 1 }, "old session replaced")
}
