package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/apikey"
	downlink "github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

type adminEnv struct {
	t     *testing.T
	url   string
	key   string
	store *sqlitestore.Store
}

func newAdminEnv(t *testing.T) *adminEnv {
	t.Helper()
	// Keep the developer's own environment out of the tests.
	t.Setenv(adminEnvURL, "")
	t.Setenv(adminEnvKey, "")
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "coapgate.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	secret, k, err := apikey.New("admin-test", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	queue, err := downlink.NewQueue(ctx, downlink.Options{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(api.New(api.Options{Registry: st, Messages: st, Keys: st, Commands: queue, Points: st, Version: "test"}))
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &adminEnv{t: t, url: srv.URL, key: secret, store: st}
}

type runResult struct {
	code           int
	stdout, stderr string
}

// run calls cmd with the --api and --api-key flags prepended after the
// sub-subcommand (args[0]) when sub is true.
func (e *adminEnv) run(cmd func([]string, io.Writer, io.Writer) int, sub bool, args ...string) runResult {
	e.t.Helper()
	common := []string{"--api", e.url, "--api-key", e.key}
	var full []string
	if sub {
		full = append(append(append(full, args[0]), common...), args[1:]...)
	} else {
		full = append(common, args...)
	}
	var out, errb bytes.Buffer
	code := cmd(full, &out, &errb)
	return runResult{code, out.String(), errb.String()}
}

func (r runResult) want(t *testing.T, code int) runResult {
	t.Helper()
	if r.code != code {
		t.Fatalf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, code, r.stdout, r.stderr)
	}
	return r
}

// field returns the value of a "name  value" line of a vertical table.
func field(t *testing.T, out, name string) string {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` +(.*)$`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q line in:\n%s", name, out)
	}
	return strings.TrimSpace(m[1])
}

func TestAdminProduct(t *testing.T) {
	e := newAdminEnv(t)

	r := e.run(cmdProduct, true, "create", "--name", "Water meters", "--data-format", "cbor",
		"--online-lifetime", "10m", "--dynamic-registration", "wm01").want(t, 0)
	if field(t, r.stdout, "productKey") != "wm01" || field(t, r.stdout, "name") != "Water meters" ||
		field(t, r.stdout, "dataFormat") != "cbor" || field(t, r.stdout, "onlineLifetime") != "10m0s" ||
		field(t, r.stdout, "dynamicRegistration") != "true" {
		t.Fatalf("create output:\n%s", r.stdout)
	}
	secret := field(t, r.stdout, "productSecret")
	if len(secret) != 32 || !strings.Contains(r.stderr, "shown only now") {
		t.Fatalf("secret %q, stderr %q", secret, r.stderr)
	}

	// Generated key, flags after the positional part.
	r = e.run(cmdProduct, true, "create", "--name", "Gen", "--json").want(t, 0)
	var gen api.Product
	if err := json.Unmarshal([]byte(r.stdout), &gen); err != nil || len(gen.ProductKey) != 11 || gen.ProductSecret == "" {
		t.Fatalf("create --json: %v\n%s", err, r.stdout)
	}

	// API error: exit 1 and "error: <code>: <message>".
	r = e.run(cmdProduct, true, "create", "--name", "dup", "wm01").want(t, 1)
	if r.stderr != "error: conflict: product \"wm01\" already exists\n" {
		t.Fatalf("stderr = %q", r.stderr)
	}
	r = e.run(cmdProduct, true, "create", "--name", "bad", "a/b").want(t, 1)
	if !strings.HasPrefix(r.stderr, "error: invalid_argument: ") {
		t.Fatalf("stderr = %q", r.stderr)
	}

	r = e.run(cmdProduct, true, "list").want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "PRODUCT KEY") || !strings.Contains(r.stdout, "wm01") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	if strings.Contains(r.stdout, secret) || strings.Contains(r.stdout, gen.ProductSecret) {
		t.Fatalf("list shows a secret:\n%s", r.stdout)
	}
	r = e.run(cmdProduct, true, "list", "--limit", "1").want(t, 0)
	next, ok := strings.CutPrefix(strings.TrimSpace(r.stderr), "more results: repeat with --cursor ")
	if !ok {
		t.Fatalf("no paging hint: %q", r.stderr)
	}
	// --cursor and its older name --after give the same next page.
	page2 := e.run(cmdProduct, true, "list", "--limit", "1", "--cursor", next).want(t, 0)
	if old := e.run(cmdProduct, true, "list", "--limit", "1", "--after", next).want(t, 0); old.stdout != page2.stdout || page2.stdout == r.stdout {
		t.Fatalf("pages:\n%s\n%s\n%s", r.stdout, page2.stdout, old.stdout)
	}

	r = e.run(cmdProduct, true, "get", "wm01").want(t, 0)
	if field(t, r.stdout, "name") != "Water meters" || strings.Contains(r.stdout, secret) {
		t.Fatalf("get:\n%s", r.stdout)
	}
	r = e.run(cmdProduct, true, "get", "wm01", "--json").want(t, 0)
	var p api.Product
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil || p.ProductKey != "wm01" || p.ProductSecret != "" {
		t.Fatalf("get --json: %v\n%s", err, r.stdout)
	}

	r = e.run(cmdProduct, true, "update", "--dynamic-registration=false", "--online-lifetime", "0", "wm01").want(t, 0)
	if field(t, r.stdout, "dynamicRegistration") != "false" || field(t, r.stdout, "onlineLifetime") != "default" ||
		field(t, r.stdout, "name") != "Water meters" || field(t, r.stdout, "dataFormat") != "cbor" {
		t.Fatalf("update:\n%s", r.stdout)
	}
	e.run(cmdProduct, true, "update", "wm01").want(t, 2)
	r = e.run(cmdProduct, true, "update", "--name", "x", "nope").want(t, 1)
	if !strings.HasPrefix(r.stderr, "error: not_found: ") {
		t.Fatalf("stderr = %q", r.stderr)
	}

	r = e.run(cmdProduct, true, "delete", "wm01").want(t, 0)
	if r.stdout != "deleted product wm01\n" {
		t.Fatalf("delete: %q", r.stdout)
	}
	r = e.run(cmdProduct, true, "get", "wm01").want(t, 1)
	if r.stderr != "error: not_found: product \"wm01\" not found\n" {
		t.Fatalf("stderr = %q", r.stderr)
	}
}

