package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/sdk"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// apiCommand is the API's JSON form of a command.
type apiCommand struct {
	ID, Topic, Method, State, DeliveredVia string
	Params                                 json.RawMessage
	Attempts                               int
	Reply                                  *struct {
		Code    int
		Data    json.RawMessage
		Message string
	}
}

func (g *testGateway) sendCommand(d device, body map[string]any) apiCommand {
	g.t.Helper()
	var c apiCommand
	if code := g.api("POST", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands", body, &c); code != 201 {
		g.t.Fatalf("create command: %d", code)
	}
	return c
}

func (g *testGateway) command(d device, id string) apiCommand {
	g.t.Helper()
	var c apiCommand
	if code := g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands/"+id, nil, &c); code != 200 {
		g.t.Fatalf("get command %s: %d", id, code)
	}
	return c
}

// waitCommand polls until command id is in state want.
func (g *testGateway) waitCommand(d device, id, want string) apiCommand {
	g.t.Helper()
	var c apiCommand
	// The deadline only bounds a failing test; a loaded machine may be slow.
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if c = g.command(d, id); c.State == want {
			return c
		}
	}
	g.t.Fatalf("command %s is %s, want %s", id, c.State, want)
	return c
}

// rawDevice is a device speaking CoAP from a raw socket with a token.
type rawDevice struct {
	t    *testing.T
	conn *net.UDPConn
	tok  string
	d    device
	mid  int32
}

func newRawDevice(t *testing.T, g *testGateway, d device) *rawDevice {
	t.Helper()
	tok, err := g.dial(d).Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return &rawDevice{t: t, conn: udpConn(t, g.s.CoAPAddr()), tok: tok, d: d, mid: 1000}
}

func (r *rawDevice) exchange(code codes.Code, topic, payload string) *message.Message {
	r.t.Helper()
	r.mid++
	return r.exchangeMID(r.mid, code, topic, payload)
}

func (r *rawDevice) exchangeMID(mid int32, code codes.Code, topic, payload string) *message.Message {
	r.t.Helper()
	return rawExchange(r.t, r.conn, message.Message{Type: message.Confirmable, Code: code, MessageID: mid,
		Token: []byte{byte(mid)}, Options: topicOpts(r.tok, 61, topic), Payload: []byte(payload)})
}

func (r *rawDevice) uplink() *message.Message {
	r.t.Helper()
	m := r.exchange(codes.POST, fmt.Sprintf("/sys/%s/%s/thing/event/property/post", r.d.pk, r.d.dk), `{"id":"1","params":{}}`)
	if m.Code != codes.Changed {
		r.t.Fatalf("uplink: %v", m.Code)
	}
	return m
}

func option2100(m *message.Message) string {
	v, _ := coapx.Bytes(m.Options, coapx.OptionDownlink)
	return string(v)
}

func noPush(c *config.Config) { c.Commands.Push = false }

