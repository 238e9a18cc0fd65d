package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func block1(num uint32, more bool, szx uint32) message.Option {
	v := num<<4 | szx
	if more {
		v |= 0x8
	}
	return message.Option{ID: message.Block1, Value: coapx.EncodeUint(v)}
}

// A Block1 uplink without a valid token is refused at its first block
// (nothing buffered, counted); an authenticated one is reassembled and
// stored whole; a topic with a "." or ".." segment is 4.00.
func TestE2EBlock1RefusedBeforeBuffering(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "block_dev")
	c := g.dial(d)
	tok, err := c.Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	conn := udpConn(t, g.s.CoAPAddr())
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	mid := int32(7000)
	send := func(opts message.Options, payload []byte) *message.Message {
		t.Helper()
		mid++
		return rawExchange(t, conn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid, Token: []byte{7}, Options: opts, Payload: payload})
	}
	chunk := bytes.Repeat([]byte(" "), 1024)
	for _, bad := range []string{"", "not-a-token"} {
		opts := topicOpts(bad, 2088, topic)
		if bad == "" {
			opts = opts.Remove(2088) // sorted still: 2088 is the last
		}
		if r := send(append(opts, block1(0, true, 6)), chunk); r.Code != codes.Unauthorized {
			t.Fatalf("token %q: block 0 answered %v, want 4.01", bad, r.Code)
		}
	}
	if m := scrape(t, g); !strings.Contains(m, `coapgate_coap_block1_refused_total{reason="not_admitted",transport="coap"} 2`) {
		t.Fatalf("refusals not counted:\n%s", grepLines(m, "coapgate_coap_block1"))
	}
	// An authenticated transfer: 2 × 1024 bytes of padding, then the JSON.
	body := append(append(bytes.Repeat([]byte(" "), 2048), []byte(`{"id":"5","params":{"t":1}}`)...), ' ')
	for num := uint32(0); num < 3; num++ {
		end := min(int(num+1)*1024, len(body))
		r := send(append(topicOpts(tok, 2088, topic), block1(num, num < 2, 6)), body[num*1024:end])
		want := codes.Continue
		if num == 2 {
			want = codes.Changed
		}
		if r.Code != want {
			t.Fatalf("block %d: %v %s, want %v", num, r.Code, r.Payload, want)
		}
	}
	msgs := g.messages(d)
	if len(msgs) != 1 || !bytes.Equal(msgs[0].PayloadBase64, body) {
		t.Fatalf("stored %d messages; want the %d-byte body once", len(msgs), len(body))
	}
	for _, seg := range []string{".", ".."} {
		bad := fmt.Sprintf("/sys/%s/%s/%s/x", d.pk, d.dk, seg)
		if r := send(topicOpts(tok, 2088, bad), []byte(`{"id":"1"}`)); r.Code != codes.BadRequest {
			t.Fatalf("topic %s: %v, want 4.00", bad, r.Code)
		}
	}
	if n := len(g.messages(d)); n != 1 {
		t.Fatalf("stored %d messages after the refusals", n)
	}
}

// Dialect E's option 2101: N must strictly increase, as docs/compatibility.md
// states: an unused N below the highest is refused too.
func TestE2EDialectEStrictlyIncreasing(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "e_strict")
	conn := udpConn(t, g.s.CoAPAddr())
	mid := int32(800)
	ex := func(m message.Message) *message.Message {
		t.Helper()
		mid++
		m.MessageID, m.Type = mid, message.Confirmable
		return rawExchange(t, conn, m)
	}
	r := ex(message.Message{Code: codes.POST, Options: message.Options{
		{ID: message.URIPath, Value: []byte("auth")}, {ID: message.URIPath, Value: []byte(d.pk)}, {ID: message.URIPath, Value: []byte(d.dk)},
		{ID: message.ContentFormat, Value: coapx.EncodeUint(50)},
	}, Payload: []byte(`{"secureMode":2,"lifetime":3600,"sign":"` + signE(d.pk, d.dk, "3600", "2", d.secret) + `"}`)})
	var ar struct{ Token string }
	if r.Code != codes.Content || json.Unmarshal(r.Payload, &ar) != nil {
		t.Fatalf("auth: %v %s", r.Code, r.Payload)
	}
	topic := fmt.Sprintf("/sys/%s/%s/thing/measurepoint/post", d.pk, d.dk)
	for _, step := range []struct {
		n    int
		want codes.Code
	}{{5, codes.Changed}, {3, codes.Unauthorized}, {4, codes.Unauthorized}, {5, codes.Unauthorized}, {6, codes.Changed}} {
		opts := append(topicOpts("", 2088, topic).Remove(2088), message.Option{ID: 2101, Value: opt2101(t, d.secret, dialectAIV, ar.Token, step.n)})
		r := ex(message.Message{Code: codes.POST, Token: []byte{5}, Options: opts, Payload: []byte(`{"id":"9","params":{"measurepoints":{"temp":1}}}`)})
		if r.Code != step.want {
			t.Fatalf("N=%d: %v, want %v", step.n, r.Code, step.want)
		}
	}
}

// libcoap's coap-client on the wire: a request with 33 options is served;
// a critical option of a wrong length is 4.02; a Block1 upload without a
// token is refused at its first block.
func TestInteropLibcoapConformance(t *testing.T) {
	bin := coapClient(t)
	g := startTestGateway(t)
	d := g.newDevice("", "libcoap_conf")
	c := g.dial(d)
	tok, err := c.Auth(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	base := "coap://" + g.s.CoAPAddr().String()
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	args := []string{"-m", "post", "-t", "50", "-O", "2088," + tok, "-e", `{"id":"33"}`, "-B", "5", "-v", "7"}
	for i := range 24 {
		args = append(args, "-O", fmt.Sprintf("15,q%d=%d", i, i))
	}
	out := runCoapClient(t, bin, append(args, base+"/topic"+topic)...)
	if !strings.Contains(out, "c:2.04") || !strings.Contains(out, `"id":"33"`) {
		t.Fatalf("33 options: want 2.04 with the reply:\n%s", out)
	}
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-O", "2088,"+tok, "-O", "17,0x000032", "-e", `{"id":"1"}`, "-B", "5", "-v", "7", base+"/topic"+topic)
	if !strings.Contains(out, "c:4.02") {
		t.Fatalf("Accept of 3 bytes: want 4.02:\n%s", out)
	}
	file := filepath.Join(t.TempDir(), "body")
	if err := os.WriteFile(file, bytes.Repeat([]byte("{}"), 300), 0o600); err != nil {
		t.Fatal(err)
	}
	out = runCoapClient(t, bin, "-m", "post", "-t", "50", "-b", "64", "-f", file, "-B", "5", "-v", "7", base+"/topic"+topic)
	if !strings.Contains(out, "c:4.01") || strings.Contains(out, "c:2.31") {
		t.Fatalf("unauthenticated Block1 upload: want 4.01 at the first block, no 2.31:\n%s", out)
	}
	if n := len(g.messages(d)); n != 1 {
		t.Fatalf("stored %d messages, want 1", n)
	}
}
