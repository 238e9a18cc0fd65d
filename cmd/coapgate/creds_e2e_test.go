package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"log/slog"
	"net"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/natstest"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// metricValue returns the value of the metric line whose name and labels
// are exactly series (0 when absent).
func metricValue(text, series string) float64 {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if ok && name == series {
			f, _ := strconv.ParseFloat(val, 64)
			return f
		}
	}
	return 0
}

// TestE2ETokenBoundToIncarnation: a token issued before a device was
// deleted is refused after the device is re-created with the same keys,
// whether with a new secret or the same one; a token of the new device
// works; a non-canonical spelling of a valid token is refused.
func TestE2ETokenBoundToIncarnation(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "reborn_1")
	ctx := context.Background()
	conn := udpConn(t, g.s.CoAPAddr())
	mid := int32(200)
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	post := func(tok string) codes.Code {
		mid++
		return rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid,
			Token: []byte{7}, Options: topicOpts(tok, 2088, topic), Payload: []byte(`{"id":"1"}`)}).Code
	}
	old, err := g.dial(d).Auth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if code := post(old); code != codes.Changed {
		t.Fatalf("before delete: %v", code)
	}
	for _, sameSecret := range []bool{false, true} {
		t.Run(fmt.Sprintf("same secret %v", sameSecret), func(t *testing.T) {
			if code := g.api("DELETE", "/api/v1/devices/"+d.pk+"/"+d.dk, nil, nil); code != 204 {
				t.Fatalf("delete: %d", code)
			}
			body := map[string]any{"productKey": d.pk, "deviceKey": d.dk}
			if sameSecret {
				body["deviceSecret"] = d.secret
			}
			var created struct{ DeviceSecret string }
			if code := g.api("POST", "/api/v1/devices", body, &created); code != 201 {
				t.Fatalf("re-create: %d", code)
			}
			if code := post(old); code != codes.Unauthorized {
				t.Fatalf("token of the deleted device: %v, want 4.01", code)
			}
			d.secret = created.DeviceSecret
			fresh, err := g.dial(d).Auth(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if code := post(fresh); code != codes.Changed {
				t.Fatalf("token of the re-created device: %v", code)
			}
			old = fresh
		})
	}
	t.Run("one spelling per token", func(t *testing.T) {
		const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
		last := strings.IndexByte(alphabet, old[len(old)-1])
		accepted := 0
		for i := range alphabet {
			if i == last {
				continue
			}
			if code := post(old[:len(old)-1] + alphabet[i:i+1]); code == codes.Changed {
				accepted++
			}
		}
		if accepted != 0 {
			t.Fatalf("%d other spellings of a token accepted", accepted)
		}
	})
	if got := metricValue(g.metricsText(), `coapgate_auth_failures_total{reason="other_incarnation",transport="coap"}`); got != 2 {
		t.Errorf("other_incarnation refusals = %v, want 2", got)
	}
}

// alertWatch is a DTLS client's socket that counts the alert records the
// server sends (close_notify after the handshake is encrypted, but the
// record type is visible without a Connection ID) and hides them from
// the client, which therefore goes on sending as a device that missed the
// close_notify would.
type alertWatch struct {
	net.PacketConn
	alerts atomic.Int32
}

func (a *alertWatch) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		n, addr, err := a.PacketConn.ReadFrom(b)
		if err == nil && n >= 13 && b[0] == 21 && (b[3] != 0 || b[4] != 0) {
			a.alerts.Add(1)
			continue
		}
		return n, addr, err
	}
}

// dtlsDevice is a PSK session of device d over a watched socket.
type dtlsDevice struct {
	t     *testing.T
	conn  *dtls.Conn
	watch *alertWatch
	topic string
	mid   uint16
}

func (g *testGateway) dialWatched(t *testing.T, d device) *dtlsDevice {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	w := &alertWatch{PacketConn: pc}
	c, err := dtls.ClientWithOptions(w, g.s.DTLSAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return dtlspsk.Key(d.secret), nil }),
		dtls.WithPSKIdentityHint([]byte(d.pk+","+d.dk+",2,3600")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return &dtlsDevice{t: t, conn: c, watch: w, topic: fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)}
}

