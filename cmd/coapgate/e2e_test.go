package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
	"github.com/coapgate/coapgate/sdk"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// testStoreEnv set to "postgres" runs the in-process gateways of these tests
// on PostgreSQL (COAPGATE_TEST_POSTGRES_URL, a schema per test) instead of
// SQLite.
const testStoreEnv = "COAPGATE_TEST_STORE"

// testSchemas maps a test gateway's data directory to its PostgreSQL schema,
// so a gateway restarted on the same directory finds its data again.
var testSchemas sync.Map // data dir -> URL

func testSchemaFor(t *testing.T, dataDir string) string {
	if u, ok := testSchemas.Load(dataDir); ok {
		return u.(string)
	}
	u := pgtest.Schema(t) // dropped when the test that made it ends
	testSchemas.Store(dataDir, u)
	return u
}

// testGateway is an in-process gateway on loopback ports with its admin key.
type testGateway struct {
	t   *testing.T
	s   *server
	key string
	dir string
}

func startTestGateway(t *testing.T, mutate ...func(*config.Config)) *testGateway {
	t.Helper()
	return startTestGatewayHooks(t, nil, mutate...)
}

// startTestGatewayHooks is startTestGateway with server hooks (e.g. a fixed
// random source).
func startTestGatewayHooks(t *testing.T, hooks []func(*serverHooks), mutate ...func(*config.Config)) *testGateway {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.CoAP.Listen = "127.0.0.1:0"
	cfg.CoAP.SymmetricListen = "127.0.0.1:0"
	cfg.DTLS.Listen = "127.0.0.1:0"
	cfg.API.Listen = "127.0.0.1:0"
	cfg.CoAP.Workers = 64
	for _, m := range mutate {
		m(&cfg)
	}
	if os.Getenv(testStoreEnv) == "postgres" && cfg.Store.Driver == "sqlite" {
		cfg.Store.Driver = "postgres"
		cfg.Store.PostgresURL = config.Secret(testSchemaFor(t, sqlitePath(cfg)))
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	s, err := startServer(context.Background(), cfg, log, hooks...)
	if err != nil {
		t.Fatal(err)
	}
	g := &testGateway{t: t, s: s, key: s.AdminKey, dir: cfg.DataDir}
	t.Cleanup(func() { s.shutdown() })
	if g.key == "" {
		t.Fatal("no admin key on first start")
	}
	return g
}

// api calls the management API and decodes the JSON answer into out.
func (g *testGateway) api(method, path string, body any, out any) int {
	g.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, "http://"+g.s.APIAddr()+path, rd)
	req.Header.Set("Authorization", "Bearer "+g.key)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		g.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil && err != io.EOF {
			g.t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

type device struct{ pk, dk, secret string }

func (g *testGateway) newDevice(pk, dk string) device {
	g.t.Helper()
	if pk == "" {
		var p struct{ ProductKey string }
		if code := g.api("POST", "/api/v1/products", map[string]any{"name": "test"}, &p); code != 201 {
			g.t.Fatalf("create product: %d", code)
		}
		pk = p.ProductKey
	}
	var d struct{ DeviceKey, DeviceSecret string }
	if code := g.api("POST", "/api/v1/devices", map[string]any{"productKey": pk, "deviceKey": dk}, &d); code != 201 {
		g.t.Fatalf("create device: %d", code)
	}
	return device{pk: pk, dk: d.DeviceKey, secret: d.DeviceSecret}
}

func (g *testGateway) dial(d device, opts ...sdk.Option) *sdk.Client {
	g.t.Helper()
	opts = append([]sdk.Option{
		sdk.WithCredentials(sdk.Credentials{ProductKey: d.pk, DeviceName: d.dk, DeviceSecret: d.secret}),
		sdk.WithTransmissionParams(sdk.TransmissionParams{AckTimeout: 500 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2}),
	}, opts...)
	c, err := sdk.Dial(context.Background(), g.s.CoAPAddr().String(), opts...)
	if err != nil {
		g.t.Fatal(err)
	}
	g.t.Cleanup(func() { c.Close() })
	return c
}

type apiMessage struct {
	ID, Topic, Transport, Peer string
	ContentFormat              int
	Payload                    json.RawMessage
	PayloadBase64              []byte
}

func (g *testGateway) messages(d device) []apiMessage {
	g.t.Helper()
	var page struct{ Items []apiMessage }
	if code := g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk+"/messages?limit=1000", nil, &page); code != 200 {
		g.t.Fatalf("list messages: %d", code)
	}
	return page.Items
}

func statusCode(err error) codes.Code {
	var se *sdk.StatusError
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

func TestE2EAuthPublishReadBack(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "meter_1")
	c := g.dial(d)
	ctx := context.Background()
	if _, err := c.Auth(ctx); err != nil {
		t.Fatalf("auth: %v", err)
	}
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	payload := `{"id":"77","version":"1.0","method":"thing.event.property.post","params":{"temp":21.5}}`
	resp, err := c.Publish(ctx, topic, []byte(payload))
	if err != nil {
		t.Fatalf("publish CON: %v", err)
	}
	if resp.Code != codes.Changed || resp.MessageID == "" {
		t.Fatalf("publish: code %v, 2090 %q", resp.Code, resp.MessageID)
	}
	if want := `{"id":"77","code":200,"data":{},"message":"success"}`; string(resp.Payload) != want {
		t.Fatalf("reply %s, want %s", resp.Payload, want)
	}
	if _, err := c.Publish(ctx, topic, []byte(`{"id":"78","params":{"temp":22}}`), sdk.NonConfirmable()); err != nil {
		t.Fatalf("publish NON: %v", err)
	}
	mp, err := c.PostMeasurePoints(ctx, map[string]any{"hum": 40}, time.UnixMilli(1_700_000_000_000))
	if err != nil || mp.Code != codes.Changed {
		t.Fatalf("measure points: %v", err)
	}
	var msgs []apiMessage
	// The NON has no answer to wait for: poll (the deadline only bounds a
	// failing test).
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if msgs = g.messages(d); len(msgs) == 3 {
			break
		}
	}
	if len(msgs) != 3 {
		t.Fatalf("stored %d messages, want 3", len(msgs))
	}
	if msgs[0].ID != resp.MessageID || msgs[0].Topic != topic || string(msgs[0].PayloadBase64) != payload {
		t.Fatalf("first message %+v does not match the publish (2090 %s)", msgs[0], resp.MessageID)
	}
	if msgs[0].Transport != "coap" || msgs[0].ContentFormat != 50 || !strings.HasPrefix(msgs[0].Peer, "127.0.0.1:") {
		t.Fatalf("message metadata %+v", msgs[0])
	}
	// The device shows up online with its address.
	var det struct {
		Online      bool
		LastAddress string
	}
	g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk, nil, &det)
	if !det.Online || det.LastAddress != c.LocalAddr().String() {
		t.Fatalf("device detail %+v, want online at %s", det, c.LocalAddr())
	}
}

