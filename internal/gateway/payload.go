package gateway

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Content formats the dialects use (PROTOCOL.md §3.1–3.2).
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
// form of each field as the device wrote it, for signing (PROTOCOL.md §3.1).
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

// thingID validates a thing-model request body (a JSON or CBOR object) and
// returns its "id" for the reply: raw JSON for JSON bodies, the decoded
// value for CBOR. A missing id is not an error.
func thingID(body []byte, cf uint16) (jsonID json.RawMessage, cborID any, err error) {
	switch cf {
	case cfJSON:
		var v struct {
			ID json.RawMessage `json:"id"`
		}
		if err := json.Unmarshal(body, &v); err != nil {
			return nil, nil, fmt.Errorf("%w: want a JSON object: %v", errPayload, err)
		}
		return v.ID, nil, nil
	case cfCBOR:
		var v map[string]any
		if err := cborDec.Unmarshal(body, &v); err != nil {
			return nil, nil, fmt.Errorf("%w: want a CBOR map with text keys: %v", errPayload, err)
		}
		return nil, v["id"], nil
	}
	return nil, nil, nil
}

// reply is the thing-model reply of PROTOCOL.md §4.
type reply struct {
	ID      any      `json:"id,omitempty" cbor:"id,omitempty"`
	Code    int      `json:"code" cbor:"code"`
	Data    struct{} `json:"data" cbor:"data"`
	Message string   `json:"message" cbor:"message"`
}

// encodeReply renders the success reply in format cf, echoing id.
func encodeReply(cf uint16, jsonID json.RawMessage, cborID any) []byte {
	if cf == cfCBOR {
		r := reply{Code: 200, Message: "success"}
		if cborID != nil {
			r.ID = cborID
		} else if len(jsonID) > 0 {
			var v any
			if json.Unmarshal(jsonID, &v) == nil {
				r.ID = v
			}
		}
		b, err := cbor.Marshal(r)
		if err != nil {
			return nil
		}
		return b
	}
	// JSON, byte for byte as the platform sends it.
	var b bytes.Buffer
	b.WriteString(`{`)
	switch {
	case len(jsonID) > 0:
		b.WriteString(`"id":`)
		b.Write(jsonID)
		b.WriteString(`,`)
	case cborID != nil:
		if j, err := json.Marshal(cborID); err == nil {
			b.WriteString(`"id":`)
			b.Write(j)
			b.WriteString(`,`)
		}
	}
	b.WriteString(`"code":200,"data":{},"message":"success"}`)
	return b.Bytes()
}

// badRequest is 4.00 with a diagnostic payload (RFC 7252 §5.5.2).
func badRequest(err error) *coapx.Response {
	return &coapx.Response{Code: codes.BadRequest, Payload: []byte(err.Error())}
}
