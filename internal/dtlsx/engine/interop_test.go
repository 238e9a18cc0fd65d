package engine

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed (apt-get install %s); .ci/run installs it", name, pkg)
	}
	return p
}

// closeWatcher returns a Config.OnClose that reports close reasons.
func closeWatcher() (func(*Session, string), <-chan string) {
	ch := make(chan string, 16)
	return func(_ *Session, reason string) { ch <- reason }, ch
}

func waitReason(t *testing.T, ch <-chan string, want string) {
	t.Helper()
	select {
	case got := <-ch:
		if got != want {
			t.Fatalf("session closed with %q, want %q", got, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("session not closed (%s)", want)
	}
}

// runInteractive starts a client command, writes line to its stdin once
// handshakeMarker is seen on its stdout, waits for the echoed line, then
// closes stdin so that the client ends the session.
func runInteractive(t *testing.T, name string, args []string, handshakeMarker, line string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	sent, echoed := false, false
	done := make(chan error, 1)
	go func() { done <- cmd.Wait(); pw.Close() }()
	for sc.Scan() {
		l := sc.Text()
		out.WriteString(l + "\n")
		if !sent && strings.Contains(l, handshakeMarker) {
			sent = true
			if _, err := io.WriteString(stdin, line+"\n"); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if sent && strings.TrimSpace(l) == line {
			echoed = true
			stdin.Close()
		}
	}
	<-done
	if !echoed {
		t.Fatalf("%s: no echo of %q; output:\n%s", name, line, out.String())
	}
	return out.String()
}

func TestOpenSSLClientPSK(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	for _, tc := range []struct {
		cipher string
		suite  uint16
	}{
		{"PSK-AES128-CCM8", TLS_PSK_WITH_AES_128_CCM_8},
		{"PSK-AES128-CBC-SHA256", TLS_PSK_WITH_AES_128_CBC_SHA256},
		{"PSK-AES128-CBC-SHA", TLS_PSK_WITH_AES_128_CBC_SHA},
		{"PSK-AES256-CBC-SHA", TLS_PSK_WITH_AES_256_CBC_SHA},
	} {
		t.Run(tc.cipher, func(t *testing.T) {
			onClose, closed := closeWatcher()
			ts := startServer(t, Config{OnClose: onClose})
			out := runInteractive(t, openssl, []string{"s_client", "-dtls1_2", "-connect", ts.addr.String(),
				"-psk", hex.EncodeToString(testKey), "-psk_identity", "dev1", "-cipher", tc.cipher, "-mtu", "1200"},
				"Verify return code", "ping-"+tc.cipher)
			if !strings.Contains(out, "Cipher is "+tc.cipher) || !strings.Contains(out, "Extended master secret: yes") {
				t.Fatalf("unexpected session:\n%s", out)
			}
			waitReason(t, closed, ClosePeer)
			st := ts.e.Stats()
			if st.HandshakesDone != 1 || st.HelloVerifyRequests != 1 || st.Sessions != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestOpenSSLWrongPSKFailsFast(t *testing.T) {
	openssl := needTool(t, "openssl", "openssl")
	ts := startServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, openssl, "s_client", "-dtls1_2", "-connect", ts.addr.String(),
		"-psk", "00112233445566778899aabbccddeeff", "-psk_identity", "dev1", "-cipher", "PSK-AES128-CCM8")
	cmd.Stdin = strings.NewReader("")
	out, _ := cmd.CombinedOutput()
	if !strings.Contains(string(out), "alert decrypt error") {
		t.Fatalf("client did not receive decrypt_error:\n%s", out)
	}
	st := ts.e.Stats()
	if st.HandshakeFailures[ReasonBadFinished] != 1 || st.HandshakesActive != 0 || st.HandshakesDone != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// coapResponder answers every confirmable CoAP request with an ACK 2.05
// carrying "ok" (RFC 7252 §3), enough for coap-client to finish.
func coapResponder(e **Engine) func(*Session, []byte) {
	return func(s *Session, b []byte) {
		if len(b) < 4 || b[0]>>6 != 1 || (b[0]>>4)&3 != 0 {
			return
		}
		tkl := int(b[0] & 0x0f)
		if len(b) < 4+tkl {
			return
		}
		resp := []byte{0x60 | byte(tkl), 0x45, b[2], b[3]}
		resp = append(resp, b[4:4+tkl]...)
		resp = append(resp, 0xff, 'o', 'k')
		_ = (*e).Write(s.Addr(), resp)
	}
}

func startCoAPServer(t *testing.T, cfg Config) *liveServer {
	t.Helper()
	var e *Engine
	cfg.OnData = coapResponder(&e)
	ts := startServerWith(t, cfg, func(x *Engine) { e = x })
	return ts
}

func TestLibcoapClientPSK(t *testing.T) {
	for _, tool := range []struct{ bin, pkg string }{{"coap-client-openssl", "libcoap3-bin"}, {"coap-client-gnutls", "libcoap3-bin"}} {
		t.Run(tool.bin, func(t *testing.T) {
			bin := needTool(t, tool.bin, tool.pkg)
			onClose, closed := closeWatcher()
			ts := startCoAPServer(t, Config{OnClose: onClose})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			out, err := exec.CommandContext(ctx, bin, "-B", "5", "-u", "dev1", "-k", string(testKey), "-m", "get",
				"coaps://"+ts.addr.String()+"/x").CombinedOutput()
			if err != nil || strings.TrimSpace(string(out)) != "ok" {
				t.Fatalf("%s: %v\n%s", tool.bin, err, out)
			}
			waitReason(t, closed, ClosePeer)
			if st := ts.e.Stats(); st.HandshakesDone != 1 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func TestGnuTLSClientPSK(t *testing.T) {
	bin := needTool(t, "gnutls-cli", "gnutls-bin")
	for _, tc := range []struct{ cipher, desc string }{
		{"AES-128-CCM-8:+AEAD", "(PSK)-(AES-128-CCM-8)"},
		{"AES-128-CBC:+SHA256", "(PSK)-(AES-128-CBC)-(SHA256)"},
		{"AES-128-CBC:+SHA1", "(PSK)-(AES-128-CBC)-(SHA1)"},
		{"AES-256-CBC:+SHA1", "(PSK)-(AES-256-CBC)-(SHA1)"},
	} {
		t.Run(tc.cipher, func(t *testing.T) {
			onClose, closed := closeWatcher()
			ts := startServer(t, Config{OnClose: onClose})
			prio := "NONE:+VERS-DTLS1.2:+PSK:+COMP-NULL:+SIGN-ALL:+CTYPE-X509:+" + tc.cipher
			out := runInteractive(t, bin, []string{"--udp", "--insecure", "--pskusername", "dev1", "--pskkey", hex.EncodeToString(testKey),
				"--priority", prio, "-p", fmt.Sprint(ts.addr.Port), "127.0.0.1"},
				"Handshake was completed", "ping-gnutls")
			waitReason(t, closed, ClosePeer)
			st := ts.e.Stats()
			if st.HandshakesDone != 1 || !strings.Contains(out, tc.desc) || !strings.Contains(out, "extended master secret, safe renegotiation") {
				t.Fatalf("stats %+v\n%s", st, out)
			}
		})
	}
}
