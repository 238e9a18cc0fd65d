package gateway

import (
	"encoding/json"
	"testing"

	"github.com/coapgate/coapgate/internal/auth/devsign"
	"github.com/fxamacker/cbor/v2"
)

func TestDecodeFieldsKeepsDeviceNumberText(t *testing.T) {
	tests := []struct {
		name string
		body []byte
		cf   uint16
		want map[string]string
	}{
		{"json seq as string", []byte(`{"productKey":"p","deviceName":"d","seq":"2989","sign":"s"}`), cfJSON,
			map[string]string{"productKey": "p", "deviceName": "d", "seq": "2989", "sign": "s"}},
		{"json seq as number", []byte(`{"productKey":"p","seq":2989,"timestamp":1700000000000}`), cfJSON,
			map[string]string{"productKey": "p", "seq": "2989", "timestamp": "1700000000000"}},
		{"json resources array skipped", []byte(`{"productKey":"p","resources":["a"]}`), cfJSON,
			map[string]string{"productKey": "p"}},
		{"cbor ints and strings", mustCBOR(t, map[string]any{"productKey": "p", "seq": 2989, "ackMode": 0}), cfCBOR,
			map[string]string{"productKey": "p", "seq": "2989", "ackMode": "0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeFields(tt.body, tt.cf)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
			for k, v := range tt.want {
				if got[k] != v {
					t.Fatalf("%s = %q, want %q", k, got[k], v)
				}
			}
		})
	}
	for _, bad := range []string{`{"productKey":{"x":1}}`, `[1,2]`, `{"a":1} {"b":2}`, `{`, ``} {
		if _, err := decodeFields([]byte(bad), cfJSON); err == nil {
			t.Errorf("decodeFields(%q) accepted", bad)
		}
	}
}

// The §3.5 vector signed over fields decoded from a CBOR body with seq as a
// number and from JSON with seq as a string give the same signature.
func TestSignOverDecodedFieldsMatchesVector(t *testing.T) {
	const ds = "t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56"
	bodies := map[string]struct {
		b  []byte
		cf uint16
	}{
		"json string seq": {[]byte(`{"productKey":"a1MZxOdcBnO","deviceName":"test_01","clientId":"a1MZxOdcBnO.test_01","seq":"2989","sign":"x","signmethod":"hmacmd5"}`), cfJSON},
		"cbor number seq": {mustCBOR(t, map[string]any{"productKey": "a1MZxOdcBnO", "deviceName": "test_01", "clientId": "a1MZxOdcBnO.test_01", "seq": 2989, "sign": "x"}), cfCBOR},
	}
	for name, in := range bodies {
		f, err := decodeFields(in.b, in.cf)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := devsign.Sign(devsign.HMACMD5, ds, f)
		if got != "199c4a316febb5f5780dffa897355bc6" {
			t.Errorf("%s: sign %s", name, got)
		}
	}
}

func mustCBOR(t *testing.T, v any) []byte {
	t.Helper()
	b, err := cbor.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestReplyBytes(t *testing.T) {
	tests := []struct {
		name   string
		jsonID json.RawMessage
		cborID any
		want   string
	}{
		{"string id", json.RawMessage(`"123"`), nil, `{"id":"123","code":200,"data":{},"message":"success"}`},
		{"number id", json.RawMessage(`123`), nil, `{"id":123,"code":200,"data":{},"message":"success"}`},
		{"no id (raw)", nil, nil, `{"code":200,"data":{},"message":"success"}`},
		{"cbor id to json", nil, "abc", `{"id":"abc","code":200,"data":{},"message":"success"}`},
	}
	for _, tt := range tests {
		if got := string(encodeReply(cfJSON, tt.jsonID, tt.cborID)); got != tt.want {
			t.Errorf("%s: %s, want %s", tt.name, got, tt.want)
		}
	}
	var r map[string]any
	if err := cbor.Unmarshal(encodeReply(cfCBOR, json.RawMessage(`"7"`), nil), &r); err != nil || r["id"] != "7" || r["message"] != "success" {
		t.Fatalf("CBOR reply %v %v", r, err)
	}
}

// FuzzAuthPayload: decoding never panics; whatever decodes has only scalar
// string values and decodes identically a second time.
func FuzzAuthPayload(f *testing.F) {
	f.Add([]byte(`{"productKey":"a1MZxOdcBnO","deviceName":"test_01","clientId":"c","sign":"s","seq":2989}`), true)
	f.Add(mustCBORf(f, map[string]any{"productKey": "p", "deviceName": "d", "sign": "s", "seq": 1}), false)
	f.Add([]byte(`{"resources":[1,{"a":2}],"version":{"x":1}}`), true)
	f.Fuzz(func(t *testing.T, body []byte, isJSON bool) {
		cf := cfCBOR
		if isJSON {
			cf = cfJSON
		}
		a, err := decodeFields(body, cf)
		if err != nil {
			return
		}
		b, err := decodeFields(body, cf)
		if err != nil || len(a) != len(b) {
			t.Fatal("decode not deterministic")
		}
		for k, v := range a {
			if b[k] != v {
				t.Fatalf("field %q: %q vs %q", k, v, b[k])
			}
		}
		// Signing whatever decoded must not fail.
		if _, err := devsign.Sign(devsign.HMACSHA256, "secret", a); err != nil {
			t.Fatal(err)
		}
	})
}

func mustCBORf(f *testing.F, v any) []byte {
	b, err := cbor.Marshal(v)
	if err != nil {
		f.Fatal(err)
	}
	return b
}
