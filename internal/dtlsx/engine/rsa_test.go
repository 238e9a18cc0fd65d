package engine

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// testPKI is a CA and a server certificate it signed, with the DNS name
// "localhost" and the IP address 127.0.0.1 as subjectAltNames.
type testPKI struct {
	cert   tls.Certificate // RSA
	ecCert tls.Certificate // ECDSA P-256
	ca     *x509.Certificate
	caFile string
}

var (
	pkiOnce sync.Once
	pki     testPKI
	pkiErr  error
	pkiDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if pkiDir != "" {
		os.RemoveAll(pkiDir)
	}
	os.Exit(code)
}

func loadPKI(t testing.TB) testPKI {
	t.Helper()
	pkiOnce.Do(func() { pki, pkiErr = makePKI() })
	if pkiErr != nil {
		t.Fatal(pkiErr)
	}
	return pki
}

func makePKI() (testPKI, error) {
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return testPKI{}, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return testPKI{}, err
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return testPKI{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:    x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return testPKI{}, err
	}
	pkiDir, err = os.MkdirTemp("", "engine-pki")
	if err != nil {
		return testPKI{}, err
	}
	caFile := filepath.Join(pkiDir, "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o600); err != nil {
		return testPKI{}, err
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return testPKI{}, err
	}
	tmpl.SerialNumber = big.NewInt(3)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	ecDER, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &ecKey.PublicKey, caKey)
	if err != nil {
		return testPKI{}, err
	}
	return testPKI{
		cert:   tls.Certificate{Certificate: [][]byte{der, caDER}, PrivateKey: key},
		ecCert: tls.Certificate{Certificate: [][]byte{ecDER, caDER}, PrivateKey: ecKey},
		ca:     ca, caFile: caFile,
	}, nil
}

func TestScriptedRSAHandshake(t *testing.T) {
	p := loadPKI(t)
	for _, id := range RSASuites {
		t.Run(SuiteName(id), func(t *testing.T) {
			h := newHarness(t, Config{Certificates: []tls.Certificate{p.cert}})
			c := newClient(h, 1)
			c.suites = []uint16{id}
			c.connect()
			app, _ := c.sess.seal(ctApplicationData, []byte("up"))
			c.send(app)
			s := h.e.Session(c.addr)
			if s == nil || s.Identity() != nil || s.CipherSuite() != id || len(h.data[c.addr]) != 1 {
				t.Fatalf("session %+v", s)
			}
		})
	}
}

