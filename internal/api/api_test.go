package api

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

// testNow is the fixed clock of every test server.
var testNow = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.UTC)

// syncBuffer is a log sink safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

type testEnv struct {
	t        *testing.T
	srv      *httptest.Server
	store    *sqlitestore.Store
	presence *presence.Tracker
	key      string // a valid API key
	logs     *syncBuffer
	health   error // returned by the Health hook

	mu      sync.Mutex
	changes []string // OnDeviceChange calls as "pk/dk"; guarded by mu
	secrets []string // secrets seen in responses; must never be logged
}

func newTestEnv(t *testing.T) *testEnv {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "coapgate.db"))
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	e := &testEnv{t: t, store: st, presence: presence.NewTracker(), logs: &syncBuffer{}}
	secret, k, err := apikey.New("test", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		t.Fatalf("create api key: %v", err)
	}
	e.key = secret
	e.secrets = append(e.secrets, secret)
	h := New(Options{
		Registry: st,
		Messages: st,
		Keys:     st,
		Points:   st,
		Presence: e.presence,
		Health: func(ctx context.Context) error {
			if e.health != nil {
				return e.health
			}
			return st.Ping(ctx)
		},
		Metrics: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "coapgate_up 1\n")
		}),
		OnDeviceChange: func(pk, dk string) {
			e.mu.Lock()
			e.changes = append(e.changes, pk+"/"+dk)
			e.mu.Unlock()
		},
		Logger:                slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:                   func() time.Time { return testNow },
		Version:               "v1.2.3-test",
		DefaultOnlineLifetime: 5 * time.Minute,
	})
	e.srv = httptest.NewServer(h)
	t.Cleanup(func() {
		e.srv.Close()
		st.Close()
		logs := e.logs.String()
		e.mu.Lock()
		defer e.mu.Unlock()
		for _, s := range e.secrets {
			if strings.Contains(logs, s) {
				t.Errorf("a secret or key was logged: %q in\n%s", s, logs)
			}
		}
	})
	return e
}

// takeChanges returns and clears the recorded OnDeviceChange calls.
func (e *testEnv) takeChanges() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.changes
	e.changes = nil
	return c
}

