package thing

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

var (
	recv = time.Date(2024, 5, 1, 12, 0, 0, 0, time.UTC)
	t0   = time.UnixMilli(1700000000000).UTC()
	t1   = time.UnixMilli(1700000001000).UTC()
)

const (
	mpTopic    = "/sys/pk/dk/thing/measurepoint/post"
	batchTopic = "/sys/pk/dk/thing/measurepoint/post/batch"
	propTopic  = "/sys/pk/dk/thing/event/property/post"
	eventTopic = "/sys/pk/dk/thing/event/alarm/post"
)

// toCBOR re-encodes a JSON document as CBOR, JSON integers as CBOR
// integers and other numbers as floats, so one table serves both formats.
func toCBOR(t *testing.T, js string) []byte {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(js))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("test JSON %s: %v", js, err)
	}
	b, err := cbor.Marshal(jsonToCBORValue(v))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func jsonToCBORValue(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := strconv.ParseInt(x.String(), 10, 64); err == nil {
			return i
		}
		f, _ := strconv.ParseFloat(x.String(), 64)
		return f
	case map[string]any:
		for k, e := range x {
			x[k] = jsonToCBORValue(e)
		}
	case []any:
		for i, e := range x {
			x[i] = jsonToCBORValue(e)
		}
	}
	return v
}

type decodeCase struct {
	name    string
	topic   string
	payload string // JSON; also run as CBOR unless jsonOnly
	// want
	kind     Kind
	id       string
	idNum    bool
	method   string
	records  []Record
	reply    *Reply
	code     int    // 0: success
	msg      string // substring of the error message
	jsonOnly bool
}

