package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
)

// TestCertDev: coapgate cert dev writes a CA and a server certificate with
// the DNS and IP subjectAltNames asked for, keys 0600; openssl s_client
// verifies CA and host name (and IP) against the native DTLS listener
// serving it, over RSA key transport or ECDHE_ECDSA, and rejects a host
// name the certificate does not carry.
func TestCertDev(t *testing.T) {
	bin := lookPath(t, "openssl", "apt-get install openssl")
	dir := filepath.Join(t.TempDir(), "dtls")
	var out, errb bytes.Buffer
	if code := run([]string{"cert", "dev", "--host", "localhost", "--ip", "127.0.0.1,::1", "--out", dir}, &out, &errb); code != 0 {
		t.Fatalf("cert dev: %d %s", code, errb.String())
	}
	caFile, certFile, keyFile := filepath.Join(dir, "ca.pem"), filepath.Join(dir, "server.pem"), filepath.Join(dir, "server.key")
	for _, f := range []string{keyFile, filepath.Join(dir, "ca.key")} {
		if fi, err := os.Stat(f); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("%s: %v %v", f, fi.Mode(), err)
		}
	}
	b, _ := os.ReadFile(certFile)
	blk, _ := pem.Decode(b)
	leaf, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(leaf.DNSNames) != 1 || leaf.DNSNames[0] != "localhost" || len(leaf.IPAddresses) != 2 || leaf.IPAddresses[0].String() != "127.0.0.1" || leaf.IPAddresses[1].String() != "::1" {
		t.Fatalf("subjectAltNames %v %v", leaf.DNSNames, leaf.IPAddresses)
	}
	if code := run([]string{"cert", "dev", "--host", "localhost", "--out", dir}, &out, &errb); code != 1 {
		t.Fatalf("existing server certificate overwritten without --force: %d", code)
	}
	caBefore, _ := os.ReadFile(caFile)

	sClient := func(t *testing.T, addr, cipher string, verify ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		args := append([]string{"s_client", "-dtls1_2", "-connect", addr, "-CAfile", caFile, "-cipher", cipher}, verify...)
		cmd := exec.CommandContext(ctx, bin, args...)
		cmd.Stdin = strings.NewReader("") // EOF: s_client closes after the handshake
		o, _ := cmd.CombinedOutput()
		return string(o)
	}
	for _, tc := range []struct{ keyType, cipher string }{
		{"rsa", "AES128-SHA256"},
		{"ecdsa", "ECDHE-ECDSA-AES128-GCM-SHA256"},
	} {
		t.Run(tc.keyType, func(t *testing.T) {
			if code := run([]string{"cert", "dev", "--host", "localhost", "--ip", "127.0.0.1", "--out", dir, "--key-type", tc.keyType, "--force"}, &out, &errb); code != 0 {
				t.Fatalf("cert dev: %d %s", code, errb.String())
			}
			if ca, _ := os.ReadFile(caFile); !bytes.Equal(ca, caBefore) {
				t.Fatal("CA not reused")
			}
			g := startTestGateway(t, func(c *config.Config) {
				c.DTLS.CertFile, c.DTLS.KeyFile = certFile, keyFile
			})
			addr := g.s.DTLSAddr().String()
			for _, v := range [][]string{{"-verify_hostname", "localhost"}, {"-verify_ip", "127.0.0.1"}} {
				o := sClient(t, addr, tc.cipher, append(v, "-verify_return_error")...)
				if !strings.Contains(o, "Cipher is "+tc.cipher) || !strings.Contains(o, "Verify return code: 0 (ok)") {
					t.Fatalf("%v: no verified %s session:\n%s", v, tc.cipher, o)
				}
			}
			if o := sClient(t, addr, tc.cipher, "-verify_hostname", "other.example"); !strings.Contains(o, "Verify return code: 62 (hostname mismatch)") {
				t.Fatalf("a host name not in the certificate verified:\n%s", o)
			}
		})
	}
}
