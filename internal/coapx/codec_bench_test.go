package coapx

import (
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// BenchmarkDecodeDatagram measures decoding a token-mode publish (Uri-Path
// of 8 segments, Content-Format, Accept, a 40-byte token option, 64 B body)
// into a message with a reused option slice, as the request path does.
func BenchmarkDecodeDatagram(b *testing.B) {
	data := encodeMsg(b, publishMsg())
	m := message.Message{Options: make(message.Options, 0, 32)}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		m.Options = m.Options[:0]
		if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
			b.Fatal(err)
		}
	}
	if len(m.Payload) != 64 {
		b.Fatalf("payload %d bytes, want 64", len(m.Payload))
	}
}

// BenchmarkEncodeResponse measures encoding the piggybacked 2.04 with
// option 2090 and a reply JSON, as every publish answer.
func BenchmarkEncodeResponse(b *testing.B) {
	s := NewServer(Config{Workers: 1, Queue: 1}, nil, nil, nil)
	r := (&Response{Code: codes.Changed, Payload: []byte(`{"id":"1","code":200,"data":{},"message":"success"}`)}).
		SetBytes(2090, []byte("1234567890"))
	tok := []byte{1, 2, 3, 4}
	b.ReportAllocs()
	var out []byte
	for b.Loop() {
		var err error
		if out, err = s.encode(r, message.Acknowledgement, 7, tok); err != nil {
			b.Fatal(err)
		}
	}
	m := message.Message{Options: make(message.Options, 0, 8)}
	if _, err := coder.DefaultCoder.Decode(out, &m); err != nil || m.Code != codes.Changed || m.MessageID != 7 {
		b.Fatalf("decoded %v, %v", m, err)
	}
}

func publishMsg() message.Message {
	payload := make([]byte, 64)
	for i := range payload {
		payload[i] = 'x'
	}
	return con(1, "topic/sys/a1MZxOdcBnO/test_01/thing/event/property/post", string(payload),
		message.Option{ID: message.ContentFormat, Value: []byte{50}},
		message.Option{ID: message.Accept, Value: []byte{50}},
		message.Option{ID: 2088, Value: []byte("AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIj")})
}
