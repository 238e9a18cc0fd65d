package main

import (
	"context"
	"encoding/hex"
	"fmt"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
)

// interopSecret derives a key without a 0x00 byte, so its raw bytes can be
// a command-line argument (libcoap's -k takes raw key bytes).
const interopSecret = "devsecret1"

func lookPath(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (%s); scripts/test.sh installs it", name, pkg)
	}
	return p
}

// newDeviceWithSecret creates a device with a given secret.
func (g *testGateway) newDeviceWithSecret(pk, dk, secret string) device {
	g.t.Helper()
	var d struct{ ProductKey, DeviceKey, DeviceSecret string }
	if code := g.api("POST", "/api/v1/devices", map[string]any{"productKey": pk, "deviceKey": dk, "deviceSecret": secret}, &d); code != 201 {
		g.t.Fatalf("create device: %d", code)
	}
	return device{pk: d.ProductKey, dk: d.DeviceKey, secret: secret}
}

// TestInteropDTLSLibcoap: libcoap's coap-client publishes over DTLS-PSK
// with the dialect identity (openssl build: CCM_8; gnutls build: CBC_SHA256)
// and reads the reply.
func TestInteropDTLSLibcoap(t *testing.T) {
	g := startTestGateway(t)
	base := g.newDevice("", "seed")
	d := g.newDeviceWithSecret(base.pk, "libcoap_dtls", interopSecret)
	key := dtlspsk.Key(d.secret)
	if strings.IndexByte(string(key), 0) >= 0 {
		t.Fatal("test key contains 0x00")
	}
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	url := "coaps://" + g.s.DTLSAddr().String() + "/topic" + topic
	n := 0
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path := lookPath(t, bin, "apt-get install libcoap3-bin")
			n++
			id := fmt.Sprintf("%d", 200+n)
			payload := fmt.Sprintf(`{"id":%q,"version":"1.0","method":"thing.event.property.post","params":{"temp":%d}}`, id, n)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, path, "-u", d.pk+","+d.dk+",2,3600", "-k", string(key),
				"-m", "post", "-t", "50", "-e", payload, "-B", "10", "-v", "0", url).CombinedOutput()
			if err != nil {
				t.Fatalf("%s: %v\n%s", bin, err, out)
			}
			want := fmt.Sprintf(`{"id":%q,"code":200,"data":{},"message":"success"}`, id)
			if strings.TrimSpace(string(out)) != want {
				t.Fatalf("reply %q, want %q", out, want)
			}
		})
	}
	if n == 2 {
		// Each build negotiated its own dialect suite.
		m := g.metricsText()
		for _, suite := range []string{"psk_aes_128_ccm_8", "psk_aes_128_cbc_sha256"} {
			if !strings.Contains(m, `coapgate_dtls_handshakes_total{suite="`+suite+`"} 1`) {
				t.Errorf("no %s handshake counted:\n%s", suite, grepLines(m, "coapgate_dtls_handshakes_total"))
			}
		}
	}
	if n > 0 {
		msgs := g.messages(d)
		if len(msgs) != n || msgs[0].Transport != "coap-dtls" {
			t.Fatalf("stored %+v, want %d coap-dtls messages", msgs, n)
		}
	}
}

// TestInteropDTLSOpenSSL: openssl s_client completes PSK handshakes with
// each dialect suite.
func TestInteropDTLSOpenSSL(t *testing.T) {
	bin := lookPath(t, "openssl", "apt-get install openssl")
	g := startTestGateway(t)
	base := g.newDevice("", "seed")
	d := g.newDeviceWithSecret(base.pk, "openssl_dtls", interopSecret)
	for _, cipher := range []string{"PSK-AES128-CCM8", "PSK-AES128-CBC-SHA256"} {
		t.Run(cipher, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "s_client", "-dtls1_2", "-connect", g.s.DTLSAddr().String(),
				"-psk_identity", d.pk+","+d.dk+",2,3600", "-psk", hex.EncodeToString(dtlspsk.Key(d.secret)),
				"-cipher", cipher)
			cmd.Stdin = strings.NewReader("") // EOF: s_client closes after the handshake
			out, _ := cmd.CombinedOutput()
			if !strings.Contains(string(out), "Cipher is "+cipher) {
				t.Fatalf("no %s session:\n%s", cipher, out)
			}
		})
	}
	// A wrong key is refused with an alert, not a timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "s_client", "-dtls1_2", "-connect", g.s.DTLSAddr().String(),
		"-psk_identity", d.pk+","+d.dk+",2,3600", "-psk", hex.EncodeToString(dtlspsk.Key("wrong")), "-cipher", "PSK-AES128-CCM8")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "alert decrypt error") {
		t.Fatalf("wrong key not refused with a decrypt_error alert:\n%s", out)
	}
}

func grepLines(s, prefix string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