// send writes one CON publish on the session.
func (dd *dtlsDevice) send() {
	dd.t.Helper()
	dd.mid++
	opts := topicOpts("", 2088, dd.topic)
	opts = opts[:len(opts)-1] // no token: the session is the device
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(dd.mid), Token: []byte{1},
		Options: opts, Payload: []byte(`{"id":"1","params":{"t":1}}`)}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		dd.t.Fatal(err)
	}
	if _, err := dd.conn.Write(b); err != nil {
		dd.t.Fatalf("write: %v", err)
	}
}

// publish sends a publish and returns the answer's code.
func (dd *dtlsDevice) publish() codes.Code {
	dd.t.Helper()
	dd.send()
	buf := make([]byte, 2048)
	dd.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	n, err := dd.conn.Read(buf)
	if err != nil {
		dd.t.Fatalf("read answer: %v", err)
	}
	r := message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], &r); err != nil {
		dd.t.Fatal(err)
	}
	return r.Code
}

// TestE2EDTLSSessionsEndOnCredentialChange: rotate-secret, revoke-tokens,
// disable and delete + re-create each end the device's DTLS session at
// once with an alert (close_notify) to the peer, counted as revoked; a
// record the device sends afterwards is dropped, never served.
func TestE2EDTLSSessionsEndOnCredentialChange(t *testing.T) {
	g := startTestGateway(t)
	pk, _ := g.newProduct(false)
	changes := []struct {
		name   string
		change func(d device) int
	}{
		{"rotate-secret", func(d device) int {
			return g.api("POST", "/api/v1/devices/"+d.pk+"/"+d.dk+"/rotate-secret", nil, nil)
		}},
		{"revoke-tokens", func(d device) int {
			return g.api("POST", "/api/v1/devices/"+d.pk+"/"+d.dk+"/revoke-tokens", nil, nil)
		}},
		{"disable", func(d device) int {
			return g.api("PATCH", "/api/v1/devices/"+d.pk+"/"+d.dk, map[string]any{"enabled": false}, nil)
		}},
		{"delete and re-create with the same secret", func(d device) int {
			if code := g.api("DELETE", "/api/v1/devices/"+d.pk+"/"+d.dk, nil, nil); code != 204 {
				return code
			}
			return g.api("POST", "/api/v1/devices", map[string]any{"productKey": d.pk, "deviceKey": d.dk, "deviceSecret": d.secret}, nil)
		}},
	}
	for n, ch := range changes {
		t.Run(ch.name, func(t *testing.T) {
			d := g.newDevice(pk, fmt.Sprintf("sess_%d", n))
			dd := g.dialWatched(t, d)
			if code := dd.publish(); code != codes.Changed {
				t.Fatalf("publish: %v", code)
			}
			before := len(g.messages(d))
			revoked := metricValue(g.metricsText(), `coapgate_dtls_sessions_closed_total{reason="revoked"}`)
			if code := ch.change(d); code/100 != 2 {
				t.Fatalf("change: %d", code)
			}
			waitUntil(t, func() bool { return dd.watch.alerts.Load() > 0 }, "an alert (close_notify) from the server")
			waitUntil(t, func() bool {
				return metricValue(g.metricsText(), `coapgate_dtls_sessions_closed_total{reason="revoked"}`) == revoked+1
			}, "the session closed as revoked")
			dropped := metricValue(g.metricsText(), `coapgate_dtls_records_rejected_total{reason="unexpected"}`)
			dd.send() // the device missed the close_notify and publishes
			waitUntil(t, func() bool {
				return metricValue(g.metricsText(), `coapgate_dtls_records_rejected_total{reason="unexpected"}`) > dropped
			}, "the later record dropped")
			if got := len(g.messages(d)); got != before {
				t.Fatalf("messages %d after the change, want %d", got, before)
			}
			if s := metricValue(g.metricsText(), "coapgate_dtls_sessions"); s != 0 {
				t.Fatalf("%v sessions left", s)
			}
		})
	}
}

