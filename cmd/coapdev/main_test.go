package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/buildinfo"
)

// fakeGateway answers /auth with token "tok" and /topic/... with topicCode,
// option 2090 = "900" and a reply JSON. It records every request.
type fakeGateway struct {
	conn      *net.UDPConn
	topicCode codes.Code
	mu        sync.Mutex
	reqs      []message.Message // guarded by mu
	wg        sync.WaitGroup
}

func newFakeGateway(t *testing.T, topicCode codes.Code) *fakeGateway {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{conn: conn, topicCode: topicCode}
	g.wg.Add(1)
	go g.loop()
	t.Cleanup(func() { _ = conn.Close(); g.wg.Wait() })
	return g
}

func (g *fakeGateway) loop() {
	defer g.wg.Done()
	buf := make([]byte, 65535)
	for {
		n, from, err := g.conn.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		m := message.Message{Options: make(message.Options, 0, 32)}
		if _, err := coder.DefaultCoder.Decode(append([]byte(nil), buf[:n]...), &m); err != nil || m.Type == message.Acknowledgement {
			continue
		}
		g.mu.Lock()
		g.reqs = append(g.reqs, m)
		g.mu.Unlock()
		path, _ := m.Options.Path()
		resp := message.Message{Type: message.Acknowledgement, MessageID: m.MessageID, Token: m.Token}
		if m.Type == message.NonConfirmable {
			resp.Type = message.NonConfirmable
		}
		switch {
		case path == "/auth":
			resp.Code, resp.Payload = codes.Content, []byte(`{"token":"tok"}`)
		case strings.HasPrefix(path, "/topic/"):
			resp.Code = g.topicCode
			if g.topicCode == codes.Changed {
				resp.Options = message.Options{{ID: 2090, Value: []byte("900")}}
				resp.Payload = []byte(`{"id":"1","code":200,"data":{},"message":"success"}`)
			}
		default:
			resp.Code = codes.NotFound
		}
		b := make([]byte, 1500)
		k, err := coder.DefaultCoder.Encode(resp, b)
		if err == nil {
			_, _ = g.conn.WriteToUDP(b[:k], from)
		}
	}
}

func (g *fakeGateway) requests() []message.Message {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]message.Message(nil), g.reqs...)
}

// runCmd runs coapdev with args and the given environment variables.
func runCmd(t *testing.T, vars map[string]string, stdin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	e := &env{
		stdin:  strings.NewReader(stdin),
		stdout: &out,
		stderr: &errb,
		getenv: func(k string) string { return vars[k] },
	}
	code = run(context.Background(), args, e)
	return code, out.String(), errb.String()
}

var creds = map[string]string{
	"COAPDEV_PRODUCT": "a1MZxOdcBnO",
	"COAPDEV_DEVICE":  "test_01",
	"COAPDEV_SECRET":  "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56",
}

