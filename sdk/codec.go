package sdk

import (
	"encoding/binary"
	"fmt"
	"strings"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// This file holds the pure, allocation-bounded functions between datagrams
// and messages; they are what the fuzz targets exercise.

// maxOptions bounds how many options a received message may carry.
const maxOptions = 64

// maxURIPathLen is the Uri-Path option length limit (RFC 7252 §5.10).
const maxURIPathLen = 255

// encodeMessage encodes m as one UDP datagram (RFC 7252 §3).
func encodeMessage(m message.Message) ([]byte, error) {
	size, err := coder.DefaultCoder.Size(m)
	if err != nil {
		return nil, fmt.Errorf("size message: %w", err)
	}
	buf := make([]byte, size)
	n, err := coder.DefaultCoder.Encode(m, buf)
	if err != nil {
		return nil, fmt.Errorf("encode message: %w", err)
	}
	return buf[:n], nil
}

// decodeMessage decodes one datagram. The returned message's token, option
// values and payload alias data, which the caller must therefore own.
func decodeMessage(data []byte) (message.Message, error) {
	m := message.Message{Options: make(message.Options, 0, maxOptions)}
	if _, err := coder.DefaultCoder.Decode(data, &m); err != nil {
		return message.Message{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return m, nil
}

// topicPath splits an MQTT-style topic into its Uri-Path segments, prefixed
// by "topic" (docs/protocol.md §3.2). A leading "/" is optional; empty segments,
// "." and ".." segments and segments over 255 bytes are refused.
func topicPath(topic string) ([]string, error) {
	t := strings.TrimPrefix(topic, "/")
	if t == "" {
		return nil, fmt.Errorf("%w: %q is empty", ErrInvalidTopic, topic)
	}
	segs := strings.Split(t, "/")
	path := make([]string, 0, len(segs)+1)
	path = append(path, "topic")
	for _, s := range segs {
		switch {
		case s == "":
			return nil, fmt.Errorf("%w: %q has an empty segment", ErrInvalidTopic, topic)
		case s == "." || s == "..":
			return nil, fmt.Errorf("%w: %q has a dot segment", ErrInvalidTopic, topic)
		case len(s) > maxURIPathLen:
			return nil, fmt.Errorf("%w: %q has a segment over %d bytes", ErrInvalidTopic, topic, maxURIPathLen)
		}
		path = append(path, s)
	}
	return path, nil
}

// encodeUint encodes v as a CoAP uint option value: big-endian, no leading
// zero bytes, empty for 0 (RFC 7252 §3.2).
func encodeUint(v uint32) []byte {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], v)
	i := 0
	for i < 4 && b[i] == 0 {
		i++
	}
	return append([]byte(nil), b[i:]...)
}

// request is one CoAP request before Message ID and token are chosen.
type request struct {
	code          codes.Code
	path          []string
	confirmable   bool
	contentFormat message.MediaType
	accept        message.MediaType
	hasAccept     bool
	authOption    message.OptionID // 0: none
	authToken     string
	seq           []byte // option 2089 (symmetric mode), nil: none
	payload       []byte
	block1        *blockOpt // nil: no Block1 option
	size1         int       // >0: Size1 option (RFC 7959 §4)
}

// blockOpt is a decoded Block1/Block2 value (RFC 7959 §2.2).
type blockOpt struct {
	num  int64
	more bool
	szx  blockwise.SZX // 0..6 on UDP
}

// buildMessage builds the message of r with the given Message ID and token.
func buildMessage(r *request, mid uint16, token []byte) (message.Message, error) {
	typ := message.NonConfirmable
	if r.confirmable {
		typ = message.Confirmable
	}
	opts := make(message.Options, 0, len(r.path)+6)
	for _, s := range r.path {
		if len(s) > maxURIPathLen {
			return message.Message{}, fmt.Errorf("%w: Uri-Path segment over %d bytes", ErrInvalidTopic, maxURIPathLen)
		}
		opts = opts.Add(message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	if len(r.payload) > 0 || r.block1 != nil {
		opts = opts.Add(message.Option{ID: message.ContentFormat, Value: encodeUint(uint32(r.contentFormat))})
	}
	if r.hasAccept {
		opts = opts.Add(message.Option{ID: message.Accept, Value: encodeUint(uint32(r.accept))})
	}
	if r.block1 != nil {
		v, err := blockwise.EncodeBlockOption(r.block1.szx, r.block1.num, r.block1.more)
		if err != nil {
			return message.Message{}, fmt.Errorf("encode block1: %w", err)
		}
		opts = opts.Add(message.Option{ID: message.Block1, Value: encodeUint(v)})
	}
	if r.size1 > 0 {
		opts = opts.Add(message.Option{ID: message.Size1, Value: encodeUint(uint32(r.size1))})
	}
	if r.authOption != 0 {
		opts = opts.Add(message.Option{ID: r.authOption, Value: []byte(r.authToken)})
	}
	if r.seq != nil {
		opts = opts.Add(message.Option{ID: OptionSeq, Value: r.seq})
	}
	return message.Message{
		Token:     token,
		Options:   opts,
		Code:      r.code,
		Payload:   r.payload,
		MessageID: int32(mid),
		Type:      typ,
	}, nil
}

// inboundKind says what a received message is to the client.
type inboundKind int

const (
	kindIgnore           inboundKind = iota // not for us: drop silently
	kindEmptyACK                            // empty ACK: stop retransmitting, await a separate response
	kindPiggybacked                         // ACK carrying the response
	kindReset                               // RST of one of our messages
	kindConResponse                         // CON response (separate): ACK it, deliver by token
	kindNonResponse                         // NON response: deliver by token
	kindConRequestOrPing                    // CON request or ping from the server: answer RST
)

// classify sorts a decoded message by RFC 7252 §4 message semantics.
func classify(m *message.Message) inboundKind {
	class := m.Code >> 5
	isResponse := m.Code <= 0xff && (class == 2 || class == 4 || class == 5) // class 3 is reserved
	switch m.Type {
	case message.Acknowledgement:
		switch {
		case m.Code == codes.Empty:
			return kindEmptyACK
		case isResponse:
			return kindPiggybacked
		}
	case message.Reset:
		return kindReset
	case message.Confirmable:
		if isResponse {
			return kindConResponse
		}
		return kindConRequestOrPing
	case message.NonConfirmable:
		if isResponse {
			return kindNonResponse
		}
	}
	return kindIgnore
}

// newResponse copies the response parts of m into a Response that does not
// alias the receive buffer.
func newResponse(m *message.Message) *Response {
	r := &Response{Code: m.Code}
	if len(m.Payload) > 0 {
		r.Payload = append([]byte(nil), m.Payload...)
	}
	if len(m.Options) > 0 {
		r.Options = make(message.Options, len(m.Options))
		for i, o := range m.Options {
			r.Options[i] = message.Option{ID: o.ID, Value: append([]byte(nil), o.Value...)}
		}
	}
	if v, err := m.Options.GetBytes(OptionMessageID); err == nil {
		r.MessageID = string(v)
	}
	if cf, err := m.Options.ContentFormat(); err == nil {
		r.ContentFormat = cf
		r.hasContentFormat = true
	}
	return r
}

// decodeBlock decodes a Block1/Block2 option value (RFC 7959 §2.2).
func decodeBlock(v uint32) (blockOpt, error) {
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		return blockOpt{}, fmt.Errorf("%w: block option: %w", ErrMalformed, err)
	}
	if szx == blockwise.SZXBERT {
		return blockOpt{}, fmt.Errorf("%w: block SZX 7 (BERT) is not for UDP", ErrMalformed)
	}
	return blockOpt{num: num, more: more, szx: szx}, nil
}

// codeString formats c as "c.dd" (RFC 7252 §3).
func codeString(c codes.Code) string {
	return fmt.Sprintf("%d.%02d", uint8(c)>>5, uint8(c)&0x1f)
}
