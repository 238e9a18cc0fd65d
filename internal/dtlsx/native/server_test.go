package native

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math"
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

// lookupDK knows one device, pk/dk, keyed with secret.
func lookupDK(_ context.Context, id dtlspsk.Identity) ([]byte, error) {
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
	addr *net.UDPAddr
}

// start runs a Server whose CoAP handler answers 2.04 with the session's
// identity as payload.
func start(t *testing.T, mod func(*Config)) *testServer {
	t.Helper()
	h := coapx.HandlerFunc(func(_ context.Context, req *coapx.Request) *coapx.Response {
		who := "none"
		if id, ok := req.Session.Identity().(*dtlspsk.Identity); ok {
			who = id.ProductKey + "/" + id.DeviceKey
		}
		return &coapx.Response{Code: codes.Changed, Payload: []byte(who)}
	})
	coap := coapx.NewServer(coapx.Config{Workers: 4, Transport: "coap-dtls"}, h, nil, nil)
	cfg := Config{LookupPSK: lookupDK, ConnectionID: true, Registerer: prometheus.NewRegistry()}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := New(cfg, coap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: srv, addr: conn.LocalAddr().(*net.UDPAddr)}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = coap.Run(ctx) })
	wg.Go(func() { _ = srv.Serve(ctx, conn) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return ts
}

func (ts *testServer) failures(reason string) float64 {
	var d dto.Metric
	_ = ts.Server.failures.WithLabelValues(reason).Write(&d)
	return d.GetCounter().GetValue()
}

func (ts *testServer) closedAs(reason string) float64 {
	var d dto.Metric
	_ = ts.closed.WithLabelValues(reason).Write(&d)
	return d.GetCounter().GetValue()
}

func waitFor(t *testing.T, cond func() bool, what string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("timed out waiting for %s", what)
}

// alertWatch is a client socket that records the description of every
// plaintext (epoch 0) alert the client receives.
type alertWatch struct {
	net.PacketConn
	mu     sync.Mutex
	alerts []byte
}

func (a *alertWatch) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := a.PacketConn.ReadFrom(b)
	if err == nil && n == 15 && b[0] == 21 && b[3] == 0 && b[4] == 0 {
		a.mu.Lock()
		a.alerts = append(a.alerts, b[14])
		a.mu.Unlock()
	}
	return n, addr, err
}

func (a *alertWatch) got() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]byte(nil), a.alerts...)
}

// dialPSK makes a PSK handshake with identity and key over pc (nil: a
// fresh socket).
func dialPSK(t *testing.T, pc net.PacketConn, addr *net.UDPAddr, identity string, key []byte, suite dtls.CipherSuiteID) (*dtls.Conn, error) {
	t.Helper()
	if pc == nil {
		c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		pc = c
	}
	c, err := dtls.ClientWithOptions(pc, addr,
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(suite))
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
func post(t *testing.T, c net.Conn) (message.Message, error) {
	t.Helper()
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid.Add(1) & 0xffff), Token: []byte{1, 2}}
	m.Options = message.Options{{ID: message.URIPath, Value: []byte("topic")}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		return message.Message{}, err
	}
	buf := make([]byte, 2048)
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		return message.Message{}, err
	}
	var r message.Message
	if _, err := coder.DefaultCoder.Decode(buf[:n], &r); err != nil {
		t.Fatal(err)
	}
	return r, nil
}

var pskSuites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256}

