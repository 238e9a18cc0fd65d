package coapx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
)

// encodeRaw is the inverse of parseRequest: option deltas and lengths in
// the only encoding RFC 7252 §3.1 allows for each value.
func encodeRaw(r rawRequest) []byte {
	b := []byte{0x40 | byte(r.typ)<<4 | byte(len(r.token)), byte(r.code), byte(r.mid >> 8), byte(r.mid)}
	b = append(b, r.token...)
	ext := func(v int) (byte, []byte) {
		switch {
		case v < 13:
			return byte(v), nil
		case v < 269:
			return 13, []byte{byte(v - 13)}
		default:
			return 14, binary.BigEndian.AppendUint16(nil, uint16(v-269))
		}
	}
	prev := 0
	for _, o := range r.options {
		dn, dx := ext(int(o.ID) - prev)
		ln, lx := ext(len(o.Value))
		b = append(b, dn<<4|ln)
		b = append(append(append(b, dx...), lx...), o.Value...)
		prev = int(o.ID)
	}
	if r.payload != nil {
		b = append(append(b, 0xff), r.payload...)
	}
	return b
}

// FuzzParseOptions checks the raw option scan: a datagram it accepts
// re-encodes to exactly the same bytes (nothing skipped, nothing
// invented), option numbers never decrease, the option count is bounded,
// a payload is never empty, and checkOptions only lets through critical
// options that are known, within their lengths and not over-repeated.
func FuzzParseOptions(f *testing.F) {
	f.Add(rawMsg(message.Confirmable, 1, []byte{1, 2}, pathOptions("topic/a/b"), []byte("x"), false))
	f.Add(rawMsg(message.Confirmable, 2, nil, pathOptions("topic"), nil, true))
	f.Add(rawMsg(message.NonConfirmable, 3, []byte{9}, []message.Option{{ID: message.URIHost, Value: []byte("h")}, {ID: message.URIHost, Value: []byte("h")}}, nil, false))
	f.Add(rawMsg(message.Confirmable, 4, nil, []message.Option{{ID: message.Block1, Value: []byte{1, 2, 3, 4}}, {ID: OptionSignE, Value: bytes.Repeat([]byte("A"), 300)}}, []byte("p"), false))
	f.Add([]byte{0x40, 0x02, 0x00, 0x09, 0xbd})
	f.Add([]byte{0x40, 0x02, 0x00, 0x09, 0xf0})
	f.Add([]byte{0x40, 0x02, 0x00, 0x09, 0xe0, 0xff, 0xff})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := parseRequest(data)
		if err != nil {
			if errors.Is(err, errTooManyOptions) {
				if n, cerr := countOptions(data[4+int(data[0]&0xf):]); cerr != nil || n <= MaxOptions {
					t.Fatalf("too many options with %d (%v)", n, cerr)
				}
			}
			return
		}
		if data[0]>>6 != 1 {
			return // the version is the read loop's check
		}
		if got := encodeRaw(r); !bytes.Equal(got, data) {
			t.Fatalf("re-encoded %x, datagram %x", got, data)
		}
		if len(r.options) > MaxOptions {
			t.Fatalf("%d options", len(r.options))
		}
		if r.payload != nil && len(r.payload) == 0 {
			t.Fatal("empty payload accepted")
		}
		for i := 1; i < len(r.options); i++ {
			if r.options[i].ID < r.options[i-1].ID {
				t.Fatal("option numbers decrease")
			}
		}
		kept, err := checkOptions(append(message.Options(nil), r.options...))
		if err != nil {
			var be *badOptionError
			if !errors.As(err, &be) || be.id&1 != 1 {
				t.Fatalf("refusal %v is not of a critical option", err)
			}
			return
		}
		for i, o := range kept {
			def, known := optionDefs[o.ID]
			if !known {
				if o.ID&1 == 1 && !knownCritical[o.ID] {
					t.Fatalf("unknown critical option %d let through", o.ID)
				}
				continue
			}
			if len(o.Value) < def.min || len(o.Value) > def.max {
				t.Fatalf("option %d of %d bytes let through", o.ID, len(o.Value))
			}
			if !def.repeatable && i > 0 && kept[i-1].ID == o.ID {
				t.Fatalf("option %d repeated", o.ID)
			}
		}
	})
}