func TestAdminDevice(t *testing.T) {
	e := newAdminEnv(t)
	e.run(cmdProduct, true, "create", "--name", "p", "pk").want(t, 0)

	r := e.run(cmdDevice, true, "create", "--asset-id", "pump-7", "pk", "meter_1").want(t, 0)
	secret := field(t, r.stdout, "deviceSecret")
	if len(secret) != 32 || field(t, r.stdout, "enabled") != "true" || field(t, r.stdout, "assetId") != "pump-7" ||
		!strings.Contains(r.stderr, "shown only now") {
		t.Fatalf("create:\n%s\n%s", r.stdout, r.stderr)
	}
	r = e.run(cmdDevice, true, "create", "--disabled", "--secret", "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56", "pk").want(t, 0)
	if field(t, r.stdout, "enabled") != "false" || field(t, r.stdout, "deviceSecret") != "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56" {
		t.Fatalf("create:\n%s", r.stdout)
	}
	r = e.run(cmdDevice, true, "create", "nope").want(t, 1)
	if r.stderr != "error: not_found: product \"nope\" not found\n" {
		t.Fatalf("stderr = %q", r.stderr)
	}

	r = e.run(cmdDevice, true, "list", "pk").want(t, 0)
	if n := len(strings.Split(strings.TrimSpace(r.stdout), "\n")); n != 3 || !strings.Contains(r.stdout, "meter_1") {
		t.Fatalf("list (%d lines):\n%s", n, r.stdout)
	}
	if strings.Contains(r.stdout, secret) {
		t.Fatalf("list shows a secret:\n%s", r.stdout)
	}
	e.run(cmdDevice, true, "list").want(t, 0)

	r = e.run(cmdDevice, true, "get", "pk", "meter_1").want(t, 0)
	if field(t, r.stdout, "online") != "false" || field(t, r.stdout, "lastSeenAt") != "-" || strings.Contains(r.stdout, secret) {
		t.Fatalf("get:\n%s", r.stdout)
	}

	r = e.run(cmdDevice, true, "disable", "pk", "meter_1").want(t, 0)
	if field(t, r.stdout, "enabled") != "false" {
		t.Fatalf("disable:\n%s", r.stdout)
	}
	r = e.run(cmdDevice, true, "enable", "pk", "meter_1").want(t, 0)
	if field(t, r.stdout, "enabled") != "true" {
		t.Fatalf("enable:\n%s", r.stdout)
	}
	r = e.run(cmdDevice, true, "revoke-tokens", "pk", "meter_1").want(t, 0)
	if field(t, r.stdout, "tokenGeneration") != "1" {
		t.Fatalf("revoke-tokens:\n%s", r.stdout)
	}
	r = e.run(cmdDevice, true, "rotate-secret", "pk", "meter_1").want(t, 0)
	if s := field(t, r.stdout, "deviceSecret"); len(s) != 32 || s == secret || field(t, r.stdout, "tokenGeneration") != "2" {
		t.Fatalf("rotate-secret:\n%s", r.stdout)
	}
	r = e.run(cmdDevice, true, "delete", "pk", "meter_1").want(t, 0)
	if r.stdout != "deleted device pk/meter_1\n" {
		t.Fatalf("delete: %q", r.stdout)
	}
	r = e.run(cmdDevice, true, "get", "pk", "meter_1").want(t, 1)
	if r.stderr != "error: not_found: device \"pk/meter_1\" not found\n" {
		t.Fatalf("stderr = %q", r.stderr)
	}
	e.run(cmdDevice, true, "get", "pk").want(t, 2)
}

