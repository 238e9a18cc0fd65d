package gateway

import (
	"bytes"
	"encoding/json"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// isNTPRequest reports whether path (after "topic") is the device's NTP
// request topic /ext/ntp/{pk}/{dk}/request (docs/protocol.md §4).
func isNTPRequest(path []string) bool {
	return len(path) == 5 && path[0] == "ext" && path[1] == "ntp" && path[4] == "request"
}

// ntpReply is the answer to an NTP request: {"deviceSendTime",
// "serverRecvTime","serverSendTime"}, times in milliseconds as the vendor's
// NTP topic defines them. deviceSendTime is echoed as the device sent it; the
// server times are strings (the vendor's form, which its SDK parses) unless
// the device sent a number, then numbers. A payload without deviceSendTime
// gets the server times alone. JSON, or CBOR for respCF 60.
func ntpReply(payload []byte, cf, respCF uint16, recv, send time.Time) []byte {
	dev, numeric := deviceSendTime(payload, cf)
	stamp := func(t time.Time) any {
		ms := t.UnixMilli()
		if numeric {
			return ms
		}
		return strconv.FormatInt(ms, 10)
	}
	r := ntpAnswer{DeviceSendTime: dev, ServerRecvTime: stamp(recv), ServerSendTime: stamp(send)}
	var (
		b   []byte
		err error
	)
	if respCF == cfCBOR {
		b, err = cbor.Marshal(r)
	} else {
		b, err = json.Marshal(r)
	}
	if err != nil {
		return nil
	}
	return b
}

type ntpAnswer struct {
	DeviceSendTime any `json:"deviceSendTime,omitempty" cbor:"deviceSendTime,omitempty"`
	ServerRecvTime any `json:"serverRecvTime" cbor:"serverRecvTime"`
	ServerSendTime any `json:"serverSendTime" cbor:"serverSendTime"`
}

// deviceSendTime returns the request's deviceSendTime as sent (a string or
// an integer), and whether it was a number; nil when absent or not a
// scalar time.
func deviceSendTime(payload []byte, cf uint16) (any, bool) {
	if cf == cfOctets || cf == 0 {
		cf = sniff(payload)
	}
	var v any
	switch cf {
	case cfJSON:
		var m map[string]json.RawMessage
		d := json.NewDecoder(bytes.NewReader(payload))
		if d.Decode(&m) != nil {
			return nil, false
		}
		raw, ok := m["deviceSendTime"]
		if !ok {
			return nil, false
		}
		dd := json.NewDecoder(bytes.NewReader(raw))
		dd.UseNumber()
		if dd.Decode(&v) != nil {
			return nil, false
		}
	case cfCBOR:
		var m map[string]any
		if cborDec.Unmarshal(payload, &m) != nil {
			return nil, false
		}
		v = m["deviceSendTime"]
	}
	switch x := v.(type) {
	case string:
		if len(x) > 0 && len(x) <= 20 && isDigits(x) {
			return x, false
		}
	case json.Number:
		if n, err := x.Int64(); err == nil {
			return n, true
		}
	case uint64:
		return x, true
	case int64:
		return x, true
	}
	return nil, false
}

func isDigits(s string) bool {
	for i := range len(s) {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}