// rawCON sends one CON datagram and returns the decoded answer.
func rawExchange(t *testing.T, conn *net.UDPConn, m message.Message) *message.Message {
	t.Helper()
	slices.SortStableFunc(m.Options, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	r := &message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(append([]byte(nil), buf[:n]...), r); err != nil {
		t.Fatal(err)
	}
	return r
}

func topicOpts(tok string, tokOpt message.OptionID, topic string) message.Options {
	o := message.Options{{ID: message.URIPath, Value: []byte("topic")}}
	for _, s := range strings.Split(strings.TrimPrefix(topic, "/"), "/") {
		o = append(o, message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	o = append(o, message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(50)})
	o = append(o, message.Option{ID: tokOpt, Value: []byte(tok)})
	return o
}

func TestE2ERetransmittedCONStoredOnce(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "dup_1")
	tok, err := g.dial(d).Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 4242, Token: []byte{1, 2, 3, 4},
		Options: topicOpts(tok, 61, topic), Payload: []byte(`{"id":"1"}`)}
	first := rawExchange(t, conn, m)
	second := rawExchange(t, conn, m) // retransmission: same peer, same MID
	if first.Code != codes.Changed || second.Code != codes.Changed {
		t.Fatalf("codes %v %v", first.Code, second.Code)
	}
	id1, _ := coapx.Bytes(first.Options, coapx.OptionMessageID)
	id2, _ := coapx.Bytes(second.Options, coapx.OptionMessageID)
	if string(id1) != string(id2) {
		t.Fatalf("retransmission got message ID %s, first %s", id2, id1)
	}
	// The vendor SDK reuses CoAP tokens after restart: a new MID with the same
	// token is a new message.
	m.MessageID = 4243
	third := rawExchange(t, conn, m)
	if id3, _ := coapx.Bytes(third.Options, coapx.OptionMessageID); string(id3) == string(id1) {
		t.Fatal("new MID with reused token treated as duplicate")
	}
	if n := len(g.messages(d)); n != 2 {
		t.Fatalf("stored %d messages, want 2 (one per MID)", n)
	}
}

