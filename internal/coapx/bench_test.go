package coapx

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// BenchmarkRequestPath measures one CON request through receive, dedup,
// decode, handler and encode, without the socket.
func BenchmarkRequestPath(b *testing.B) {
	h := HandlerFunc(func(context.Context, *Request) *Response {
		return &Response{Code: codes.Changed, Payload: []byte(`{"code":200,"data":{},"message":"success"}`)}
	})
	s := NewServer(Config{Workers: 1, Queue: 16}, h, nil, nil)
	s.out = func([]byte, netip.AddrPort) {}
	m := con(0, "topic/sys/pk/dk/thing/event/property/post", `{"id":"1","params":{"temp":21.5}}`)
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		m.MessageID = int32(i & 0xffff)
		data := encodeMsg(b, m) // a new peer port per 65536 MIDs: never a duplicate
		s.receive(data, netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(1024+i>>16)))
		s.process(ctx, <-s.jobs)
		i++
	}
}

// BenchmarkDedupBegin measures the read loop's duplicate lookup.
func BenchmarkDedupBegin(b *testing.B) {
	d := newDedupCache(1 << 18)
	now := time.Now()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		k := exchangeKey{peer: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(1024+i>>16)), mid: uint16(i)}
		d.begin(k, time.Minute, now)
		d.complete(k, nil, now)
		i++
	}
}
