package forward

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgate/coapgate/internal/message"
)

// Content-Format numbers (RFC 7252 §12.3, RFC 8949).
const (
	cfJSON = 50
	cfCBOR = 60
)

// Envelope is the JSON document delivered for one log entry. Payload holds
// the decoded JSON or CBOR payload as JSON; a payload that does not decode
// is sent as PayloadBase64 instead.
//
// In JSON the log ID is "id" as a decimal string, the form the API gives a
// message's id, and "logId" as a number; decoding accepts a number in "id"
// too (envelopes stored as dead letters by earlier versions).
type Envelope struct {
	ID            int64           `json:"-"`
	Topic         string          `json:"topic"`
	ProductKey    string          `json:"productKey"`
	DeviceKey     string          `json:"deviceKey"`
	ReceivedAt    time.Time       `json:"receivedAt"`
	Transport     string          `json:"transport"`
	ContentFormat uint16          `json:"contentFormat"`
	Payload       json.RawMessage `json:"payload,omitempty"`
	PayloadBase64 []byte          `json:"payloadBase64,omitempty"`
}

// MarshalJSON writes ID as "id" (string) and "logId" (number).
func (e Envelope) MarshalJSON() ([]byte, error) {
	type plain Envelope
	return json.Marshal(struct {
		ID    string `json:"id"`
		LogID int64  `json:"logId"`
		plain
	}{strconv.FormatInt(e.ID, 10), e.ID, plain(e)})
}

// UnmarshalJSON reads "id" as a string or a number ("logId" when "id" is
// absent).
func (e *Envelope) UnmarshalJSON(b []byte) error {
	type plain Envelope
	v := struct {
		ID    json.RawMessage `json:"id"`
		LogID *int64          `json:"logId"`
		*plain
	}{plain: (*plain)(e)}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	switch {
	case len(v.ID) > 0 && v.ID[0] == '"':
		var s string
		if err := json.Unmarshal(v.ID, &s); err != nil {
			return err
		}
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return fmt.Errorf("envelope id %q: %w", s, err)
		}
		e.ID = id
	case len(v.ID) > 0 && string(v.ID) != "null":
		if err := json.Unmarshal(v.ID, &e.ID); err != nil {
			return fmt.Errorf("envelope id: %w", err)
		}
	case v.LogID != nil:
		e.ID = *v.LogID
	}
	return nil
}

// cborDec decodes CBOR maps with string keys into map[string]any, the
// shape JSON decoding gives, so conditions see one form.
var cborDec, _ = cbor.DecOptions{
	DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
	MaxNestedLevels: 32,
}.DecMode()

// decodePayload decodes m's payload: CBOR when its Content-Format says
// so, else JSON when it is valid JSON. ok is false when it does not decode
// (binary payloads). raw is the value as compact JSON.
func decodePayload(m *message.Message) (v any, raw json.RawMessage, ok bool) {
	if len(m.Payload) == 0 {
		return nil, nil, false
	}
	if m.ContentFormat == cfCBOR {
		if err := cborDec.Unmarshal(m.Payload, &v); err != nil {
			return nil, nil, false
		}
		b, err := json.Marshal(v)
		if err != nil { // e.g. NaN, or map keys that are not strings
			return nil, nil, false
		}
		// Round-trip so conditions see JSON's types (float64, string).
		v = nil
		_ = json.Unmarshal(b, &v)
		return v, b, true
	}
	if err := json.Unmarshal(m.Payload, &v); err != nil {
		return nil, nil, false
	}
	var b bytes.Buffer
	if err := json.Compact(&b, m.Payload); err != nil {
		return nil, nil, false
	}
	return v, b.Bytes(), true
}

// newEnvelope builds the envelope of m; raw/ok are decodePayload's.
func newEnvelope(m *message.Message, raw json.RawMessage, ok bool) Envelope {
	e := Envelope{
		ID: m.ID, Topic: m.Topic, ProductKey: m.ProductKey, DeviceKey: m.DeviceKey,
		ReceivedAt: m.ReceivedAt.UTC(), Transport: m.Transport, ContentFormat: m.ContentFormat,
	}
	if ok {
		e.Payload = raw
	} else {
		e.PayloadBase64 = m.Payload
		if e.PayloadBase64 == nil {
			e.PayloadBase64 = []byte{}
		}
	}
	return e
}

// Delivery is one envelope on its way to one action.
type Delivery struct {
	RuleID   string
	Envelope Envelope
	Body     []byte // Envelope as JSON
}

// PayloadJSON is the payload as a JSON value: the decoded payload, or
// {"payloadBase64": "..."} when it did not decode.
func (d *Delivery) PayloadJSON() []byte {
	if len(d.Envelope.Payload) > 0 {
		return d.Envelope.Payload
	}
	b, _ := json.Marshal(struct {
		P []byte `json:"payloadBase64"`
	}{d.Envelope.PayloadBase64})
	return b
}

// newDelivery marshals e for rule.
func newDelivery(ruleID string, e Envelope) (*Delivery, error) {
	b, err := json.Marshal(e)
	if err != nil {
		return nil, err
	}
	return &Delivery{RuleID: ruleID, Envelope: e, Body: b}, nil
}
