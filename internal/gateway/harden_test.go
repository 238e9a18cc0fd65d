package gateway

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/auth/devsign"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/ratelog"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/sqlitestore"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// countingRegistry counts the device lookups that reach the real store.
type countingRegistry struct {
	Registry
	devices atomic.Int64
}

func (c *countingRegistry) GetDevice(ctx context.Context, pk, dk string) (registry.Device, error) {
	c.devices.Add(1)
	return c.Registry.GetDevice(ctx, pk, dk)
}

// openStore opens a real SQLite registry with one product and n devices
// (dev0…) and returns it with the product key.
func openStore(t *testing.T, n int) (*sqlitestore.Store, string) {
	t.Helper()
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "gw.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	const pk = "pk1"
	if err := st.CreateProduct(ctx, registry.Product{ProductKey: pk, ProductSecret: "ps", Name: "p", CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		d := registry.Device{ProductKey: pk, DeviceKey: fmt.Sprintf("dev%d", i), DeviceSecret: "secret", Enabled: true, CreatedAt: time.Now()}
		if err := st.CreateDevice(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	return st, pk
}

// A flood of unknown device names never pushes a known device out of the
// cache, the unknown names are bounded and expire, and the known segment
// evicts one least recently used entry at a time, never everything.
func TestDevCacheUnknownNamesKeepKnown(t *testing.T) {
	st, pk := openStore(t, 101)
	reg := &countingRegistry{Registry: st}
	c := newDevCache(reg, time.Minute, 100, 64)
	ctx := context.Background()
	now := time.Unix(1_000_000, 0)
	for i := range 100 {
		if _, err := c.get(ctx, pk, fmt.Sprintf("dev%d", i), now); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 5000 {
		if _, err := c.get(ctx, pk, fmt.Sprintf("nobody%d", i), now); err == nil {
			t.Fatal("unknown name found")
		}
		if k, n := c.sizes(); k != 100 || n > 64 {
			t.Fatalf("after %d unknown names: %d known, %d unknown entries", i+1, k, n)
		}
	}
	before := reg.devices.Load()
	for i := range 100 {
		if _, err := c.get(ctx, pk, fmt.Sprintf("dev%d", i), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := reg.devices.Load() - before; n != 0 {
		t.Fatalf("%d known devices were pushed out by unknown names", n)
	}
	// Unknown names expire (after a second).
	later := now.Add(2 * time.Second)
	c.get(ctx, pk, "late-nobody", later)
	if _, n := c.sizes(); n != 1 {
		t.Fatalf("%d unknown entries after they expired, want only the new one", n)
	}
	// A 101st known device evicts the least recently used one only: dev0
	// was used first, so it goes; dev1…dev99 stay cached.
	c.get(ctx, pk, "dev100", later)
	before = reg.devices.Load()
	for i := 1; i <= 100; i++ {
		c.get(ctx, pk, fmt.Sprintf("dev%d", i), later)
	}
	if n := reg.devices.Load() - before; n != 0 {
		t.Fatalf("%d lookups for devices that should be cached", n)
	}
	if k, _ := c.sizes(); k != 100 {
		t.Fatalf("%d known entries, want 100", k)
	}
	c.get(ctx, pk, "dev0", later)
	if n := reg.devices.Load() - before; n != 1 {
		t.Fatalf("dev0 (least recently used) was not the one evicted")
	}
}

// syncBuffer is a bytes.Buffer safe for the server's workers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) lines(msg string) []map[string]any {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(s.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// serveUDP runs g behind a coapx server on loopback.
func serveUDP(t *testing.T, g *Gateway, cfg coapx.Config) (*coapx.Server, *net.UDPConn) {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	s := coapx.NewServer(cfg, g, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { s.Serve(ctx, conn); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	c, err := net.DialUDP("udp", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

func exchange(t *testing.T, c *net.UDPConn, m message.Message) *message.Message {
	t.Helper()
	m.Type = message.Confirmable
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	r := &message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:n], r); err != nil {
		t.Fatal(err)
	}
	return r
}

func pathOpts(path string, extra ...message.Option) message.Options {
	var o message.Options
	for _, s := range strings.Split(path, "/") {
		o = append(o, message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	o = append(o, extra...)
	coapxSort(o)
	return o
}

func coapxSort(o message.Options) {
	for i := 1; i < len(o); i++ {
		for j := i; j > 0 && o[j].ID < o[j-1].ID; j-- {
			o[j], o[j-1] = o[j-1], o[j]
		}
	}
}

// Refused /auth requests with made-up device names are counted exactly and
// logged at a bounded rate, with a summary of the lines suppressed; the
// unknown names held stay within their bound, and a known device
// authenticates meanwhile from the cache.
func TestAuthRefusalsLoggedAtBoundedRate(t *testing.T) {
	st, pk := openStore(t, 1)
	var logs syncBuffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	var clock atomic.Int64
	clock.Store(time.Unix(1_000_000, 0).UnixNano())
	lim := ratelog.New(log, ratelog.Config{Rate: 1, Burst: 10, Every: time.Minute,
		Now: func() time.Time { return time.Unix(0, clock.Load()) }})
	reg := prometheus.NewRegistry()
	codec, err := token.NewCodec(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	counting := &countingRegistry{Registry: st}
	g := New(Options{Registry: counting, Tokens: codec, TokenTTL: time.Hour, DeviceCacheTTL: time.Minute, NegativeCacheEntries: 64,
		Registerer: reg, Logger: log, RefusalLog: lim})
	_, c := serveUDP(t, g, coapx.Config{Workers: 4})
	fields := map[string]string{"productKey": pk, "deviceName": "dev0", "clientId": pk + ".dev0"}
	sign, err := devsign.Sign(devsign.HMACSHA256, "secret", fields)
	if err != nil {
		t.Fatal(err)
	}
	legit := fmt.Sprintf(`{"productKey":%q,"deviceName":"dev0","clientId":%q,"signmethod":"hmacsha256","sign":%q}`, pk, pk+".dev0", sign)
	const n = 300
	for i := range n {
		if i%50 == 0 { // the known device, meanwhile
			r := exchange(t, c, message.Message{Code: codes.POST, MessageID: int32(50000 + i), Token: []byte{1},
				Options: pathOpts("auth", message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(50)}), Payload: []byte(legit)})
			if r.Code != codes.Content || !bytes.Contains(r.Payload, []byte(`"token"`)) {
				t.Fatalf("known device auth during the flood: %v %s", r.Code, r.Payload)
			}
		}
		body := fmt.Sprintf(`{"productKey":%q,"deviceName":"intruder%d","sign":"00"}`, pk, i)
		r := exchange(t, c, message.Message{Code: codes.POST, MessageID: int32(i), Token: []byte{1},
			Options: pathOpts("auth", message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(50)}), Payload: []byte(body)})
		if r.Code != codes.Unauthorized {
			t.Fatalf("auth %d: %v", i, r.Code)
		}
	}
	var mv dto.Metric
	if err := g.m.authFailures.WithLabelValues(reasonUnknownDevice).Write(&mv); err != nil {
		t.Fatal(err)
	}
	if got := mv.GetCounter().GetValue(); got != n {
		t.Fatalf("auth failures counted %v, want %d", got, n)
	}
	if got := len(logs.lines("auth refused")); got != 10 {
		t.Fatalf("%d refusal lines written, want the burst of 10", got)
	}
	if k, u := g.cache.sizes(); k != 1 || u > 64 {
		t.Fatalf("cache holds %d known, %d unknown; want the known device and at most 64 unknown names", k, u)
	}
	if got := counting.devices.Load(); got != n+1 {
		t.Fatalf("%d device lookups reached the store, want %d (every unknown name once, the known device once)", got, n+1)
	}
	// Later, the next refusal passes and is preceded by the summary.
	clock.Add(int64(5 * time.Second))
	r := exchange(t, c, message.Message{Code: codes.POST, MessageID: 9999, Token: []byte{1},
		Options: pathOpts("auth"), Payload: []byte(`{"productKey":"x","deviceName":"y","sign":"00"}`)})
	if r.Code != codes.Unauthorized {
		t.Fatalf("auth: %v", r.Code)
	}
	sum := logs.lines("log lines suppressed")
	if len(sum) != 1 || sum[0]["suppressed"] != float64(n-10) || sum[0]["kind"] != "auth refused/"+reasonUnknownDevice {
		t.Fatalf("summary lines %v, want one with suppressed=%d", sum, n-10)
	}
	if got := len(logs.lines("auth refused")); got != 11 {
		t.Fatalf("%d refusal lines, want 11", got)
	}
}

// A Block1 uplink whose token is missing, invalid or for another device's
// topic is refused at its first block; nothing is buffered.
func TestAdmitRefusesBlock1AtFirstBlock(t *testing.T) {
	st, pk := openStore(t, 2)
	codec, err := token.NewCodec(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Registry: st, Tokens: codec, DeviceCacheTTL: time.Minute, TokenTTL: time.Hour})
	srv, c := serveUDP(t, g, coapx.Config{})
	now := time.Now()
	dev, err := st.GetDevice(context.Background(), pk, "dev0")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := codec.Issue(token.Claims{ProductKey: pk, DeviceKey: "dev0", Incarnation: dev.Incarnation, IssuedAt: now, ExpiresAt: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	own := fmt.Sprintf("topic/sys/%s/dev0/thing/event/property/post", pk)
	other := fmt.Sprintf("topic/sys/%s/dev1/thing/event/property/post", pk)
	b0 := message.Option{ID: message.Block1, Value: coapx.EncodeUint(0<<4 | 0x8 | 6)}
	tests := []struct {
		name string
		path string
		opts []message.Option
		want codes.Code
	}{
		{"no token", own, nil, codes.Unauthorized},
		{"invalid token", own, []message.Option{{ID: coapx.OptionAuthToken, Value: []byte("nope")}}, codes.Unauthorized},
		{"option 2101 nobody opens", own, []message.Option{{ID: coapx.OptionSignE, Value: []byte("00")}}, codes.Unauthorized},
		{"another device's topic", other, []message.Option{{ID: coapx.OptionAuthToken, Value: []byte(tok)}}, codes.Forbidden},
		{"dot-dot topic", fmt.Sprintf("topic/sys/%s/dev0/../x", pk), []message.Option{{ID: coapx.OptionAuthToken, Value: []byte(tok)}}, codes.BadRequest},
		{"unknown resource", "nothing/here", nil, codes.NotFound},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := exchange(t, c, message.Message{Code: codes.POST, MessageID: int32(100 + i), Token: []byte{2},
				Options: pathOpts(tt.path, append(tt.opts, b0)...), Payload: bytes.Repeat([]byte("x"), 1024)})
			if r.Code != tt.want {
				t.Fatalf("block 0: %v, want %v", r.Code, tt.want)
			}
			if st := srv.BlockStats(); st.Transfers != 0 || st.Reserved != 0 {
				t.Fatalf("refused transfer holds state: %+v", st)
			}
		})
	}
	// /auth carries its credential in the body: admitted, as anonymous.
	r := exchange(t, c, message.Message{Code: codes.POST, MessageID: 199, Token: []byte{2},
		Options: pathOpts("auth", b0), Payload: bytes.Repeat([]byte(" "), 1024)})
	if st := srv.BlockStats(); r.Code != codes.Continue || st.Transfers != 1 || st.Anonymous != coapx.AnonymousMaxBody {
		t.Fatalf("/auth block 0: %v, %+v; want 2.31 and an anonymous reservation", r.Code, st)
	}
	r = exchange(t, c, message.Message{Code: codes.POST, MessageID: 200, Token: []byte{2},
		Options: pathOpts(own, b0, message.Option{ID: coapx.OptionAuthToken, Value: []byte(tok)}), Payload: bytes.Repeat([]byte("x"), 1024)})
	if r.Code != codes.Continue {
		t.Fatalf("authenticated block 0: %v, want 2.31", r.Code)
	}
	if st := srv.BlockStats(); st.Transfers != 2 || st.Buffered != 2048 || st.Anonymous != coapx.AnonymousMaxBody {
		t.Fatalf("admitted transfer: %+v", st)
	}
}

// A token of the format issued before incarnations existed (version 1) keeps
// working for the device it was issued to, so firmware that never
// authenticates again survives the upgrade; once that device is deleted and
// created again, the old token is refused.
func TestLegacyTokenBoundByIssueTime(t *testing.T) {
	ctx := context.Background()
	st, pk := openStore(t, 0)
	created := time.Now().Add(-2 * time.Hour)
	if err := st.CreateDevice(ctx, registry.Device{ProductKey: pk, DeviceKey: "old", DeviceSecret: "secret", Enabled: true, CreatedAt: created}); err != nil {
		t.Fatal(err)
	}
	key := bytes.Repeat([]byte{7}, 32)
	codec, err := token.NewCodec(key)
	if err != nil {
		t.Fatal(err)
	}
	g := New(Options{Registry: st, Tokens: codec, DeviceCacheTTL: time.Nanosecond, TokenTTL: 24 * time.Hour})
	_, c := serveUDP(t, g, coapx.Config{})
	// The version-1 wire form: version kid flags issued expires generation
	// seqOffset len(pk) pk len(dk) dk, then HMAC-SHA256 truncated to 16.
	issued := time.Now().Add(-time.Hour)
	kid := sha256.Sum256(key)
	b := []byte{1, kid[0], 0}
	b = binary.BigEndian.AppendUint32(b, uint32(issued.Unix()))
	b = binary.BigEndian.AppendUint32(b, uint32(issued.Add(24*time.Hour).Unix()))
	b = binary.BigEndian.AppendUint32(b, 0)
	b = binary.BigEndian.AppendUint32(b, 0)
	b = append(append(b, byte(len(pk))), pk...)
	b = append(append(b, 3), "old"...)
	m := hmac.New(sha256.New, key)
	m.Write(b)
	tok := base64.RawURLEncoding.EncodeToString(append(b, m.Sum(nil)[:16]...))

	path := fmt.Sprintf("topic/sys/%s/old/thing/event/property/post", pk)
	b0 := message.Option{ID: message.Block1, Value: coapx.EncodeUint(0<<4 | 0x8 | 6)}
	send := func(mid int32) codes.Code {
		r := exchange(t, c, message.Message{Code: codes.POST, MessageID: mid, Token: []byte{3},
			Options: pathOpts(path, b0, message.Option{ID: coapx.OptionAuthToken, Value: []byte(tok)}), Payload: bytes.Repeat([]byte("x"), 1024)})
		return r.Code
	}
	if got := send(1); got != codes.Continue {
		t.Fatalf("legacy token of the device it was issued to: %v, want 2.31", got)
	}
	if err := st.DeleteDevice(ctx, pk, "old"); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevice(ctx, registry.Device{ProductKey: pk, DeviceKey: "old", DeviceSecret: "secret", Enabled: true, CreatedAt: time.Now()}); err != nil {
		t.Fatal(err)
	}
	if got := send(2); got != codes.Unauthorized {
		t.Fatalf("legacy token after the device was re-created: %v, want 4.01", got)
	}
}