// TestInteropDTLSRefusalAlerts: openssl s_client sees decrypt_error for a
// malformed identity, an unknown device, a disabled device and an unknown
// product, exactly as for a wrong key, never internal_error; each refusal
// is counted under its own reason.
func TestInteropDTLSRefusalAlerts(t *testing.T) {
	bin := lookPath(t, "openssl", "apt-get install openssl")
	g := startTestGateway(t)
	base := g.newDevice("", "seed")
	off := g.newDeviceWithSecret(base.pk, "disabled_1", interopSecret)
	if code := g.api("PATCH", "/api/v1/devices/"+off.pk+"/"+off.dk, map[string]any{"enabled": false}, nil); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	key := hex.EncodeToString(dtlspsk.Key(interopSecret))
	good := g.newDeviceWithSecret(base.pk, "wrong_key_1", "devsecret2")
	tests := []struct{ name, identity, alert, reason string }{
		{"malformed identity", base.pk + "," + base.dk + ",2", "alert decrypt error", "malformed_identity"},
		{"unknown device", base.pk + ",nobody,2,3600", "alert decrypt error", "unknown_device"},
		{"disabled device", off.pk + "," + off.dk + ",2,3600", "alert decrypt error", "disabled_device"},
		{"unknown product", "NoSuchProd1,nobody,2,3600", "alert decrypt error", "unknown_product"},
		{"wrong key", good.pk + "," + good.dk + ",2,3600", "alert decrypt error", "bad_key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, bin, "s_client", "-dtls1_2", "-connect", g.s.DTLSAddr().String(),
				"-psk_identity", tt.identity, "-psk", key, "-cipher", "PSK-AES128-CCM8")
			cmd.Stdin = strings.NewReader("")
			out, _ := cmd.CombinedOutput()
			if !strings.Contains(string(out), tt.alert) {
				t.Fatalf("want %q:\n%s", tt.alert, out)
			}
			if strings.Contains(string(out), "internal error") {
				t.Fatalf("internal_error alert:\n%s", out)
			}
			m := `coapgate_dtls_handshake_failures_total{reason="` + tt.reason + `"}`
			waitUntil(t, func() bool { return metricValue(g.metricsText(), m) == 1 }, m+" counted once")
		})
	}
}

// TestE2EClusterRevocation: two nodes share the registry (one SQLite file
// in WAL mode, as two processes could) and NATS (cluster.nats_url). A
// device's DTLS session lives on node B; revoke-tokens through node A's
// API ends it on node B at once — close_notify without the device sending
// anything, which only the change feed can cause (the device cache would
// notice only at the device's next request). The delay is logged.
func TestE2EClusterRevocation(t *testing.T) {
	natsURL := natstest.URL(t)
	natsSecret := config.Secret(natsURL)
	a := startTestGateway(t, func(c *config.Config) { c.Cluster.NATSURL = natsSecret })
	cfg := config.Default()
	cfg.DataDir = a.dir
	cfg.CoAP.Listen, cfg.CoAP.SymmetricListen, cfg.DTLS.Listen, cfg.API.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	cfg.Cluster.NATSURL = natsSecret
	sb, err := startServer(context.Background(), cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sb.shutdown() })
	b := &testGateway{t: t, s: sb, key: a.key, dir: a.dir}

	d := a.newDevice("", "roaming_1")
	dd := b.dialWatched(t, d)
	if code := dd.publish(); code != codes.Changed {
		t.Fatalf("publish through node B: %v", code)
	}
	sent := time.Now()
	if code := a.api("POST", "/api/v1/devices/"+d.pk+"/"+d.dk+"/revoke-tokens", nil, nil); code != 200 {
		t.Fatalf("revoke through node A: %d", code)
	}
	waitUntil(t, func() bool { return dd.watch.alerts.Load() > 0 }, "close_notify from node B")
	t.Logf("node B ended the session %v after node A's revoke-tokens was sent", time.Since(sent))
	if v := metricValue(b.metricsText(), `coapgate_dtls_sessions_closed_total{reason="revoked"}`); v != 1 {
		t.Fatalf("node B revoked %v sessions, want 1", v)
	}
}
