package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/coapgate/coapgate/internal/auth/devsign"
)

const propTopic = "/sys/" + vecPK + "/" + vecDN + "/thing/event/property/post"

// eventually polls cond until it holds; the deadline only bounds a failing
// test (a loaded machine may be slow).
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestDialRejectsInvalidOptions(t *testing.T) {
	tests := []struct {
		name string
		opt  Option
	}{
		{"block size not a power of two", WithBlockSize(100)},
		{"block size too large", WithBlockSize(2048)},
		{"token option", WithTokenOption(5)},
		{"content format", WithContentFormat(Octet)},
		{"sign method", WithCredentials(Credentials{ProductKey: "p", DeviceName: "d", DeviceSecret: "s", SignMethod: "rsa"})},
		{"incomplete credentials", WithCredentials(Credentials{ProductKey: "p"})},
		{"transmission params", WithTransmissionParams(TransmissionParams{AckTimeout: 0, AckRandomFactor: 0.5})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Dial(context.Background(), "127.0.0.1:5683", tt.opt)
			if !errors.Is(err, ErrInvalidOption) {
				if c != nil {
					_ = c.Close()
				}
				t.Fatalf("Dial err = %v, want ErrInvalidOption", err)
			}
		})
	}
}

func TestAuthRequest(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	tok, err := c.Auth(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "tok-1" || c.Token() != "tok-1" {
		t.Fatalf("token = %q, Token() = %q; want tok-1", tok, c.Token())
	}
	reqs := f.requests("auth")
	if len(reqs) != 1 {
		t.Fatalf("got %d auth requests, want 1", len(reqs))
	}
	m := reqs[0]
	if m.Type != message.Confirmable || m.Code != codes.POST {
		t.Errorf("type/code = %v/%v, want CON POST", m.Type, m.Code)
	}
	if p := uriPath(m); !slices.Equal(p, []string{"auth"}) {
		t.Errorf("Uri-Path = %q, want [auth]", p)
	}
	if cf, err := m.Options.ContentFormat(); err != nil || cf != JSON {
		t.Errorf("Content-Format = %v, %v; want 50", cf, err)
	}
	if acc, err := m.Options.Accept(); err != nil || acc != JSON {
		t.Errorf("Accept = %v, %v; want 50", acc, err)
	}
	if n := len(m.Token); n < 4 || n > 8 {
		t.Errorf("CoAP token length %d, want 4..8", n)
	}
	var body map[string]string
	if err := json.Unmarshal(m.Payload, &body); err != nil {
		t.Fatalf("auth body %s: %v", m.Payload, err)
	}
	want := map[string]string{
		"productKey": vecPK,
		"deviceName": vecDN,
		"clientId":   vecCID,
		"sign":       vecSign,
		"signmethod": "hmacmd5",
	}
	if fmt.Sprint(body) != fmt.Sprint(want) {
		t.Errorf("auth body = %v\nwant %v", body, want)
	}
}

func TestAuthSignMethods(t *testing.T) {
	for _, method := range []devsign.Method{devsign.HMACSHA1, devsign.HMACSHA256} {
		t.Run(string(method), func(t *testing.T) {
			s := &stdServer{}
			f := newFakeServer(t, s.handle)
			cr := vecCreds
			cr.SignMethod = string(method)
			cr.ClientID = "my-client"
			c := dialTest(t, f, WithCredentials(cr))
			if _, err := c.Auth(testCtx(t)); err != nil {
				t.Fatal(err)
			}
			var body map[string]string
			if err := json.Unmarshal(f.requests("auth")[0].Payload, &body); err != nil {
				t.Fatal(err)
			}
			want, _ := devsign.Sign(method, vecDS, map[string]string{"productKey": vecPK, "deviceName": vecDN, "clientId": "my-client"})
			if body["sign"] != want || body["signmethod"] != string(method) || body["clientId"] != "my-client" {
				t.Errorf("body = %v, want sign %s", body, want)
			}
		})
	}
}

func TestAuthCBOR(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f, WithContentFormat(CBOR))
	tok, err := c.Auth(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if tok != "tok-1" {
		t.Fatalf("token = %q, want tok-1", tok)
	}
	m := f.requests("auth")[0]
	if cf, _ := m.Options.ContentFormat(); cf != CBOR {
		t.Errorf("Content-Format = %v, want 60", cf)
	}
	if acc, _ := m.Options.Accept(); acc != CBOR {
		t.Errorf("Accept = %v, want 60", acc)
	}
	var body map[string]string
	if err := cbor.Unmarshal(m.Payload, &body); err != nil {
		t.Fatalf("auth body is not CBOR: %v", err)
	}
	if body["sign"] != vecSign || body["clientId"] != vecCID || body["productKey"] != vecPK || body["deviceName"] != vecDN {
		t.Errorf("CBOR auth body = %v", body)
	}
}

func TestAuthErrors(t *testing.T) {
	tests := []struct {
		name string
		code codes.Code
	}{
		{"bad payload", codes.BadRequest},
		{"bad sign", codes.Unauthorized},
		{"disabled", codes.Forbidden},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stdServer{onAuth: func(f *fakeServer, m message.Message, from *net.UDPAddr, _ int) bool {
				f.reply(from, m, tt.code, nil)
				return true
			}}
			f := newFakeServer(t, s.handle)
			c := dialTest(t, f)
			_, err := c.Auth(testCtx(t))
			var se *StatusError
			if !errors.As(err, &se) || se.Code != tt.code {
				t.Fatalf("err = %v, want StatusError %v", err, tt.code)
			}
			if c.Token() != "" {
				t.Errorf("Token() = %q after failed auth", c.Token())
			}
		})
	}
}