func TestAdminMessages(t *testing.T) {
	e := newAdminEnv(t)
	e.run(cmdProduct, true, "create", "--name", "p", "pk").want(t, 0)
	e.run(cmdDevice, true, "create", "pk", "d1").want(t, 0)
	e.run(cmdDevice, true, "create", "pk", "d2").want(t, 0)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var ms []*message.Message
	for i, p := range []string{`{"n":1}`, `{"n":2}`, `{"n":3}`} {
		ms = append(ms, &message.Message{ProductKey: "pk", DeviceKey: "d1", Topic: "/sys/pk/d1/thing/event/property/post",
			Payload: []byte(p), ContentFormat: 50, ReceivedAt: base.Add(time.Duration(i) * time.Second),
			Peer: "192.0.2.1:5683", Transport: message.TransportCoAP})
	}
	ms = append(ms, &message.Message{ProductKey: "pk", DeviceKey: "d2", Topic: "/pk/d2/raw",
		Payload: []byte{0, 1, 2}, ContentFormat: 42, ReceivedAt: base.Add(time.Minute), Transport: message.TransportDTLS})
	if err := e.store.Append(context.Background(), ms); err != nil {
		t.Fatal(err)
	}

	r := e.run(cmdMessages, false, "pk", "d1", "--limit", "2").want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "ID") || !strings.Contains(lines[1], `{"n":1}`) ||
		!strings.Contains(lines[1], "2025-01-01T00:00:00Z") || !strings.Contains(lines[2], `{"n":2}`) {
		t.Fatalf("messages:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "--cursor ") {
		t.Fatalf("no paging hint: %q", r.stderr)
	}

	r = e.run(cmdMessages, false, "--desc", "--limit", "1", "pk").want(t, 0)
	if !strings.Contains(r.stdout, "base64:AAEC") || !strings.Contains(r.stdout, "pk/d2") {
		t.Fatalf("messages --desc:\n%s", r.stdout)
	}

	r = e.run(cmdMessages, false, "--json", "--from", "2025-01-01T00:00:01Z", "--to", "1735689602000").want(t, 0)
	var l api.List[api.Message]
	if err := json.Unmarshal([]byte(r.stdout), &l); err != nil || len(l.Items) != 1 || l.Items[0].PayloadBase64 != "eyJuIjoyfQ==" {
		t.Fatalf("messages --json: %v\n%s", err, r.stdout)
	}

	r = e.run(cmdMessages, false, "--from", "yesterday").want(t, 1)
	if !strings.HasPrefix(r.stderr, "error: invalid_argument: from must be") {
		t.Fatalf("stderr = %q", r.stderr)
	}

	// An unknown product or device is an error, as the API's 404, not an
	// empty table.
	for _, args := range [][]string{{"pk", "unknown"}, {"nope"}, {"nope", "d1"}} {
		r = e.run(cmdMessages, false, args...).want(t, 1)
		if !strings.HasPrefix(r.stderr, "error: not_found") || r.stdout != "" {
			t.Fatalf("messages %q: stdout %q, stderr %q", args, r.stdout, r.stderr)
		}
	}
}

