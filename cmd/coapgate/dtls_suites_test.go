package main

import (
	"context"
	"encoding/hex"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
)

// TestNativeDTLSSuitesSetting: dtls.suites replaces the offered suites:
// a suite outside the default set (PSK AES-128-CBC-SHA) is served, a
// default one left out (CCM_8) is refused with a handshake_failure alert.
func TestNativeDTLSSuitesSetting(t *testing.T) {
	bin := lookPath(t, "openssl", "apt-get install openssl")
	g := startTestGateway(t, func(c *config.Config) {
		c.DTLS.Suites = "TLS_PSK_WITH_AES_128_CBC_SHA, TLS_PSK_WITH_AES_128_CBC_SHA256"
	})
	base := g.newDevice("", "seed")
	d := g.newDeviceWithSecret(base.pk, "suites_dtls", interopSecret)
	sClient := func(cipher string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, "s_client", "-dtls1_2", "-connect", g.s.DTLSAddr().String(),
			"-psk_identity", d.pk+","+d.dk+",2,3600", "-psk", hex.EncodeToString(dtlspsk.Key(d.secret)), "-cipher", cipher)
		cmd.Stdin = strings.NewReader("")
		out, _ := cmd.CombinedOutput()
		return string(out)
	}
	// Offered both, the client's first choice within the PSK key exchange.
	if out := sClient("PSK-AES128-CBC-SHA:PSK-AES128-CBC-SHA256"); !strings.Contains(out, "Cipher is PSK-AES128-CBC-SHA\n") {
		t.Fatalf("no PSK-AES128-CBC-SHA session:\n%s", out)
	}
	if out := sClient("PSK-AES128-CCM8"); !strings.Contains(out, "alert handshake failure") {
		t.Fatalf("a suite left out of dtls.suites was not refused:\n%s", out)
	}
}
