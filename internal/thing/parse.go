package thing

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"math"
	"math/big"
	"reflect"
	"strconv"
	"strings"

	"github.com/fxamacker/cbor/v2"
)

// Content formats (RFC 7252 §12.3, RFC 8949).
const (
	cfJSON uint16 = 50
	cfCBOR uint16 = 60
)

var cborDec = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		MaxNestedLevels:  MaxDepth,
		MaxArrayElements: 4 * MaxRecords,
		MaxMapPairs:      4 * MaxRecords,
		DefaultMapType:   reflect.TypeOf(map[string]any(nil)), // text keys only
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		TagsMd:           cbor.TagsForbidden,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
	return dm
}()

// parse decodes payload into its root object. cf 50 is JSON, 60 CBOR;
// anything else is sniffed: JSON when the first non-blank byte is '{' or
// '[', else CBOR.
func parse(payload []byte, cf uint16) (map[string]any, *Error) {
	if len(bytes.TrimSpace(payload)) == 0 {
		return nil, malformed("payload is empty; want a JSON object or CBOR map")
	}
	if cf != cfJSON && cf != cfCBOR {
		cf = cfCBOR
		if b := bytes.TrimLeft(payload, " \t\r\n"); b[0] == '{' || b[0] == '[' {
			cf = cfJSON
		}
	}
	if cf == cfJSON {
		return parseJSON(payload)
	}
	var v any
	if err := cborDec.Unmarshal(payload, &v); err != nil {
		var deep *cbor.MaxNestedLevelError
		if errors.As(err, &deep) {
			return nil, malformed("payload nests deeper than %d levels", MaxDepth)
		}
		return nil, malformed("payload is not valid CBOR: %s", strings.TrimPrefix(err.Error(), "cbor: "))
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, malformed("payload is not a CBOR map")
	}
	return m, nil
}

func parseJSON(payload []byte) (map[string]any, *Error) {
	if !depthWithin(payload, MaxDepth) {
		return nil, malformed("payload nests deeper than %d levels", MaxDepth)
	}
	d := json.NewDecoder(bytes.NewReader(payload))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return nil, malformed("payload is not valid JSON: unexpected end of input")
		}
		return nil, malformed("payload is not valid JSON: %s", err.Error())
	}
	if len(bytes.TrimSpace(payload[d.InputOffset():])) != 0 {
		return nil, malformed("payload is not valid JSON: data after the top-level value")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, malformed("payload is not a JSON object")
	}
	return m, nil
}

// depthWithin reports whether the JSON text nests objects and arrays at most
// max levels deep. It looks only at brackets outside strings, so it is
// cheap and runs before the decoder allocates anything.
func depthWithin(b []byte, max int) bool {
	depth, inString, escaped := 0, false, false
	for _, c := range b {
		switch {
		case inString:
			switch {
			case escaped:
				escaped = false
			case c == '\\':
				escaped = true
			case c == '"':
				inString = false
			}
		case c == '"':
			inString = true
		case c == '{' || c == '[':
			if depth++; depth > max {
				return false
			}
		case c == '}' || c == ']':
			depth--
		}
	}
	return true
}

// normalize converts a decoded value in place to the Record.Value types:
// JSON numbers to int64 (integer literals that fit) or float64, CBOR
// integers to int64 or float64. It refuses non-finite numbers and CBOR byte
// strings. The returned string says what is wrong, for an error message.
func normalize(v any) (any, string) {
	switch x := v.(type) {
	case nil, string, bool, int64:
		return x, ""
	case json.Number:
		s := x.String()
		if !strings.ContainsAny(s, ".eE") {
			if i, err := strconv.ParseInt(s, 10, 64); err == nil {
				return i, ""
			}
		}
		f, err := strconv.ParseFloat(s, 64)
		if err != nil || math.IsInf(f, 0) {
			return nil, "number out of range"
		}
		return f, ""
	case uint64:
		if x <= math.MaxInt64 {
			return int64(x), ""
		}
		return float64(x), ""
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, "not a finite number"
		}
		return x, ""
	case float32:
		return normalize(float64(x))
	case big.Int:
		f, _ := new(big.Float).SetInt(&x).Float64()
		return normalize(f)
	case *big.Int:
		f, _ := new(big.Float).SetInt(x).Float64()
		return normalize(f)
	case map[string]any:
		for _, k := range sortedKeys(x) {
			n, why := normalize(x[k])
			if why != "" {
				return nil, quote(k) + ": " + why
			}
			x[k] = n
		}
		return x, ""
	case []any:
		for i := range x {
			n, why := normalize(x[i])
			if why != "" {
				return nil, "[" + strconv.Itoa(i) + "]: " + why
			}
			x[i] = n
		}
		return x, ""
	case []byte:
		return nil, "CBOR byte string not accepted (send a text string)"
	}
	return nil, "unsupported type " + reflect.TypeOf(v).String()
}

// number returns v as a finite float64 if it is a number.
func number(v any) (float64, bool) {
	n, why := normalize(v)
	if why != "" {
		return 0, false
	}
	switch x := n.(type) {
	case int64:
		return float64(x), true
	case float64:
		return x, true
	}
	return 0, false
}

// maxQuoted bounds how much of a device-chosen name goes into a message.
const maxQuoted = 64

// quote renders a name for an error message, shortened to maxQuoted bytes.
func quote(s string) string {
	if len(s) > maxQuoted {
		cut := maxQuoted
		for cut > 0 && s[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		s = s[:cut] + "…"
	}
	return strconv.Quote(s)
}