func TestE2ECommandFetchAndReply(t *testing.T) {
	g := startTestGateway(t, noPush)
	d := g.newDevice("", "cmd_1")
	dev := newRawDevice(t, g, d)
	base := fmt.Sprintf("/sys/%s/%s/", d.pk, d.dk)

	if m := dev.uplink(); option2100(m) != "" {
		t.Fatalf("2100 %q with nothing queued", option2100(m))
	}
	if m := dev.exchange(codes.GET, base+"thing/service/property/set", ""); m.Code != codes.NotFound {
		t.Fatalf("GET with nothing queued: %v", m.Code)
	}
	c := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"light": 1}, "ttl": "1h"})
	if c.State != "pending" || c.Topic != base+"thing/service/property/set" {
		t.Fatalf("created %+v", c)
	}
	m := dev.uplink()
	if want := "/topic" + base + "thing/service/property/set"; option2100(m) != want {
		t.Fatalf("2100 = %q, want %q", option2100(m), want)
	}
	got := dev.exchange(codes.GET, base+"thing/service/property/set", "")
	if got.Code != codes.Content || option2100(got) != "" {
		t.Fatalf("GET: %v 2100 %q", got.Code, option2100(got))
	}
	var body struct {
		ID, Version, Method string
		Params              map[string]any
	}
	if err := json.Unmarshal(got.Payload, &body); err != nil || body.ID != c.ID || body.Method != "thing.service.property.set" || body.Version != "1.0" || body.Params["light"] != 1.0 {
		t.Fatalf("command payload %s (%v)", got.Payload, err)
	}
	if st := g.command(d, c.ID); st.State != "delivered" || st.DeliveredVia != "get" {
		t.Fatalf("after GET: %+v", st)
	}
	reply := dev.exchange(codes.POST, base+"thing/service/property/set_reply", `{"id":"`+c.ID+`","code":200,"data":{"light":1},"message":"success"}`)
	if reply.Code != codes.Changed {
		t.Fatalf("reply uplink: %v", reply.Code)
	}
	st := g.command(d, c.ID)
	if st.State != "replied" || st.Reply == nil || st.Reply.Code != 200 || string(st.Reply.Data) != `{"light":1}` {
		t.Fatalf("after reply: %+v", st)
	}
	// The reply is stored as an uplink too.
	msgs := g.messages(d)
	if last := msgs[len(msgs)-1]; last.Topic != base+"thing/service/property/set_reply" {
		t.Fatalf("last stored uplink %s", last.Topic)
	}
	// An unknown id is stored and acknowledged, and touches nothing.
	if m := dev.exchange(codes.POST, base+"thing/service/property/set_reply", `{"id":"99999","code":200}`); m.Code != codes.Changed {
		t.Fatalf("unknown reply: %v", m.Code)
	}

	t.Run("chained 2100", func(t *testing.T) {
		a := g.sendCommand(d, map[string]any{"type": "setMeasurepoints", "params": map[string]any{"measurepoints": map[string]any{"t": 20}}})
		b := g.sendCommand(d, map[string]any{"type": "invokeService", "service": "reboot", "params": map[string]any{"delay": 5}})
		m := dev.uplink()
		if option2100(m) != "/topic"+a.Topic {
			t.Fatalf("first 2100 %q, want %q", option2100(m), "/topic"+a.Topic)
		}
		first := dev.exchange(codes.GET, a.Topic, "")
		if first.Code != codes.Content || option2100(first) != "/topic"+b.Topic {
			t.Fatalf("first GET %v, 2100 %q, want %q", first.Code, option2100(first), "/topic"+b.Topic)
		}
		second := dev.exchange(codes.GET, b.Topic, "")
		if second.Code != codes.Content || option2100(second) != "" {
			t.Fatalf("second GET %v 2100 %q", second.Code, option2100(second))
		}
		var sb struct{ ID, Method string }
		json.Unmarshal(second.Payload, &sb)
		if sb.ID != b.ID || sb.Method != "thing.service.reboot" {
			t.Fatalf("second command %s", second.Payload)
		}
	})
	t.Run("retransmitted GET delivers one command", func(t *testing.T) {
		a := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"n": 1}})
		b := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"n": 2}})
		first := dev.exchangeMID(7777, codes.GET, a.Topic, "")
		again := dev.exchangeMID(7777, codes.GET, a.Topic, "")
		if first.Code != codes.Content || string(again.Payload) != string(first.Payload) {
			t.Fatalf("retransmission answered %v %s, first %s", again.Code, again.Payload, first.Payload)
		}
		if st := g.command(d, b.ID); st.State != "pending" {
			t.Fatalf("second command is %s after a retransmitted GET", st.State)
		}
		if st := g.command(d, a.ID); st.State != "delivered" || st.Attempts != 1 {
			t.Fatalf("first command %+v", st)
		}
		dev.exchange(codes.GET, b.Topic, "") // drain
	})
	t.Run("foreign device gets 4.03", func(t *testing.T) {
		other := g.newDevice(d.pk, "cmd_other")
		od := newRawDevice(t, g, other)
		c := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{}})
		if m := od.exchange(codes.GET, c.Topic, ""); m.Code != codes.Forbidden {
			t.Fatalf("foreign GET: %v", m.Code)
		}
		if m := od.exchange(codes.POST, base+"thing/service/property/set_reply", `{"id":"`+c.ID+`","code":200}`); m.Code != codes.Forbidden {
			t.Fatalf("foreign reply topic: %v", m.Code)
		}
		if st := g.command(d, c.ID); st.State != "pending" {
			t.Fatalf("state %s after foreign attempts", st.State)
		}
		if code := g.api("DELETE", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands/"+c.ID, nil, nil); code != 200 {
			t.Fatalf("cancel: %d", code)
		}
		if code := g.api("DELETE", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands/"+c.ID, nil, nil); code != 409 {
			t.Fatalf("second cancel: %d, want 409", code)
		}
		if m := dev.uplink(); option2100(m) != "" {
			t.Fatalf("2100 %q after cancel", option2100(m))
		}
	})
	t.Run("API validation", func(t *testing.T) {
		for _, body := range []map[string]any{
			{"type": "nope"},
			{"type": "invokeService"},
			{"type": "setProperties", "params": []int{1}},
			{"type": "setProperties", "ttl": "30d"},
			{"type": "setProperties", "ttl": 9999999},
			{"type": "rawDown"},
		} {
			var e struct{ Code string }
			if code := g.api("POST", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands", body, &e); code != 400 || e.Code != "invalid_argument" {
				t.Errorf("%v: %d %s", body, code, e.Code)
			}
		}
		if code := g.api("POST", "/api/v1/devices/"+d.pk+"/nobody/commands", map[string]any{"type": "setProperties"}, nil); code != 404 {
			t.Errorf("unknown device: %d", code)
		}
		var list struct{ Items []apiCommand }
		if code := g.api("GET", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands?state=replied", nil, &list); code != 200 || len(list.Items) != 1 {
			t.Errorf("list replied: %d %+v", code, list.Items)
		}
	})
}

