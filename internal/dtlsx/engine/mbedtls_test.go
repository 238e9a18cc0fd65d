package engine

import (
	"context"
	"crypto/tls"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// buildMbedClient compiles testdata/mbedclient.c against Debian's
// libmbedtls-dev.
func buildMbedClient(t *testing.T) string {
	t.Helper()
	cc := needTool(t, "gcc", "gcc")
	if _, err := os.Stat("/usr/include/mbedtls/ssl.h"); err != nil {
		t.Skip("mbedTLS headers not installed (apt-get install libmbedtls-dev); .ci/run installs them")
	}
	bin := filepath.Join(t.TempDir(), "mbedclient")
	out, err := exec.Command(cc, "-O1", "-o", bin, "testdata/mbedclient.c", "-lmbedtls", "-lmbedx509", "-lmbedcrypto").CombinedOutput()
	if err != nil {
		t.Fatalf("build mbedclient: %v\n%s", err, out)
	}
	return bin
}

// TestMbedTLSSDKLikeClient: a client configured like the vendor's mbedTLS
// SDK (PSK, RSA_PSK and RSA CBC suites offered, no PSK, certificate and
// host name verified) completes an RSA handshake on a listener that also
// serves PSK devices, and fails on a host name the certificate lacks.
func TestMbedTLSSDKLikeClient(t *testing.T) {
	bin := buildMbedClient(t)
	p := loadPKI(t)
	onClose, closed := closeWatcher()
	ts := startServer(t, Config{Certificates: []tls.Certificate{p.cert}, OnClose: onClose})
	run := func(host string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, bin, "127.0.0.1", fmt.Sprint(ts.addr.Port), p.caFile, host, "hello-sdk").CombinedOutput()
		return string(out), err
	}
	out, err := run("localhost")
	if err != nil || !strings.Contains(out, "suite TLS-RSA-WITH-AES-128-CBC-SHA\n") || !strings.Contains(out, "echo hello-sdk") {
		t.Fatalf("mbedclient: %v\n%s", err, out)
	}
	waitReason(t, closed, ClosePeer)
	out, err = run("gateway.example")
	if err == nil || !strings.Contains(out, "handshake failed") {
		t.Fatalf("host name not verified: %v\n%s", err, out)
	}
	// PSK devices on the same listener.
	c, err := dialPion(t, ts.addr, "dev1", testKey, pionPSKSuites())
	if err != nil {
		t.Fatal(err)
	}
	echo(t, c, "psk")
}
