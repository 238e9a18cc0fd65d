package engine

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

var testKey = []byte("0123456789abcdef")

// testPSK knows one identity.
func testPSK(identity []byte, _ netip.AddrPort) ([]byte, error) {
	if string(identity) == "dev1" {
		return testKey, nil
	}
	return nil, errors.New("unknown identity")
}

// liveServer is an engine served on a loopback socket; it echoes
// application data.
type liveServer struct {
	e    *Engine
	conn *net.UDPConn
	addr *net.UDPAddr
}

func startServer(t *testing.T, cfg Config) *liveServer {
	t.Helper()
	var e *Engine
	if cfg.OnData == nil {
		cfg.OnData = func(s *Session, b []byte) { _ = e.Write(s.Addr(), b) }
	}
	return startServerWith(t, cfg, func(x *Engine) { e = x })
}

// startServerWith serves an engine built from cfg; set receives it before
// any datagram is handled.
func startServerWith(t *testing.T, cfg Config, set func(*Engine)) *liveServer {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PSK == nil {
		cfg.PSK = testPSK
	}
	cfg.Send = func(b []byte, a netip.AddrPort) { _, _ = conn.WriteToUDPAddrPort(b, a) }
	e, err := New(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	set(e)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := Serve(e, conn); err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()
	t.Cleanup(func() { conn.Close(); wg.Wait() })
	return &liveServer{e: e, conn: conn, addr: conn.LocalAddr().(*net.UDPAddr)}
}

func dialPion(t *testing.T, addr *net.UDPAddr, identity string, key []byte, opts ...dtls.ClientOption) (*dtls.Conn, error) {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	var all []dtls.ClientOption
	if identity != "" {
		all = append(all, dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }), dtls.WithPSKIdentityHint([]byte(identity)))
	}
	all = append(all, opts...)
	c, err := dtls.ClientWithOptions(pc, addr, all...)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return c, nil
}

func echo(t *testing.T, c *dtls.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1500)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf[:n], []byte(msg)) {
		t.Fatalf("echo %q, want %q", buf[:n], msg)
	}
}

func TestPionClientPSK(t *testing.T) {
	for _, tc := range []struct {
		name  string
		suite dtls.CipherSuiteID
		ems   dtls.ExtendedMasterSecretType
	}{
		{"CCM_8/EMS", dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.RequireExtendedMasterSecret},
		{"CCM_8/noEMS", dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.DisableExtendedMasterSecret},
		{"CBC_SHA256/EMS", dtls.TLS_PSK_WITH_AES_128_CBC_SHA256, dtls.RequireExtendedMasterSecret},
		{"CBC_SHA256/noEMS", dtls.TLS_PSK_WITH_AES_128_CBC_SHA256, dtls.DisableExtendedMasterSecret},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ts := startServer(t, Config{})
			c, err := dialPion(t, ts.addr, "dev1", testKey, dtls.WithCipherSuites(tc.suite), dtls.WithExtendedMasterSecret(tc.ems))
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			echo(t, c, "hello")
			echo(t, c, "again")
			st := ts.e.Stats()
			if st.HandshakesDone != 1 || st.Sessions != 1 || st.HandshakesActive != 0 {
				t.Fatalf("stats %+v", st)
			}
			s := ts.e.Session(addrOf(c))
			if s == nil || string(s.Identity()) != "dev1" || s.CipherSuite() != uint16(tc.suite) {
				t.Fatalf("session %+v", s)
			}
		})
	}
}

func addrOf(c *dtls.Conn) netip.AddrPort { return netip.MustParseAddrPort(c.LocalAddr().String()) }

func pionPSKSuites() dtls.ClientOption {
	return dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256)
}