func (e *testEnv) rememberSecret(s string) {
	if s == "" {
		e.t.Fatal("empty secret in response")
	}
	e.mu.Lock()
	e.secrets = append(e.secrets, s)
	e.mu.Unlock()
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// raw sends body (a string, or nil for none) with the given Authorization
// header ("" for none).
func (e *testEnv) raw(method, path, auth string, body *string) response {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(*body)
	}
	req, err := http.NewRequest(method, e.srv.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := e.srv.Client().Do(req)
	if err != nil {
		e.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

// do sends an authenticated request; body is marshalled to JSON unless it
// is a string (sent as is) or nil.
func (e *testEnv) do(method, path string, body any) response {
	e.t.Helper()
	var s *string
	switch b := body.(type) {
	case nil:
	case string:
		s = &b
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		js := string(j)
		s = &js
	}
	return e.raw(method, path, "Bearer "+e.key, s)
}

// want checks the status and decodes the body into out (if non-nil).
func (r response) want(t *testing.T, status int, out any) {
	t.Helper()
	if r.status != status {
		t.Fatalf("status = %d, want %d; body %s", r.status, status, r.body)
	}
	if out != nil {
		if ct := r.header.Get("Content-Type"); ct != "application/json" {
			t.Fatalf("Content-Type = %q", ct)
		}
		if err := json.Unmarshal(r.body, out); err != nil {
			t.Fatalf("decode %s: %v", r.body, err)
		}
	}
}

// wantError checks an error response's status and code.
func (r response) wantError(t *testing.T, status int, code string) Error {
	t.Helper()
	var e Error
	r.want(t, status, &e)
	if e.Code != code {
		t.Fatalf("code = %q, want %q (message %q)", e.Code, code, e.Message)
	}
	if e.Message == "" {
		t.Fatal("empty error message")
	}
	return e
}

func (e *testEnv) createProduct(pk string) Product {
	e.t.Helper()
	var p Product
	e.do("POST", "/api/v1/products", map[string]any{"productKey": pk, "name": "product " + pk}).want(e.t, 201, &p)
	e.rememberSecret(p.ProductSecret)
	return p
}

func (e *testEnv) createDevice(pk, dk string) Device {
	e.t.Helper()
	var d Device
	e.do("POST", "/api/v1/devices", map[string]any{"productKey": pk, "deviceKey": dk}).want(e.t, 201, &d)
	e.rememberSecret(d.DeviceSecret)
	return d
}

func ptr(s string) *string { return &s }

func TestAuth(t *testing.T) {
	e := newTestEnv(t)
	tests := []struct {
		name string
		auth string
	}{
		{"missing", ""},
		{"wrong key", "Bearer cgk_000000000000_nope"},
		{"wrong scheme", "Basic " + e.key},
		{"empty bearer", "Bearer "},
		{"no space", "Bearer" + e.key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.raw("GET", "/api/v1/products", tt.auth, nil)
			r.wantError(t, 401, "unauthorized")
			if got := r.header.Get("WWW-Authenticate"); !strings.HasPrefix(got, "Bearer") {
				t.Errorf("WWW-Authenticate = %q", got)
			}
		})
	}
	t.Run("valid", func(t *testing.T) {
		e.raw("GET", "/api/v1/products", "Bearer "+e.key, nil).want(t, 200, nil)
		e.raw("GET", "/api/v1/products", "bearer "+e.key, nil).want(t, 200, nil) // scheme is case-insensitive
	})
}

// TestRouteAuth walks the route table: auth routes refuse a request without
// a key, the others serve it.
func TestRouteAuth(t *testing.T) {
	e := newTestEnv(t)
	s := newServer(Options{Metrics: http.NotFoundHandler()})
	for _, rt := range s.routes() {
		path := strings.NewReplacer("{productKey}", "p1", "{deviceKey}", "d1", "{id}", "x").Replace(rt.pattern)
		t.Run(rt.method+" "+rt.pattern, func(t *testing.T) {
			r := e.raw(rt.method, path, "", ptr("{}"))
			if rt.auth {
				r.wantError(t, 401, "unauthorized")
			} else if r.status != 200 {
				t.Fatalf("status = %d, want 200 without auth; body %s", r.status, r.body)
			}
		})
	}
}

func TestAPIKeys(t *testing.T) {
	e := newTestEnv(t)
	var k APIKey
	e.do("POST", "/api/v1/apikeys", map[string]any{"name": "ci"}).want(t, 201, &k)
	e.rememberSecret(k.Key)
	if k.ID == "" || k.Name != "ci" || !strings.HasPrefix(k.Key, apikey.Prefix) || !k.CreatedAt.Equal(testNow) {
		t.Fatalf("created key = %+v", k)
	}
	// The new key works.
	e.raw("GET", "/api/v1/apikeys", "Bearer "+k.Key, nil).want(t, 200, nil)

	r := e.do("GET", "/api/v1/apikeys", nil)
	var list List[APIKey]
	r.want(t, 200, &list)
	if len(list.Items) != 2 {
		t.Fatalf("listed %d keys, want 2", len(list.Items))
	}
	for _, it := range list.Items {
		if it.Key != "" {
			t.Errorf("list returns a key: %+v", it)
		}
	}
	if bytes.Contains(r.body, []byte(k.Key)) || bytes.Contains(r.body, []byte(e.key)) {
		t.Fatalf("list leaks a key: %s", r.body)
	}

	e.do("POST", "/api/v1/apikeys", `{"name":""}`).wantError(t, 400, "invalid_argument")
	e.do("POST", "/api/v1/apikeys", `{"name":"x","admin":true}`).wantError(t, 400, "invalid_argument")
	e.do("POST", "/api/v1/apikeys", `{"name":`).wantError(t, 400, "invalid_argument")
	e.do("GET", "/api/v1/apikeys?x=1", nil).wantError(t, 400, "invalid_argument")

	e.do("DELETE", "/api/v1/apikeys/"+k.ID, nil).want(t, 204, nil)
	e.do("DELETE", "/api/v1/apikeys/"+k.ID, nil).wantError(t, 404, "not_found")
	// The deleted key was cached by the request above; deletion forgets it.
	e.raw("GET", "/api/v1/apikeys", "Bearer "+k.Key, nil).wantError(t, 401, "unauthorized")
}

func TestProducts(t *testing.T) {
	e := newTestEnv(t)

	// Create with every field.
	var p Product
	e.do("POST", "/api/v1/products", map[string]any{
		"productKey": "pk-1", "productSecret": "ps-secret-0123456789", "name": "Meters",
		"dynamicRegistration": true, "dataFormat": "cbor", "onlineLifetimeSeconds": 600,
	}).want(t, 201, &p)
	e.rememberSecret(p.ProductSecret)
	want := Product{ProductKey: "pk-1", ProductSecret: "ps-secret-0123456789", Name: "Meters",
		DynamicRegistration: true, DataFormat: "cbor", OnlineLifetimeSecs: 600, CreatedAt: testNow}
	if p != want {
		t.Fatalf("created %+v, want %+v", p, want)
	}
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk-1/"}) {
		t.Fatalf("OnDeviceChange calls after create = %q", c)
	}

	// Create with defaults: generated key and secret, json.
	var g Product
	e.do("POST", "/api/v1/products", map[string]any{"name": "Generated"}).want(t, 201, &g)
	e.rememberSecret(g.ProductSecret)
	if len(g.ProductKey) != 11 || len(g.ProductSecret) != 32 || g.DataFormat != "json" || g.DynamicRegistration || g.OnlineLifetimeSecs != 0 {
		t.Fatalf("generated product = %+v", g)
	}

	t.Run("create errors", func(t *testing.T) {
		tests := []struct {
			name   string
			body   string
			status int
			code   string
		}{
			{"duplicate", `{"productKey":"pk-1","name":"x"}`, 409, "conflict"},
			{"bad json", `{"name":`, 400, "invalid_argument"},
			{"not an object", `[1]`, 400, "invalid_argument"},
			{"empty body", ``, 400, "invalid_argument"},
			{"trailing data", `{"name":"x"} {}`, 400, "invalid_argument"},
			{"unknown field", `{"name":"x","color":"red"}`, 400, "invalid_argument"},
			{"wrong type", `{"name":5}`, 400, "invalid_argument"},
			{"bad key chars", `{"productKey":"a/b","name":"x"}`, 400, "invalid_argument"},
			{"comma in key", `{"productKey":"a,b","name":"x"}`, 400, "invalid_argument"},
			{"long key", `{"productKey":"` + strings.Repeat("k", 33) + `","name":"x"}`, 400, "invalid_argument"},
			{"short secret", `{"productSecret":"short","name":"x"}`, 400, "invalid_argument"},
			{"missing name", `{"productKey":"pk-x"}`, 400, "invalid_argument"},
			{"bad format", `{"name":"x","dataFormat":"xml"}`, 400, "invalid_argument"},
			{"lifetime too short", `{"name":"x","onlineLifetimeSeconds":5}`, 400, "invalid_argument"},
			{"lifetime too long", `{"name":"x","onlineLifetimeSeconds":86401}`, 400, "invalid_argument"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				er := e.do("POST", "/api/v1/products", tt.body).wantError(t, tt.status, tt.code)
				if strings.Contains(er.Message, "short") && tt.name == "short secret" {
					t.Errorf("message echoes the secret: %q", er.Message)
				}
			})
		}
	})

	// Get and list never return the secret.
	var got Product
	r := e.do("GET", "/api/v1/products/pk-1", nil)
	r.want(t, 200, &got)
	want.ProductSecret = ""
	if got != want {
		t.Fatalf("get %+v, want %+v", got, want)
	}
	if bytes.Contains(r.body, []byte(p.ProductSecret)) || bytes.Contains(r.body, []byte("productSecret")) {
		t.Fatalf("get leaks the secret: %s", r.body)
	}
	r = e.do("GET", "/api/v1/products", nil)
	var list List[Product]
	r.want(t, 200, &list)
	if len(list.Items) != 2 || list.NextCursor != "" {
		t.Fatalf("list = %+v", list)
	}
	for _, s := range []string{p.ProductSecret, g.ProductSecret} {
		if bytes.Contains(r.body, []byte(s)) {
			t.Fatalf("list leaks a secret: %s", r.body)
		}
	}

	e.do("GET", "/api/v1/products/nope", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/products/a+b", nil).wantError(t, 400, "invalid_argument")
	e.do("GET", "/api/v1/products/a%2Cb", nil).wantError(t, 400, "invalid_argument")

	// Patch.
	e.takeChanges()
	var up Product
	e.do("PATCH", "/api/v1/products/pk-1", map[string]any{"name": "Meters v2", "dynamicRegistration": false}).want(t, 200, &up)
	if up.Name != "Meters v2" || up.DynamicRegistration || up.DataFormat != "cbor" || up.OnlineLifetimeSecs != 600 || up.ProductSecret != "" {
		t.Fatalf("patched %+v", up)
	}
	e.do("PATCH", "/api/v1/products/pk-1", map[string]any{"dataFormat": "json", "onlineLifetimeSeconds": 0}).want(t, 200, &up)
	if up.Name != "Meters v2" || up.DataFormat != "json" || up.OnlineLifetimeSecs != 0 {
		t.Fatalf("patched %+v", up)
	}
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk-1/", "pk-1/"}) {
		t.Fatalf("OnDeviceChange calls = %q", c)
	}
	// The stored secret is untouched by updates.
	sp, err := e.store.GetProduct(context.Background(), "pk-1")
	if err != nil || sp.ProductSecret.Reveal() != p.ProductSecret {
		t.Fatalf("stored product %v, %v", sp, err)
	}
	e.do("PATCH", "/api/v1/products/nope", map[string]any{"name": "x"}).wantError(t, 404, "not_found")
	e.do("PATCH", "/api/v1/products/pk-1", `{"productKey":"other"}`).wantError(t, 400, "invalid_argument")
	e.do("PATCH", "/api/v1/products/pk-1", `{"name":""}`).wantError(t, 400, "invalid_argument")
	e.do("PATCH", "/api/v1/products/pk-1", `{"dataFormat":"yaml"}`).wantError(t, 400, "invalid_argument")
	e.do("PATCH", "/api/v1/products/pk-1", `nope`).wantError(t, 400, "invalid_argument")

	// Delete: refused while it has devices.
	e.createDevice("pk-1", "dev-1")
	er := e.do("DELETE", "/api/v1/products/pk-1", nil).wantError(t, 409, "conflict")
	if !strings.Contains(er.Message, "devices") {
		t.Errorf("conflict message = %q", er.Message)
	}
	e.do("DELETE", "/api/v1/devices/pk-1/dev-1", nil).want(t, 204, nil)
	e.takeChanges()
	e.do("DELETE", "/api/v1/products/pk-1", nil).want(t, 204, nil)
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk-1/"}) {
		t.Fatalf("OnDeviceChange calls = %q", c)
	}
	e.do("DELETE", "/api/v1/products/pk-1", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/products/pk-1", nil).wantError(t, 404, "not_found")
	e.do("DELETE", "/api/v1/products/a#b", nil).wantError(t, 404, "not_found") // '#' starts the fragment: path is /products/a
}