func TestDecodeKinds(t *testing.T) {
	cases := []decodeCase{
		// measure points (dialect E)
		{name: "measure points with time and quality", topic: mpTopic,
			payload: `{"id":"1","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":21.5,"hum":{"value":40,"quality":0},"on":true,"label":"x"},"time":1700000000000}}`,
			kind:    KindMeasurePointPost, id: "1", method: "thing.measurepoint.post",
			records: []Record{
				{Kind: RecordPoint, Name: "hum", Value: int64(40), Time: t0, Quality: int64(0)},
				{Kind: RecordPoint, Name: "label", Value: "x", Time: t0},
				{Kind: RecordPoint, Name: "on", Value: true, Time: t0},
				{Kind: RecordPoint, Name: "temp", Value: 21.5, Time: t0},
			}},
		{name: "measure points without time use receivedAt; struct and array values", topic: mpTopic,
			payload: `{"id":7,"params":{"measurepoints":{"pos":{"x":1,"y":2.5},"curr":["1.02",2]}}}`,
			kind:    KindMeasurePointPost, id: "7", idNum: true,
			records: []Record{
				{Kind: RecordPoint, Name: "curr", Value: []any{"1.02", int64(2)}, Time: recv},
				{Kind: RecordPoint, Name: "pos", Value: map[string]any{"x": int64(1), "y": 2.5}, Time: recv},
			}},
		{name: "per-point time overrides params time", topic: mpTopic,
			payload: `{"params":{"measurepoints":{"a":{"value":1,"time":1700000001000},"b":2},"time":1700000000000}}`,
			kind:    KindMeasurePointPost,
			records: []Record{
				{Kind: RecordPoint, Name: "a", Value: int64(1), Time: t1},
				{Kind: RecordPoint, Name: "b", Value: int64(2), Time: t0},
			}},
		{name: "measure points: float keeps float-ness", topic: mpTopic,
			payload: `{"params":{"measurepoints":{"a":40.0}}}`, jsonOnly: true,
			kind: KindMeasurePointPost, records: []Record{{Kind: RecordPoint, Name: "a", Value: 40.0, Time: recv}}},
		{name: "measure points: no params", topic: mpTopic, payload: `{"id":"9"}`,
			kind: KindMeasurePointPost, id: "9", code: CodeBadParams, msg: "params is missing"},
		{name: "measure points: params not an object", topic: mpTopic, payload: `{"id":"9","params":[1]}`,
			kind: KindMeasurePointPost, id: "9", code: CodeBadParams, msg: "params must be an object"},
		{name: "measure points: no measurepoints", topic: mpTopic, payload: `{"id":"9","params":{"temp":1}}`,
			kind: KindMeasurePointPost, id: "9", code: CodeBadParams, msg: "params.measurepoints is missing"},
		{name: "measure points: time a string", topic: mpTopic, payload: `{"id":"9","params":{"measurepoints":{"a":1},"time":"1700000000000"}}`,
			kind: KindMeasurePointPost, id: "9", code: CodeBadParams, msg: "params.time must be a number"},
		{name: "measure points: time negative", topic: mpTopic, payload: `{"params":{"measurepoints":{"a":1},"time":-5}}`,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: "params.time must be unix milliseconds"},
		{name: "measure points: empty name", topic: mpTopic, payload: `{"params":{"measurepoints":{"":1}}}`,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: "measure point name is empty"},
		{name: "measure points: long name", topic: mpTopic, payload: `{"params":{"measurepoints":{"` + strings.Repeat("n", 129) + `":1}}}`,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: "is longer than 128 characters"},
		{name: "measure points: 128-character name ok", topic: mpTopic, payload: `{"params":{"measurepoints":{"` + strings.Repeat("é", 128) + `":1}}}`,
			kind: KindMeasurePointPost, records: []Record{{Kind: RecordPoint, Name: strings.Repeat("é", 128), Value: int64(1), Time: recv}}},
		{name: "measure points: null value", topic: mpTopic, payload: `{"params":{"measurepoints":{"a":null}}}`,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: `measure point "a": value is null`},
		{name: "measure points: number out of range", topic: mpTopic, payload: `{"params":{"measurepoints":{"a":1e999}}}`, jsonOnly: true,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: `measure point "a": number out of range`},
		{name: "measure points: per-point time bad", topic: mpTopic, payload: `{"params":{"measurepoints":{"a":{"value":1,"time":true}}}}`,
			kind: KindMeasurePointPost, code: CodeBadParams, msg: `measure point "a" time must be a number`},

		// batch
		{name: "batch: documented array form with sub-devices", topic: batchTopic,
			payload: `{"id":"123","version":"1.0","method":"thing.measurepoint.post.batch","params":[` +
				`{"productKey":"p1","deviceKey":"d1","measurepoints":{"Power":{"value":1.0,"quality":9},"temp":1.02},"time":1700000000000},` +
				`{"measurepoints":{"temp":2},"time":1700000001000},` +
				`{"measurepoints":{"temp":3}}]}`,
			kind: KindMeasurePointBatch, id: "123", method: "thing.measurepoint.post.batch",
			records: []Record{
				{Kind: RecordPoint, Name: "Power", Value: 1.0, Quality: int64(9), Time: t0, ProductKey: "p1", DeviceKey: "d1"},
				{Kind: RecordPoint, Name: "temp", Value: 1.02, Time: t0, ProductKey: "p1", DeviceKey: "d1"},
				{Kind: RecordPoint, Name: "temp", Value: int64(2), Time: t1},
				{Kind: RecordPoint, Name: "temp", Value: int64(3), Time: recv},
			}},
		{name: "batch: object with measurepoints array, outer time default", topic: batchTopic,
			payload: `{"params":{"measurepoints":[{"measurepoints":{"a":1}},{"measurepoints":{"a":2},"time":1700000001000}],"time":1700000000000}}`,
			kind:    KindMeasurePointBatch,
			records: []Record{
				{Kind: RecordPoint, Name: "a", Value: int64(1), Time: t0},
				{Kind: RecordPoint, Name: "a", Value: int64(2), Time: t1},
			}},
		{name: "batch: single object like measurepoint.post", topic: batchTopic,
			payload: `{"params":{"measurepoints":{"a":1},"time":1700000000000}}`,
			kind:    KindMeasurePointBatch, records: []Record{{Kind: RecordPoint, Name: "a", Value: int64(1), Time: t0}}},
		{name: "batch: item not an object", topic: batchTopic, payload: `{"id":"2","params":[{"measurepoints":{"a":1}},3]}`,
			kind: KindMeasurePointBatch, id: "2", code: CodeBadParams, msg: "params[1] must be an object"},
		{name: "batch: item without measurepoints", topic: batchTopic, payload: `{"params":[{"time":1}]}`,
			kind: KindMeasurePointBatch, code: CodeBadParams, msg: "params[0].measurepoints is missing"},
		{name: "batch: deviceKey not a string", topic: batchTopic, payload: `{"params":[{"deviceKey":1,"measurepoints":{"a":1}}]}`,
			kind: KindMeasurePointBatch, code: CodeBadParams, msg: "productKey and deviceKey must be strings"},
		{name: "batch: params a string", topic: batchTopic, payload: `{"params":"x"}`,
			kind: KindMeasurePointBatch, code: CodeBadParams, msg: "params must be an array"},

		// properties (dialect A)
		{name: "properties: plain and value/time forms", topic: propTopic,
			payload: `{"id":"1","version":"1.0","params":{"temp":{"value":21.5,"time":1700000000000},"hum":40},"method":"thing.event.property.post"}`,
			kind:    KindPropertyPost, id: "1", method: "thing.event.property.post",
			records: []Record{
				{Kind: RecordPoint, Name: "hum", Value: int64(40), Time: recv},
				{Kind: RecordPoint, Name: "temp", Value: 21.5, Time: t0},
			}},
		{name: "properties: params missing", topic: propTopic, payload: `{"id":"1"}`,
			kind: KindPropertyPost, id: "1", code: CodeBadParams, msg: "params is missing"},
		{name: "properties: params null", topic: propTopic, payload: `{"id":"1","params":null}`,
			kind: KindPropertyPost, id: "1", code: CodeBadParams, msg: "params is missing"},
		{name: "properties: wrapped time bad", topic: propTopic, payload: `{"params":{"t":{"value":1,"time":"now"}}}`,
			kind: KindPropertyPost, code: CodeBadParams, msg: `property "t" time must be a number`},

		// events
		{name: "event: dialect A value form", topic: eventTopic,
			payload: `{"id":"5","params":{"value":{"level":3,"text":"hot"},"time":1700000000000},"method":"thing.event.alarm.post"}`,
			kind:    KindEventPost, id: "5", method: "thing.event.alarm.post",
			records: []Record{{Kind: RecordEvent, Name: "alarm", Value: map[string]any{"level": int64(3), "text": "hot"}, Time: t0}}},
		{name: "event: dialect E events form", topic: eventTopic,
			payload: `{"id":"5","params":{"events":{"level":3},"time":1700000001000}}`,
			kind:    KindEventPost, id: "5",
			records: []Record{{Kind: RecordEvent, Name: "alarm", Value: map[string]any{"level": int64(3)}, Time: t1}}},
		{name: "event: bare params are the output", topic: eventTopic,
			payload: `{"params":{"level":3}}`, kind: KindEventPost,
			records: []Record{{Kind: RecordEvent, Name: "alarm", Value: map[string]any{"level": int64(3)}, Time: recv}}},
		{name: "event: params not an object", topic: eventTopic, payload: `{"id":"5","params":1}`,
			kind: KindEventPost, id: "5", code: CodeBadParams, msg: "params must be an object"},
		{name: "event: value null", topic: eventTopic, payload: `{"params":{"value":null}}`,
			kind: KindEventPost, code: CodeBadParams, msg: `event "alarm": value is null`},
		{name: "event: long event id in topic", topic: "/sys/pk/dk/thing/event/" + strings.Repeat("e", 129) + "/post", payload: `{"params":{"value":{}}}`,
			kind: KindEventPost, code: CodeBadParams, msg: "event name"},

		// attributes
		{name: "attribute update", topic: "/sys/pk/dk/thing/attribute/update",
			payload: `{"id":"3","method":"thing.attribute.update","params":{"attributes":{"floor":3,"room":"a1"}}}`,
			kind:    KindAttributeUpdate, id: "3", method: "thing.attribute.update",
			records: []Record{
				{Kind: RecordAttribute, Name: "floor", Value: int64(3), Time: recv},
				{Kind: RecordAttribute, Name: "room", Value: "a1", Time: recv},
			}},
		{name: "attribute update: attributes an array", topic: "/sys/pk/dk/thing/attribute/update",
			payload: `{"params":{"attributes":["a"]}}`, kind: KindAttributeUpdate, code: CodeBadParams, msg: "params.attributes must be an object"},
		{name: "attribute query", topic: "/sys/pk/dk/thing/attribute/query",
			payload: `{"id":"4","params":{"attributes":["floor","room"]}}`, kind: KindAttributeQuery, id: "4",
			records: []Record{{Kind: RecordAttribute, Name: "floor", Time: recv}, {Kind: RecordAttribute, Name: "room", Time: recv}}},
		{name: "attribute query: all", topic: "/sys/pk/dk/thing/attribute/query",
			payload: `{"id":"4","params":{}}`, kind: KindAttributeQuery, id: "4"},
		{name: "attribute delete", topic: "/sys/pk/dk/thing/attribute/delete",
			payload: `{"params":{"attributes":["floor"]}}`, kind: KindAttributeDelete,
			records: []Record{{Kind: RecordAttribute, Name: "floor", Time: recv}}},
		{name: "attribute delete: no names", topic: "/sys/pk/dk/thing/attribute/delete",
			payload: `{"params":{}}`, kind: KindAttributeDelete, code: CodeBadParams, msg: "params.attributes is missing"},
		{name: "attribute delete: name not a string", topic: "/sys/pk/dk/thing/attribute/delete",
			payload: `{"params":{"attributes":["a",2]}}`, kind: KindAttributeDelete, code: CodeBadParams, msg: "params.attributes[1] must be a string"},

		// device info
		{name: "device info: attrKey/attrValue array", topic: "/sys/pk/dk/thing/deviceinfo/update",
			payload: `{"id":"6","params":[{"attrKey":"SYS_SDK_LANGUAGE","attrValue":"C","domain":"SYSTEM"},{"attrKey":"fw","attrValue":"1.2"}],"method":"thing.deviceinfo.update"}`,
			kind:    KindDeviceInfoUpdate, id: "6", method: "thing.deviceinfo.update",
			records: []Record{
				{Kind: RecordAttribute, Name: "SYS_SDK_LANGUAGE", Value: "C", Time: recv},
				{Kind: RecordAttribute, Name: "fw", Value: "1.2", Time: recv},
			}},
		{name: "device info: object form", topic: "/sys/pk/dk/thing/deviceinfo/update",
			payload: `{"params":{"fw":"1.2"}}`, kind: KindDeviceInfoUpdate,
			records: []Record{{Kind: RecordAttribute, Name: "fw", Value: "1.2", Time: recv}}},
		{name: "device info: attrKey missing", topic: "/sys/pk/dk/thing/deviceinfo/update",
			payload: `{"params":[{"attrValue":"x"}]}`, kind: KindDeviceInfoUpdate, code: CodeBadParams, msg: "params[0].attrKey must be a string"},

		// replies to downlinks
		{name: "service reply", topic: "/sys/pk/dk/thing/service/reboot_reply",
			payload: `{"id":"42","code":200,"data":{"ok":true},"message":"success"}`, kind: KindReply, id: "42",
			reply: &Reply{ID: "42", Code: 200, Data: map[string]any{"ok": true}, Message: "success"}},
		{name: "measure point set reply, no data", topic: "/sys/pk/dk/thing/service/measurepoint/set_reply",
			payload: `{"id":"43","code":460}`, kind: KindReply, id: "43", reply: &Reply{ID: "43", Code: 460}},
		{name: "reply: code missing", topic: "/sys/pk/dk/thing/service/reboot_reply",
			payload: `{"id":"42"}`, kind: KindReply, id: "42", code: CodeBadParams, msg: "code is missing"},
		{name: "reply: code a string", topic: "/sys/pk/dk/thing/service/reboot_reply",
			payload: `{"id":"42","code":"200"}`, kind: KindReply, id: "42", code: CodeBadParams, msg: "code must be an integer"},
		{name: "reply: code fractional", topic: "/sys/pk/dk/thing/service/reboot_reply",
			payload: `{"id":"42","code":200.5}`, kind: KindReply, id: "42", code: CodeBadParams, msg: "code must be an integer"},

		// activation, generic
		{name: "activate with a body", topic: "/ext/session/pk/dk/thing/activate/info",
			payload: `{"id":"1","method":"thing.activate.info"}`, kind: KindActivate, id: "1", method: "thing.activate.info"},
		{name: "generic sys topic", topic: "/sys/pk/dk/thing/ota/firmware/get",
			payload: `{"id":"8","params":{"x":1}}`, kind: KindThing, id: "8"},
		{name: "generic ext topic", topic: "/ext/ntp/pk/dk/request",
			payload: `{"deviceSendTime":"1"}`, kind: KindThing},

		// header and structure
		{name: "id a bool", topic: propTopic, payload: `{"id":true,"params":{}}`,
			kind: KindPropertyPost, code: CodeBadParams, msg: "id must be a string or a number"},
		{name: "id too long", topic: propTopic, payload: `{"id":"` + strings.Repeat("i", 129) + `","params":{}}`,
			kind: KindPropertyPost, code: CodeBadParams, msg: "id is longer than 128"},
		{name: "id null is absent", topic: propTopic, payload: `{"id":null,"params":{}}`, kind: KindPropertyPost},
		{name: "method not a string", topic: propTopic, payload: `{"id":"1","method":1,"params":{}}`,
			kind: KindPropertyPost, id: "1", code: CodeBadParams, msg: "method must be a string"},
		{name: "root an array", topic: propTopic, payload: `[1,2]`, jsonOnly: true,
			kind: KindPropertyPost, code: CodeMalformed, msg: "payload is not a JSON object"},
		{name: "root a number", topic: propTopic, payload: `7`, jsonOnly: true,
			kind: KindPropertyPost, code: CodeMalformed, msg: "not a JSON object"},
		{name: "truncated", topic: propTopic, payload: `{"id":`, jsonOnly: true,
			kind: KindPropertyPost, code: CodeMalformed, msg: "not valid JSON: unexpected end of input"},
		{name: "trailing data", topic: propTopic, payload: `{"id":"1"} {}`, jsonOnly: true,
			kind: KindPropertyPost, code: CodeMalformed, msg: "data after the top-level value"},
		{name: "empty", topic: propTopic, payload: ``, jsonOnly: true,
			kind: KindPropertyPost, code: CodeMalformed, msg: "payload is empty"},
		{name: "too deep", topic: propTopic, payload: `{"params":{"a":` + strings.Repeat("[", 20) + strings.Repeat("]", 20) + `}}`,
			kind: KindPropertyPost, code: CodeMalformed, msg: "deeper than 16"},
		{name: "brackets inside strings do not count", topic: propTopic, payload: `{"params":{"a":"` + strings.Repeat("[{", 20) + `\"]"}}`,
			kind: KindPropertyPost, records: []Record{{Kind: RecordPoint, Name: "a", Value: strings.Repeat("[{", 20) + `"]`, Time: recv}}},
	}
	for _, tc := range cases {
		t.Run(tc.name+"/json", func(t *testing.T) {
			req, err := Decode(tc.topic, []byte(tc.payload), cfJSON, recv)
			checkDecode(t, tc, req, err)
		})
		if tc.jsonOnly {
			continue
		}
		t.Run(tc.name+"/cbor", func(t *testing.T) {
			req, err := Decode(tc.topic, toCBOR(t, tc.payload), cfCBOR, recv)
			checkDecode(t, tc, req, err)
		})
	}
}

