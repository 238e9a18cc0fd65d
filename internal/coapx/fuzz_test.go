package coapx

import (
	"context"
	"encoding/binary"
	"net/netip"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// FuzzRequestPath feeds arbitrary datagrams through the whole request path
// (header checks, dedup, decode, options, block-wise, handler, encode) and
// checks properties of what the server sends back.
func FuzzRequestPath(f *testing.F) {
	f.Add(encodeMsg(f, con(1, "topic/sys/pk/dk/thing/event/property/post", `{"id":"1"}`)))
	f.Add(encodeMsg(f, con(2, "auth", `{"productKey":"p"}`, message.Option{ID: message.ContentFormat, Value: EncodeUint(50)})))
	f.Add(encodeMsg(f, con(3, "topic/up", "0123456789abcdef", message.Option{ID: message.Block1, Value: EncodeUint(block{num: 0, more: true, szx: 0}.encode())})))
	f.Add(encodeMsg(f, con(4, "big", "", message.Option{ID: message.Block2, Value: EncodeUint(block{num: 1, szx: 2}.encode())})))
	f.Add([]byte{0x40, 0, 0, 1})
	f.Add([]byte{0x44, 0x02, 0x00, 0x09, 1, 2, 3, 4, 0xbd, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		h := &echo{}
		s := NewServer(Config{Workers: 1, Queue: 4, MaxBody: 2048, BlockSize: 64}, h, nil, nil)
		peer := netip.MustParseAddrPort("127.0.0.1:5000")
		var sent [][]byte
		s.out = func(b []byte, _ netip.AddrPort) { sent = append(sent, append([]byte(nil), b...)) }
		ctx := context.Background()
		for range 2 { // the second copy exercises the duplicate path
			s.receive(data, peer)
			for len(s.jobs) > 0 {
				s.process(ctx, <-s.jobs)
			}
		}
		if len(data) >= 4 && data[0]>>6 == 1 && message.Type(data[0]>>4&3) == message.NonConfirmable && len(sent) > 1 {
			t.Fatalf("duplicate NON answered: %d datagrams", len(sent))
		}
		for _, b := range sent {
			var m message.Message
			m.Options = make(message.Options, 0, 32)
			if _, err := coder.DefaultCoder.Decode(b, &m); err != nil {
				t.Fatalf("server sent undecodable %x: %v", b, err)
			}
			if m.Type == message.Acknowledgement || m.Type == message.Reset {
				if len(data) < 4 || uint16(m.MessageID) != binary.BigEndian.Uint16(data[2:4]) {
					t.Fatalf("ACK/RST with MID %d does not match request", m.MessageID)
				}
			}
			if m.Type == message.Confirmable {
				t.Fatal("server sent a CON")
			}
			if m.Code != codes.Empty && m.Code>>5 < 2 {
				t.Fatalf("response carries request code %v", m.Code)
			}
		}
		if h.calls.Load() > 1 {
			t.Fatalf("handler ran %d times for one datagram sent twice", h.calls.Load())
		}
	})
}
