package sdk

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
)

// FuzzParseResponse feeds arbitrary datagrams through the SDK's receive path
// (decode, classify, copy into a Response, decode the reply) and checks
// properties, not only the absence of panics. Seeds: testdata/fuzz/FuzzParseResponse.
func FuzzParseResponse(f *testing.F) {
	f.Add([]byte{0x64, 0x44, 0x12, 0x34, 1, 2, 3, 4, 0xe2, 0x07, 0x1d, '4', '2', 0xff, '{', '}'})
	f.Fuzz(func(t *testing.T, data []byte) {
		orig := bytes.Clone(data)
		m, err := decodeMessage(data)
		if err != nil {
			return
		}
		if !bytes.Equal(data, orig) {
			t.Fatal("decode modified its input")
		}
		if !message.ValidateMID(m.MessageID) || len(m.Token) > message.MaxTokenSize {
			t.Fatalf("decoded MID %d / token length %d out of range", m.MessageID, len(m.Token))
		}

		// Round trip: what we decoded re-encodes and decodes to the same message.
		enc, err := encodeMessage(m)
		if err != nil {
			t.Fatalf("re-encode a decoded message: %v", err)
		}
		m2, err := decodeMessage(enc)
		if err != nil {
			t.Fatalf("decode a re-encoded message: %v", err)
		}
		if m2.Type != m.Type || m2.Code != m.Code || m2.MessageID != m.MessageID ||
			!bytes.Equal(m2.Token, m.Token) || !bytes.Equal(m2.Payload, m.Payload) || len(m2.Options) != len(m.Options) {
			t.Fatalf("round trip changed the message:\n%v\n%v", m.String(), m2.String())
		}
		for i := range m.Options {
			if m.Options[i].ID != m2.Options[i].ID || !bytes.Equal(m.Options[i].Value, m2.Options[i].Value) {
				t.Fatalf("round trip changed option %d", i)
			}
		}

		switch classify(&m) {
		case kindPiggybacked, kindConResponse, kindNonResponse:
		default:
			return
		}
		r := newResponse(&m)
		if !isSuccess(r.Code) && r.Code>>5 < 4 {
			t.Fatalf("response code %v classified as a response", r.Code)
		}
		if !bytes.Equal(r.Payload, m.Payload) || len(r.Options) != len(m.Options) {
			t.Fatal("Response differs from the message")
		}
		if v, err := m.Options.GetBytes(OptionMessageID); err == nil && r.MessageID != string(v) {
			t.Fatalf("MessageID %q, option 2090 %q", r.MessageID, v)
		}
		// The Response must not alias the datagram.
		for i := range data {
			data[i] ^= 0xff
		}
		if !bytes.Equal(r.Payload, m2.Payload) {
			t.Fatal("Response payload aliases the datagram")
		}
		for i, o := range r.Options {
			if !bytes.Equal(o.Value, m2.Options[i].Value) {
				t.Fatal("Response options alias the datagram")
			}
		}
		if !isSuccess(r.Code) {
			_ = statusError(r).Error()
		}
		checkReply(t, r.Payload, r.hasContentFormat && r.ContentFormat == CBOR)
	})
}

// FuzzDecodeReply checks the thing-model reply decoder on JSON and CBOR input.
// Seeds: testdata/fuzz/FuzzDecodeReply.
func FuzzDecodeReply(f *testing.F) {
	f.Add([]byte(`{"id":"123","code":200,"data":{},"message":"success"}`), false)
	f.Add([]byte{0xa2, 0x62, 'i', 'd', 0x18, 42, 0x64, 'c', 'o', 'd', 'e', 0x18, 200}, true)
	f.Fuzz(func(t *testing.T, payload []byte, isCBOR bool) {
		checkReply(t, payload, isCBOR)
	})
}

// checkReply asserts that a decoded reply survives a JSON round trip.
func checkReply(t *testing.T, payload []byte, isCBOR bool) {
	t.Helper()
	rep, err := decodeReply(payload, isCBOR)
	if err != nil {
		return
	}
	if len(rep.Data) > 0 && !json.Valid(rep.Data) {
		t.Fatalf("reply data is not JSON: %q", rep.Data)
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatalf("marshal decoded reply: %v", err)
	}
	back, err := decodeReply(b, false)
	if err != nil {
		t.Fatalf("decode re-marshalled reply %s: %v", b, err)
	}
	if back.ID != rep.ID || back.Code != rep.Code || back.Message != rep.Message {
		t.Fatalf("reply round trip: %+v != %+v", back, rep)
	}
}