// TestRefusalAlerts: a malformed identity, an unknown product or device, a
// disabled device and a wrong key all get decrypt_error after the client's
// Finished (RFC 4279 §2: probing does not tell which devices exist, nor
// whether an identity parses); an unreachable registry gets
// handshake_failure; never internal_error. Each refusal is counted once,
// under its own reason.
func TestRefusalAlerts(t *testing.T) {
	ts := start(t, func(c *Config) {
		c.LookupPSK = func(ctx context.Context, id dtlspsk.Identity) ([]byte, error) {
			switch id.DeviceKey {
			case "off":
				return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonDisabled, Msg: "pk/off"}
			case "down":
				return nil, errors.New("database is down")
			}
			return lookupDK(ctx, id)
		}
	})
	tests := []struct {
		name, identity, reason string
		key                    []byte
		alert                  byte
	}{
		{"malformed", "pk,dk,2", dtlspsk.ReasonMalformedIdentity, dtlspsk.Key(secret), 51},
		{"bad lifetime", "pk,dk,2,10", dtlspsk.ReasonBadLifetime, dtlspsk.Key(secret), 51},
		{"unknown product", "px,dk,2,60", dtlspsk.ReasonUnknownProduct, dtlspsk.Key(secret), 51},
		{"unknown device", "pk,dx,2,60", dtlspsk.ReasonUnknownDevice, dtlspsk.Key(secret), 51},
		{"disabled device", "pk,off,2,60", dtlspsk.ReasonDisabled, dtlspsk.Key(secret), 51},
		{"wrong key", "pk,dk,2,60", dtlspsk.ReasonBadKey, dtlspsk.Key("other"), 51},
		{"registry down", "pk,down,2,60", dtlspsk.ReasonStore, dtlspsk.Key(secret), 40},
	}
	for i, suite := range pskSuites {
		for _, tt := range tests {
			t.Run(suite.String()+"/"+tt.name, func(t *testing.T) {
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				w := &alertWatch{PacketConn: pc}
				if _, err := dialPSK(t, w, ts.addr, tt.identity, tt.key, suite); err == nil {
					t.Fatal("handshake succeeded")
				}
				waitFor(t, func() bool { return ts.failures(tt.reason) == float64(i+1) }, "failure "+tt.reason)
				got := w.got()
				if len(got) == 0 || got[0] != tt.alert {
					t.Fatalf("alerts received %v, want first %d", got, tt.alert)
				}
				for _, a := range got {
					if a == 80 {
						t.Fatalf("internal_error sent (alerts %v)", got)
					}
				}
			})
		}
	}
	// Exactly once each: the hidden refusals are not counted as bad_key
	// too, nor as handshake errors.
	for _, tt := range tests {
		if got := ts.failures(tt.reason); got != float64(len(pskSuites)) {
			t.Errorf("%s counted %v times, want %d", tt.reason, got, len(pskSuites))
		}
	}
	if got := ts.failures("handshake_error"); got != 0 {
		t.Errorf("handshake_error counted %v times", got)
	}
}

// TestDecoyKey: the decoy PSK of a refused identity is the same on every
// attempt with that identity, differs between identities, and is not the
// device's key.
func TestDecoyKey(t *testing.T) {
	ts := start(t, nil)
	a1, a2, b := ts.decoyKey([]byte("pk,dx,2,60")), ts.decoyKey([]byte("pk,dx,2,60")), ts.decoyKey([]byte("pk,dy,2,60"))
	if !bytes.Equal(a1, a2) || bytes.Equal(a1, b) || len(a1) != dtlspsk.KeyLen || bytes.Equal(a1, dtlspsk.Key(secret)) {
		t.Fatalf("decoys %x %x %x", a1, a2, b)
	}
	other := start(t, nil)
	if bytes.Equal(other.decoyKey([]byte("pk,dx,2,60")), a1) {
		t.Fatal("two servers derive the same decoy: the key is not per process")
	}
}

// TestKeyMatchesAtEstablishment: a session tells the PSK it was keyed
// with (KeyMatches), so that a secret rotated while the handshake ran is
// caught when the session is bound: here OnUp revokes a session whose key
// is not the device's current one, as gateway.BindSession does. The
// client then reads close_notify, and the session is counted as revoked.
func TestKeyMatchesAtEstablishment(t *testing.T) {
	var current atomic.Value
	current.Store(dtlspsk.Key(secret))
	var matched, other atomic.Int32
	ts := start(t, func(c *Config) {
		c.LookupPSK = func(ctx context.Context, id dtlspsk.Identity) ([]byte, error) {
			key, err := lookupDK(ctx, id)
			if id.DeviceKey == "dk" && id.Lifetime == 120*time.Second {
				current.Store(dtlspsk.Key("rotated")) // rotated while the handshake runs
			}
			return key, err
		}
		c.OnUp = func(ss *Session) {
			if ss.KeyMatches(dtlspsk.Key("other")) {
				other.Add(1)
			}
			if !ss.KeyMatches(current.Load().([]byte)) {
				ss.Revoke()
				return
			}
			matched.Add(1)
		}
	})
	c, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[0])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := post(t, c); err != nil || r.Code != codes.Changed {
		t.Fatalf("post on a session with the current key: %v %v", r.Code, err)
	}
	if matched.Load() != 1 {
		t.Fatalf("KeyMatches(current key) false")
	}
	// The revocation's close_notify follows the server's Finished at once:
	// the client reads it either after its handshake returned or while it
	// completes (then the handshake itself reports it).
	c2, err := dialPSK(t, nil, ts.addr, "pk,dk,2,120", dtlspsk.Key(secret), pskSuites[1])
	switch {
	case err != nil && !strings.Contains(err.Error(), "CloseNotify"):
		t.Fatalf("handshake with a rotated secret: %v, want success or close_notify", err)
	case err == nil:
		_ = c2.SetReadDeadline(time.Now().Add(10 * time.Second))
		if _, err := c2.Read(make([]byte, 100)); err == nil {
			t.Fatal("read on a session keyed with a rotated secret succeeded")
		}
	}
	waitFor(t, func() bool { return ts.closedAs(CloseRevoked) == 1 }, "the stale session closed as revoked")
	if other.Load() != 0 || matched.Load() != 1 {
		t.Fatalf("KeyMatches: other key matched %d times, current %d", other.Load(), matched.Load())
	}
	if len(ts.keys) != 0 {
		t.Fatalf("%d looked-up keys kept after their sessions attached", len(ts.keys))
	}
}

