package gateway

import (
	"encoding/hex"
	"testing"
	"time"

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

// TestReplyGolden: the reply bytes for a publish, through thing.Decode, byte
// for byte. JSON is the platform's exact format; the CBOR hex was built by
// hand from RFC 8949 (map, text keys in order id, code, data, message).
func TestReplyGolden(t *testing.T) {
	const (
		prop = "/sys/pk/dk/thing/event/property/post"
		mp   = "/sys/pk/dk/thing/measurepoint/post"
	)
	at := time.UnixMilli(1700000000000)
	tests := []struct {
		name    string
		topic   string
		payload []byte
		cf      uint16
		respCF  uint16
		want    string // JSON text, or hex for CBOR replies
		code    int    // thing error code, 0 for success
	}{
		{"string id", prop, []byte(`{"id":"123","params":{"a":1}}`), cfJSON, cfJSON,
			`{"id":"123","code":200,"data":{},"message":"success"}`, 0},
		{"number id", prop, []byte(`{"id":123,"params":{"a":1}}`), cfJSON, cfJSON,
			`{"id":123,"code":200,"data":{},"message":"success"}`, 0},
		{"no id", prop, []byte(`{"params":{"a":1}}`), cfJSON, cfJSON,
			`{"code":200,"data":{},"message":"success"}`, 0},
		{"raw topic", "/sys/pk/dk/thing/model/up_raw", []byte{0, 1, 2}, cfOctets, cfJSON,
			`{"code":200,"data":{},"message":"success"}`, 0},
		{"custom topic", "/pk/dk/user/data", []byte("hello"), cfOctets, cfJSON,
			`{"code":200,"data":{},"message":"success"}`, 0},
		{"id with slash and html characters", prop, []byte(`{"id":"a/b<c>&","params":{}}`), cfJSON, cfJSON,
			`{"id":"a/b<c>&","code":200,"data":{},"message":"success"}`, 0},
		{"CBOR request, JSON reply", prop, mustCBOR(t, map[string]any{"id": "abc", "params": map[string]any{}}), cfCBOR, cfJSON,
			`{"id":"abc","code":200,"data":{},"message":"success"}`, 0},
		{"unparsable JSON", prop, []byte(`{"id":`), cfJSON, cfJSON,
			`{"code":400,"data":{},"message":"payload is not valid JSON: unexpected end of input"}`, 400},
		{"not an object", prop, []byte(`[1]`), cfJSON, cfJSON,
			`{"code":400,"data":{},"message":"payload is not a JSON object"}`, 400},
		{"params missing, id echoed", prop, []byte(`{"id":"9"}`), cfJSON, cfJSON,
			`{"id":"9","code":460,"data":{},"message":"params is missing"}`, 460},
		{"number id echoed on error", mp, []byte(`{"id":9,"params":{"measurepoints":{"t":1},"time":"x"}}`), cfJSON, cfJSON,
			`{"id":9,"code":460,"data":{},"message":"params.time must be a number (unix milliseconds)"}`, 460},
		{"name with quotes escaped", mp, []byte(`{"params":{"measurepoints":{"a\"<b":null}}}`), cfJSON, cfJSON,
			`{"code":460,"data":{},"message":"measure point \"a\\\"<b\": value is null"}`, 460},
		{"CBOR success", prop, mustCBOR(t, map[string]any{"id": "1", "params": map[string]any{"a": 1}}), cfCBOR, cfCBOR,
			"a4626964613164636f646518c86464617461a0676d6573736167656773756363657373", 0},
		{"CBOR success, number id from JSON", prop, []byte(`{"id":12,"params":{}}`), cfJSON, cfCBOR,
			"a46269640c64636f646518c86464617461a0676d6573736167656773756363657373", 0},
		{"CBOR error", prop, mustCBOR(t, map[string]any{"params": 1}), cfCBOR, cfCBOR,
			"a364636f64651901cc6464617461a0676d6573736167657818706172616d73206d75737420626520616e206f626a656374", 460},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body, req, terr := thingReply(tt.topic, tt.payload, tt.cf, tt.respCF, at)
			if req == nil {
				t.Fatal("no request")
			}
			got := string(body)
			if tt.respCF == cfCBOR {
				got = hex.EncodeToString(body)
			}
			if got != tt.want {
				t.Fatalf("reply\n got %s\nwant %s", got, tt.want)
			}
			if (terr == nil) != (tt.code == 0) || (terr != nil && terr.Code != tt.code) {
				t.Fatalf("thing error %v, want code %d", terr, tt.code)
			}
			// The reply is the same every time (no map order, no clock).
			if again, _, _ := thingReply(tt.topic, tt.payload, tt.cf, tt.respCF, at); string(again) != string(body) {
				t.Fatal("reply bytes differ between two calls")
			}
		})
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