func TestProductPaging(t *testing.T) {
	e := newTestEnv(t)
	for _, pk := range []string{"p3", "p1", "p5", "p2", "p4"} {
		e.createProduct(pk)
	}
	var keys []string
	after := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("paging does not end")
		}
		var l List[Product]
		e.do("GET", "/api/v1/products?limit=2&after="+after, nil).want(t, 200, &l)
		for _, p := range l.Items {
			keys = append(keys, p.ProductKey)
		}
		if l.NextCursor == "" {
			if len(l.Items) == 2 {
				t.Fatal("full page without nextCursor")
			}
			break
		}
		after = l.NextCursor
	}
	if !slices.Equal(keys, []string{"p1", "p2", "p3", "p4", "p5"}) {
		t.Fatalf("paged keys = %q", keys)
	}
	// cursor is the name of every listing's paging parameter; after, the
	// older name of some routes, is the same parameter.
	for _, q := range []string{"cursor=p2", "after=p2", "cursor=p2&after=p2"} {
		var l List[Product]
		e.do("GET", "/api/v1/products?limit=2&"+q, nil).want(t, 200, &l)
		if len(l.Items) != 2 || l.Items[0].ProductKey != "p3" {
			t.Fatalf("%s: %+v", q, l.Items)
		}
	}
	e.do("GET", "/api/v1/products?cursor=p2&after=p3", nil).wantError(t, 400, "invalid_argument")
	for _, q := range []string{"limit=0", "limit=1001", "limit=x", "product=p1"} {
		e.do("GET", "/api/v1/products?"+q, nil).wantError(t, 400, "invalid_argument")
	}
}