func checkDecode(t *testing.T, tc decodeCase, req *Request, err error) {
	t.Helper()
	if req == nil {
		t.Fatalf("nil request (err %v)", err)
	}
	if req.Kind != tc.kind || req.ID != tc.id || req.IDIsNumber != tc.idNum || req.Method != tc.method {
		t.Fatalf("kind %q id %q (number %v) method %q; want %q %q (%v) %q", req.Kind, req.ID, req.IDIsNumber, req.Method, tc.kind, tc.id, tc.idNum, tc.method)
	}
	if tc.code != 0 {
		var te *Error
		if !errors.As(err, &te) {
			t.Fatalf("err %v (%T), want *Error code %d", err, err, tc.code)
		}
		if te.Code != tc.code || !strings.Contains(te.Message, tc.msg) {
			t.Fatalf("error %d %q, want %d containing %q", te.Code, te.Message, tc.code, tc.msg)
		}
		if len(req.Records) != 0 {
			t.Fatalf("failed request keeps %d records", len(req.Records))
		}
		return
	}
	if err != nil {
		t.Fatalf("unexpected error %v", err)
	}
	if len(req.Records) != len(tc.records) {
		t.Fatalf("%d records %+v, want %d %+v", len(req.Records), req.Records, len(tc.records), tc.records)
	}
	for i, r := range req.Records {
		w := tc.records[i]
		if !reflect.DeepEqual(r, w) || !r.Time.Equal(w.Time) {
			t.Errorf("record %d:\n got %#v\nwant %#v", i, r, w)
		}
	}
	if !reflect.DeepEqual(req.Reply, tc.reply) {
		t.Errorf("reply %#v, want %#v", req.Reply, tc.reply)
	}
}

