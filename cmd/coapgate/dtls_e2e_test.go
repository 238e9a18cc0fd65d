package main

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"github.com/coapgate/coapgate/internal/config"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/sdk"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// dialDTLS dials the gateway's DTLS port with a PSK identity.
func (g *testGateway) dialDTLS(p sdk.DTLSPSK) (*sdk.Client, error) {
	g.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, g.s.DTLSAddr().String(), sdk.WithDTLSPSK(p),
		sdk.WithTransmissionParams(sdk.TransmissionParams{AckTimeout: 500 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2}))
	if err == nil {
		g.t.Cleanup(func() { c.Close() })
	}
	return c, err
}

// newProduct creates a product and returns its key and secret.
func (g *testGateway) newProduct(dynamic bool) (pk, secret string) {
	g.t.Helper()
	var p struct{ ProductKey, ProductSecret string }
	if code := g.api("POST", "/api/v1/products", map[string]any{"name": "dtls", "dynamicRegistration": dynamic}, &p); code != 201 {
		g.t.Fatalf("create product: %d", code)
	}
	return p.ProductKey, p.ProductSecret
}

func (g *testGateway) metricsText() string {
	g.t.Helper()
	resp, err := http.Get("http://" + g.s.APIAddr() + "/metrics")
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// TestE2EDTLSPSK: the SDK over DTLS with each dialect suite publishes with
// no token; the message is stored with transport coap-dtls and the device
// is online with the identity's lifetime.
func TestE2EDTLSPSK(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "dtls_1")
	suites := map[string]uint16{"ccm8": sdk.SuitePSKAES128CCM8, "cbc_sha256": sdk.SuitePSKAES128CBCSHA256}
	for name, suite := range suites {
		t.Run(name, func(t *testing.T) {
			c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret, Lifetime: 120 * time.Second, CipherSuites: []uint16{suite}})
			if err != nil {
				t.Fatal(err)
			}
			topic := fmt.Sprintf("/sys/%s/%s/thing/measurepoint/post", d.pk, d.dk)
			resp, err := c.Publish(context.Background(), topic, []byte(`{"id":"1","params":{"measurepoints":{"t":1}}}`))
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != codes.Changed || resp.MessageID == "" || string(resp.Payload) != `{"id":"1","code":200,"data":{},"message":"success"}` {
				t.Fatalf("publish: %v %q %s", resp.Code, resp.MessageID, resp.Payload)
			}
			// Same ACL as 5683: another device's topic is 4.03.
			if _, err := c.Publish(context.Background(), "/sys/other/dev/thing/event/property/post", []byte(`{}`)); statusCode(err) != codes.Forbidden {
				t.Fatalf("foreign topic: %v", err)
			}
		})
	}
	msgs := g.messages(d)
	if len(msgs) != 2 || msgs[0].Transport != "coap-dtls" || !strings.HasPrefix(msgs[0].Peer, "127.0.0.1:") {
		t.Fatalf("stored %+v", msgs)
	}
	var det struct {
		Online          bool
		Transport       string
		LastAddress     string
		LifetimeSeconds int64
	}
	g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk, nil, &det)
	if !det.Online || det.Transport != "coap-dtls" || det.LifetimeSeconds != 120 || det.LastAddress == "" {
		t.Fatalf("device detail %+v", det)
	}
}

// TestE2EDTLSRefused: a wrong secret, a disabled device, mode 3 on a product
// without dynamic registration and a bad lifetime fail the handshake fast;
// each is counted by reason.
func TestE2EDTLSRefused(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "dtls_2")
	off := g.newDevice(d.pk, "dtls_off")
	if code := g.api("PATCH", "/api/v1/devices/"+off.pk+"/"+off.dk, map[string]any{"enabled": false}, nil); code != 200 {
		t.Fatalf("disable: %d", code)
	}
	tests := []struct {
		name, reason string
		p            sdk.DTLSPSK
	}{
		{"wrong key", "bad_key", sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: "not-the-secret"}},
		{"disabled", "disabled_device", sdk.DTLSPSK{ProductKey: off.pk, DeviceName: off.dk, Secret: off.secret}},
		{"unknown device", "unknown_device", sdk.DTLSPSK{ProductKey: d.pk, DeviceName: "nobody", Secret: "x"}},
		{"mode 3 not allowed", "mode3_not_allowed", sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: "x", SecureMode: sdk.SecureModeProduct}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := g.dialDTLS(tt.p)
			if !errors.Is(err, sdk.ErrHandshake) {
				t.Fatalf("dial: %v, want a handshake failure", err)
			}
			// Refused by an alert, not left to time out.
			if !strings.Contains(err.Error(), "alert:") {
				t.Errorf("refusal without an alert: %v", err)
			}
			want := fmt.Sprintf(`coapgate_dtls_handshake_failures_total{reason=%q} 1`, tt.reason)
			waitUntil(t, func() bool { return strings.Contains(g.metricsText(), want) }, want)
		})
	}
	// The good device is unaffected.
	c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PostMeasurePoints(context.Background(), map[string]any{"t": 2}, time.Time{}); err != nil {
		t.Fatal(err)
	}
}