// TestRSABadPremasterIndistinguishable: a premaster secret that does not
// decrypt, has the wrong length or the wrong version gets exactly the
// treatment of a good one encrypted under other keys: no alert at the
// ClientKeyExchange, decrypt_error at the Finished.
func TestRSABadPremasterIndistinguishable(t *testing.T) {
	p := loadPKI(t)
	for _, tc := range []struct {
		name        string
		plain, ciph func([]byte) []byte
	}{
		{"garbage ciphertext", nil, func(ct []byte) []byte { _, _ = rand.Read(ct); return ct }},
		{"flipped ciphertext", nil, func(ct []byte) []byte { ct[10] ^= 1; return ct }},
		{"wrong version", func(pms []byte) []byte { b := append([]byte(nil), pms...); b[1] = 0xff; return b }, nil},
		{"47 bytes", func(pms []byte) []byte { return pms[:47] }, nil},
		{"49 bytes", func(pms []byte) []byte { return append(append([]byte(nil), pms...), 0) }, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{Certificates: []tls.Certificate{p.cert}})
			c := newClient(h, 1)
			c.suites = []uint16{TLS_RSA_WITH_AES_128_CBC_SHA}
			c.rsaPlain, c.rsaCipher = tc.plain, tc.ciph
			c.cookieExchange()
			c.flight4()
			cke, ccs, fin := c.keyExchange()
			c.send(cke)
			c.send(ccs)
			if recs, _ := c.serverRecords(); len(recs) != 0 {
				t.Fatalf("server answered the ClientKeyExchange with %d records", len(recs))
			}
			c.send(fin)
			if d := plainAlert(t, c); d != alertDecryptError {
				t.Fatalf("alert %d", d)
			}
			if st := h.e.Stats(); st.HandshakeFailures[ReasonBadFinished] != 1 || st.HandshakesActive != 0 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

func TestOpenSSLClientRSA(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	p := loadPKI(t)
	for _, tc := range []struct{ cipher string }{
		{"AES128-SHA256"}, {"AES256-SHA256"}, {"AES128-SHA"}, {"AES256-SHA"},
	} {
		t.Run(tc.cipher, func(t *testing.T) {
			onClose, closed := closeWatcher()
			ts := startServer(t, Config{Certificates: []tls.Certificate{p.cert}, OnClose: onClose})
			out := runInteractive(t, openssl, []string{"s_client", "-dtls1_2", "-connect", ts.addr.String(),
				"-cipher", tc.cipher, "-CAfile", p.caFile, "-verify_return_error", "-verify_hostname", "localhost"},
				"Verify return code", "ping-"+tc.cipher)
			if !strings.Contains(out, "Cipher is "+tc.cipher) || !strings.Contains(out, "Verify return code: 0 (ok)") {
				t.Fatalf("unexpected session:\n%s", out)
			}
			waitReason(t, closed, ClosePeer)
		})
	}
}

func TestGnuTLSClientRSA(t *testing.T) {
	bin := needTool(t, "gnutls-cli", "gnutls-bin")
	p := loadPKI(t)
	for _, tc := range []struct{ cipher, desc string }{
		{"AES-128-CBC:+SHA256", "(RSA)-(AES-128-CBC)-(SHA256)"},
		{"AES-256-CBC:+SHA1", "(RSA)-(AES-256-CBC)-(SHA1)"},
	} {
		t.Run(tc.cipher, func(t *testing.T) {
			onClose, closed := closeWatcher()
			ts := startServer(t, Config{Certificates: []tls.Certificate{p.cert}, OnClose: onClose})
			prio := "NONE:+VERS-DTLS1.2:+RSA:+COMP-NULL:+SIGN-ALL:+CTYPE-X509:+" + tc.cipher
			out := runInteractive(t, bin, []string{"--udp", "--x509cafile", p.caFile, "--priority", prio,
				"-p", fmt.Sprint(ts.addr.Port), "localhost"},
				"Handshake was completed", "ping-gnutls")
			waitReason(t, closed, ClosePeer)
			if !strings.Contains(out, tc.desc) {
				t.Fatalf("unexpected session:\n%s", out)
			}
		})
	}
}

// TestMixedListener: one engine with a certificate and PSKs serves a client
// offering PSK, RSA_PSK and RSA suites without a PSK (like an mbedTLS SDK
// without ECC) with RSA, and a PSK-only client with PSK.
func TestMixedListener(t *testing.T) {
	p := loadPKI(t)
	h := newHarness(t, Config{Certificates: []tls.Certificate{p.cert}})
	sdk := newClient(h, 1)
	sdk.suites = []uint16{0x008C, 0x00AE, 0x008D, 0x0094, 0x00B6, 0x0095, 0x002F, 0x003C, 0x0035, 0x003D, 0x00FF}
	sdk.connect()
	psk := newClient(h, 2)
	psk.suites = []uint16{TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CBC_SHA256}
	psk.connect()
	if got := h.e.Session(sdk.addr).CipherSuite(); got != TLS_RSA_WITH_AES_128_CBC_SHA {
		t.Fatalf("SDK-like client got %s", SuiteName(got))
	}
	if got := h.e.Session(psk.addr).CipherSuite(); got != TLS_PSK_WITH_AES_128_CCM_8 {
		t.Fatalf("PSK client got %s", SuiteName(got))
	}
	// The same with real peers on one socket.
	if _, err := exec.LookPath("openssl"); err == nil {
		ts := startServer(t, Config{Certificates: []tls.Certificate{p.cert}})
		c, err := dialPion(t, ts.addr, "dev1", testKey, dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256))
		if err != nil {
			t.Fatal(err)
		}
		echo(t, c, "psk")
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "openssl", "s_client", "-dtls1_2", "-connect", ts.addr.String(),
			"-CAfile", p.caFile, "-verify_return_error", "-verify_hostname", "localhost")
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		// openssl's own order among the RSA suites: AES256-SHA256 first.
		if !strings.Contains(string(out), "Cipher is AES256-SHA256") || !strings.Contains(string(out), "Verify return code: 0 (ok)") {
			t.Fatalf("openssl with its default suites:\n%s", out)
		}
	}
}

func TestConfigRejectsSuitesWithoutCredentials(t *testing.T) {
	if _, err := New(Config{Send: func([]byte, netip.AddrPort) {}, Suites: []uint16{TLS_RSA_WITH_AES_128_CBC_SHA}, PSK: testPSK}, time.Now()); err == nil {
		t.Fatal("RSA suite accepted without a certificate")
	}
	p := loadPKI(t)
	if _, err := New(Config{Send: func([]byte, netip.AddrPort) {}, Certificates: []tls.Certificate{p.cert}, Suites: []uint16{TLS_PSK_WITH_AES_128_CCM_8}}, time.Now()); err == nil {
		t.Fatal("PSK suite accepted without a PSK callback")
	}
}

func TestLibcoapClientCertificate(t *testing.T) {
	p := loadPKI(t)
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path := needTool(t, bin, "libcoap3-bin")
			onClose, closed := closeWatcher()
			ts := startCoAPServer(t, Config{Certificates: []tls.Certificate{p.cert}, OnClose: onClose})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, "-B", "5", "-R", p.caFile, "-m", "get",
				fmt.Sprintf("coaps://localhost:%d/x", ts.addr.Port)).CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				t.Fatalf("%s: %v\n%s", bin, err, out)
			}
			waitReason(t, closed, ClosePeer)
		})
	}
}