func TestDecodeOpaqueKinds(t *testing.T) {
	bin := []byte{0x00, 0xff, 0x10}
	for topic, kind := range map[string]Kind{
		"/sys/pk/dk/thing/model/up_raw":         KindRawUp,
		"/sys/pk/dk/thing/model/down_raw_reply": KindReply,
		"/pk/dk/user/update":                    KindCustom,
	} {
		req, err := Decode(topic, bin, 42, recv)
		if err != nil || req.Kind != kind || !bytes.Equal(req.Raw, bin) || req.Reply != nil || len(req.Records) != 0 {
			t.Errorf("%s: %+v %v; want kind %s with Raw", topic, req, err, kind)
		}
	}
	// The activation GET has no body.
	if req, err := Decode("/ext/session/pk/dk/thing/activate/info", nil, 0, recv); err != nil || req.Kind != KindActivate {
		t.Errorf("empty activation: %+v %v", req, err)
	}
}

func TestKindOf(t *testing.T) {
	for topic, want := range map[string]Kind{
		"/sys/pk/dk/thing/measurepoint/post":               KindMeasurePointPost,
		"/sys/pk/dk/thing/measurepoint/post/batch":         KindMeasurePointBatch,
		"/sys/pk/dk/thing/event/property/post":             KindPropertyPost,
		"/sys/pk/dk/thing/event/alarm/post":                KindEventPost,
		"/sys/pk/dk/thing/attribute/update":                KindAttributeUpdate,
		"/sys/pk/dk/thing/attribute/query":                 KindAttributeQuery,
		"/sys/pk/dk/thing/attribute/delete":                KindAttributeDelete,
		"/sys/pk/dk/thing/deviceinfo/update":               KindDeviceInfoUpdate,
		"/sys/pk/dk/thing/model/up_raw":                    KindRawUp,
		"/sys/pk/dk/thing/model/down_raw_reply":            KindReply,
		"/sys/pk/dk/thing/service/property/set_reply":      KindReply,
		"/sys/pk/dk/thing/service/measurepoint/set_reply":  KindReply,
		"/sys/pk/dk/thing/service/reboot_reply":            KindReply,
		"/ext/session/pk/dk/thing/activate/info":           KindActivate,
		"/ext/ntp/pk/dk/request":                           KindThing,
		"/sys/pk/dk/thing/event/property/post_reply":       KindReply,
		"/sys/pk/dk/thing/ota/firmware/get":                KindThing,
		"/sys/pk/dk/rrpc/response/1":                       KindThing,
		"/pk/dk/user/update":                               KindCustom,
		"/sys/pk/dk":                                       KindCustom,
		"/sys/pk/dk/thing/event/a/b/post":                  KindThing,
		"/ext/session/pk/dk/thing/activate/info/something": KindThing,
	} {
		if got, _ := KindOf(topic); got != want {
			t.Errorf("KindOf(%s) = %s, want %s", topic, got, want)
		}
	}
	if _, id := KindOf("/sys/pk/dk/thing/event/alarm/post"); id != "alarm" {
		t.Errorf("event id %q", id)
	}
}

