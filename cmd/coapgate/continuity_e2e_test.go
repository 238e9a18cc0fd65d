package main

import (
	"context"
	"crypto/hmac"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
)

// authA is a dialect-A POST /auth (hmacmd5, computed here with crypto/hmac)
// with seq when seq != "".
func authA(t *testing.T, d device, seq string) message.Message {
	t.Helper()
	cid := d.pk + "." + d.dk
	content := "clientId" + cid + "deviceName" + d.dk + "productKey" + d.pk
	body := `{"productKey":"` + d.pk + `","deviceName":"` + d.dk + `","clientId":"` + cid + `"`
	if seq != "" {
		content += "seq" + seq
		body += `,"seq":"` + seq + `"`
	}
	mac := hmac.New(md5.New, []byte(d.secret))
	mac.Write([]byte(content))
	body += `,"sign":"` + hex.EncodeToString(mac.Sum(nil)) + `"}`
	return message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 1, Token: []byte{1},
		Options: message.Options{{ID: message.URIPath, Value: []byte("auth")}, {ID: message.ContentFormat, Value: coapx.EncodeUint(50)}},
		Payload: []byte(body)}
}

// TestE2ESymmetricOnPlainPort: on 5683 an /auth carrying seq is answered
// in symmetric form and an encrypted uplink with option 2089 is stored as
// plaintext with an encrypted reply; requests without them behave as
// before, token modes stay bound, and the setting turns it off.
func TestE2ESymmetricOnPlainPort(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "sym_on_5683")
	conn := udpConn(t, g.s.CoAPAddr())
	r := rawExchange(t, conn, authA(t, d, "7"))
	var sa map[string]any
	if r.Code != codes.Content || json.Unmarshal(r.Payload, &sa) != nil {
		t.Fatalf("auth with seq on 5683: %v %s", r.Code, r.Payload)
	}
	random, _ := sa["random"].(string)
	seqOffset, _ := sa["seqOffset"].(float64)
	tok, _ := sa["token"].(string)
	if len(sa) != 3 || len(random) != 16 || seqOffset < 1 || tok == "" {
		t.Fatalf("auth with seq on 5683 answered %s, want {random, seqOffset, token}", r.Payload)
	}
	key := symKey(d.secret, random)
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	plain := `{"id":"5","params":{"temp":20}}`
	r = rawExchange(t, conn, symUplink(t, 2, tok, key, uint64(seqOffset), []byte(plain), topic))
	if r.Code != codes.Changed {
		t.Fatalf("encrypted uplink with 2089 on 5683: %v", r.Code)
	}
	if got := string(cbcOpen(t, key, r.Payload)); got != `{"id":"5","code":200,"data":{},"message":"success"}` {
		t.Fatalf("decrypted reply %q", got)
	}
	msgs := g.messages(d)
	if len(msgs) != 1 || string(msgs[0].PayloadBase64) != plain || msgs[0].Transport != "coap-sym" {
		t.Fatalf("stored %+v, want the plaintext once, transport coap-sym", msgs)
	}
	// The same datagram again (new Message ID) is a replay.
	if r := rawExchange(t, conn, symUplink(t, 3, tok, key, uint64(seqOffset), []byte(plain), topic)); r.Code != codes.Unauthorized || len(r.Payload) != 0 {
		t.Fatalf("replay on 5683: %v %q, want 4.01 without payload", r.Code, r.Payload)
	}
	// And the session is the same on 5682: its numbers are used once across ports.
	if r := rawExchange(t, udpConn(t, g.s.SymmetricAddr()), symUplink(t, 4, tok, key, uint64(seqOffset), []byte(plain), topic)); r.Code != codes.Unauthorized {
		t.Fatalf("replay of a 5683 datagram on 5682: %v, want 4.01", r.Code)
	}
	if r := rawExchange(t, udpConn(t, g.s.SymmetricAddr()), symUplink(t, 5, tok, key, uint64(seqOffset)+1, []byte(plain), topic)); r.Code != codes.Changed {
		t.Fatalf("the 5683 session's next number on 5682: %v, want 2.04", r.Code)
	}

	t.Run("no plaintext push to a symmetric device", func(t *testing.T) {
		// The device is live on 5683, but in symmetric mode: a push would
		// reach it unencrypted, so the command waits for 2100 instead.
		c := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"light": 1}, "ttl": "1h"})
		re := regexp.MustCompile(`(?m)^coapgate_command_push_total\{outcome="not_live"\} ([0-9]+)`)
		// The push worker runs asynchronously: wait for its outcome.
		for end := time.Now().Add(30 * time.Second); ; runtime.Gosched() {
			if m := re.FindStringSubmatch(scrape(t, g)); m != nil && m[1] != "0" {
				break
			}
			if time.Now().After(end) {
				t.Fatal("no push attempt within 30 s")
			}
		}
		if got := g.command(d, c.ID); got.State != "pending" {
			t.Fatalf("command %s after the push attempt, want pending", got.State)
		}
		if strings.Contains(scrape(t, g), `coapgate_command_push_total{outcome="acked"}`) {
			t.Fatal("a command was pushed")
		}
		if code := g.api("DELETE", "/api/v1/devices/"+d.pk+"/"+d.dk+"/commands/"+c.ID, nil, nil); code != 200 {
			t.Fatalf("cancel: %d", code)
		}
	})
	t.Run("auth errors", func(t *testing.T) {
		bad := func(mid uint16, body string) *message.Message {
			return rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid),
				Options: message.Options{{ID: message.URIPath, Value: []byte("auth")}, {ID: message.ContentFormat, Value: coapx.EncodeUint(50)}},
				Payload: []byte(body)})
		}
		// With seq (symmetric mode): no payload, as on 5682; without: the
		// plain answer's diagnostic payload, unchanged.
		if r := bad(30, `{"productKey":"`+d.pk+`","seq":"1"}`); r.Code != codes.BadRequest || len(r.Payload) != 0 {
			t.Fatalf("symmetric auth error: %v %q, want 4.00 without payload", r.Code, r.Payload)
		}
		if r := bad(31, `{"productKey":"`+d.pk+`"}`); r.Code != codes.BadRequest || len(r.Payload) == 0 {
			t.Fatalf("plain auth error: %v %q, want 4.00 with its diagnostic", r.Code, r.Payload)
		}
	})
	t.Run("plain behaviour unchanged", func(t *testing.T) {
		m := authA(t, d, "")
		m.MessageID = 9 // not the first auth's: that answer is cached for its Message ID
		r := rawExchange(t, conn, m)
		var pa map[string]any
		if r.Code != codes.Content || json.Unmarshal(r.Payload, &pa) != nil || len(pa) != 1 || pa["token"] == "" {
			t.Fatalf("plain auth: %v %s, want {token}", r.Code, r.Payload)
		}
		ptok := pa["token"].(string)
		r = rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 10,
			Options: topicOpts(ptok, 2088, topic), Payload: []byte(`{"id":"6","params":{"temp":1}}`)})
		if r.Code != codes.Changed || string(r.Payload) != `{"id":"6","code":200,"data":{},"message":"success"}` {
			t.Fatalf("plain publish: %v %s", r.Code, r.Payload)
		}
		// Modes stay bound: a plain token with 2089, a symmetric one without.
		if r := rawExchange(t, conn, symUplink(t, 11, ptok, key, 1<<20, []byte(plain), topic)); r.Code != codes.Unauthorized {
			t.Fatalf("plain token with option 2089: %v, want 4.01", r.Code)
		}
		if r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 12,
			Options: topicOpts(tok, 2088, topic), Payload: []byte(plain)}); r.Code != codes.Unauthorized {
			t.Fatalf("symmetric token without option 2089: %v, want 4.01", r.Code)
		}
	})
	t.Run("turned off", func(t *testing.T) {
		g := startTestGateway(t, func(c *config.Config) { c.CoAP.SymmetricOnPlain = false })
		d := g.newDevice("", "sym_off")
		r := rawExchange(t, udpConn(t, g.s.CoAPAddr()), authA(t, d, "7"))
		var pa map[string]any
		if r.Code != codes.Content || json.Unmarshal(r.Payload, &pa) != nil || len(pa) != 1 {
			t.Fatalf("auth with seq, coap.symmetric_on_plain off: %v %s, want the plain {token}", r.Code, r.Payload)
		}
	})
}