// TestE2EDTLSActivation: secureMode 3 with the product secret fetches the
// device secret (creating the device), may do nothing else, and the device
// then connects in secureMode 2. Activation is idempotent.
func TestE2EDTLSActivation(t *testing.T) {
	g := startTestGateway(t)
	pk, ps := g.newProduct(true)
	ctx := context.Background()
	p := sdk.DTLSPSK{ProductKey: pk, DeviceName: "fresh_1", Secret: ps, Lifetime: time.Minute}
	c, act, err := sdk.DialActivated(ctx, g.s.DTLSAddr().String(), p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if act.ProductKey != pk || act.DeviceName != "fresh_1" || len(act.DeviceSecret) < 16 || act.AssetID == "" {
		t.Fatalf("activation %+v", act)
	}
	if _, err := c.PostMeasurePoints(ctx, map[string]any{"t": 3}, time.Time{}); err != nil {
		t.Fatalf("publish after activation: %v", err)
	}
	// Again: same secret.
	p.SecureMode = sdk.SecureModeProduct
	c3, err := g.dialDTLS(p)
	if err != nil {
		t.Fatal(err)
	}
	again, err := c3.Activate(ctx)
	if err != nil || again.DeviceSecret != act.DeviceSecret {
		t.Fatalf("second activation: %+v %v", again, err)
	}
	// A mode-3 session may do nothing else.
	if _, err := c3.Publish(ctx, "/sys/"+pk+"/fresh_1/thing/event/property/post", []byte(`{}`)); statusCode(err) != codes.Forbidden {
		t.Fatalf("publish on an activation session: %v", err)
	}
	// Without dynamic registration mode 3 is refused (pre-registered or not).
	pk2, ps2 := g.newProduct(false)
	if _, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: pk2, DeviceName: "x", Secret: ps2, SecureMode: sdk.SecureModeProduct}); !errors.Is(err, sdk.ErrHandshake) {
		t.Fatalf("mode 3 without dynamic registration: %v", err)
	}
}