// TestHandshakeRateUnderPressure: while half of max_handshakes are in
// progress (here two handshakes parked in a slow PSK lookup), a source
// address gets dtls.handshake_rate new handshakes (a burst of one here),
// then rate_limited; once the pressure is gone it handshakes again.
func TestHandshakeRateUnderPressure(t *testing.T) {
	release := make(chan struct{})
	var parked atomic.Int32
	ts := start(t, func(c *Config) {
		c.MaxHandshakes, c.MaxHandshakesPerAddress, c.HandshakeRate = 4, 100, 0.001
		c.LookupPSK = func(ctx context.Context, id dtlspsk.Identity) ([]byte, error) {
			if id.DeviceKey == "slow" {
				parked.Add(1)
				select {
				case <-release:
				case <-ctx.Done():
				}
			}
			return lookupDK(ctx, id)
		}
	})
	var wg sync.WaitGroup
	for range 2 {
		wg.Go(func() { _, _ = dialPSK(t, nil, ts.addr, "pk,slow,2,60", dtlspsk.Key(secret), pskSuites[0]) })
	}
	waitFor(t, func() bool { return parked.Load() == 2 }, "two handshakes parked")
	if _, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[0]); err != nil {
		t.Fatalf("first handshake under pressure (the burst): %v", err)
	}
	if _, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[0]); err == nil {
		t.Fatal("second handshake under pressure beyond the rate succeeded")
	}
	if ts.failures(ReasonRateLimited) == 0 {
		t.Fatal("rate_limited not counted")
	}
	close(release)
	wg.Wait()
	waitFor(t, func() bool { return ts.e.Stats().HandshakesActive == 0 }, "the parked handshakes ended")
	if _, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[0]); err != nil {
		t.Fatalf("handshake without pressure: %v", err)
	}
}

// refusalLog is a JSON log sink safe for concurrent writers.
type refusalLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *refusalLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *refusalLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			n++
		}
	}
	return n
}

// TestRefusedIdentitiesLoggedAtBoundedRate: refused PSK identities are
// counted exactly but logged at a bounded rate (a burst of 20, then 5
// lines a second), not one line per attempt.
func TestRefusedIdentitiesLoggedAtBoundedRate(t *testing.T) {
	var logs refusalLog
	ts := start(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	const n = 40
	began := time.Now()
	for i := range n {
		if _, err := dialPSK(t, nil, ts.addr, "pk,nobody,2,60", dtlspsk.Key(secret), pskSuites[0]); err == nil {
			t.Fatalf("handshake %d succeeded", i)
		}
	}
	waitFor(t, func() bool { return ts.failures(dtlspsk.ReasonUnknownDevice) == n }, "every refusal counted")
	elapsed := time.Since(began)
	bound := 20 + int(math.Ceil(5*elapsed.Seconds()))
	got := logs.count("handshake refused")
	if got == 0 || got > bound {
		t.Fatalf("%d refusal lines for %d refusals in %v, want 1..%d", got, n, elapsed, bound)
	}
}

// clientHello captures the first datagram a pion PSK client sends: a
// ClientHello without a cookie.
func clientHello(t *testing.T) []byte {
	t.Helper()
	sink, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(pc, sink.LocalAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return dtlspsk.Key(secret), nil }),
		dtls.WithPSKIdentityHint([]byte("pk,dk,2,60")),
		dtls.WithCipherSuites(pskSuites[0]))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = c.HandshakeContext(ctx) }()
	buf := make([]byte, 2048)
	_ = sink.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := sink.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte(nil), buf[:n]...)
}