// CBOR-only shapes: what JSON cannot express.
func TestDecodeCBORSpecifics(t *testing.T) {
	enc := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	tests := []struct {
		name    string
		topic   string
		payload []byte
		cf      uint16
		code    int
		msg     string
		check   func(*Request) bool
	}{
		{"NaN point", mpTopic, enc(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"a": math.NaN()}}}), cfCBOR,
			CodeBadParams, `measure point "a": not a finite number`, nil},
		{"Inf nested", mpTopic, enc(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"a": map[string]any{"x": []any{1, math.Inf(1)}}}}}), cfCBOR,
			CodeBadParams, `measure point "a": "x": [1]: not a finite number`, nil},
		{"NaN time", mpTopic, enc(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"a": 1}, "time": math.NaN()}}), cfCBOR,
			CodeBadParams, "params.time must be a number", nil},
		{"byte string value", mpTopic, enc(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"a": []byte{1}}}}), cfCBOR,
			CodeBadParams, "byte string", nil},
		{"integer map key", propTopic, enc(map[any]any{1: "x"}), cfCBOR, CodeMalformed, "not valid CBOR", nil},
		{"tag", propTopic, enc(cbor.Tag{Number: 1, Content: 1700000000}), cfCBOR, CodeMalformed, "not valid CBOR", nil},
		{"not a map", propTopic, enc([]any{1}), cfCBOR, CodeMalformed, "not a CBOR map", nil},
		{"trailing", propTopic, append(enc(map[string]any{"id": "1"}), 0x01), cfCBOR, CodeMalformed, "not valid CBOR", nil},
		{"uint64 beyond int64 is float", mpTopic, enc(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"a": uint64(math.MaxUint64)}}}), cfCBOR,
			0, "", func(r *Request) bool { return r.Records[0].Value == float64(math.MaxUint64) }},
		{"number id", propTopic, enc(map[string]any{"id": 12, "params": map[string]any{}}), cfCBOR,
			0, "", func(r *Request) bool { return r.ID == "12" && r.IDIsNumber }},
		{"octet-stream sniffed as CBOR", propTopic, enc(map[string]any{"id": "s", "params": map[string]any{"p": 1}}), 42,
			0, "", func(r *Request) bool { return r.ID == "s" && len(r.Records) == 1 }},
		{"octet-stream sniffed as JSON", propTopic, []byte(` {"id":"s","params":{"p":1}}`), 42,
			0, "", func(r *Request) bool { return r.ID == "s" && len(r.Records) == 1 }},
		{"no content format sniffed", propTopic, []byte(`{"id":"s","params":{"p":1}}`), 0,
			0, "", func(r *Request) bool { return r.ID == "s" && len(r.Records) == 1 }},
		{"deep CBOR", propTopic, bytes.Repeat([]byte{0x81}, 40), cfCBOR, CodeMalformed, "deeper than 16", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := Decode(tt.topic, tt.payload, tt.cf, recv)
			if req == nil {
				t.Fatal("nil request")
			}
			if tt.code == 0 {
				if err != nil || !tt.check(req) {
					t.Fatalf("%+v %v", req, err)
				}
				return
			}
			var te *Error
			if !errors.As(err, &te) || te.Code != tt.code || !strings.Contains(te.Message, tt.msg) {
				t.Fatalf("err %v, want %d containing %q", err, tt.code, tt.msg)
			}
		})
	}
}