func TestPublishOptions(t *testing.T) {
	tests := []struct {
		name     string
		opts     []Option
		pubOpts  []PublishOption
		tokenOpt message.OptionID
		otherOpt message.OptionID
		cf       message.MediaType
	}{
		{"default 2088", nil, nil, OptionToken2088, OptionToken61, JSON},
		{"token option 61", []Option{WithTokenOption(OptionToken61)}, nil, OptionToken61, OptionToken2088, JSON},
		{"cbor payload", nil, []PublishOption{ContentFormat(CBOR)}, OptionToken2088, OptionToken61, CBOR},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := &stdServer{}
			f := newFakeServer(t, s.handle)
			c := dialTest(t, f, tt.opts...)
			resp, err := c.Publish(testCtx(t), propTopic, []byte(`{"id":"7","params":{}}`), tt.pubOpts...)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != codes.Changed || resp.MessageID != "1001" {
				t.Errorf("resp code %v message ID %q, want 2.04 1001", resp.Code, resp.MessageID)
			}
			rep, err := resp.Reply()
			if err != nil {
				t.Fatal(err)
			}
			if rep.ID != "7" || rep.Code != 200 || rep.Message != "success" || string(rep.Data) != "{}" {
				t.Errorf("reply = %+v", rep)
			}
			got := f.received()
			if len(got) != 2 || uriPath(got[0])[0] != "auth" {
				t.Fatalf("want auth then publish, got %d messages", len(got))
			}
			m := got[1]
			wantPath := []string{"topic", "sys", vecPK, vecDN, "thing", "event", "property", "post"}
			if p := uriPath(m); !slices.Equal(p, wantPath) {
				t.Errorf("Uri-Path = %q, want %q", p, wantPath)
			}
			if m.Type != message.Confirmable || m.Code != codes.POST {
				t.Errorf("type/code = %v/%v, want CON POST", m.Type, m.Code)
			}
			if v := optString(m, tt.tokenOpt); v != "tok-1" {
				t.Errorf("option %d = %q, want tok-1", tt.tokenOpt, v)
			}
			if m.Options.HasOption(tt.otherOpt) {
				t.Errorf("option %d present too", tt.otherOpt)
			}
			if cf, _ := m.Options.ContentFormat(); cf != tt.cf {
				t.Errorf("Content-Format = %v, want %v", cf, tt.cf)
			}
			if acc, _ := m.Options.Accept(); acc != JSON {
				t.Errorf("Accept = %v, want 50", acc)
			}
			if bytes.Equal(got[0].Token, m.Token) || got[0].MessageID == m.MessageID {
				t.Errorf("auth and publish share token or Message ID")
			}
		})
	}
}

