package main

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/sdk"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// writeRSAChain writes a CA and an RSA server certificate it signed (DNS
// "localhost", IP 127.0.0.1) to dir: ca.pem, server.pem (leaf and CA),
// server.key.
func writeRSAChain(t *testing.T, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	caKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		DNSNames: []string{"localhost"}, IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage: x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pemOf := func(typ string, b []byte) []byte { return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b}) }
	caFile, certFile, keyFile = filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	for f, b := range map[string][]byte{
		caFile:   pemOf("CERTIFICATE", caDER),
		certFile: append(pemOf("CERTIFICATE", der), pemOf("CERTIFICATE", caDER)...),
		keyFile:  pemOf("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(key)),
	} {
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}

// TestNativeDTLSRSACertificate: with an RSA
// certificate, libcoap's clients (certificate mode, CA and host name
// verified) authenticate with /auth and publish over RSA key transport,
// while PSK devices keep working on the same port.
func TestNativeDTLSRSACertificate(t *testing.T) {
	caFile, certFile, keyFile := writeRSAChain(t, t.TempDir())
	g := startTestGateway(t, func(c *config.Config) {
		c.DTLS.CertFile, c.DTLS.KeyFile = certFile, keyFile
	})
	d := g.newDevice("", "rsa_cert_1")
	clientID := d.pk + "." + d.dk
	mac := hmac.New(md5.New, []byte(d.secret))
	fmt.Fprintf(mac, "clientId%sdeviceName%sproductKey%s", clientID, d.dk, d.pk)
	body := fmt.Sprintf(`{"productKey":%q,"deviceName":%q,"clientId":%q,"signmethod":"hmacmd5","sign":%q}`,
		d.pk, d.dk, clientID, hex.EncodeToString(mac.Sum(nil)))
	base := fmt.Sprintf("coaps://localhost:%d", g.s.DTLSAddr().Port)
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	ran := 0
	for i, name := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(name, func(t *testing.T) {
			bin := lookPath(t, name, "apt-get install libcoap3-bin")
			ran++
			out := runCoapClient(t, bin, "-R", caFile, "-m", "post", "-t", "50", "-A", "50", "-e", body, "-B", "5", "-v", "0", base+"/auth")
			var auth struct{ Token string }
			if err := json.Unmarshal([]byte(strings.TrimSpace(out)), &auth); err != nil || auth.Token == "" {
				t.Fatalf("auth answer %q: %v", out, err)
			}
			id := fmt.Sprintf("%d", 300+i)
			out = runCoapClient(t, bin, "-R", caFile, "-m", "post", "-t", "50", "-O", "2088,"+auth.Token,
				"-e", fmt.Sprintf(`{"id":%q,"params":{"t":%d}}`, id, i), "-B", "5", "-v", "0", base+"/topic"+topic)
			if want := fmt.Sprintf(`{"id":%q,"code":200,"data":{},"message":"success"}`, id); strings.TrimSpace(out) != want {
				t.Fatalf("publish reply %q, want %q", out, want)
			}
		})
	}
	// A PSK device on the same listener.
	c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret, CipherSuites: []uint16{sdk.SuitePSKAES128CCM8}})
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := c.Publish(context.Background(), topic, []byte(`{"id":"399","params":{"t":9}}`)); err != nil || resp.Code != codes.Changed {
		t.Fatalf("PSK publish: %v", err)
	}
	if ran > 0 {
		if m := grepLines(g.metricsText(), "coapgate_dtls_handshakes_total"); !strings.Contains(m, `suite="rsa_aes_`) {
			t.Fatalf("no RSA key transport handshake counted:\n%s", m)
		}
		if msgs := g.messages(d); len(msgs) != ran+1 || msgs[0].Transport != "coap-dtls" {
			t.Fatalf("stored %+v", msgs)
		}
	}
}
