package dtlsx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	dto "github.com/prometheus/client_model/go"
)

// alertWatch is a client socket that records the description of every
// plaintext (epoch 0) alert the client receives.
type alertWatch struct {
	net.PacketConn
	mu     sync.Mutex
	alerts []byte
}

func (a *alertWatch) ReadFrom(b []byte) (int, net.Addr, error) {
	n, addr, err := a.PacketConn.ReadFrom(b)
	if err == nil && n == recordHeaderLen+2 && b[0] == contentAlert && b[3] == 0 && b[4] == 0 {
		a.mu.Lock()
		a.alerts = append(a.alerts, b[recordHeaderLen+1])
		a.mu.Unlock()
	}
	return n, addr, err
}

func (a *alertWatch) got() []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]byte(nil), a.alerts...)
}

// TestRefusalAlerts: a malformed identity gets unknown_psk_identity; an
// unknown product or device, a disabled device and a wrong key all get
// decrypt_error (RFC 4279 §2: probing does not tell which devices exist);
// an unreachable registry handshake_failure; never internal_error.
func TestRefusalAlerts(t *testing.T) {
	ts := start(t, func(c *Config) {
		c.LookupPSK = func(ctx context.Context, id dtlspsk.Identity) ([]byte, error) {
			switch id.DeviceKey {
			case "off":
				return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonDisabled, Msg: "pk/off"}
			case "down":
				return nil, errors.New("database is down")
			}
			return lookup(ctx, id)
		}
	})
	tests := []struct {
		name, identity, reason string
		key                    []byte
		alert                  byte
	}{
		{"malformed", "pk,dk,2", dtlspsk.ReasonMalformedIdentity, dtlspsk.Key(secret), alertUnknownPSKIdentity},
		{"bad lifetime", "pk,dk,2,10", dtlspsk.ReasonBadLifetime, dtlspsk.Key(secret), alertUnknownPSKIdentity},
		{"unknown product", "px,dk,2,60", dtlspsk.ReasonUnknownProduct, dtlspsk.Key(secret), alertDecryptError},
		{"unknown device", "pk,dx,2,60", dtlspsk.ReasonUnknownDevice, dtlspsk.Key(secret), alertDecryptError},
		{"disabled device", "pk,off,2,60", dtlspsk.ReasonDisabled, dtlspsk.Key(secret), alertDecryptError},
		{"wrong key", "pk,dk,2,60", dtlspsk.ReasonBadKey, dtlspsk.Key("other"), alertDecryptError},
		{"registry down", "pk,down,2,60", dtlspsk.ReasonStore, dtlspsk.Key(secret), alertHandshakeFailure},
	}
	for i, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256} {
		for _, tt := range tests {
			t.Run(cipherName(suite)+"/"+tt.name, func(t *testing.T) {
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Fatal(err)
				}
				w := &alertWatch{PacketConn: pc}
				if _, err := handshake(t, w, ts.addr, tt.identity, tt.key, suite, false); err == nil {
					t.Fatal("handshake succeeded")
				}
				waitFor(t, func() bool { return ts.failures(tt.reason) == float64(i+1) }, "failure "+tt.reason)
				got := w.got()
				if len(got) == 0 || got[0] != tt.alert {
					t.Fatalf("alerts received %v, want first %d", got, tt.alert)
				}
				for _, a := range got {
					if a == alertInternalError {
						t.Fatalf("internal_error sent (alerts %v)", got)
					}
				}
			})
		}
	}
}

// halfOpen opens a handshake from a fresh socket bound to ip and leaves it
// half-open: ClientHello, the cookie echo, then silence. It reports whether
// the server answered the first ClientHello (false: refused by a limit;
// it waits up to wait for the answer).
func halfOpen(t *testing.T, ip string, hello []byte, dst *net.UDPAddr, wait time.Duration) bool {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Error(err)
		return false
	}
	defer pc.Close()
	if _, err := pc.WriteToUDP(hello, dst); err != nil {
		return false
	}
	buf := make([]byte, 2048)
	pc.SetReadDeadline(time.Now().Add(wait))
	for {
		n, _, err := pc.ReadFromUDP(buf)
		if err != nil {
			return false
		}
		// Anything but a HelloVerifyRequest is a retransmission meant for
		// an earlier socket that had this port: skip it.
		if echo, ok := cookieEcho(hello, buf[:n]); ok {
			pc.WriteToUDP(echo, dst)
			return true
		}
	}
}

