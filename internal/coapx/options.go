// Package coapx is coapgate's CoAP-over-UDP serving layer (RFC 7252, with
// block-wise transfer from RFC 7959). It uses go-coap's message codec and
// provides what go-coap's stock UDP server does not do well enough for a
// gateway: one read loop per socket, a bounded worker pool, a bounded
// duplicate/response cache keyed on (peer, Message ID) (RFC 7252 §4.5), and
// the vendor options of the two dialects (docs/protocol.md §2–3).
package coapx

import (
	"encoding/binary"
	"slices"

	"github.com/plgd-dev/go-coap/v3/message"
)

// Vendor option numbers (docs/protocol.md §2.1, §3).
const (
	// OptionToken61 carries the auth token as sent by SDK v3.x and
	// third-party modules (critical: odd number).
	OptionToken61 message.OptionID = 61
	// OptionAuthToken carries the auth token as the documents name it.
	OptionAuthToken message.OptionID = 2088
	// OptionSeq carries the encrypted sequence number in symmetric mode.
	OptionSeq message.OptionID = 2089
	// OptionMessageID carries the platform's message ID in responses.
	OptionMessageID message.OptionID = 2090
	// OptionDownlink carries "/topic/{requestTopic}" when a command waits.
	OptionDownlink message.OptionID = 2100
	// OptionSignE carries dialect E's encrypted token+sequence (non-DTLS).
	OptionSignE message.OptionID = 2101
	// OptionPayloadE is the variant some documents name for downlink payloads.
	OptionPayloadE message.OptionID = 2102
)

// knownCritical lists the critical (odd) options the server understands;
// any other critical option in a request is answered 4.02 Bad Option
// (RFC 7252 §5.4.1).
var knownCritical = map[message.OptionID]bool{
	message.IfMatch:     true,
	message.URIHost:     true,
	message.IfNoneMatch: true,
	message.URIPort:     true,
	message.URIPath:     true,
	message.URIQuery:    true,
	message.Accept:      true,
	message.Block2:      true,
	message.Block1:      true,
	message.ProxyURI:    true,
	message.ProxyScheme: true,
	OptionToken61:       true,
	OptionSeq:           true,
	OptionSignE:         true,
}

// unknownCritical returns the first critical option in opts that the server
// does not understand.
func unknownCritical(opts message.Options) (message.OptionID, bool) {
	for _, o := range opts {
		if o.ID&1 == 1 && !knownCritical[o.ID] {
			return o.ID, true
		}
	}
	return 0, false
}

// EncodeUint returns the minimal big-endian encoding of v (RFC 7252 §3.2).
func EncodeUint(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	i := 0
	for i < 4 && b[i] == 0 {
		i++
	}
	return b[i:]
}

// DecodeUint decodes a uint option value of at most 4 bytes.
func DecodeUint(b []byte) (uint32, bool) {
	if len(b) > 4 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		v = v<<8 | uint32(c)
	}
	return v, true
}

// Uint returns the first option id as uint.
func Uint(opts message.Options, id message.OptionID) (uint32, bool) {
	for _, o := range opts {
		if o.ID == id {
			return DecodeUint(o.Value)
		}
	}
	return 0, false
}

// Bytes returns the first option id's raw value.
func Bytes(opts message.Options, id message.OptionID) ([]byte, bool) {
	for _, o := range opts {
		if o.ID == id {
			return o.Value, true
		}
	}
	return nil, false
}

// sortOptions orders options by number, stably, as the encoder needs.
func sortOptions(opts message.Options) {
	slices.SortStableFunc(opts, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
}

// Block option fields (RFC 7959 §2.2).
type block struct {
	num  uint32
	more bool
	szx  uint8
}

func (b block) size() int { return 16 << b.szx }

func decodeBlock(v uint32) (block, bool) {
	b := block{num: v >> 4, more: v&0x8 != 0, szx: uint8(v & 0x7)}
	if b.szx == 7 || v > 0xFFFFFF { // BERT is for reliable transports only
		return block{}, false
	}
	return b, true
}

func (b block) encode() uint32 {
	v := b.num<<4 | uint32(b.szx)
	if b.more {
		v |= 0x8
	}
	return v
}

// szxFor returns the SZX of a block size (a power of two in 16..1024).
func szxFor(size int) uint8 {
	var s uint8
	for 16<<s < size && s < 6 {
		s++
	}
	return s
}