func TestDevices(t *testing.T) {
	e := newTestEnv(t)
	ctx := context.Background()
	e.do("POST", "/api/v1/products", map[string]any{"productKey": "pk", "name": "p", "onlineLifetimeSeconds": 120}).want(t, 201, nil)
	e.createProduct("other")

	// Create with defaults.
	var d Device
	e.do("POST", "/api/v1/devices", map[string]any{"productKey": "pk"}).want(t, 201, &d)
	e.rememberSecret(d.DeviceSecret)
	if len(d.DeviceKey) != 10 || len(d.DeviceSecret) != 32 || !d.Enabled || d.TokenGeneration != 0 ||
		!d.CreatedAt.Equal(testNow) || !d.LastSeenAt.IsZero() || d.Online || d.LifetimeSeconds != 120 {
		t.Fatalf("created %+v", d)
	}
	// Create with every field.
	var d2 Device
	e.do("POST", "/api/v1/devices", map[string]any{
		"productKey": "pk", "deviceKey": "meter_01", "deviceSecret": "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56",
		"assetId": "asset-7", "enabled": false,
	}).want(t, 201, &d2)
	e.rememberSecret(d2.DeviceSecret)
	if d2.DeviceKey != "meter_01" || d2.DeviceSecret != "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56" || d2.AssetID != "asset-7" || d2.Enabled {
		t.Fatalf("created %+v", d2)
	}
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk/", "other/", "pk/" + d.DeviceKey, "pk/meter_01"}) {
		t.Fatalf("OnDeviceChange calls after creates = %q", c)
	}
	e.createDevice("other", "o1")

	t.Run("create errors", func(t *testing.T) {
		tests := []struct {
			name   string
			body   string
			status int
			code   string
		}{
			{"unknown product", `{"productKey":"nope"}`, 404, "not_found"},
			{"duplicate", `{"productKey":"pk","deviceKey":"meter_01"}`, 409, "conflict"},
			{"missing product", `{}`, 400, "invalid_argument"},
			{"bad device key", `{"productKey":"pk","deviceKey":"a/b"}`, 400, "invalid_argument"},
			{"plus in key", `{"productKey":"pk","deviceKey":"a+b"}`, 400, "invalid_argument"},
			{"bad secret", `{"productKey":"pk","deviceSecret":"has space in it"}`, 400, "invalid_argument"},
			{"unknown field", `{"productKey":"pk","secret":"x"}`, 400, "invalid_argument"},
			{"bad json", `{"productKey":"pk"`, 400, "invalid_argument"},
			{"control char asset", `{"productKey":"pk","assetId":"a\u0001"}`, 400, "invalid_argument"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				e.do("POST", "/api/v1/devices", tt.body).wantError(t, tt.status, tt.code)
			})
		}
	})

	// Get: never the secret; registry presence when this node has none.
	if err := e.store.TouchDevices(ctx, []registry.Presence{{ProductKey: "pk", DeviceKey: "meter_01",
		SeenAt: testNow.Add(-time.Hour), Address: "192.0.2.1:5684"}}); err != nil {
		t.Fatal(err)
	}
	var got Device
	r := e.do("GET", "/api/v1/devices/pk/meter_01", nil)
	r.want(t, 200, &got)
	if bytes.Contains(r.body, []byte(d2.DeviceSecret)) || bytes.Contains(r.body, []byte("deviceSecret")) {
		t.Fatalf("get leaks the secret: %s", r.body)
	}
	if !got.LastSeenAt.Equal(testNow.Add(-time.Hour)) || got.LastAddress != "192.0.2.1:5684" || got.Online || got.Transport != "" || got.LifetimeSeconds != 120 {
		t.Fatalf("device from registry presence = %+v", got)
	}
	// Never seen: lastSeenAt omitted.
	r = e.do("GET", "/api/v1/devices/pk/"+d.DeviceKey, nil)
	if bytes.Contains(r.body, []byte("lastSeenAt")) {
		t.Fatalf("lastSeenAt present for a device never seen: %s", r.body)
	}
	// Live presence wins.
	e.presence.Seen("pk", "meter_01", "198.51.100.9:40000", message.TransportDTLS, time.Minute, testNow.Add(-10*time.Second))
	e.do("GET", "/api/v1/devices/pk/meter_01", nil).want(t, 200, &got)
	if !got.LastSeenAt.Equal(testNow.Add(-10*time.Second)) || got.LastAddress != "198.51.100.9:40000" ||
		!got.Online || got.Transport != "coap-dtls" || got.LifetimeSeconds != 60 {
		t.Fatalf("device with live presence = %+v", got)
	}
	e.presence.Seen("other", "o1", "198.51.100.9:1", message.TransportCoAP, time.Minute, testNow.Add(-2*time.Minute))
	e.do("GET", "/api/v1/devices/other/o1", nil).want(t, 200, &got)
	if got.Online || got.Transport != "coap" {
		t.Fatalf("expired presence = %+v", got)
	}
	e.do("GET", "/api/v1/devices/pk/nope", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/devices/nope/meter_01", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/devices/pk/a%2Fb", nil).wantError(t, 400, "invalid_argument")

	// Times are UTC RFC 3339 with nanoseconds.
	if !bytes.Contains(r.body, []byte(`"createdAt":"2025-03-04T05:06:07.123456789Z"`)) {
		t.Fatalf("createdAt not RFC 3339 nano UTC: %s", r.body)
	}

	// List: by product, all, paging, never secrets.
	var l List[Device]
	r = e.do("GET", "/api/v1/devices?productKey=pk", nil)
	r.want(t, 200, &l)
	if len(l.Items) != 2 || l.NextCursor != "" {
		t.Fatalf("list pk = %+v", l)
	}
	for _, s := range []string{d.DeviceSecret, d2.DeviceSecret} {
		if bytes.Contains(r.body, []byte(s)) {
			t.Fatalf("list leaks a secret: %s", r.body)
		}
	}
	var keys []string
	after := ""
	for {
		var l List[Device]
		e.do("GET", "/api/v1/devices?limit=2&after="+after, nil).want(t, 200, &l)
		for _, it := range l.Items {
			keys = append(keys, it.ProductKey+"/"+it.DeviceKey)
		}
		if l.NextCursor == "" {
			break
		}
		after = l.NextCursor
	}
	wantKeys := []string{"other/o1", "pk/" + d.DeviceKey, "pk/meter_01"}
	slices.Sort(wantKeys)
	if !slices.Equal(keys, wantKeys) {
		t.Fatalf("paged all devices = %q, want %q", keys, wantKeys)
	}
	e.do("GET", "/api/v1/devices?productKey=pk&limit=1", nil).want(t, 200, &l)
	if l.NextCursor != l.Items[0].DeviceKey {
		t.Fatalf("cursor with productKey = %q", l.NextCursor)
	}
	e.do("GET", "/api/v1/devices?productKey=nope", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/devices?productKey=a,b", nil).wantError(t, 400, "invalid_argument")
	e.do("GET", "/api/v1/devices?product=pk", nil).wantError(t, 400, "invalid_argument")

	// Patch.
	e.takeChanges()
	var up Device
	e.do("PATCH", "/api/v1/devices/pk/meter_01", map[string]any{"enabled": true}).want(t, 200, &up)
	if !up.Enabled || up.AssetID != "asset-7" || up.DeviceSecret != "" {
		t.Fatalf("patched %+v", up)
	}
	e.do("PATCH", "/api/v1/devices/pk/meter_01", map[string]any{"assetId": ""}).want(t, 200, &up)
	if !up.Enabled || up.AssetID != "" {
		t.Fatalf("patched %+v", up)
	}
	e.do("PATCH", "/api/v1/devices/pk/meter_01", `{"deviceSecret":"abcdefghijk"}`).wantError(t, 400, "invalid_argument")
	e.do("PATCH", "/api/v1/devices/pk/nope", `{"enabled":false}`).wantError(t, 404, "not_found")
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk/meter_01", "pk/meter_01"}) {
		t.Fatalf("OnDeviceChange calls = %q", c)
	}

	// Revoke tokens.
	e.do("POST", "/api/v1/devices/pk/meter_01/revoke-tokens", nil).want(t, 200, &up)
	if up.TokenGeneration != 1 || up.DeviceSecret != "" {
		t.Fatalf("after revoke %+v", up)
	}
	e.do("POST", "/api/v1/devices/pk/meter_01/revoke-tokens", `{}`).want(t, 200, &up)
	if up.TokenGeneration != 2 {
		t.Fatalf("after second revoke %+v", up)
	}
	e.do("POST", "/api/v1/devices/pk/meter_01/revoke-tokens", `{"x":1}`).wantError(t, 400, "invalid_argument")
	e.do("POST", "/api/v1/devices/pk/nope/revoke-tokens", nil).wantError(t, 404, "not_found")

	// Rotate the secret: returned once, generation bumped, stored.
	var rot Device
	e.do("POST", "/api/v1/devices/pk/meter_01/rotate-secret", nil).want(t, 200, &rot)
	e.rememberSecret(rot.DeviceSecret)
	if len(rot.DeviceSecret) != 32 || rot.DeviceSecret == d2.DeviceSecret || rot.TokenGeneration != 3 {
		t.Fatalf("after rotate %+v", rot)
	}
	sd, err := e.store.GetDevice(ctx, "pk", "meter_01")
	if err != nil || sd.DeviceSecret.Reveal() != rot.DeviceSecret || sd.Generation != 3 {
		t.Fatalf("stored device %+v, %v", sd, err)
	}
	r = e.do("GET", "/api/v1/devices/pk/meter_01", nil)
	if bytes.Contains(r.body, []byte(rot.DeviceSecret)) {
		t.Fatalf("get leaks the rotated secret: %s", r.body)
	}
	e.do("POST", "/api/v1/devices/pk/nope/rotate-secret", nil).wantError(t, 404, "not_found")
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk/meter_01", "pk/meter_01", "pk/meter_01"}) {
		t.Fatalf("OnDeviceChange calls = %q", c)
	}

	// Delete.
	e.do("DELETE", "/api/v1/devices/pk/meter_01", nil).want(t, 204, nil)
	if c := e.takeChanges(); !slices.Equal(c, []string{"pk/meter_01"}) {
		t.Fatalf("OnDeviceChange calls = %q", c)
	}
	e.do("DELETE", "/api/v1/devices/pk/meter_01", nil).wantError(t, 404, "not_found")
	e.do("GET", "/api/v1/devices/pk/meter_01", nil).wantError(t, 404, "not_found")
	e.do("DELETE", "/api/v1/devices/pk/a:b", nil).wantError(t, 404, "not_found")
	e.do("DELETE", "/api/v1/devices/pk/a%20b", nil).wantError(t, 400, "invalid_argument")
}