func TestAdminUsage(t *testing.T) {
	e := newAdminEnv(t)
	run := func(cmd func([]string, io.Writer, io.Writer) int, args ...string) runResult {
		var out, errb bytes.Buffer
		code := cmd(args, &out, &errb)
		return runResult{code, out.String(), errb.String()}
	}

	r := run(cmdProduct).want(t, 2)
	if !strings.Contains(r.stderr, "Usage: coapgate product <command>") {
		t.Fatalf("stderr = %q", r.stderr)
	}
	r = run(cmdDevice, "--help").want(t, 0)
	if !strings.Contains(r.stdout, "rotate-secret") {
		t.Fatalf("device --help = %q", r.stdout)
	}
	r = run(cmdDevice, "frobnicate").want(t, 2)
	if !strings.Contains(r.stderr, `unknown command "device frobnicate"`) {
		t.Fatalf("stderr = %q", r.stderr)
	}

	// Help text of a command: usage line, description, flags, example; it
	// never shows the API key from the environment.
	t.Setenv(adminEnvKey, e.key)
	for _, tc := range []struct {
		cmd  func([]string, io.Writer, io.Writer) int
		args []string
		want string
	}{
		{cmdProduct, []string{"create", "--help"}, "Usage: coapgate product create [flags] [PRODUCT_KEY]"},
		{cmdDevice, []string{"rotate-secret", "-h"}, "Usage: coapgate device rotate-secret [flags] PRODUCT_KEY DEVICE_KEY"},
		{cmdMessages, []string{"--help"}, "Usage: coapgate messages [flags] [PRODUCT_KEY [DEVICE_KEY]]"},
	} {
		r := run(tc.cmd, tc.args...).want(t, 0)
		for _, w := range []string{tc.want, "-api URL", "-api-key key", "COAPGATE_API_KEY", "shell history", "-json", "Example:\n  coapgate "} {
			if !strings.Contains(r.stdout, w) {
				t.Errorf("%v help lacks %q:\n%s", tc.args, w, r.stdout)
			}
		}
		if strings.Contains(r.stdout, e.key) {
			t.Errorf("%v help shows the API key", tc.args)
		}
	}

	// The environment supplies URL and key.
	t.Setenv(adminEnvURL, e.url)
	run(cmdProduct, "list").want(t, 0)

	// A wrong key: the API's 401.
	r = run(cmdProduct, "list", "--api-key", "cgk_wrong").want(t, 1)
	if !strings.HasPrefix(r.stderr, "error: unauthorized: ") {
		t.Fatalf("stderr = %q", r.stderr)
	}
	// No key at all: a usage error before any request.
	t.Setenv(adminEnvKey, "")
	r = run(cmdProduct, "list").want(t, 2)
	if !strings.Contains(r.stderr, "no API key") {
		t.Fatalf("stderr = %q", r.stderr)
	}
	// Bad flags and argument counts.
	run(cmdProduct, "list", "--nope").want(t, 2)
	run(cmdProduct, "get").want(t, 2)
	run(cmdProduct, "get", "a", "b").want(t, 2)
	run(cmdMessages, "a", "b", "c").want(t, 2)
	// Unreachable API.
	r = run(cmdProduct, "list", "--api", "http://127.0.0.1:1", "--api-key", "k").want(t, 1)
	if !strings.HasPrefix(r.stderr, "error: ") {
		t.Fatalf("stderr = %q", r.stderr)
	}
	// "--" ends the flags: what follows is positional even if it looks like a flag.
	r = run(cmdProduct, "get", "--api", e.url, "--api-key", e.key, "--", "-x").want(t, 1)
	if r.stderr != "error: not_found: product \"-x\" not found\n" {
		t.Fatalf("stderr = %q", r.stderr)
	}
}
