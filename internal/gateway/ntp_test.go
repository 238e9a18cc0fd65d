package gateway

import (
	"encoding/json"
	"strconv"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

func TestNTPReply(t *testing.T) {
	recv, send := time.UnixMilli(1700000000123), time.UnixMilli(1700000000125)
	cborReq, _ := cbor.Marshal(map[string]any{"deviceSendTime": uint64(5)})
	tests := []struct {
		name       string
		payload    []byte
		cf, respCF uint16
		want       string // JSON; CBOR replies are checked decoded
	}{
		{"SDK string", []byte(`{"deviceSendTime":"1571724098000"}`), cfJSON, cfJSON,
			`{"deviceSendTime":"1571724098000","serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`},
		{"number", []byte(`{"deviceSendTime":42}`), cfJSON, cfJSON,
			`{"deviceSendTime":42,"serverRecvTime":1700000000123,"serverSendTime":1700000000125}`},
		{"octets sniffed", []byte(`{"deviceSendTime":"1"}`), cfOctets, cfJSON,
			`{"deviceSendTime":"1","serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`},
		{"absent", []byte(`{"id":"1"}`), cfJSON, cfJSON,
			`{"serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`},
		{"not a time", []byte(`{"deviceSendTime":"12a"}`), cfJSON, cfJSON,
			`{"serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`},
		{"garbage", []byte(`{{`), cfJSON, cfJSON,
			`{"serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`},
		{"CBOR number", cborReq, cfCBOR, cfCBOR, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ntpReply(tt.payload, tt.cf, tt.respCF, recv, send)
			if tt.respCF == cfCBOR {
				var m map[string]any
				if err := cbor.Unmarshal(got, &m); err != nil {
					t.Fatal(err)
				}
				if m["deviceSendTime"] != uint64(5) || m["serverRecvTime"] != uint64(1700000000123) || m["serverSendTime"] != uint64(1700000000125) {
					t.Fatalf("CBOR reply %v", m)
				}
				return
			}
			if string(got) != tt.want {
				t.Fatalf("got  %s\nwant %s", got, tt.want)
			}
		})
	}
}

// FuzzNTPReply: any request payload gets a reply that decodes, carries the
// two server times, and echoes deviceSendTime only as a time (digits or an
// integer).
func FuzzNTPReply(f *testing.F) {
	f.Add([]byte(`{"deviceSendTime":"1571724098000"}`), false)
	f.Add([]byte(`{"deviceSendTime":42}`), false)
	f.Add([]byte(`{"deviceSendTime":-1e400}`), false)
	b, _ := cbor.Marshal(map[string]any{"deviceSendTime": "7"})
	f.Add(b, true)
	recv, send := time.UnixMilli(1700000000123), time.UnixMilli(1700000000125)
	f.Fuzz(func(t *testing.T, payload []byte, isCBOR bool) {
		cf := cfJSON
		if isCBOR {
			cf = cfCBOR
		}
		got := ntpReply(payload, cf, cf, recv, send)
		var m map[string]any
		var err error
		if isCBOR {
			err = cbor.Unmarshal(got, &m)
		} else {
			err = json.Unmarshal(got, &m)
		}
		if err != nil {
			t.Fatalf("reply %q does not decode: %v", got, err)
		}
		if len(m) < 2 || len(m) > 3 || m["serverRecvTime"] == nil || m["serverSendTime"] == nil {
			t.Fatalf("reply %v", m)
		}
		switch v := m["deviceSendTime"].(type) {
		case nil:
		case string:
			if _, err := strconv.ParseUint(v, 10, 64); err != nil && len(v) <= 20 {
				for _, c := range v {
					if c < '0' || c > '9' {
						t.Fatalf("deviceSendTime %q echoed", v)
					}
				}
			}
		case float64, uint64, int64:
		default:
			t.Fatalf("deviceSendTime of type %T", v)
		}
	})
}