func TestE2ECommandExpiry(t *testing.T) {
	g := startTestGateway(t, noPush)
	d := g.newDevice("", "cmd_ttl")
	dev := newRawDevice(t, g, d)
	c := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"x": 1}, "ttl": 1})
	g.waitCommand(d, c.ID, "expired")
	if m := dev.uplink(); option2100(m) != "" {
		t.Fatalf("2100 %q for an expired command", option2100(m))
	}
	if m := dev.exchange(codes.GET, c.Topic, ""); m.Code != codes.NotFound {
		t.Fatalf("GET of an expired command: %v", m.Code)
	}
}

// handled records the commands an SDK handler received.
type handled chan sdk.Command

func (h handled) handler(ctx context.Context, cmd sdk.Command) (int, any) {
	h <- cmd
	return 200, map[string]any{"applied": true}
}

func (h handled) wait(t *testing.T) sdk.Command {
	t.Helper()
	select {
	case c := <-h:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("the handler got no command")
	}
	return sdk.Command{}
}

func fastPush(c *config.Config) {
	c.Commands.PushTimeout = 100 * time.Millisecond
	c.Commands.PushRetransmit = 1
}

func TestE2ECommandPushUDP(t *testing.T) {
	g := startTestGateway(t, fastPush)
	d := g.newDevice("", "push_udp")
	h := make(handled, 4)
	c := g.dial(d, sdk.WithCommandHandler(h.handler))
	ctx := context.Background()
	// One uplink makes the device live at its address.
	if _, err := c.PostProperties(ctx, map[string]any{"x": 1}); err != nil {
		t.Fatal(err)
	}
	cmd := g.sendCommand(d, map[string]any{"type": "invokeService", "service": "blink", "params": map[string]any{"times": 3}})
	got := h.wait(t)
	if got.ID != cmd.ID || got.Method != "thing.service.blink" || string(got.Params) != `{"times":3}` {
		t.Fatalf("handler got %+v", got)
	}
	st := g.waitCommand(d, cmd.ID, "replied")
	if st.DeliveredVia != "push" || st.Reply == nil || string(st.Reply.Data) != `{"applied":true}` {
		t.Fatalf("replied command %+v (reply %+v)", st, st.Reply)
	}
}

func TestE2ECommandPushDTLS(t *testing.T) {
	g := startTestGateway(t, fastPush)
	d := g.newDevice("", "push_dtls")
	h := make(handled, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := sdk.Dial(ctx, g.s.DTLSAddr().String(),
		sdk.WithDTLSPSK(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret, Lifetime: time.Minute}),
		sdk.WithTransmissionParams(sdk.TransmissionParams{AckTimeout: 500 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2}),
		sdk.WithCommandHandler(h.handler))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.PostMeasurePoints(ctx, map[string]any{"t": 1}, time.Time{}); err != nil {
		t.Fatal(err)
	}
	cmd := g.sendCommand(d, map[string]any{"type": "setMeasurepoints", "params": map[string]any{"measurepoints": map[string]any{"sp": 21}}})
	if got := h.wait(t); got.ID != cmd.ID || got.Method != "thing.service.measurepoint.set" {
		t.Fatalf("handler got %+v", got)
	}
	if st := g.waitCommand(d, cmd.ID, "replied"); st.DeliveredVia != "push" || st.Reply.Code != 200 {
		t.Fatalf("replied command %+v", st)
	}
}