func TestE2ERefusals(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "good_1")
	other := g.newDevice(d.pk, "other_1")
	ctx := context.Background()

	t.Run("wrong sign is 4.01", func(t *testing.T) {
		bad := d
		bad.secret = "not-the-secret"
		_, err := g.dial(bad).Auth(ctx)
		if statusCode(err) != codes.Unauthorized {
			t.Fatalf("err = %v, want 4.01", err)
		}
	})
	t.Run("unknown device is 4.01", func(t *testing.T) {
		_, err := g.dial(device{pk: d.pk, dk: "nobody", secret: "x"}).Auth(ctx)
		if statusCode(err) != codes.Unauthorized {
			t.Fatalf("err = %v, want 4.01", err)
		}
	})
	c := g.dial(d)
	tok, err := c.Auth(ctx)
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	mid := int32(100)
	post := func(tok string, topic string) codes.Code {
		mid++
		r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid,
			Token: []byte{9}, Options: topicOpts(tok, 61, topic), Payload: []byte(`{"id":"1"}`)})
		if r.Code>>5 == 4 && r.Code != codes.BadRequest && len(r.Payload) != 0 {
			t.Errorf("%v carries a payload %q", r.Code, r.Payload)
		}
		return r.Code
	}
	own := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	t.Run("other device's topic is 4.03", func(t *testing.T) {
		if code := post(tok, fmt.Sprintf("/sys/%s/%s/thing/event/property/post", other.pk, other.dk)); code != codes.Forbidden {
			t.Fatalf("code %v", code)
		}
	})
	t.Run("missing and garbage token is 4.01", func(t *testing.T) {
		if code := post("", own); code != codes.Unauthorized {
			t.Fatalf("no token: %v", code)
		}
		if code := post("garbage", own); code != codes.Unauthorized {
			t.Fatalf("garbage: %v", code)
		}
	})
	t.Run("expired token is 4.01", func(t *testing.T) {
		keyHex, err := os.ReadFile(filepath.Join(g.dir, "token.key"))
		if err != nil {
			t.Fatal(err)
		}
		key, _ := hex.DecodeString(strings.TrimSpace(string(keyHex)))
		codec, _ := token.NewCodec(key)
		dev, err := g.s.store.GetDevice(ctx, d.pk, d.dk)
		if err != nil {
			t.Fatal(err)
		}
		old, _ := codec.Issue(token.Claims{ProductKey: d.pk, DeviceKey: d.dk, Incarnation: dev.Incarnation,
			IssuedAt: time.Now().Add(-8 * 24 * time.Hour), ExpiresAt: time.Now().Add(-time.Hour)})
		if code := post(old, own); code != codes.Unauthorized {
			t.Fatalf("code %v", code)
		}
		fresh, _ := codec.Issue(token.Claims{ProductKey: d.pk, DeviceKey: d.dk, Incarnation: dev.Incarnation, IssuedAt: time.Now(), ExpiresAt: time.Now().Add(time.Hour)})
		if code := post(fresh, own); code != codes.Changed {
			t.Fatalf("control: a fresh token signed with the same key got %v", code)
		}
	})
	t.Run("revoked token is 4.01", func(t *testing.T) {
		tok2, _ := g.dial(other).Auth(ctx)
		otherTopic := fmt.Sprintf("/%s/%s/user/data", other.pk, other.dk)
		if code := post(tok2, otherTopic); code != codes.Changed {
			t.Fatalf("before revocation: %v", code)
		}
		if code := g.api("POST", "/api/v1/devices/"+other.pk+"/"+other.dk+"/revoke-tokens", nil, nil); code != 200 {
			t.Fatalf("revoke: %d", code)
		}
		if code := post(tok2, otherTopic); code != codes.Unauthorized {
			t.Fatalf("after revocation: %v", code)
		}
	})
	t.Run("disabled device is 4.03", func(t *testing.T) {
		if code := g.api("PATCH", "/api/v1/devices/"+d.pk+"/"+d.dk, map[string]any{"enabled": false}, nil); code != 200 {
			t.Fatalf("disable: %d", code)
		}
		if code := post(tok, own); code != codes.Forbidden {
			t.Fatalf("publish: %v", code)
		}
		if _, err := g.dial(d).Auth(ctx); statusCode(err) != codes.Forbidden {
			t.Fatalf("auth: %v, want 4.03", err)
		}
	})
}