// cookieEcho builds the second ClientHello of a handshake: hello with the
// cookie of the HelloVerifyRequest hvr, message_seq 1, record sequence 1.
func cookieEcho(hello, hvr []byte) ([]byte, bool) {
	// HelloVerifyRequest body: server_version(2) cookie<0..255>.
	if len(hvr) < recordHeaderLen+handshakeHeaderLen+3 || hvr[recordHeaderLen] != 3 {
		return nil, false
	}
	hb := hvr[recordHeaderLen+handshakeHeaderLen:]
	ck := int(hb[2])
	if len(hb) < 3+ck {
		return nil, false
	}
	cookie := hb[3 : 3+ck]
	body := hello[recordHeaderLen+handshakeHeaderLen:]
	p := 2 + 32
	p += 1 + int(body[p]) // session id
	if body[p] != 0 {
		return nil, false // the hello already carries a cookie
	}
	nb := append(append(append(append([]byte(nil), body[:p]...), byte(ck)), cookie...), body[p+1:]...)
	out := append([]byte(nil), hello[:recordHeaderLen+handshakeHeaderLen]...)
	out = append(out, nb...)
	binary.BigEndian.PutUint16(out[11:13], uint16(handshakeHeaderLen+len(nb))) // record length
	out[10] = 1                                                                // record sequence number 1
	h := out[recordHeaderLen:]
	putUint24(h[1:4], len(nb))  // length
	h[4], h[5] = 0, 1           // message_seq
	putUint24(h[6:9], 0)        // fragment_offset
	putUint24(h[9:12], len(nb)) // fragment_length
	return out, true
}

func putUint24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// TestHandshakeStalled: a handshake whose peer echoed the cookie and then
// went silent is dropped after HandshakeIdleTimeout of the server's clock,
// long before HandshakeTimeout.
func TestHandshakeStalled(t *testing.T) {
	ts := start(t, func(c *Config) { c.HandshakeIdleTimeout = 3 * time.Second })
	if !halfOpen(t, "127.0.0.1", clientHelloBytes(t), ts.addr, 3*time.Second) {
		t.Fatal("no HelloVerifyRequest")
	}
	waitFor(t, func() bool {
		ts.mu.Lock()
		defer ts.mu.Unlock()
		for _, ss := range ts.byAddr {
			if ss.verified.Load() {
				return true
			}
		}
		return false
	}, "cookie echo seen")
	if ts.Handshakes() != 1 {
		t.Fatalf("handshakes %d, want 1", ts.Handshakes())
	}
	ts.skew.Store(int64(3 * time.Second)) // the idle timeout, well within the 30 s total
	waitFor(t, func() bool { return ts.failures(ReasonStalled) == 1 }, "stalled handshake dropped")
	waitFor(t, func() bool { return ts.Handshakes() == 0 }, "slot freed")
}