// cookieEcho builds the second ClientHello of a handshake: hello with the
// cookie of the HelloVerifyRequest hvr, message_seq 1, record sequence 1.
func cookieEcho(hello, hvr []byte) ([]byte, bool) {
	const rh, hh = 13, 12 // record and handshake header lengths
	if len(hvr) < rh+hh+3 || hvr[rh] != 3 {
		return nil, false
	}
	hb := hvr[rh+hh:]
	ck := int(hb[2])
	if len(hb) < 3+ck {
		return nil, false
	}
	body := hello[rh+hh:]
	p := 2 + 32
	p += 1 + int(body[p]) // session id
	if body[p] != 0 {
		return nil, false
	}
	nb := append(append(append(append([]byte(nil), body[:p]...), byte(ck)), hb[3:3+ck]...), body[p+1:]...)
	out := append(append([]byte(nil), hello[:rh+hh]...), nb...)
	put24 := func(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }
	out[11], out[12] = byte((hh+len(nb))>>8), byte(hh+len(nb)) // record length
	out[10] = 1                                                // record sequence number
	h := out[rh:]
	put24(h[1:4], len(nb))
	h[4], h[5] = 0, 1 // message_seq
	put24(h[6:9], 0)
	put24(h[9:12], len(nb))
	return out, true
}

// halfOpen opens a handshake from a fresh socket on ip and leaves it
// half-open: ClientHello, cookie echo, then silence.
func halfOpen(t *testing.T, ip string, hello []byte, dst *net.UDPAddr) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Skipf("cannot bind %s: %v", ip, err)
	}
	defer pc.Close()
	if _, err := pc.WriteToUDP(hello, dst); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no HelloVerifyRequest: %v", err)
	}
	echo, ok := cookieEcho(hello, buf[:n])
	if !ok {
		t.Fatalf("not a HelloVerifyRequest: %x", buf[:n])
	}
	if _, err := pc.WriteToUDP(echo, dst); err != nil {
		t.Fatal(err)
	}
}

// TestHalfOpenFlood: one source address opening handshakes it never
// finishes (cookie echoed, then silence: it cannot be refused by the
// stateless cookie) holds at most half of dtls.max_handshakes; devices
// from another address still complete every handshake meanwhile, and the
// flood's refusals are counted as limit_address.
func TestHalfOpenFlood(t *testing.T) {
	const maxHS = 16
	ts := start(t, func(c *Config) {
		c.MaxHandshakes = maxHS
		c.HandshakeTimeout = time.Minute // the flood's slots do not expire during the test
	})
	hello := clientHello(t)
	for range 2 * maxHS {
		halfOpen(t, "127.0.0.2", hello, ts.addr)
	}
	waitFor(t, func() bool {
		return ts.e.Stats().HandshakesActive+int(ts.failures("limit_address")) == 2*maxHS
	}, "every cookie echo admitted or refused")
	if held := ts.e.Stats().HandshakesActive; held > maxHS/2 || held == 0 {
		t.Fatalf("the flooding address holds %d of %d handshake slots, want 1..%d", held, maxHS, maxHS/2)
	}
	if ts.failures("limit_address") == 0 {
		t.Fatal("no limit_address refusal counted")
	}
	for i := range 10 {
		c, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[i%2])
		if err != nil {
			t.Fatalf("device handshake %d during the flood: %v", i, err)
		}
		if r, err := post(t, c); err != nil || r.Code != codes.Changed {
			t.Fatalf("device %d request: %v %v", i, r.Code, err)
		}
		c.Close()
	}
}