func TestE2EProtocolAnswers(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "proto_1")
	tok, err := g.dial(d).Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	own := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	mid := int32(1)
	ex := func(code codes.Code, opts message.Options, payload string) *message.Message {
		mid++
		return rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: code, MessageID: mid, Token: []byte{7}, Options: opts, Payload: []byte(payload)})
	}
	with := func(o message.Options, id message.OptionID, v uint32) message.Options {
		o = o.Remove(id)
		return append(o, message.Option{ID: id, Value: coapx.EncodeUint(v)})
	}
	wk := message.Options{{ID: message.URIPath, Value: []byte(".well-known")}, {ID: message.URIPath, Value: []byte("core")}}
	tests := []struct {
		name     string
		code     codes.Code
		opts     message.Options
		payload  string
		want     codes.Code
		diagnose bool
	}{
		{"well-known core", codes.GET, wk, "", codes.NotFound, false},
		{"unknown path", codes.POST, message.Options{{ID: message.URIPath, Value: []byte("nope")}}, "", codes.NotFound, false},
		{"GET on topic", codes.GET, topicOpts(tok, 2088, own), "", codes.MethodNotAllowed, false},
		{"GET on auth", codes.GET, message.Options{{ID: message.URIPath, Value: []byte("auth")}}, "", codes.MethodNotAllowed, false},
		{"bad accept", codes.POST, with(topicOpts(tok, 2088, own), message.Accept, 0), `{"id":"1"}`, codes.NotAcceptable, false},
		{"accept 42 ok", codes.POST, with(topicOpts(tok, 2088, own), message.Accept, 42), `{"id":"1"}`, codes.Changed, false},
		{"bad content format", codes.POST, with(topicOpts(tok, 2088, own), message.ContentFormat, 0), `{"id":"1"}`, codes.UnsupportedMediaType, false},
		{"observe ignored", codes.POST, with(topicOpts(tok, 2088, own), message.Observe, 0), `{"id":"1"}`, codes.Changed, false},
		{"auth unparsable", codes.POST, with(message.Options{{ID: message.URIPath, Value: []byte("auth")}}, message.ContentFormat, 50), `{x`, codes.BadRequest, true},
		{"auth missing fields", codes.POST, with(message.Options{{ID: message.URIPath, Value: []byte("auth")}}, message.ContentFormat, 50), `{"productKey":"p"}`, codes.BadRequest, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ex(tt.code, tt.opts, tt.payload)
			if r.Code != tt.want {
				t.Fatalf("code %v, want %v (payload %q)", r.Code, tt.want, r.Payload)
			}
			if tt.diagnose && len(r.Payload) == 0 {
				t.Fatal("4.00 without a diagnostic payload")
			}
		})
	}
	// CBOR in, CBOR reply out, id echoed.
	r := ex(codes.POST, with(with(topicOpts(tok, 2088, own), message.ContentFormat, 60), message.Accept, 60), "\xa1\x62id\x63abc")
	if r.Code != codes.Changed {
		t.Fatalf("CBOR publish: %v", r.Code)
	}
	if cf, _ := coapx.Uint(r.Options, message.ContentFormat); cf != 60 || !bytes.Contains(r.Payload, []byte("abc")) {
		t.Fatalf("CBOR reply cf %d payload %x", cf, r.Payload)
	}
}