// seedMessages stores messages of three kinds for two devices, one second
// apart starting at base, and returns them with their IDs.
func seedMessages(t *testing.T, e *testEnv, base time.Time) []*message.Message {
	t.Helper()
	cb, err := cbor.Marshal(map[string]any{"temp": 21.5, "tags": []any{"a", uint64(1)}, "ok": true})
	if err != nil {
		t.Fatal(err)
	}
	cbIntKeys, err := cbor.Marshal(map[int]string{1: "x"})
	if err != nil {
		t.Fatal(err)
	}
	var ms []*message.Message
	add := func(dk string, cf uint16, payload []byte) {
		ms = append(ms, &message.Message{
			ProductKey: "pk", DeviceKey: dk, Topic: "/sys/pk/" + dk + "/thing/event/property/post",
			Payload: payload, ContentFormat: cf, ReceivedAt: base.Add(time.Duration(len(ms)) * time.Second),
			Peer: "192.0.2.7:5683", Transport: message.TransportCoAP,
		})
	}
	add("d1", 50, []byte(`{"id":"1","params":{"temp":20}}`)) // 0
	add("d2", 50, []byte(`{"id":"2"}`))                      // 1
	add("d1", 60, cb)                                        // 2
	add("d1", 42, []byte{0x00, 0xff, 0x10})                  // 3
	add("d1", 50, []byte(`{not json`))                       // 4
	add("d1", 60, cbIntKeys)                                 // 5
	add("d2", 60, []byte{0xff})                              // 6 invalid CBOR
	if err := e.store.Append(context.Background(), ms); err != nil {
		t.Fatal(err)
	}
	return ms
}