// A device that ignores pushes (as the vendor's C SDK does) keeps the
// command pending and fetches it after option 2100.
func TestE2ECommandPushIgnored(t *testing.T) {
	g := startTestGateway(t, fastPush)
	d := g.newDevice("", "push_deaf")
	dev := newRawDevice(t, g, d)
	dev.uplink() // live at this socket's address
	cmd := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"on": true}})
	buf := make([]byte, 2048)
	for i := range 2 { // the push and its one retransmission, never answered
		dev.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, err := dev.conn.Read(buf)
		if err != nil {
			t.Fatalf("push transmission %d: %v", i, err)
		}
		m := &message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:n], m); err != nil || m.Type != message.Confirmable || m.Code != codes.POST {
			t.Fatalf("push %d: %+v %v", i, m, err)
		}
		if p, _ := m.Options.Path(); p != "/topic"+cmd.Topic {
			t.Fatalf("push path %q, want %q", p, "/topic"+cmd.Topic)
		}
	}
	// The push gives up after its last retransmission timeout and counts
	// the outcome; the command must then still be pending.
	waitUntil(t, func() bool {
		return strings.Contains(g.metricsText(), `coapgate_command_push_total{outcome="timeout"} 1`)
	}, "the unanswered push to time out")
	if st := g.command(d, cmd.ID); st.State != "pending" {
		t.Fatalf("state %s after an unanswered push", st.State)
	}
	m := dev.uplink()
	if option2100(m) != "/topic"+cmd.Topic {
		t.Fatalf("2100 %q after the unanswered push", option2100(m))
	}
	if got := dev.exchange(codes.GET, cmd.Topic, ""); got.Code != codes.Content {
		t.Fatalf("GET: %v", got.Code)
	}
	if st := g.command(d, cmd.ID); st.State != "delivered" || st.DeliveredVia != "get" {
		t.Fatalf("after GET: %+v", st)
	}
}

// Without push the SDK follows option 2100: GET, handler, _reply; in
// plain and symmetric mode (fetch with option 2089, encrypted payloads).
func TestE2ECommandSDKFollows2100(t *testing.T) {
	g := startTestGateway(t, noPush)
	for _, tt := range []struct {
		name string
		addr func() string
		opts []sdk.Option
	}{
		{"plain", func() string { return g.s.CoAPAddr().String() }, nil},
		{"symmetric", func() string { return g.s.SymmetricAddr().String() }, []sdk.Option{sdk.WithSymmetric()}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			d := g.newDevice("", "follow_"+tt.name)
			h := make(handled, 4)
			opts := append([]sdk.Option{
				sdk.WithCredentials(sdk.Credentials{ProductKey: d.pk, DeviceName: d.dk, DeviceSecret: d.secret}),
				sdk.WithTransmissionParams(sdk.TransmissionParams{AckTimeout: 500 * time.Millisecond, AckRandomFactor: 1.5, MaxRetransmit: 2}),
				sdk.WithCommandHandler(h.handler),
			}, tt.opts...)
			c, err := sdk.Dial(context.Background(), tt.addr(), opts...)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			a := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"a": 1}})
			b := g.sendCommand(d, map[string]any{"type": "rawDown", "raw": "AQID"})
			if _, err := c.PostProperties(context.Background(), map[string]any{"x": 1}); err != nil {
				t.Fatal(err)
			}
			if got := h.wait(t); got.ID != a.ID || string(got.Params) != `{"a":1}` {
				t.Fatalf("first command %+v", got)
			}
			if got := h.wait(t); got.Topic != b.Topic || string(got.Raw) != "\x01\x02\x03" {
				t.Fatalf("raw command %+v", got)
			}
			if st := g.waitCommand(d, a.ID, "replied"); st.DeliveredVia != "get" {
				t.Fatalf("first: %+v", st)
			}
		})
	}
}