// TestE2EThingInvalidPayload: a thing-model payload that fails validation
// is stored as sent and answered 2.04 with option 2090 and a reply carrying
// the error's code and message (docs/protocol.md §4), in the Accept format;
// each failure is counted by kind.
func TestE2EThingInvalidPayload(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "invalid_1")
	tok, err := g.dial(d).Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	prop := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	mp := fmt.Sprintf("/sys/%s/%s/thing/measurepoint/post", d.pk, d.dk)
	cfOpts := func(topic string, cf, accept uint32) message.Options {
		o := topicOpts(tok, 2088, topic).Remove(message.ContentFormat)
		return append(o, message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(cf)},
			message.Option{ID: message.Accept, Value: coapx.EncodeUint(accept)})
	}
	tests := []struct {
		name    string
		opts    message.Options
		payload string
		want    string // JSON reply, or hex of the CBOR reply
	}{
		{"unparsable JSON", cfOpts(prop, 50, 50), `{"id":`,
			`{"code":400,"data":{},"message":"payload is not valid JSON: unexpected end of input"}`},
		{"params of the wrong type", cfOpts(prop, 50, 50), `{"id":"9","params":[1]}`,
			`{"id":"9","code":460,"data":{},"message":"params must be an object"}`},
		{"non-finite measure point", cfOpts(mp, 50, 50), `{"id":10,"params":{"measurepoints":{"t":1e999}}}`,
			`{"id":10,"code":460,"data":{},"message":"measure point \"t\": number out of range"}`},
		{"unparsable CBOR, CBOR reply", cfOpts(prop, 60, 60), "\xbf\x61",
			// {"code":400,"data":{},"message":"payload is not valid CBOR: unexpected EOF"}
			"a364636f6465190190" + "6464617461a0" + "676d657373616765" + "7829" + hex.EncodeToString([]byte("payload is not valid CBOR: unexpected EOF"))},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(500 + i),
				Token: []byte{5}, Options: tt.opts, Payload: []byte(tt.payload)})
			if r.Code != codes.Changed {
				t.Fatalf("code %v (payload %q), want 2.04", r.Code, r.Payload)
			}
			got := string(r.Payload)
			if cf, _ := coapx.Uint(r.Options, message.ContentFormat); cf == 60 {
				got = hex.EncodeToString(r.Payload)
			}
			if got != tt.want {
				t.Fatalf("reply\n got %s\nwant %s", got, tt.want)
			}
			id, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
			msgs := g.messages(d)
			last := msgs[len(msgs)-1]
			if last.ID != string(id) || string(last.PayloadBase64) != tt.payload {
				t.Fatalf("stored %+v, want message %s with the payload as sent", last, id)
			}
		})
	}
	if n := len(g.messages(d)); n != len(tests) {
		t.Fatalf("stored %d messages, want %d", n, len(tests))
	}
	m := scrape(t, g)
	for _, want := range []string{
		`coapgate_thing_decode_failures_total{kind="property.post",transport="coap"} 3`,
		`coapgate_thing_decode_failures_total{kind="measurepoint.post",transport="coap"} 1`,
	} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func TestE2EStoreDownAnswers503(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "down_1")
	c := g.dial(d)
	ctx := context.Background()
	topic := fmt.Sprintf("/%s/%s/user/data", d.pk, d.dk)
	if _, err := c.Publish(ctx, topic, []byte("before")); err != nil {
		t.Fatal(err)
	}
	// Storage goes away (the device record is still cached).
	g.s.store.Close()
	_, err := c.Publish(ctx, topic, []byte("during outage"))
	var se *sdk.StatusError
	if !errors.As(err, &se) || se.Code != codes.ServiceUnavailable {
		t.Fatalf("publish with store down: %v, want 5.03", err)
	}
}