// TestHalfOpenAttack: three source addresses keep opening half-open
// handshakes (cookie echoed, then silence) — more than all the slots —
// and their slots never expire during the test (idle timeout of a
// minute); meanwhile legitimate devices, each behind its own address,
// handshake. At least 99 % of them must complete.
func TestHalfOpenAttack(t *testing.T) {
	if testing.Short() {
		t.Skip("attack simulation")
	}
	const slots = 128
	ts := start(t, func(c *Config) {
		c.MaxHandshakes = slots
		c.HandshakeIdleTimeout = time.Minute
		c.CookieTimeout = time.Minute
	})
	hello := clientHelloBytes(t)
	attackers := []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"}
	// Phase 1: each attacker tries to take every slot.
	var wg sync.WaitGroup
	var held atomic.Int64
	for _, ip := range attackers {
		for range slots {
			wg.Go(func() {
				if halfOpen(t, ip, hello, ts.addr, time.Second) {
					held.Add(1)
				}
			})
		}
	}
	wg.Wait()
	t.Logf("attackers hold %d of %d handshake slots", held.Load(), slots)
	if h := held.Load(); h > slots-slots/4+int64(len(attackers)) {
		t.Errorf("attackers hold %d slots: more than three quarters of %d (+1 each)", h, slots)
	}
	// Phase 2: the attack goes on while legitimate devices handshake.
	stop := make(chan struct{})
	var attack sync.WaitGroup
	for _, ip := range attackers {
		attack.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				halfOpen(t, ip, hello, ts.addr, 20*time.Millisecond)
			}
		})
	}
	const legit = 200
	var ok atomic.Int64
	sem := make(chan struct{}, 16)
	var devices sync.WaitGroup
	for i := range legit {
		sem <- struct{}{}
		devices.Go(func() {
			defer func() { <-sem }()
			ip := net.IPv4(127, 0, 1+byte(i/250), 1+byte(i%250))
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: ip})
			if err != nil {
				t.Error(err)
				return
			}
			c, err := handshakeQuiet(pc, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), 10*time.Second)
			if err == nil {
				ok.Add(1)
				c.Close()
			}
		})
	}
	devices.Wait()
	close(stop)
	attack.Wait()
	rate := float64(ok.Load()) / legit
	t.Logf("legitimate handshakes completed under the half-open attack: %d/%d (%.1f %%); refused: limit_handshakes %v, limit_address %v, fair_share %v",
		ok.Load(), legit, 100*rate, ts.failures(ReasonLimitHandshakes), ts.failures(ReasonLimitAddress), ts.failures(ReasonFairShare))
	if rate < 0.99 {
		t.Fatalf("only %.1f %% of legitimate handshakes completed under attack", 100*rate)
	}
}

// handshakeQuiet is a PSK client handshake over pc that reports its error
// (pc is closed with the Conn, or on failure).
func handshakeQuiet(pc net.PacketConn, addr net.Addr, identity string, key []byte, timeout time.Duration) (*dtls.Conn, error) {
	c, err := dtls.ClientWithOptions(pc, addr,
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		pc.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	return c, nil
}

// TestNATStorm: 10,000 devices behind one carrier NAT address reconnect
// together (as many at once as the client side runs); every handshake
// completes at the node's own pace, and no handshake is refused by a
// per-address limit meanwhile (the node is never under pressure from one
// address that only completes handshakes). The wall time is logged as a
// figure, not asserted.
func TestNATStorm(t *testing.T) {
	if testing.Short() {
		t.Skip("10,000 handshakes")
	}
	ts := start(t, func(c *Config) { c.HandshakeRate = 20 }) // the default rate
	devices := int64(10000)
	if raceEnabled {
		devices = 1000
	}
	var ok, failed atomic.Int64
	sem := make(chan struct{}, 64)
	var wg sync.WaitGroup
	began := time.Now()
	for range devices {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Error(err)
				return
			}
			c, err := handshakeQuiet(pc, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), time.Minute)
			if err != nil {
				if failed.Add(1) <= 3 {
					t.Logf("handshake failed: %v", err)
				}
				return
			}
			ok.Add(1)
			c.Close()
		})
	}
	wg.Wait()
	took := time.Since(began)
	t.Logf("NAT storm: %d/%d handshakes from one address completed in %v (%.0f/s); rate_limited %v, limit_address %v, fair_share %v",
		ok.Load(), devices, took.Round(time.Millisecond), float64(ok.Load())/took.Seconds(),
		ts.failures(ReasonRateLimited), ts.failures(ReasonLimitAddress), ts.failures(ReasonFairShare))
	if ok.Load() != devices {
		t.Fatalf("%d of %d handshakes completed (%d failed)", ok.Load(), devices, failed.Load())
	}
	if n := ts.failures(ReasonRateLimited) + ts.failures(ReasonLimitAddress) + ts.failures(ReasonFairShare); n != 0 {
		t.Fatalf("%v handshakes refused by per-address limits during the storm", n)
	}
}