func TestHelp(t *testing.T) {
	code, out, _ := runCmd(t, nil, "", "--help")
	if code != exitOK || !strings.Contains(out, "Usage: coapdev <command>") || !strings.Contains(out, "Example:") {
		t.Errorf("top-level help: code %d\n%s", code, out)
	}
	for name := range commands {
		if !strings.Contains(out, "  "+name+" ") {
			t.Errorf("top-level help does not list %s", name)
		}
		for _, args := range [][]string{{name, "--help"}, {"help", name}} {
			code, out, _ := runCmd(t, nil, "", args...)
			if code != exitOK {
				t.Errorf("%v: exit %d", args, code)
			}
			for _, want := range []string{"Usage: coapdev " + name, "Flags:", "Example:\n  ", "coapdev " + name} {
				if !strings.Contains(out, want) {
					t.Errorf("%v: help lacks %q:\n%s", args, want, out)
				}
			}
		}
	}
	_, out, _ = runCmd(t, nil, "", "publish", "--help")
	for _, want := range []string{"--topic string", "--data-file file", "--token-option uint", "(default 2088)", "--interval duration", "(default 1s)", "COAPDEV_SECRET"} {
		if !strings.Contains(out, want) {
			t.Errorf("publish help lacks %q", want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		vars map[string]string
		args []string
		want string
	}{
		{"no command", nil, nil, "Usage: coapdev"},
		{"unknown command", nil, []string{"bogus"}, `unknown command "bogus"`},
		{"unknown flag", creds, []string{"auth", "--nope"}, "flag provided but not defined"},
		{"missing credentials", nil, []string{"auth"}, "missing --product"},
		{"missing data", creds, []string{"publish"}, "missing --data or --data-file"},
		{"both data flags", creds, []string{"publish", "--data", "x", "--data-file", "f"}, "not both"},
		{"bad token option", creds, []string{"publish", "--data", "{}", "--token-option", "7"}, "must be 61 or 2088"},
		{"wait-non without non", creds, []string{"publish", "--data", "{}", "--wait-non", "1s"}, "needs --non"},
		{"stray argument", creds, []string{"auth", "extra"}, "unexpected argument"},
		{"listen without credentials", nil, []string{"listen"}, "missing --product"},
		{"listen bad reply data", creds, []string{"listen", "--reply-data", "{nope"}, "--reply-data is not one JSON value"},
		{"listen negative interval", creds, []string{"listen", "--interval", "-1s"}, "--interval must not be negative"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, _, errOut := runCmd(t, tt.vars, "", tt.args...)
			if code != exitUsage || !strings.Contains(errOut, tt.want) {
				t.Errorf("exit %d, stderr:\n%s\nwant exit 2 and %q", code, errOut, tt.want)
			}
		})
	}
}

func TestVersion(t *testing.T) {
	code, out, _ := runCmd(t, nil, "", "version")
	if code != exitOK || out != buildinfo.Get().String("coapdev")+"\n" {
		t.Errorf("version: exit %d, %q", code, out)
	}
}

// TestDTLSLoadHelp: dtls-load shows only the flags it uses, with the DTLS
// port as the server's default.
func TestDTLSLoadHelp(t *testing.T) {
	code, out, _ := runCmd(t, nil, "", "dtls-load", "--help")
	if code != exitOK || !strings.Contains(out, "(default 127.0.0.1:5684)") {
		t.Fatalf("dtls-load --help: exit %d\n%s", code, out)
	}
	for _, irrelevant := range []string{"--mode", "--token-option", "--sign-method", "--cbor", "--client-id", "--block-size", "--dtls\n", "5683"} {
		if strings.Contains(out, irrelevant) {
			t.Errorf("dtls-load --help shows %q", irrelevant)
		}
	}
}

func TestAuthCommand(t *testing.T) {
	g := newFakeGateway(t, codes.Changed)
	code, out, errOut := runCmd(t, creds, "", "auth", "--server", g.conn.LocalAddr().String())
	if code != exitOK || out != "tok\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	var body map[string]string
	_ = jsonUnmarshal(g.requests()[0].Payload, &body)
	if body["sign"] != "2db0e24ea7eb7f2570fa153fa5559f74" {
		t.Errorf("auth body %v", body)
	}
}

func TestPublishCommand(t *testing.T) {
	g := newFakeGateway(t, codes.Changed)
	code, out, errOut := runCmd(t, creds, "", "publish", "--server", g.conn.LocalAddr().String(),
		"--data", `{"id":"1","params":{"temp":21}}`, "--count", "2", "--interval", "0", "--token-option", "61")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	want := "seq=1 code=2.04 message-id=900 payload={\"id\":\"1\",\"code\":200,\"data\":{},\"message\":\"success\"}\n" +
		"seq=2 code=2.04 message-id=900 payload={\"id\":\"1\",\"code\":200,\"data\":{},\"message\":\"success\"}\n"
	if out != want {
		t.Errorf("stdout\n%s\nwant\n%s", out, want)
	}
	reqs := g.requests()
	if len(reqs) != 3 {
		t.Fatalf("got %d requests, want auth + 2 publishes", len(reqs))
	}
	p, _ := reqs[1].Options.Path()
	if p != "/topic/sys/a1MZxOdcBnO/test_01/thing/event/property/post" {
		t.Errorf("default topic path %s", p)
	}
	if v, err := reqs[1].Options.GetBytes(61); err != nil || string(v) != "tok" {
		t.Errorf("token option 61 = %q, %v", v, err)
	}
}

func TestPublishCommandCBORFromFile(t *testing.T) {
	g := newFakeGateway(t, codes.Changed)
	f := filepath.Join(t.TempDir(), "payload.json")
	if err := os.WriteFile(f, []byte(`{"id":"1","params":{"temp":21,"hum":0.5}}`), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, errOut := runCmd(t, creds, "", "publish", "--server", g.conn.LocalAddr().String(),
		"--data-file", f, "--cbor", "--topic", "/a1MZxOdcBnO/test_01/user/up")
	if code != exitOK {
		t.Fatalf("exit %d, stderr %q", code, errOut)
	}
	m := g.requests()[1]
	if cf, _ := m.Options.ContentFormat(); cf != 60 {
		t.Errorf("Content-Format %d, want 60", cf)
	}
	var body struct {
		Params map[string]any `cbor:"params"`
	}
	if err := cbor.Unmarshal(m.Payload, &body); err != nil {
		t.Fatalf("payload not CBOR: %v", err)
	}
	if body.Params["temp"] != uint64(21) || body.Params["hum"] != 0.5 {
		t.Errorf("CBOR params %#v", body.Params)
	}
}

func TestPublishCommandNONStdin(t *testing.T) {
	g := newFakeGateway(t, codes.Changed)
	code, out, errOut := runCmd(t, creds, "{}", "publish", "--server", g.conn.LocalAddr().String(), "--data-file", "-", "--non")
	if code != exitOK || out != "seq=1 sent=NON\n" {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
}

func TestPublishCommandRefused(t *testing.T) {
	g := newFakeGateway(t, codes.Forbidden)
	code, out, errOut := runCmd(t, creds, "", "publish", "--server", g.conn.LocalAddr().String(), "--data", "{}", "--token", "tok")
	if code != exitError || out != "" || !strings.Contains(errOut, "seq=1 error: sdk: server answered 4.03 Forbidden") {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	if n := len(g.requests()); n != 1 {
		t.Errorf("got %d requests, want 1 (no auth with --token)", n)
	}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }
