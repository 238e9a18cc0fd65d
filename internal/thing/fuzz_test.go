package thing

import (
	"errors"
	"reflect"
	"testing"
	"unicode/utf8"
)

// fuzzTopics are the topics FuzzDecode picks from, one per kind and shape.
var fuzzTopics = []string{
	mpTopic, batchTopic, propTopic, eventTopic,
	"/sys/pk/dk/thing/attribute/update", "/sys/pk/dk/thing/attribute/query", "/sys/pk/dk/thing/attribute/delete",
	"/sys/pk/dk/thing/deviceinfo/update", "/sys/pk/dk/thing/model/up_raw", "/sys/pk/dk/thing/service/reboot_reply",
	"/sys/pk/dk/thing/model/down_raw_reply", "/ext/session/pk/dk/thing/activate/info", "/pk/dk/user/update",
	"/sys/pk/dk/thing/ota/firmware/get",
}

// FuzzDecode: Decode never panics (nor reaches its recover: CodeInternal),
// always returns a Request of the topic's kind, fails only with *Error
// codes 400/460 and a message, is deterministic, and what it accepts obeys
// the limits: records named (1..MaxNameLen characters), timed, at most
// MaxRecords, values of the documented types.
func FuzzDecode(f *testing.F) {
	f.Add(uint8(0), []byte(`{"id":"1","version":"1.0","method":"thing.measurepoint.post","params":{"measurepoints":{"temp":21.5,"hum":{"value":40,"quality":0}},"time":1700000000000}}`), uint16(50))
	f.Add(uint8(1), []byte(`{"id":"123","params":[{"productKey":"p","deviceKey":"d","measurepoints":{"Power":{"value":1.0,"quality":9}},"time":123456}]}`), uint16(50))
	f.Add(uint8(2), []byte(`{"id":"1","version":"1.0","params":{"temp":{"value":21.5,"time":1700000000000},"hum":40},"method":"thing.event.property.post"}`), uint16(50))
	f.Add(uint8(3), []byte(`{"id":"5","params":{"value":{"level":3},"time":1700000000000}}`), uint16(50))
	f.Add(uint8(4), []byte(`{"params":{"attributes":{"floor":3}}}`), uint16(50))
	f.Add(uint8(5), []byte(`{"params":{"attributes":["a","b"]}}`), uint16(50))
	f.Add(uint8(7), []byte(`{"params":[{"attrKey":"k","attrValue":"v"}]}`), uint16(50))
	f.Add(uint8(9), []byte(`{"id":"42","code":200,"data":{"ok":true},"message":"success"}`), uint16(50))
	f.Add(uint8(2), []byte("\xa2bid\x611fparams\xa1dtemp\xf9\x3c\x00"), uint16(60))
	f.Add(uint8(0), []byte("\xa1fparams\xa1mmeasurepoints\xa1aa\xfb\x7f\xf8\x00\x00\x00\x00\x00\x00"), uint16(60))
	f.Add(uint8(2), []byte(`{"params":{"a":[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]}}`), uint16(42))
	f.Fuzz(func(t *testing.T, topicIdx uint8, payload []byte, cf uint16) {
		topic := fuzzTopics[int(topicIdx)%len(fuzzTopics)]
		req, err := Decode(topic, payload, cf, recv)
		if req == nil {
			t.Fatal("nil request")
		}
		if want, _ := KindOf(topic); req.Kind != want {
			t.Fatalf("kind %s, want %s", req.Kind, want)
		}
		if utf8.RuneCountInString(req.ID) > MaxIDLen || (req.IDIsNumber && req.ID == "") {
			t.Fatalf("id %q (number %v)", req.ID, req.IDIsNumber)
		}
		again, err2 := Decode(topic, payload, cf, recv)
		if !reflect.DeepEqual(req, again) || !reflect.DeepEqual(err, err2) {
			t.Fatalf("not deterministic: %+v %v / %+v %v", req, err, again, err2)
		}
		if err != nil {
			var te *Error
			if !errors.As(err, &te) {
				t.Fatalf("error %T %v is not *Error", err, err)
			}
			if (te.Code != CodeMalformed && te.Code != CodeBadParams) || te.Message == "" {
				t.Fatalf("error code %d message %q", te.Code, te.Message)
			}
			if len(req.Records) != 0 || req.Reply != nil {
				t.Fatal("failed request carries records or a reply")
			}
			return
		}
		if len(req.Records) > MaxRecords {
			t.Fatalf("%d records", len(req.Records))
		}
		for _, r := range req.Records {
			if r.Name == "" || utf8.RuneCountInString(r.Name) > MaxNameLen {
				t.Fatalf("record name %q", r.Name)
			}
			if r.Time.IsZero() {
				t.Fatalf("record %q has no time", r.Name)
			}
			nameOnly := req.Kind == KindAttributeQuery || req.Kind == KindAttributeDelete
			if nameOnly != (r.Value == nil) {
				t.Fatalf("record %q value %v in %s", r.Name, r.Value, req.Kind)
			}
			if r.Value != nil && !validValue(r.Value, 1) {
				t.Fatalf("record %q value %#v has a type outside the documented set", r.Name, r.Value)
			}
		}
		if (req.Reply != nil) != (req.Kind == KindReply && req.Raw == nil) {
			t.Fatalf("kind %s with reply %v", req.Kind, req.Reply)
		}
		if req.Reply != nil && req.Reply.Data != nil && !validValue(req.Reply.Data, 1) {
			t.Fatalf("reply data %#v", req.Reply.Data)
		}
	})
}

// validValue reports whether v holds only the Record.Value types.
func validValue(v any, depth int) bool {
	if depth > MaxDepth {
		return false
	}
	switch x := v.(type) {
	case nil, string, bool, int64:
		return true
	case float64:
		return x == x && x-x == 0 // finite
	case map[string]any:
		for _, e := range x {
			if !validValue(e, depth+1) {
				return false
			}
		}
		return true
	case []any:
		for _, e := range x {
			if !validValue(e, depth+1) {
				return false
			}
		}
		return true
	}
	return false
}