// FuzzBlock1Reassembly drives the Block1 store with arbitrary sequences of
// blocks from a few peers and checks: the accounting never exceeds the
// budgets and matches the transfers held, a completed body is every byte
// at its own offset (payload bytes are their offset, so a misplaced or
// concatenated block shows), anonymous transfers stay within their share,
// and nothing is held after the lifetime.
func FuzzBlock1Reassembly(f *testing.F) {
	f.Add([]byte{0x08, 6, 0, 0, 0x18, 6, 0, 0, 0x20, 6, 0, 100})
	f.Add([]byte{0x08, 6, 0, 0, 0x18, 5, 0, 0, 0x48, 4, 1, 0, 0x28, 4, 0, 0})
	f.Add([]byte{0x08, 5, 1, 0, 0x08, 5, 1, 1, 0x08, 5, 1, 2, 0x08, 5, 2, 3, 0x08, 5, 3, 4})
	f.Fuzz(func(t *testing.T, ops []byte) {
		lim := BlockLimits{MaxBody: 2048, PeerBudget: 4096, Budget: 8192, MaxTransfers: 6}
		s := newBlockStore(lim, time.Second)
		now := time.Unix(1000, 0)
		peers := []string{"127.0.0.1:1", "127.0.0.1:2", "127.0.0.2:1", "127.0.0.3:1"}
		for len(ops) >= 4 {
			op := ops[:4]
			ops = ops[4:]
			b := block{num: uint32(op[0] >> 4), more: op[0]&0x8 != 0, szx: op[1] % 7}
			key := transferKey{peer: netip.MustParseAddrPort(peers[op[2]%4]), path: string('a' + rune(op[2]>>2%3))}
			size := b.size()
			n := size
			if !b.more {
				n = int(op[3]) % (size + 1)
			}
			off := int(b.num) * size
			payload := make([]byte, n)
			for i := range payload {
				payload[i] = byte(off + i)
			}
			var size1 int
			if op[3]&0x80 != 0 {
				size1 = int(op[3]) * 8
			}
			now = now.Add(time.Duration(op[3]&0x7) * 100 * time.Millisecond)
			anon := op[0]&0x1 != 0
			res, body := s.addBlock1(key, b, payload, size1, anon, now)
			if res == block1Complete {
				if len(body) > lim.MaxBody {
					t.Fatalf("body of %d bytes", len(body))
				}
				for i, c := range body {
					if c != byte(i) {
						t.Fatalf("byte %d of the body is %d: misplaced block", i, c)
					}
				}
			}
			st := s.stats()
			if st.Reserved > lim.Budget || st.MaxPeer > lim.PeerBudget || st.Buffered > st.Reserved || st.Transfers > lim.MaxTransfers ||
				st.Anonymous > lim.Budget/8 || st.Anonymous > st.Reserved {
				t.Fatalf("accounting over the limits: %+v", st)
			}
			sum, anonSum := 0, 0
			for _, u := range s.up {
				sum += u.reserved
				if u.anon {
					anonSum += u.reserved
					if u.reserved > AnonymousMaxBody {
						t.Fatalf("anonymous transfer reserves %d", u.reserved)
					}
				}
				if len(u.body) > u.reserved || cap(u.body) > u.reserved {
					t.Fatalf("upload buffers %d (cap %d) over its reservation %d", len(u.body), cap(u.body), u.reserved)
				}
			}
			if sum != st.Reserved || anonSum != st.Anonymous {
				t.Fatalf("reserved %d, transfers hold %d", st.Reserved, sum)
			}
		}
		s.sweep(now.Add(2 * time.Second))
		if st := s.stats(); st != (BlockStats{}) {
			t.Fatalf("after the lifetime: %+v", st)
		}
	})
}