func TestDecodeLimits(t *testing.T) {
	points := func(n int) string {
		var b strings.Builder
		for i := range n {
			if i > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `"p%d":%d`, i, i)
		}
		return b.String()
	}
	req, err := Decode(mpTopic, []byte(`{"params":{"measurepoints":{`+points(MaxRecords)+`}}}`), cfJSON, recv)
	if err != nil || len(req.Records) != MaxRecords {
		t.Fatalf("%d points: %d records, %v", MaxRecords, len(req.Records), err)
	}
	_, err = Decode(mpTopic, []byte(`{"params":{"measurepoints":{`+points(MaxRecords+1)+`}}}`), cfJSON, recv)
	var te *Error
	if !errors.As(err, &te) || te.Code != CodeBadParams || !strings.Contains(te.Message, "more than 1000 records") {
		t.Fatalf("%d points: %v", MaxRecords+1, err)
	}
	// The limit spans batch items.
	item := `{"measurepoints":{` + points(600) + `}}`
	_, err = Decode(batchTopic, []byte(`{"params":[`+item+`,`+item+`]}`), cfJSON, recv)
	if !errors.As(err, &te) || !strings.Contains(te.Message, "more than 1000 records") {
		t.Fatalf("batch of 1200: %v", err)
	}
}

// Error messages are part of the reply bytes: the same payload gives the
// same message every time, even with several bad names in one map.
func TestDecodeErrorIsDeterministic(t *testing.T) {
	p := []byte(`{"params":{"measurepoints":{"z":null,"b":null,"a":{"value":null},"c":1}}}`)
	for range 20 {
		_, err := Decode(mpTopic, p, cfJSON, recv)
		if err == nil || err.(*Error).Message != `measure point "a": value is null` {
			t.Fatalf("err %v", err)
		}
	}
}