func TestPublishInvalidTopic(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	for _, topic := range []string{"", "/", "/sys//x", "/a/../b"} {
		if _, err := c.Publish(testCtx(t), topic, nil); !errors.Is(err, ErrInvalidTopic) {
			t.Errorf("Publish(%q) err = %v, want ErrInvalidTopic", topic, err)
		}
	}
	if len(f.received()) != 0 {
		t.Errorf("invalid topics sent datagrams")
	}
}

func TestPublishReauthOn401(t *testing.T) {
	s := &stdServer{}
	s.onTopic = func(f *fakeServer, m message.Message, from *net.UDPAddr, n int) bool {
		if n == 1 {
			f.reply(from, m, codes.Unauthorized, nil)
			return true
		}
		return false
	}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	resp, err := c.Publish(testCtx(t), propTopic, []byte(`{"id":"1"}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.MessageID != "1002" {
		t.Errorf("MessageID = %q, want 1002", resp.MessageID)
	}
	var seq []string
	for _, m := range f.received() {
		seq = append(seq, uriPath(m)[0]+":"+optString(m, OptionToken2088))
	}
	want := []string{"auth:", "topic:tok-1", "auth:", "topic:tok-2"}
	if !slices.Equal(seq, want) {
		t.Errorf("exchange sequence = %q, want %q", seq, want)
	}
	if c.Token() != "tok-2" {
		t.Errorf("Token() = %q, want tok-2", c.Token())
	}
}

func TestPublishReauthOnlyOnce(t *testing.T) {
	s := &stdServer{onTopic: func(f *fakeServer, m message.Message, from *net.UDPAddr, _ int) bool {
		f.reply(from, m, codes.Unauthorized, nil)
		return true
	}}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	_, err := c.Publish(testCtx(t), propTopic, []byte(`{}`))
	var se *StatusError
	if !errors.As(err, &se) || se.Code != codes.Unauthorized {
		t.Fatalf("err = %v, want StatusError 4.01", err)
	}
	if a, p := s.counts(); a != 2 || p != 2 {
		t.Errorf("auths, publishes = %d, %d; want 2, 2", a, p)
	}
}

func TestPublishWithoutCredentials(t *testing.T) {
	s := &stdServer{onTopic: func(f *fakeServer, m message.Message, from *net.UDPAddr, _ int) bool {
		f.reply(from, m, codes.Unauthorized, nil)
		return true
	}}
	f := newFakeServer(t, s.handle)
	c, err := Dial(testCtx(t), f.addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Publish(testCtx(t), propTopic, nil); !errors.Is(err, ErrNoCredentials) {
		t.Errorf("no token, no credentials: err = %v, want ErrNoCredentials", err)
	}
	c2, err := Dial(testCtx(t), f.addr(), WithToken("cached"))
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	_, err = c2.Publish(testCtx(t), propTopic, nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != codes.Unauthorized {
		t.Errorf("cached token refused: err = %v, want StatusError 4.01", err)
	}
	if a, p := s.counts(); a != 0 || p != 1 {
		t.Errorf("auths, publishes = %d, %d; want 0, 1 (no re-auth without credentials)", a, p)
	}
}

func TestPublishForbidden(t *testing.T) {
	s := &stdServer{onTopic: func(f *fakeServer, m message.Message, from *net.UDPAddr, _ int) bool {
		f.reply(from, m, codes.Forbidden, nil)
		return true
	}}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	_, err := c.Publish(testCtx(t), "/sys/other/dev/x", nil)
	var se *StatusError
	if !errors.As(err, &se) || se.Code != codes.Forbidden {
		t.Fatalf("err = %v, want StatusError 4.03", err)
	}
	if a, _ := s.counts(); a != 1 {
		t.Errorf("auths = %d, want 1 (no re-auth on 4.03)", a)
	}
}

// dropFirst wraps a handler so that the first n topic datagrams are lost.
func dropFirst(n int, next func(*fakeServer, message.Message, *net.UDPAddr)) func(*fakeServer, message.Message, *net.UDPAddr) {
	var mu sync.Mutex
	seen := 0
	return func(f *fakeServer, m message.Message, from *net.UDPAddr) {
		if p := uriPath(m); len(p) > 0 && p[0] == "topic" {
			mu.Lock()
			seen++
			drop := seen <= n
			mu.Unlock()
			if drop {
				return
			}
		}
		next(f, m, from)
	}
}

func TestRetransmission(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, dropFirst(2, s.handle))
	c := dialTest(t, f, WithToken("tok-x"), WithTransmissionParams(fastParams))
	resp, err := c.Publish(testCtx(t), propTopic, []byte(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.Code != codes.Changed {
		t.Errorf("code = %v", resp.Code)
	}
	reqs := f.requests("topic")
	if len(reqs) != 3 {
		t.Fatalf("got %d transmissions, want 3", len(reqs))
	}
	for _, m := range reqs[1:] {
		if m.MessageID != reqs[0].MessageID || !bytes.Equal(m.Token, reqs[0].Token) {
			t.Errorf("retransmission changed Message ID or token")
		}
	}
}

func TestRetransmissionExhausted(t *testing.T) {
	f := newFakeServer(t, func(*fakeServer, message.Message, *net.UDPAddr) {})
	c := dialTest(t, f, WithToken("tok-x"), WithTransmissionParams(fastParams))
	_, err := c.Publish(testCtx(t), propTopic, []byte(`{}`))
	if !errors.Is(err, ErrTimeout) {
		t.Fatalf("err = %v, want ErrTimeout", err)
	}
	want := fastParams.MaxRetransmit + 1
	eventually(t, "all transmissions", func() bool { return len(f.received()) >= want })
	if n := len(f.received()); n != want {
		t.Errorf("got %d transmissions, want %d", n, want)
	}
}

func TestSeparateResponse(t *testing.T) {
	const sepMID = 0x7777
	var client *net.UDPAddr
	var mu sync.Mutex
	s := &stdServer{onTopic: func(f *fakeServer, m message.Message, from *net.UDPAddr, _ int) bool {
		mu.Lock()
		client = from
		mu.Unlock()
		f.send(from, message.Message{Type: message.Acknowledgement, Code: codes.Empty, MessageID: m.MessageID})
		sep := message.Message{
			Type: message.Confirmable, Code: codes.Changed, MessageID: sepMID, Token: m.Token,
			Options: message.Options{{ID: OptionMessageID, Value: []byte("4242")}},
			Payload: replyFor(m),
		}
		f.send(from, sep)
		f.send(from, sep) // a duplicate must be ACKed again, not delivered twice
		return true
	}}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f, WithToken("tok-x"))
	resp, err := c.Publish(testCtx(t), propTopic, []byte(`{"id":"9"}`))
	if err != nil {
		t.Fatal(err)
	}
	if resp.MessageID != "4242" {
		t.Errorf("MessageID = %q, want 4242", resp.MessageID)
	}
	countType := func(typ message.Type, mid int32) int {
		n := 0
		for _, m := range f.received() {
			if m.Type == typ && m.Code == codes.Empty && m.MessageID == mid {
				n++
			}
		}
		return n
	}
	eventually(t, "two ACKs of the separate response", func() bool { return countType(message.Acknowledgement, sepMID) == 2 })

	// A CON response nobody asked for is rejected with RST.
	mu.Lock()
	to := client
	mu.Unlock()
	f.send(to, message.Message{Type: message.Confirmable, Code: codes.Changed, MessageID: 0x5555, Token: []byte{9, 9, 9, 9}})
	eventually(t, "RST of an unknown response", func() bool { return countType(message.Reset, 0x5555) == 1 })
}

func TestPingIsReset(t *testing.T) {
	f := newFakeServer(t, func(*fakeServer, message.Message, *net.UDPAddr) {})
	c := dialTest(t, f)
	f.send(c.LocalAddr().(*net.UDPAddr), message.Message{Type: message.Confirmable, Code: codes.Empty, MessageID: 0x1234})
	eventually(t, "RST of a ping", func() bool {
		for _, m := range f.received() {
			if m.Type == message.Reset && m.MessageID == 0x1234 {
				return true
			}
		}
		return false
	})
}

func TestResetFailsRequest(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer, m message.Message, from *net.UDPAddr) {
		f.send(from, message.Message{Type: message.Reset, Code: codes.Empty, MessageID: m.MessageID})
	})
	c := dialTest(t, f, WithToken("tok-x"))
	if _, err := c.Publish(testCtx(t), propTopic, nil); !errors.Is(err, ErrReset) {
		t.Fatalf("err = %v, want ErrReset", err)
	}
}

// block1Server reassembles Block1 uploads on /topic (RFC 7959 §2.5).
type block1Server struct {
	t      *testing.T
	askSZX blockwise.SZX // if > 0, answer the first 2.31 with this smaller SZX
	mu     sync.Mutex
	body   []byte            // guarded by mu
	blocks []blockOpt        // guarded by mu
	size1  uint32            // guarded by mu
	msgs   []message.Message // guarded by mu
}

func (b *block1Server) handle(f *fakeServer, m message.Message, from *net.UDPAddr) {
	if m.Type != message.Confirmable {
		return
	}
	v, err := m.Options.GetUint32(message.Block1)
	if err != nil {
		b.t.Errorf("request without Block1")
		f.reply(from, m, codes.BadRequest, nil)
		return
	}
	blk, err := decodeBlock(v)
	if err != nil {
		b.t.Errorf("bad Block1 %d: %v", v, err)
		return
	}
	b.mu.Lock()
	if blk.num == 0 {
		b.size1, _ = m.Options.GetUint32(message.Size1)
	}
	off := int(blk.num * blk.szx.Size())
	if off != len(b.body) {
		b.t.Errorf("block %d at offset %d, have %d bytes", blk.num, off, len(b.body))
	}
	b.body = append(b.body, m.Payload...)
	b.blocks = append(b.blocks, blk)
	b.msgs = append(b.msgs, m)
	first := len(b.blocks) == 1
	b.mu.Unlock()
	if blk.more {
		szx := blk.szx
		if first && b.askSZX > 0 {
			szx = b.askSZX
		}
		ack, _ := blockwise.EncodeBlockOption(szx, blk.num, true)
		f.reply(from, m, codes.Continue, nil, message.Option{ID: message.Block1, Value: encodeUint(ack)})
		return
	}
	ack, _ := blockwise.EncodeBlockOption(blk.szx, blk.num, false)
	f.reply(from, m, codes.Changed, []byte(`{"id":"1","code":200,"data":{},"message":"success"}`),
		message.Option{ID: message.Block1, Value: encodeUint(ack)},
		message.Option{ID: OptionMessageID, Value: []byte("77")})
}

func TestBlock1Upload(t *testing.T) {
	tests := []struct {
		name    string
		askSZX  blockwise.SZX
		wantNum int
	}{
		{"64-byte blocks", 0, 5},                   // 300 = 4*64 + 44
		{"server asks for 32", blockwise.SZX32, 9}, // 64 + 7*32 + 12
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &block1Server{t: t, askSZX: tt.askSZX}
			f := newFakeServer(t, b.handle)
			c := dialTest(t, f, WithToken("tok-x"), WithBlockSize(64))
			payload := make([]byte, 300)
			for i := range payload {
				payload[i] = byte(i)
			}
			resp, err := c.Publish(testCtx(t), propTopic, payload)
			if err != nil {
				t.Fatal(err)
			}
			if resp.Code != codes.Changed || resp.MessageID != "77" {
				t.Errorf("final response %v %q", resp.Code, resp.MessageID)
			}
			b.mu.Lock()
			defer b.mu.Unlock()
			if !bytes.Equal(b.body, payload) {
				t.Errorf("reassembled %d bytes, differ from the %d sent", len(b.body), len(payload))
			}
			if len(b.blocks) != tt.wantNum {
				t.Errorf("got %d blocks, want %d", len(b.blocks), tt.wantNum)
			}
			if b.size1 != 300 {
				t.Errorf("Size1 = %d, want 300", b.size1)
			}
			mids := map[int32]bool{}
			for _, m := range b.msgs {
				mids[m.MessageID] = true
				if !bytes.Equal(m.Token, b.msgs[0].Token) {
					t.Errorf("blocks carry different CoAP tokens")
				}
				if optString(m, OptionToken2088) != "tok-x" {
					t.Errorf("block without auth token")
				}
				if p := joinPath(uriPath(m)); p != "topic/sys/"+vecPK+"/"+vecDN+"/thing/event/property/post" {
					t.Errorf("block path %s", p)
				}
			}
			if len(mids) != len(b.msgs) {
				t.Errorf("blocks reuse Message IDs")
			}
		})
	}
}

func TestBlock1TooLarge(t *testing.T) {
	f := newFakeServer(t, func(f *fakeServer, m message.Message, from *net.UDPAddr) {
		f.reply(from, m, codes.RequestEntityTooLarge, nil, message.Option{ID: message.Size1, Value: encodeUint(128)})
	})
	c := dialTest(t, f, WithToken("tok-x"), WithBlockSize(64))
	_, err := c.Publish(testCtx(t), propTopic, make([]byte, 500))
	var tl *TooLargeError
	if !errors.As(err, &tl) || tl.Size1 != 128 {
		t.Fatalf("err = %v, want TooLargeError with Size1 128", err)
	}
	var se *StatusError
	if !errors.As(err, &se) || se.Code != codes.RequestEntityTooLarge {
		t.Errorf("errors.As StatusError: %v", err)
	}
	if n := len(f.received()); n != 1 {
		t.Errorf("sent %d blocks after 4.13, want 1", n)
	}
}

func TestConcurrentPublishes(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	const n = 64
	var wg sync.WaitGroup
	ids := make([]string, n)
	errs := make([]error, n)
	for i := range n {
		wg.Go(func() {
			resp, err := c.Publish(testCtx(t), propTopic, []byte(`{"id":"`+strconv.Itoa(i)+`"}`))
			if err != nil {
				errs[i] = err
				return
			}
			rep, err := resp.Reply()
			if err != nil {
				errs[i] = err
				return
			}
			if rep.ID != strconv.Itoa(i) {
				errs[i] = fmt.Errorf("publish %d got reply id %s", i, rep.ID)
			}
			ids[i] = resp.MessageID
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, id := range ids {
		if seen[id] {
			t.Errorf("message ID %s delivered twice", id)
		}
		seen[id] = true
	}
	if a, _ := s.counts(); a != 1 {
		t.Errorf("auths = %d, want 1", a)
	}
	mids := map[int32]bool{}
	for _, m := range f.requests("topic") {
		if mids[m.MessageID] {
			t.Errorf("Message ID %d reused", m.MessageID)
		}
		mids[m.MessageID] = true
	}
}

func TestNonConfirmable(t *testing.T) {
	t.Run("fire and forget", func(t *testing.T) {
		s := &stdServer{}
		f := newFakeServer(t, s.handle)
		c := dialTest(t, f, WithToken("tok-x"))
		resp, err := c.Publish(testCtx(t), propTopic, []byte(`{}`), NonConfirmable())
		if err != nil || resp != nil {
			t.Fatalf("Publish = %v, %v; want nil, nil", resp, err)
		}
		eventually(t, "the NON publish", func() bool { return len(f.requests("topic")) == 1 })
		if typ := f.requests("topic")[0].Type; typ != message.NonConfirmable {
			t.Errorf("type = %v, want NON", typ)
		}
	})
	t.Run("wait for NON response", func(t *testing.T) {
		s := &stdServer{}
		f := newFakeServer(t, s.handle)
		c := dialTest(t, f, WithToken("tok-x"))
		resp, err := c.Publish(testCtx(t), propTopic, []byte(`{}`), WaitNONResponse(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if resp.MessageID != "1001" {
			t.Errorf("MessageID = %q, want 1001", resp.MessageID)
		}
	})
	t.Run("no NON response", func(t *testing.T) {
		f := newFakeServer(t, func(*fakeServer, message.Message, *net.UDPAddr) {})
		c := dialTest(t, f, WithToken("tok-x"))
		_, err := c.Publish(testCtx(t), propTopic, []byte(`{}`), WaitNONResponse(10*time.Millisecond))
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("err = %v, want ErrTimeout", err)
		}
	})
}

func TestCloseAndCancel(t *testing.T) {
	f := newFakeServer(t, func(*fakeServer, message.Message, *net.UDPAddr) {})
	c := dialTest(t, f, WithToken("tok-x"))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := c.Publish(ctx, propTopic, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("cancelled publish: err = %v, want DeadlineExceeded", err)
	}

	errc := make(chan error, 1)
	go func() {
		_, err := c.Publish(testCtx(t), propTopic, nil)
		errc <- err
	}()
	eventually(t, "the pending publish", func() bool { return len(f.received()) == 2 })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, ErrClosed) {
		t.Errorf("pending publish: err = %v, want ErrClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if _, err := c.Publish(testCtx(t), propTopic, nil); !errors.Is(err, ErrClosed) {
		t.Errorf("publish after Close: err = %v, want ErrClosed", err)
	}
}

func TestThingModel(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f)
	ts := time.UnixMilli(1700000000000)
	resp, err := c.PostMeasurePoints(testCtx(t), map[string]any{"temp": 21.5}, ts)
	if err != nil {
		t.Fatal(err)
	}
	if rep, _ := resp.Reply(); rep.ID != "1" {
		t.Errorf("reply id %q, want 1", rep.ID)
	}
	if _, err := c.PostProperties(testCtx(t), map[string]any{"power": "on"}); err != nil {
		t.Fatal(err)
	}
	reqs := f.requests("topic")
	if len(reqs) != 2 {
		t.Fatalf("got %d publishes", len(reqs))
	}
	tests := []struct {
		path string
		body string
	}{
		{"topic/sys/" + vecPK + "/" + vecDN + "/thing/measurepoint/post",
			`{"id":"1","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":21.5},"time":1700000000000}}`},
		{"topic/sys/" + vecPK + "/" + vecDN + "/thing/event/property/post",
			`{"id":"2","version":"1.0","method":"thing.event.property.post","params":{"power":"on"}}`},
	}
	for i, tt := range tests {
		if p := joinPath(uriPath(reqs[i])); p != tt.path {
			t.Errorf("publish %d path %s, want %s", i, p, tt.path)
		}
		if string(reqs[i].Payload) != tt.body {
			t.Errorf("publish %d body\n%s\nwant\n%s", i, reqs[i].Payload, tt.body)
		}
	}
}

func TestThingModelCBOR(t *testing.T) {
	s := &stdServer{}
	f := newFakeServer(t, s.handle)
	c := dialTest(t, f, WithContentFormat(CBOR))
	if _, err := c.PostMeasurePoints(testCtx(t), map[string]any{"temp": 21.5}, time.UnixMilli(5)); err != nil {
		t.Fatal(err)
	}
	m := f.requests("topic")[0]
	if cf, _ := m.Options.ContentFormat(); cf != CBOR {
		t.Errorf("Content-Format = %v, want 60", cf)
	}
	var body struct {
		ID     string `cbor:"id"`
		Method string `cbor:"method"`
		Params struct {
			MeasurePoints map[string]float64 `cbor:"measurepoints"`
			Time          int64              `cbor:"time"`
		} `cbor:"params"`
	}
	if err := cbor.Unmarshal(m.Payload, &body); err != nil {
		t.Fatal(err)
	}
	if body.ID != "1" || body.Method != "thing.measurepoint.post" || body.Params.MeasurePoints["temp"] != 21.5 || body.Params.Time != 5 {
		t.Errorf("CBOR body = %+v", body)
	}
}