func TestMessages(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("pk")
	e.createDevice("pk", "d1")
	e.createDevice("pk", "d2")
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	ms := seedMessages(t, e, base)

	ids := func(l List[Message]) []string {
		var out []string
		for _, m := range l.Items {
			out = append(out, m.ID)
		}
		return out
	}
	idOf := func(is ...int) []string {
		var out []string
		for _, i := range is {
			out = append(out, fmt.Sprint(ms[i].ID))
		}
		return out
	}

	t.Run("fields and payload embedding", func(t *testing.T) {
		var l List[Message]
		e.do("GET", "/api/v1/messages", nil).want(t, 200, &l)
		if len(l.Items) != len(ms) || l.NextCursor != "" {
			t.Fatalf("got %d messages, cursor %q", len(l.Items), l.NextCursor)
		}
		m0 := l.Items[0]
		if m0.ID != fmt.Sprint(ms[0].ID) || m0.ProductKey != "pk" || m0.DeviceKey != "d1" || m0.Topic != ms[0].Topic ||
			m0.ContentFormat != 50 || !m0.ReceivedAt.Equal(base) || m0.Peer != "192.0.2.7:5683" || m0.Transport != "coap" {
			t.Fatalf("message 0 = %+v", m0)
		}
		for i, m := range l.Items {
			if m.PayloadBase64 != base64.StdEncoding.EncodeToString(ms[i].Payload) {
				t.Errorf("message %d payloadBase64 = %q", i, m.PayloadBase64)
			}
		}
		wantPayload := map[int]string{
			0: `{"id":"1","params":{"temp":20}}`,
			1: `{"id":"2"}`,
			2: `{"ok":true,"tags":["a",1],"temp":21.5}`,
		}
		for i, m := range l.Items {
			w, ok := wantPayload[i]
			if !ok {
				if m.Payload != nil {
					t.Errorf("message %d (cf %d) has payload %s, want none", i, m.ContentFormat, m.Payload)
				}
				continue
			}
			var gotV, wantV any
			if err := json.Unmarshal(m.Payload, &gotV); err != nil {
				t.Fatalf("message %d payload %s: %v", i, m.Payload, err)
			}
			json.Unmarshal([]byte(w), &wantV)
			gb, _ := json.Marshal(gotV)
			wb, _ := json.Marshal(wantV)
			if !bytes.Equal(gb, wb) {
				t.Errorf("message %d payload = %s, want %s", i, gb, wb)
			}
		}
	})

	tests := []struct {
		name  string
		path  string
		want  []string
		after string // expected nextCursor
	}{
		{"by device", "/api/v1/messages?productKey=pk&deviceKey=d2", idOf(1, 6), ""},
		{"device route", "/api/v1/devices/pk/d2/messages", idOf(1, 6), ""},
		{"by product", "/api/v1/messages?productKey=pk&limit=3", idOf(0, 1, 2), idOf(2)[0]},
		{"other product", "/api/v1/messages?productKey=zz", nil, ""},
		{"from rfc3339", "/api/v1/messages?from=2025-01-01T00:00:05Z", idOf(5, 6), ""},
		{"from to ms", fmt.Sprintf("/api/v1/messages?from=%d&to=%d", base.Add(time.Second).UnixMilli(), base.Add(3*time.Second).UnixMilli()), idOf(1, 2), ""},
		{"to nano", "/api/v1/messages?to=2025-01-01T00:00:00.5Z", idOf(0), ""},
		{"after", "/api/v1/devices/pk/d1/messages?limit=2&after=" + idOf(2)[0], idOf(3, 4), idOf(4)[0]},
		{"cursor", "/api/v1/devices/pk/d1/messages?limit=2&cursor=" + idOf(2)[0], idOf(3, 4), idOf(4)[0]},
		{"desc", "/api/v1/devices/pk/d1/messages?order=desc&limit=2", idOf(5, 4), idOf(4)[0]},
		{"desc after", "/api/v1/devices/pk/d1/messages?order=desc&limit=2&after=" + idOf(4)[0], idOf(3, 2), idOf(2)[0]},
		{"desc last page", "/api/v1/devices/pk/d1/messages?order=desc&limit=2&after=" + idOf(2)[0], idOf(0), ""},
		{"asc explicit", "/api/v1/messages?order=asc&deviceKey=d2", idOf(1, 6), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var l List[Message]
			e.do("GET", tt.path, nil).want(t, 200, &l)
			if got := ids(l); !slices.Equal(got, tt.want) {
				t.Fatalf("ids = %q, want %q", got, tt.want)
			}
			if l.NextCursor != tt.after {
				t.Fatalf("nextCursor = %q, want %q", l.NextCursor, tt.after)
			}
		})
	}

	t.Run("walk all pages desc", func(t *testing.T) {
		var got []string
		after := ""
		for range 10 {
			var l List[Message]
			e.do("GET", "/api/v1/messages?order=desc&limit=3&after="+after, nil).want(t, 200, &l)
			got = append(got, ids(l)...)
			if l.NextCursor == "" {
				break
			}
			after = l.NextCursor
		}
		if want := idOf(6, 5, 4, 3, 2, 1, 0); !slices.Equal(got, want) {
			t.Fatalf("ids = %q, want %q", got, want)
		}
	})

	errs := []struct {
		name, path string
		status     int
		code       string
	}{
		{"bad from", "/api/v1/messages?from=yesterday", 400, "invalid_argument"},
		{"bad to", "/api/v1/messages?to=2025-13-01T00:00:00Z", 400, "invalid_argument"},
		{"from after to", "/api/v1/messages?from=2000&to=1000", 400, "invalid_argument"},
		{"bad order", "/api/v1/messages?order=up", 400, "invalid_argument"},
		{"bad after", "/api/v1/messages?after=abc", 400, "invalid_argument"},
		{"zero after", "/api/v1/messages?after=0", 400, "invalid_argument"},
		{"zero cursor", "/api/v1/messages?cursor=0", 400, "invalid_argument"},
		{"cursor and after differ", "/api/v1/messages?cursor=1&after=2", 400, "invalid_argument"},
		{"bad limit", "/api/v1/messages?limit=-1", 400, "invalid_argument"},
		{"unknown param", "/api/v1/messages?device=d1", 400, "invalid_argument"},
		{"bad key", "/api/v1/messages?deviceKey=a/b", 400, "invalid_argument"},
		{"device route unknown device", "/api/v1/devices/pk/nope/messages", 404, "not_found"},
		{"device route param", "/api/v1/devices/pk/d1/messages?deviceKey=d2", 400, "invalid_argument"},
	}
	for _, tt := range errs {
		t.Run(tt.name, func(t *testing.T) {
			e.do("GET", tt.path, nil).wantError(t, tt.status, tt.code)
		})
	}
}