func waitUntil(t *testing.T, cond func() bool, what string) {
	t.Helper()
	// The deadline only bounds a failing test; a loaded machine may be slow.
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestE2EDTLSCertificate: with no configured certificate a development
// certificate is generated into the data dir; a client that trusts it
// makes an ECDHE-ECDSA handshake, then authenticates with POST /auth and
// publishes with the token, as on 5683 (docs/protocol.md §3.6).
func TestE2EDTLSCertificate(t *testing.T) {
	g := startTestGateway(t)
	pemBytes, err := os.ReadFile(filepath.Join(g.dir, devCertFile))
	if err != nil {
		t.Fatalf("development certificate not generated: %v", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(pemBytes) {
		t.Fatal("bad certificate PEM")
	}
	d := g.newDevice("", "cert_1")
	c := g.dialWith(g.s.DTLSAddr().String(), d, sdk.WithDTLSCert(sdk.DTLSCert{RootCAs: roots, ServerName: "localhost"}))
	ctx := context.Background()
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	resp, err := c.Publish(ctx, topic, []byte(`{"id":"5","params":{"x":1}}`))
	if err != nil || resp.Code != codes.Changed {
		t.Fatalf("publish: %v", err)
	}
	if c.Token() == "" {
		t.Fatal("no token: the certificate session must authenticate with /auth")
	}
	if msgs := g.messages(d); len(msgs) != 1 || msgs[0].Transport != "coap-dtls" {
		t.Fatalf("stored %+v", msgs)
	}
	// Without a token a certificate session is not a device.
	c2 := g.dialWith(g.s.DTLSAddr().String(), device{}, sdk.WithDTLSCert(sdk.DTLSCert{RootCAs: roots, ServerName: "localhost"}), sdk.WithToken("x"))
	if _, err := c2.Publish(ctx, topic, []byte(`{}`)); statusCode(err) != codes.Unauthorized {
		t.Fatalf("publish without a valid token: %v", err)
	}
	// Restart on the same data dir reuses the certificate.
	s2, err := startServer(context.Background(), g.s.cfg, slog.New(slog.DiscardHandler))
	if err == nil {
		s2.shutdown()
	}
	again, _ := os.ReadFile(filepath.Join(g.dir, devCertFile))
	if string(again) != string(pemBytes) {
		t.Fatal("certificate regenerated on restart")
	}
}

// dialWith dials addr with d's credentials (if any) and opts.
func (g *testGateway) dialWith(addr string, d device, opts ...sdk.Option) *sdk.Client {
	g.t.Helper()
	base := []sdk.Option{sdk.WithTransmissionParams(sdk.TransmissionParams{AckTimeout: 500 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2})}
	if d.pk != "" {
		base = append(base, sdk.WithCredentials(sdk.Credentials{ProductKey: d.pk, DeviceName: d.dk, DeviceSecret: d.secret}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, addr, append(base, opts...)...)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	return c
}

// TestE2EDTLSLifetimeEvents: a DTLS-PSK device is online from the handshake;
// once its identity's lifetime passes without a message (clock injected)
// it is recorded offline, and both transitions are in the events API.
func TestE2EDTLSLifetimeEvents(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "life_1")
	c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret, Lifetime: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.PostMeasurePoints(context.Background(), map[string]any{"t": 1}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	type ev struct {
		ID, Type, Transport, Peer string
		At                        time.Time
	}
	events := func() []ev {
		var page struct{ Items []ev }
		if code := g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk+"/events", nil, &page); code != 200 {
			t.Fatalf("events: %d", code)
		}
		return page.Items
	}
	g.s.flushPresence(time.Now().Add(29 * time.Second))
	if evs := events(); len(evs) != 1 || evs[0].Type != "online" || evs[0].Transport != "coap-dtls" || evs[0].Peer == "" {
		t.Fatalf("after 29 s: %+v", evs)
	}
	g.s.flushPresence(time.Now().Add(31 * time.Second))
	evs := events()
	if len(evs) != 2 || evs[1].Type != "offline" {
		t.Fatalf("after 31 s: %+v", evs)
	}
	if gap := evs[1].At.Sub(evs[0].At); gap < 30*time.Second || gap > 31*time.Second {
		t.Fatalf("offline %v after online, want lifetime 30 s after the last message", gap)
	}
	if code := g.api("GET", "/api/v1/devices/"+d.pk+"/nobody/events", nil, nil); code != 404 {
		t.Fatalf("unknown device: %d", code)
	}
}

// TestE2EDTLSSessionLimit: dtls.max_sessions bounds the established
// sessions: beyond it a handshake is dropped without state (the client
// gets no answer and gives up), counted as limit_sessions; once a session
// ends, a new one is admitted again.
func TestE2EDTLSSessionLimit(t *testing.T) {
	g := startTestGateway(t, func(c *config.Config) { c.DTLS.MaxSessions = 2 })
	d := g.newDevice("", "limit_1")
	var clients []*sdk.Client
	for range 2 {
		c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret})
		if err != nil {
			t.Fatal(err)
		}
		clients = append(clients, c)
	}
	if _, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret}); err == nil {
		t.Fatal("a third session beyond dtls.max_sessions 2 was established")
	}
	if v := metricValue(g.metricsText(), `coapgate_dtls_handshake_failures_total{reason="limit_sessions"}`); v < 1 {
		t.Fatalf("limit_sessions counted %v times", v)
	}
	clients[0].Close()
	waitUntil(t, func() bool { return metricValue(g.metricsText(), "coapgate_dtls_sessions") == 1 }, "one session left")
	c, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret})
	if err != nil {
		t.Fatalf("handshake after a session ended: %v", err)
	}
	if _, err := c.PostMeasurePoints(context.Background(), map[string]any{"t": 3}, time.Time{}); err != nil {
		t.Fatal(err)
	}
}
