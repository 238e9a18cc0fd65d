package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/thing"
	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Content formats the dialects use (docs/protocol.md §3.1–3.2).
const (
	cfOctets uint16 = 42
	cfJSON   uint16 = 50
	cfCBOR   uint16 = 60
)

const (
	optContentFormat = message.ContentFormat
	optAccept        = message.Accept
	optMaxAge        = message.MaxAge
)

var errPayload = errors.New("gateway: bad payload")

// contentFormat returns the request's Content-Format, def when absent, and
// false when it is not one the dialects use (→ 4.15).
func contentFormat(req *coapx.Request, def uint16) (uint16, bool) {
	v, ok := coapx.Uint(req.Options, optContentFormat)
	if !ok {
		return def, true
	}
	switch cf := uint16(v); cf {
	case cfJSON, cfCBOR, cfOctets:
		return cf, true
	}
	return 0, false
}

// accept returns the response Content-Format: the Accept option when it is
// 50, 60 or 42, the request's format when absent; false → 4.06.
func accept(req *coapx.Request, reqCF uint16) (uint16, bool) {
	v, ok := coapx.Uint(req.Options, optAccept)
	if !ok {
		if reqCF == cfCBOR {
			return cfCBOR, true
		}
		return cfJSON, true
	}
	switch cf := uint16(v); cf {
	case cfJSON, cfCBOR, cfOctets:
		return cf, true
	}
	return 0, false
}

// sniff guesses JSON or CBOR for octet-stream bodies that must be parsed.
func sniff(b []byte) uint16 {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) > 0 && b[0] == '{' {
		return cfJSON
	}
	return cfCBOR
}

var cborDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels: 16, MaxArrayElements: 4096, MaxMapPairs: 4096,
		DefaultMapType: nil, DupMapKey: cbor.DupMapKeyEnforcedAPF,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// decodeFields decodes an auth body (JSON or CBOR object) into the string
// form of each field as the device wrote it, for signing (docs/protocol.md §3.1).
// Values of excluded fields may have any type; others must be scalars.
func decodeFields(body []byte, cf uint16) (map[string]string, error) {
	raw := map[string]any{}
	switch cf {
	case cfJSON:
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: JSON: %v", errPayload, err)
		}
		if d.More() {
			return nil, fmt.Errorf("%w: trailing data after JSON object", errPayload)
		}
	case cfCBOR:
		if err := cborDec.Unmarshal(body, &raw); err != nil {
			return nil, fmt.Errorf("%w: CBOR: %v", errPayload, err)
		}
	}
	out := make(map[string]string, len(raw))
	for k, v := range raw {
		s, err := scalarString(v)
		if err != nil {
			if k == "resources" || k == "version" {
				continue // never signed; any shape accepted
			}
			return nil, fmt.Errorf("%w: field %q: %v", errPayload, k, err)
		}
		out[k] = s
	}
	return out, nil
}

// scalarString formats a decoded scalar the way the device wrote it: JSON
// numbers keep their literal text, CBOR integers are decimal.
func scalarString(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case json.Number:
		return x.String(), nil
	case bool:
		return strconv.FormatBool(x), nil
	case uint64:
		return strconv.FormatUint(x, 10), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case float64:
		if x == math.Trunc(x) && math.Abs(x) < 1e15 {
			return strconv.FormatInt(int64(x), 10), nil
		}
		return strconv.FormatFloat(x, 'f', -1, 64), nil
	case float32:
		return strconv.FormatFloat(float64(x), 'f', -1, 32), nil
	}
	return "", fmt.Errorf("not a string, number or boolean (%T)", v)
}

// thingReply decodes a publish's payload by its topic's kind (package
// thing) and renders the reply in respCF: code 200 "success" or, when the
// payload fails validation, the *thing.Error's code and message. The
// request is returned with the error (nil on success) for metrics and logs.
func thingReply(top string, payload []byte, cf, respCF uint16, at time.Time) ([]byte, *thing.Request, *thing.Error) {
	req, err := thing.Decode(top, payload, cf, at)
	if err == nil {
		return encodeReply(respCF, req.ID, req.IDIsNumber, thing.CodeSuccess, "success"), req, nil
	}
	var te *thing.Error
	if !errors.As(err, &te) { // Decode documents *Error; stay safe if that changes
		te = &thing.Error{Code: thing.CodeMalformed, Message: "invalid payload"}
	}
	return encodeReply(respCF, req.ID, req.IDIsNumber, te.Code, te.Message), req, te
}

// reply is the thing-model reply of docs/protocol.md §4, keys in wire order.
type reply struct {
	ID      any      `cbor:"id,omitempty"`
	Code    int      `cbor:"code"`
	Data    struct{} `cbor:"data"`
	Message string   `cbor:"message"`
}

// encodeReply renders the reply {"id":…,"code":…,"data":{},"message":…}
// in format cf (CBOR for 60, else JSON): id echoed as sent, a number as a
// number and a string as a string, omitted when empty. The JSON form is
// byte for byte the platform's (no spaces, this key order, "/<>&" not
// escaped); the CBOR form is a map with the same keys in the same order.
func encodeReply(cf uint16, id string, idIsNumber bool, code int, msg string) []byte {
	if cf == cfCBOR {
		r := reply{Code: code, Message: msg}
		switch {
		case id == "":
		case !idIsNumber:
			r.ID = id
		default:
			r.ID = cborNumber(id)
		}
		b, err := cbor.Marshal(r)
		if err != nil {
			return nil
		}
		return b
	}
	b := make([]byte, 0, 48+len(id)+len(msg))
	b = append(b, '{')
	if id != "" {
		b = append(b, `"id":`...)
		if idIsNumber {
			b = append(b, id...)
		} else {
			b = appendJSONString(b, id)
		}
		b = append(b, ',')
	}
	b = append(b, `"code":`...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, `,"data":{},"message":`...)
	b = appendJSONString(b, msg)
	return append(b, '}')
}

// cborNumber turns a number id's text back into a CBOR number: an integer
// when it is one, else a float.
func cborNumber(s string) any {
	if i, err := strconv.ParseInt(s, 10, 64); err == nil {
		return i
	}
	if u, err := strconv.ParseUint(s, 10, 64); err == nil {
		return u
	}
	f, _ := strconv.ParseFloat(s, 64)
	return f
}

// appendJSONString appends s as a JSON string without HTML escaping.
func appendJSONString(b []byte, s string) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(s); err != nil { // cannot fail for a string
		return append(b, `""`...)
	}
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// badRequest is 4.00 with a diagnostic payload (RFC 7252 §5.5.2).
func badRequest(err error) *coapx.Response {
	return &coapx.Response{Code: codes.BadRequest, Payload: []byte(err.Error())}
}