// TestNATStorm: thousands of devices behind one address (a carrier NAT)
// reconnect at once, with the product's limits (1024 handshakes in flight,
// dtls.handshake_rate 20 under pressure): every handshake completes and
// none is refused by a per-address limit. Per-address limits are for
// floods that hold slots, not for many real devices sharing an address.
func TestNATStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("thousands of handshakes")
	}
	ts := start(t, func(c *Config) { c.MaxHandshakes, c.HandshakeRate = 1024, 20 })
	devices := int64(10000)
	if raceEnabled {
		devices = 500
	}
	var ok, failed atomic.Int64
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	began := time.Now()
	for i := range devices {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Error(err)
				return
			}
			c, err := dtls.ClientWithOptions(pc, ts.addr,
				dtls.WithPSK(func([]byte) ([]byte, error) { return dtlspsk.Key(secret), nil }),
				dtls.WithPSKIdentityHint([]byte("pk,dk,2,60")),
				dtls.WithCipherSuites(pskSuites[i%2]))
			if err != nil {
				pc.Close()
				t.Error(err)
				return
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			if err := c.HandshakeContext(ctx); err != nil {
				if failed.Add(1) <= 3 {
					t.Logf("handshake failed: %v", err)
				}
				return
			}
			ok.Add(1)
		})
	}
	wg.Wait()
	took := time.Since(began)
	limited := ts.failures(ReasonRateLimited) + ts.failures("limit_address")
	t.Logf("NAT storm: %d/%d handshakes from one address completed in %v (%.0f/s); rate_limited %v, limit_address %v",
		ok.Load(), devices, took.Round(time.Millisecond), float64(ok.Load())/took.Seconds(),
		ts.failures(ReasonRateLimited), ts.failures("limit_address"))
	if ok.Load() != devices {
		t.Fatalf("%d of %d handshakes completed (%d failed)", ok.Load(), devices, failed.Load())
	}
	if limited != 0 {
		t.Fatalf("%v handshakes refused by per-address limits during the storm", limited)
	}
}

// TestLateCallbacksAfterClose: the engine runs its callbacks after its
// lock is released, on whichever goroutine made them (read loop, lookup
// worker, timers), so a session's data or OnEstablished can arrive after
// its OnClose has run. Such a session must not come up again: no second
// OnUp, nothing left in the session table.
func TestLateCallbacksAfterClose(t *testing.T) {
	var ups, downs atomic.Int32
	ts := start(t, func(c *Config) {
		c.OnUp = func(*Session) { ups.Add(1) }
		c.OnDown = func(*Session, string) { downs.Add(1) }
	})
	c, err := dialPSK(t, nil, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), pskSuites[0])
	if err != nil {
		t.Fatal(err)
	}
	if r, err := post(t, c); err != nil || r.Code != codes.Changed {
		t.Fatalf("post: %v %v", r.Code, err)
	}
	ts.mu.Lock()
	var ss *Session
	for _, v := range ts.sessions {
		ss = v
	}
	ts.mu.Unlock()
	if ss == nil || ups.Load() != 1 {
		t.Fatalf("session not attached (ups %d)", ups.Load())
	}
	ss.Close()
	waitFor(t, func() bool { return downs.Load() == 1 }, "OnDown of the closed session")

	ts.onData(ss.es, []byte{0x50, 0x02, 0, 1}) // data collected before the close, delivered after it
	ts.onUp(ss.es)                             // an OnEstablished that lost the race
	ts.mu.Lock()
	n := len(ts.sessions)
	ts.mu.Unlock()
	if ups.Load() != 1 || n != 0 {
		t.Fatalf("after late callbacks: OnUp ran %d times (want 1), %d sessions in the table (want 0)", ups.Load(), n)
	}
}

// TestWrongKeyLogged: a handshake with a wrong key is logged (rate-bounded)
// with the identity and address it came from, so an operator can tell
// which device holds a stale secret; the key itself is not in the line.
func TestWrongKeyLogged(t *testing.T) {
	var logs refusalLog
	ts := start(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	wrong := dtlspsk.Key("not-the-secret")
	if _, err := dialPSK(t, pc, ts.addr, "pk,dk,2,60", wrong, pskSuites[0]); err == nil {
		t.Fatal("handshake with a wrong key succeeded")
	}
	waitFor(t, func() bool { return ts.failures(dtlspsk.ReasonBadKey) == 1 }, "the wrong key counted")
	logs.mu.Lock()
	out := logs.b.String()
	logs.mu.Unlock()
	var line map[string]any
	for _, l := range strings.Split(out, "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["reason"] == dtlspsk.ReasonBadKey {
			line = m
		}
	}
	if line == nil {
		t.Fatalf("no bad_key line in the log:\n%s", out)
	}
	if line["productKey"] != "pk" || line["deviceKey"] != "dk" || line["peer"] != pc.LocalAddr().String() {
		t.Fatalf("bad_key line %v: want productKey pk, deviceKey dk, peer %s", line, pc.LocalAddr())
	}
	if strings.Contains(out, fmt.Sprintf("%x", wrong)) || strings.Contains(out, secret) {
		t.Fatal("a key or secret is in the log")
	}
}
