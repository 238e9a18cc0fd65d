package engine

import (
	"crypto/tls"
	"crypto/x509"
	"strings"
	"testing"

	"github.com/pion/dtls/v3"
	pionec "github.com/pion/dtls/v3/pkg/crypto/elliptic"
)

func TestPionClientECDHE(t *testing.T) {
	p := loadPKI(t)
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	for _, tc := range []struct {
		suite dtls.CipherSuiteID
		curve pionec.Curve
	}{
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, pionec.X25519},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, pionec.P256},
		{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, pionec.X25519},
	} {
		t.Run(SuiteName(uint16(tc.suite))+"/"+tc.curve.String(), func(t *testing.T) {
			ts := startServer(t, Config{Certificates: []tls.Certificate{p.ecCert}, ConnectionID: true})
			pc, err := dialCert(t, ts, pool, dtls.WithCipherSuites(tc.suite), dtls.WithEllipticCurves(tc.curve),
				dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(4)))
			if err != nil {
				t.Fatalf("handshake: %v", err)
			}
			echo(t, pc, "ecdhe")
			if st := ts.e.Stats(); st.HandshakesDone != 1 {
				t.Fatalf("%+v", st)
			}
		})
	}
	t.Run("wrong CA", func(t *testing.T) {
		ts := startServer(t, Config{Certificates: []tls.Certificate{p.ecCert}})
		if _, err := dialCert(t, ts, x509.NewCertPool()); err == nil {
			t.Fatal("handshake succeeded against an unknown CA")
		}
	})
}

func dialCert(t *testing.T, ts *liveServer, pool *x509.CertPool, opts ...dtls.ClientOption) (*dtls.Conn, error) {
	t.Helper()
	return dialPion(t, ts.addr, "", nil, append([]dtls.ClientOption{dtls.WithRootCAs(pool), dtls.WithServerName("localhost")}, opts...)...)
}

func TestOpenSSLClientECDHE(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	p := loadPKI(t)
	for _, cipher := range []string{"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES128-CCM8"} {
		t.Run(cipher, func(t *testing.T) {
			onClose, closed := closeWatcher()
			ts := startServer(t, Config{Certificates: []tls.Certificate{p.ecCert}, OnClose: onClose})
			out := runInteractive(t, openssl, []string{"s_client", "-dtls1_2", "-connect", ts.addr.String(),
				"-cipher", cipher, "-CAfile", p.caFile, "-verify_return_error", "-verify_hostname", "localhost"},
				"Verify return code", "ping")
			if !strings.Contains(out, "Cipher is "+cipher) || !strings.Contains(out, "Verify return code: 0 (ok)") {
				t.Fatalf("unexpected session:\n%s", out)
			}
			waitReason(t, closed, ClosePeer)
		})
	}
}

// TestSuiteChoiceBothCertificates: with RSA and ECDSA certificates and
// PSKs, a client with ECC gets ECDHE, the SDK-like client without ECC gets
// RSA key transport, a PSK-only client PSK; within the key exchange the
// client's order decides.
func TestSuiteChoiceBothCertificates(t *testing.T) {
	p := loadPKI(t)
	h := newHarness(t, Config{Certificates: []tls.Certificate{p.cert, p.ecCert}})
	sdk := newClient(h, 1)
	sdk.suites = []uint16{0x008C, 0x00AE, 0x008D, 0x0094, 0x00B6, 0x0095, 0x002F, 0x003C, 0x0035, 0x003D, 0x00FF}
	sdk.connect()
	if got := h.e.Session(sdk.addr).CipherSuite(); got != TLS_RSA_WITH_AES_128_CBC_SHA {
		t.Fatalf("SDK-like client got %s", SuiteName(got))
	}
	// A client offering ECDHE but no supported_groups gets no ECDHE suite.
	c := newClient(h, 2)
	c.suites = []uint16{TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_PSK_WITH_AES_128_CCM_8}
	c.connect()
	if got := h.e.Session(c.addr).CipherSuite(); got != TLS_PSK_WITH_AES_128_CCM_8 {
		t.Fatalf("client without curves got %s", SuiteName(got))
	}
	ts := startServer(t, Config{Certificates: []tls.Certificate{p.cert, p.ecCert}})
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	pc, err := dialCert(t, ts, pool, dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256))
	if err != nil {
		t.Fatal(err)
	}
	echo(t, pc, "x")
	// Within the class, the client's order.
	if s := ts.e.Session(addrOf(pc)); s == nil || s.CipherSuite() != TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8 {
		t.Fatalf("session %+v", s)
	}
}