// TestE2ENTP: /topic/ext/ntp/{pk}/{dk}/request is answered with
// deviceSendTime, serverRecvTime and serverSendTime in milliseconds, in
// JSON or CBOR per Accept, and encrypted in symmetric mode.
func TestE2ENTP(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "ntp_1")
	tok, err := g.dial(d).Auth(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("/ext/ntp/%s/%s/request", d.pk, d.dk)
	conn := udpConn(t, g.s.CoAPAddr())
	before := time.Now().UnixMilli()
	// checkTimes checks the server times against the wall clock around the
	// exchange (millisecond stamps of this machine's clock).
	checkTimes := func(t *testing.T, recv, send int64) {
		t.Helper()
		after := time.Now().UnixMilli()
		if recv < before || send < recv || send > after {
			t.Fatalf("serverRecvTime %d, serverSendTime %d: want %d <= recv <= send <= %d", recv, send, before, after)
		}
	}
	ms := func(t *testing.T, v any) int64 {
		t.Helper()
		switch x := v.(type) {
		case string:
			n, err := strconv.ParseInt(x, 10, 64)
			if err != nil {
				t.Fatalf("time %q is not milliseconds", x)
			}
			return n
		case float64:
			return int64(x)
		case uint64:
			return int64(x)
		case int64:
			return x
		}
		t.Fatalf("time %v (%T)", v, v)
		return 0
	}

	t.Run("JSON, the SDK's string form", func(t *testing.T) {
		r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 20,
			Options: topicOpts(tok, 61, topic), Payload: []byte(`{"deviceSendTime":"123456"}`)})
		var m map[string]any
		if r.Code != codes.Changed || json.Unmarshal(r.Payload, &m) != nil {
			t.Fatalf("NTP: %v %s", r.Code, r.Payload)
		}
		if m["deviceSendTime"] != "123456" {
			t.Fatalf("deviceSendTime %v, want the device's \"123456\"", m["deviceSendTime"])
		}
		if _, ok := m["serverRecvTime"].(string); !ok {
			t.Fatalf("server times %s: want strings like the device's", r.Payload)
		}
		checkTimes(t, ms(t, m["serverRecvTime"]), ms(t, m["serverSendTime"]))
	})
	t.Run("JSON number", func(t *testing.T) {
		r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 21,
			Options: topicOpts(tok, 2088, topic), Payload: []byte(`{"deviceSendTime":42}`)})
		var m map[string]any
		if r.Code != codes.Changed || json.Unmarshal(r.Payload, &m) != nil || m["deviceSendTime"] != float64(42) {
			t.Fatalf("NTP: %v %s", r.Code, r.Payload)
		}
		checkTimes(t, ms(t, m["serverRecvTime"]), ms(t, m["serverSendTime"]))
	})
	t.Run("CBOR per Accept", func(t *testing.T) {
		body, _ := cbor.Marshal(map[string]any{"deviceSendTime": "99"})
		opts := topicOpts(tok, 2088, topic).Remove(message.ContentFormat)
		opts = append(opts, message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(60)},
			message.Option{ID: message.Accept, Value: coapx.EncodeUint(60)})
		r := rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 22, Options: opts, Payload: body})
		var m map[string]any
		if r.Code != codes.Changed || cbor.Unmarshal(r.Payload, &m) != nil || m["deviceSendTime"] != "99" {
			t.Fatalf("NTP in CBOR: %v %x", r.Code, r.Payload)
		}
		if cf, _ := coapx.Uint(r.Options, message.ContentFormat); cf != 60 {
			t.Fatalf("Content-Format %d, want 60", cf)
		}
		checkTimes(t, ms(t, m["serverRecvTime"]), ms(t, m["serverSendTime"]))
	})
	t.Run("SDK ServerTime, plain and symmetric", func(t *testing.T) {
		for _, c := range []interface {
			ServerTime(context.Context) (time.Time, error)
		}{g.dial(d), g.dialSym(d)} {
			lo := time.Now().Truncate(time.Millisecond)
			st, err := c.ServerTime(t.Context())
			hi := time.Now()
			// The server's clock is this machine's: the estimate is at
			// least the server's send time, and off by at most half the
			// round trip (the two directions may differ) plus the reply's
			// millisecond resolution.
			if err != nil || st.Before(lo) || st.After(hi.Add(hi.Sub(lo)/2+time.Millisecond)) {
				t.Fatalf("ServerTime = %v, %v; want within [%v, %v]", st, err, lo, hi)
			}
		}
	})
	t.Run("symmetric mode, encrypted", func(t *testing.T) {
		c := g.dialSym(d)
		stok, err := c.Auth(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ss, _ := c.SymmetricSession()
		key := symKey(d.secret, ss.Random)
		r := rawExchange(t, udpConn(t, g.s.SymmetricAddr()), symUplink(t, 23, stok, key, uint64(ss.SeqOffset), []byte(`{"deviceSendTime":"7"}`), topic))
		if r.Code != codes.Changed {
			t.Fatalf("symmetric NTP: %v", r.Code)
		}
		var m map[string]any
		if err := json.Unmarshal(cbcOpen(t, key, r.Payload), &m); err != nil || m["deviceSendTime"] != "7" {
			t.Fatalf("decrypted NTP reply: %v %v", m, err)
		}
		checkTimes(t, ms(t, m["serverRecvTime"]), ms(t, m["serverSendTime"]))
	})
}