func TestPayloadAsJSON(t *testing.T) {
	mustCBOR := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	big := []byte{0xc2, 0x49, 0x01, 0, 0, 0, 0, 0, 0, 0, 0} // bignum 2^64
	tests := []struct {
		name string
		cf   uint16
		in   []byte
		want string // "" = omitted
	}{
		{"json object", 50, []byte(`{"a":1}`), `{"a":1}`},
		{"json scalar", 50, []byte(`42`), `42`},
		{"invalid json", 50, []byte(`{`), ""},
		{"invalid utf8 json", 50, []byte("\"\xff\""), ""},
		{"empty json", 50, nil, ""},
		{"cbor map", 60, mustCBOR(map[string]any{"a": []int{1, 2}}), `{"a":[1,2]}`},
		{"cbor nested map", 60, mustCBOR(map[string]any{"m": map[string]int{"x": -1}}), `{"m":{"x":-1}}`},
		{"cbor int keys", 60, mustCBOR(map[int]int{1: 2}), ""},
		{"cbor bignum", 60, big, `18446744073709551616`},
		{"cbor bytes", 60, mustCBOR([]byte{1, 2}), `"AQI="`},
		{"cbor NaN", 60, []byte{0xf9, 0x7e, 0x00}, ""},
		{"cbor trailing", 60, append(mustCBOR(1), 0x01), ""},
		{"cbor truncated", 60, []byte{0xa1}, ""},
		{"octets", 42, []byte(`{"a":1}`), ""},
		{"text plain", 0, []byte(`{"a":1}`), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := payloadAsJSON(tt.cf, tt.in)
			if string(got) != tt.want {
				t.Fatalf("payloadAsJSON = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestHealthAndMisc(t *testing.T) {
	e := newTestEnv(t)
	var h Health
	e.raw("GET", "/api/v1/health", "", nil).want(t, 200, &h)
	if h != (Health{Status: "ok", Version: "v1.2.3-test"}) {
		t.Fatalf("health = %+v", h)
	}
	e.health = errors.New("disk on fire")
	er := e.raw("GET", "/api/v1/health", "", nil).wantError(t, 503, "unavailable")
	if strings.Contains(er.Message, "fire") {
		t.Errorf("health error leaks the cause: %q", er.Message)
	}
	if !strings.Contains(e.logs.String(), "disk on fire") {
		t.Error("health failure not logged")
	}
	e.health = nil

	r := e.raw("GET", "/metrics", "", nil)
	if r.status != 200 || string(r.body) != "coapgate_up 1\n" {
		t.Fatalf("metrics = %d %q", r.status, r.body)
	}

	r = e.raw("GET", "/api/v1/openapi.json", "", nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/json" || !json.Valid(r.body) {
		t.Fatalf("openapi = %d %q", r.status, r.header.Get("Content-Type"))
	}

	e.do("GET", "/api/v1/nope", nil).wantError(t, 404, "not_found")
	e.raw("GET", "/", "", nil).wantError(t, 404, "not_found")
	r = e.do("PUT", "/api/v1/products", nil)
	r.wantError(t, 405, "method_not_allowed")
	if allow := r.header.Get("Allow"); !strings.Contains(allow, "GET") || !strings.Contains(allow, "POST") {
		t.Fatalf("Allow = %q", allow)
	}
	if cc := e.do("GET", "/api/v1/products", nil).header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q", cc)
	}

	// Bodies over 1 MiB.
	big := `{"name":"` + strings.Repeat("x", maxBodyBytes) + `"}`
	e.do("POST", "/api/v1/products", big).wantError(t, 413, "too_large")
}

func TestMetricsAbsent(t *testing.T) {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv := httptest.NewServer(New(Options{Registry: st, Messages: st, Keys: st}))
	defer srv.Close()
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("GET /metrics without Metrics = %d, want 404", resp.StatusCode)
	}
}

func TestInternalError(t *testing.T) {
	e := newTestEnv(t)
	// Authenticate once so the key is cached, then break the store.
	e.do("GET", "/api/v1/products", nil).want(t, 200, nil)
	e.store.Close()
	er := e.do("GET", "/api/v1/products", nil).wantError(t, 500, "internal")
	if er.Message != "internal error" {
		t.Fatalf("message = %q, want a generic one", er.Message)
	}
	if !strings.Contains(e.logs.String(), "request failed") {
		t.Fatalf("internal error not logged:\n%s", e.logs.String())
	}
}

func TestAuthCache(t *testing.T) {
	c := newAuthCache(3, 30*time.Second)
	h := func(i int) []byte { return apikey.Hash(fmt.Sprint(i)) }
	c.put(h(1), "id1", testNow)
	if id, ok := c.get(h(1), testNow.Add(29*time.Second)); !ok || id != "id1" {
		t.Fatalf("get = %q %v", id, ok)
	}
	if _, ok := c.get(h(1), testNow.Add(30*time.Second)); ok {
		t.Fatal("expired entry returned")
	}
	for i := range 10 {
		c.put(h(i), fmt.Sprint("id", i), testNow)
		if len(c.entries) > 3 {
			t.Fatalf("cache holds %d entries, max 3", len(c.entries))
		}
	}
	if _, ok := c.get(h(9), testNow); !ok {
		t.Fatal("latest entry missing")
	}
	c.put(h(8), "id8", testNow)
	c.forget("id8")
	if _, ok := c.get(h(8), testNow); ok {
		t.Fatal("forgotten entry returned")
	}
}

// TestOpenAPIMatchesRoutes keeps openapi.json and the route table in step:
// every route is documented with its method, and every documented
// operation is a route.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(openAPIDoc, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Fatalf("openapi = %q, want 3.1.x", doc.OpenAPI)
	}
	methods := map[string]bool{"get": true, "put": true, "post": true, "delete": true, "options": true, "head": true, "patch": true, "trace": true}
	documented := make(map[string]bool)
	for path, item := range doc.Paths {
		for m := range item {
			if methods[m] {
				documented[strings.ToUpper(m)+" "+path] = true
			}
		}
	}
	routes := make(map[string]bool)
	s := newServer(Options{Metrics: http.NotFoundHandler()})
	for _, rt := range s.routes() {
		// ServeMux wildcards {x} and {x...} are OpenAPI's {x}.
		routes[rt.method+" "+strings.ReplaceAll(rt.pattern, "...}", "}")] = true
	}
	for r := range routes {
		if !documented[r] {
			t.Errorf("route %s is not in openapi.json", r)
		}
	}
	for d := range documented {
		if !routes[d] {
			t.Errorf("openapi.json documents %s, which is not a route", d)
		}
	}
	// Every $ref resolves.
	var all map[string]any
	json.Unmarshal(openAPIDoc, &all)
	var walk func(v any)
	walk = func(v any) {
		switch v := v.(type) {
		case map[string]any:
			if ref, ok := v["$ref"].(string); ok {
				var cur any = all
				for _, part := range strings.Split(strings.TrimPrefix(ref, "#/"), "/") {
					m, _ := cur.(map[string]any)
					cur = m[part]
				}
				if cur == nil {
					t.Errorf("unresolved $ref %q", ref)
				}
			}
			for _, x := range v {
				walk(x)
			}
		case []any:
			for _, x := range v {
				walk(x)
			}
		}
	}
	walk(all)
}

// TestClientError checks that Client turns error responses into *Error.
func TestClientError(t *testing.T) {
	e := newTestEnv(t)
	c := &Client{BaseURL: e.srv.URL, Key: e.key}
	_, err := c.Do(context.Background(), "GET", "/products/nope", nil, nil)
	var ae *Error
	if !errors.As(err, &ae) || ae.Status != 404 || ae.Code != "not_found" {
		t.Fatalf("err = %#v", err)
	}
	b, err := c.Do(context.Background(), "POST", "/products", nil, map[string]any{"productKey": "cp", "name": "n"})
	if err != nil {
		t.Fatal(err)
	}
	var p Product
	if err := json.Unmarshal(b, &p); err != nil || p.ProductKey != "cp" {
		t.Fatalf("create = %s, %v", b, err)
	}
	e.rememberSecret(p.ProductSecret)
	c.Key = ""
	_, err = c.Do(context.Background(), "GET", "/products", nil, nil)
	if !errors.As(err, &ae) || ae.Status != 401 {
		t.Fatalf("err = %v", err)
	}
}