// TestRevoke: Revoke ends an active and a hibernated session at once with
// a close_notify the client reads (io.EOF), counted as revoked; the
// session's routes are gone.
func TestRevoke(t *testing.T) {
	for _, hibernated := range []bool{false, true} {
		t.Run(map[bool]string{false: "active", true: "hibernated"}[hibernated], func(t *testing.T) {
			ts := start(t, withHibernation)
			c, err := dialPSK(t, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
			if err != nil {
				t.Fatal(err)
			}
			post(t, c)
			ss := ts.only(t)
			if !ss.KeyMatches(dtlspsk.Key(secret)) || ss.KeyMatches(dtlspsk.Key("other")) {
				t.Fatal("KeyMatches does not tell the session's key")
			}
			if hibernated {
				ts.hibernateNow(t, ss)
			}
			ss.Revoke()
			c.SetReadDeadline(time.Now().Add(5 * time.Second))
			if _, err := c.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
				t.Fatalf("client read after Revoke: %v, want io.EOF (close_notify)", err)
			}
			waitFor(t, func() bool {
				ts.mu.Lock()
				defer ts.mu.Unlock()
				return ts.Sessions() == 0 && len(ts.byAddr)+len(ts.byCID) == 0
			}, "session ended and its routes gone")
			var d dto.Metric
			ts.m.closed.WithLabelValues(CloseRevoked).Write(&d)
			if d.GetCounter().GetValue() != 1 {
				t.Fatalf("closed{revoked} = %v", d.GetCounter().GetValue())
			}
		})
	}
}

// TestAdmit: the per-address admission rules on a server whose in-flight
// handshakes are set by hand (8 slots: pressure from 4, the last 2 kept
// for addresses holding none, at most 4 per address).
func TestAdmit(t *testing.T) {
	a, b, c := netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("192.0.2.2"), netip.MustParseAddr("192.0.2.3")
	tests := []struct {
		name string
		held map[netip.Addr]int
		from netip.Addr
		rate float64
		want string
	}{
		{"no pressure, one address", map[netip.Addr]int{a: 3}, a, -1, ""},
		{"per-address cap", map[netip.Addr]int{a: 4}, a, -1, ReasonLimitAddress},
		{"pressure: newcomer admitted", map[netip.Addr]int{a: 4, b: 2}, c, -1, ""},
		{"pressure: above the share", map[netip.Addr]int{a: 3, b: 2}, b, -1, ReasonFairShare},    // share 8/3 = 2
		{"pressure: below the share", map[netip.Addr]int{a: 3, b: 1}, b, -1, ""},                 // 4 in flight, 1 < 2
		{"pressure: reserve kept", map[netip.Addr]int{a: 4, b: 1, c: 1}, b, -1, ReasonFairShare}, // 6 in flight
		{"pressure: reserve open to newcomers", map[netip.Addr]int{a: 4, b: 2}, c, -1, ""},
		{"pressure: rate", map[netip.Addr]int{a: 4}, b, 0.5, ReasonRateLimited}, // burst 1, taken below
		{"no pressure: no rate", map[netip.Addr]int{a: 1}, b, 0.5, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := Config{LookupPSK: lookup, MaxHandshakes: 8, MaxHandshakesPerAddress: 4, HandshakeRate: tt.rate}
			s, err := New(cfg, nil)
			if err != nil {
				t.Fatal(err)
			}
			total := 0
			for addr, n := range tt.held {
				s.hsByAddr[addr] = n
				total += n
			}
			s.inflight.Store(int64(total))
			now := time.Unix(1000, 0)
			if tt.rate > 0 {
				s.rate.allow(tt.from, now) // spend the burst
			}
			if got := s.admit(tt.from, now); got != tt.want {
				t.Fatalf("admit = %q, want %q", got, tt.want)
			}
		})
	}
}

// TestRestartDuringHandshake: a device that restarts in the middle of a
// handshake (before or after echoing the cookie) and starts over from the
// same address and port gets its new handshake at once: the old one is
// replaced when the new one echoes its cookie, not left to block the
// address until a timeout.
func TestRestartDuringHandshake(t *testing.T) {
	for _, echoed := range []bool{false, true} {
		t.Run(map[bool]string{false: "before the cookie echo", true: "after the cookie echo"}[echoed], func(t *testing.T) {
			ts := start(t, func(c *Config) { c.CookieTimeout = time.Minute; c.HandshakeIdleTimeout = time.Minute })
			hello := clientHelloBytes(t)
			pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			pc.WriteToUDP(hello, ts.addr)
			buf := make([]byte, 2048)
			pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := pc.ReadFromUDP(buf)
			if err != nil {
				t.Fatalf("no HelloVerifyRequest: %v", err)
			}
			if echoed {
				echo, ok := cookieEcho(hello, buf[:n])
				if !ok {
					t.Fatal("no cookie")
				}
				pc.WriteToUDP(echo, ts.addr)
				waitFor(t, func() bool { return ts.only(t).verified.Load() }, "cookie echo seen")
			}
			// The device restarts: a new socket on the same port (what the
			// old one had buffered is gone) and a new handshake. The old
			// handshake's flight may still be retransmitted to the port
			// until the new one echoes its cookie; a client that takes it
			// for its own fails, and (as a device would) tries once more.
			port := pc.LocalAddr().(*net.UDPAddr).Port
			pc.Close()
			var c *dtls.Conn
			for attempt := 0; c == nil; attempt++ {
				npc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port})
				if err != nil {
					t.Fatal(err)
				}
				if c, err = handshakeQuiet(npc, ts.addr, "pk,dk,2,60", dtlspsk.Key(secret), 5*time.Second); err != nil && attempt == 1 {
					t.Fatalf("handshake after the restart: %v", err)
				}
			}
			defer c.Close()
			if r := post(t, c); r.Code != codes.Changed {
				t.Fatalf("publish: %v", r.Code)
			}
			waitFor(t, func() bool { return ts.failures(CloseReplaced) == 1 }, "the old handshake ended as replaced")
			waitFor(t, func() bool { return ts.Handshakes() == 0 && ts.Sessions() == 1 }, "one session, no handshake left")
		})
	}
}

// FuzzParseClientHello: the read loop's only parse of unauthenticated
// datagrams never panics, accepts only epoch-0 handshake records holding a
// ClientHello, and reports the random and cookie of the bytes it accepted.
func FuzzParseClientHello(f *testing.F) {
	f.Add([]byte{22, 0xfe, 0xfd, 0, 0})
	hello := []byte{22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 50, 1, 0, 0, 38, 0, 0, 0, 0, 0, 0, 0, 38, 0xfe, 0xfd}
	hello = append(hello, bytes.Repeat([]byte{7}, 32)...)
	hello = append(hello, 0, 2, 0xaa, 0xbb)
	f.Add(hello)
	f.Fuzz(func(t *testing.T, b []byte) {
		ch, ok := parseClientHello(b)
		if !ok {
			return
		}
		if b[0] != contentHandshake || b[3] != 0 || b[4] != 0 || b[recordHeaderLen] != handshakeClientHello {
			t.Fatalf("accepted a datagram that is not an epoch-0 ClientHello: % x", b[:min(len(b), 16)])
		}
		body := b[recordHeaderLen+handshakeHeaderLen:]
		if !bytes.Equal(ch.random[:], body[2:34]) {
			t.Fatalf("random %x, bytes %x", ch.random, body[2:34])
		}
		sid := int(body[34])
		if ch.cookie != (body[35+sid] > 0) {
			t.Fatalf("cookie flag %v, cookie length %d", ch.cookie, body[35+sid])
		}
	})
}
