package forward

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

func TestMatchFilter(t *testing.T) {
	uplink := "/sys/pk1/dk1/thing/event/property/post"
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"#", uplink, true},
		{"/sys/+/+/thing/#", uplink, true},
		{"/sys/pk1/dk1/thing/event/property/post", uplink, true},
		{"/sys/pk1/+/thing/event/+/post", uplink, true},
		{"/sys/pk2/+/thing/#", uplink, false},
		{"/sys/+/+/thing", uplink, false},
		{"/sys/+/+/thing/event/property/post/+", uplink, false},
		{"+/sys/#", uplink, true}, // the empty first level matches '+'
		{"/sys/#", "/sys", true},  // "a/#" matches "a"
		{"/sys/+", "/sys", false},
		// '$' topics: only filters that name the '$' level match them.
		{"#", "$events/pk1/dk1/online", false},
		{"+/+/+/online", "$events/pk1/dk1/online", false},
		{"$events/#", "$events/pk1/dk1/online", true},
		{"$events/+/+/online", "$events/pk1/dk1/online", true},
		{"$events/+/+/online", "$events/pk1/dk1/offline", false},
		{"$events/pk1/+/+", "$events/pk1/dk1/command", true},
	}
	for _, c := range cases {
		t.Run(c.filter+" "+c.topic, func(t *testing.T) {
			if err := ValidateFilter(c.filter); err != nil {
				t.Fatalf("valid filter rejected: %v", err)
			}
			if got := MatchFilter(c.filter, c.topic); got != c.want {
				t.Fatalf("MatchFilter(%q, %q) = %t, want %t", c.filter, c.topic, got, c.want)
			}
		})
	}
	for _, bad := range []string{"", "a/#/b", "a/b#", "a+/b", "#/x"} {
		if err := ValidateFilter(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateFilter(%q) = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestBackoffSchedule(t *testing.T) {
	base, maxD := 100*time.Millisecond, 2*time.Second
	// rnd = 0 gives the lower bound (half), rnd -> 1 the full exponential value.
	wantFull := []time.Duration{100, 200, 400, 800, 1600, 2000, 2000}
	for i, w := range wantFull {
		w *= time.Millisecond
		if got := Backoff(i+1, base, maxD, 0); got != w/2 {
			t.Errorf("attempt %d rnd 0: %v, want %v", i+1, got, w/2)
		}
		if got := Backoff(i+1, base, maxD, 0.999999); got < w-time.Millisecond || got > w {
			t.Errorf("attempt %d rnd 1: %v, want ~%v", i+1, got, w)
		}
	}
	if got := Backoff(1000, base, maxD, 0.5); got > maxD || got < maxD/2 {
		t.Errorf("huge attempt: %v, want within [max/2, max]", got)
	}
}

func TestEnvelopeGolden(t *testing.T) {
	at := time.Date(2025, 3, 1, 12, 0, 0, 5_000_000, time.UTC)
	base := message.Message{ID: 42, ProductKey: "pk1", DeviceKey: "dk1", Topic: "/sys/pk1/dk1/thing/event/property/post",
		ReceivedAt: at, Transport: "coap"}
	cases := []struct {
		name    string
		payload []byte
		cf      uint16
		want    string
	}{
		{"json", []byte("{\"id\": \"1\",\n \"params\": {\"temp\": 21.5}}"), 50,
			`{"id":"42","logId":42,"topic":"/sys/pk1/dk1/thing/event/property/post","productKey":"pk1","deviceKey":"dk1","receivedAt":"2025-03-01T12:00:00.005Z","transport":"coap","contentFormat":50,"payload":{"id":"1","params":{"temp":21.5}}}`},
		// CBOR {"params": {"t": 1}}
		{"cbor", []byte{0xa1, 0x66, 'p', 'a', 'r', 'a', 'm', 's', 0xa1, 0x61, 't', 0x01}, 60,
			`{"id":"42","logId":42,"topic":"/sys/pk1/dk1/thing/event/property/post","productKey":"pk1","deviceKey":"dk1","receivedAt":"2025-03-01T12:00:00.005Z","transport":"coap","contentFormat":60,"payload":{"params":{"t":1}}}`},
		{"binary", []byte{0xff, 0x00, 0x01}, 42,
			`{"id":"42","logId":42,"topic":"/sys/pk1/dk1/thing/event/property/post","productKey":"pk1","deviceKey":"dk1","receivedAt":"2025-03-01T12:00:00.005Z","transport":"coap","contentFormat":42,"payloadBase64":"/wAB"}`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := base
			m.Payload, m.ContentFormat = c.payload, c.cf
			_, raw, ok := decodePayload(&m)
			d, err := newDelivery("r_1", newEnvelope(&m, raw, ok))
			if err != nil {
				t.Fatal(err)
			}
			if string(d.Body) != c.want {
				t.Fatalf("envelope\n got %s\nwant %s", d.Body, c.want)
			}
		})
	}
}

func TestCondition(t *testing.T) {
	m := message.Message{ID: 1, ProductKey: "pk1", DeviceKey: "dk1", Topic: "/sys/pk1/dk1/thing/event/property/post",
		Payload: []byte(`{"params":{"temp":31,"mode":"eco"}}`), ContentFormat: 50, ReceivedAt: time.Unix(1_700_000_000, 0)}
	ev := message.Message{ID: 2, ProductKey: "pk1", DeviceKey: "dk1", Topic: "$events/pk1/dk1/online",
		Payload: []byte(`{"type":"online"}`), ContentFormat: 50, Transport: "event"}
	bin := message.Message{ID: 3, Topic: "/x", Payload: []byte{0xff}, ContentFormat: 42}
	cases := []struct {
		cond    string
		msg     *message.Message
		want    bool
		wantErr bool
	}{
		{"params.temp > 30", &m, true, false},
		{"params.temp > 40", &m, false, false},
		{`params.mode == "eco" && productKey == "pk1"`, &m, true, false},
		{`topic endsWith "/property/post"`, &m, true, false},
		{`event && payload.type == "online"`, &ev, true, false},
		{`event`, &m, false, false},
		{`receivedAt.Year() == 2023`, &m, true, false},
		{`payload == nil`, &bin, true, false},
		{`params.temp > 30`, &bin, false, true}, // nil > 30: run-time error, no match
	}
	for _, c := range cases {
		t.Run(c.cond, func(t *testing.T) {
			p, err := compileCondition(c.cond)
			if err != nil {
				t.Fatal(err)
			}
			v, raw, ok := decodePayload(c.msg)
			e := newEnvelope(c.msg, raw, ok)
			got, err := evalCondition(p, Env(&e, v))
			if (err != nil) != c.wantErr || got != c.want {
				t.Fatalf("= %t, %v; want %t, error %t", got, err, c.want, c.wantErr)
			}
		})
	}
	for _, bad := range []string{"params.temp >", "paylod.x == 1", `"a string"`, "1 +"} {
		if _, err := compileCondition(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("compile %q = %v, want ErrInvalid", bad, err)
		}
	}
}

func TestValidateAndRedact(t *testing.T) {
	qos2 := 2
	bad := []struct {
		name string
		a    Action
		msg  string
	}{
		{"type", Action{Type: "smtp", URL: "http://x"}, "type"},
		{"scheme", Action{Type: ActionWebhook, URL: "ftp://x"}, "scheme"},
		{"no host", Action{Type: ActionWebhook, URL: "/relative"}, "url"},
		{"foreign field", Action{Type: ActionWebhook, URL: "http://x", Subject: "s"}, "subject"},
		{"mqtt topic", Action{Type: ActionMQTT, URL: "tcp://x:1883"}, "topic"},
		{"mqtt qos", Action{Type: ActionMQTT, URL: "tcp://x:1883", Topic: "t", QoS: &qos2}, "qos"},
		{"table", Action{Type: ActionPostgres, URL: "postgres://x/db", Table: "a; drop table b"}, "table"},
		{"table parts", Action{Type: ActionPostgres, URL: "postgres://x/db", Table: "a.b.c"}, "table"},
	}
	for _, c := range bad {
		t.Run(c.name, func(t *testing.T) {
			r := Rule{Name: "n", TopicFilter: "#", Actions: []Action{c.a}}
			err := r.validate()
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), c.msg) {
				t.Fatalf("validate = %v, want ErrInvalid mentioning %q", err, c.msg)
			}
		})
	}
	r := Rule{Name: "n", TopicFilter: "#", Actions: []Action{
		{Type: ActionWebhook, URL: "https://h/x", Secret: "s3cret", Headers: map[string]string{"Authorization": "Bearer tok"}},
		{Type: ActionPostgres, URL: "postgres://u:pgpass@h/db", Table: "t"},
		{Type: ActionMQTT, URL: "tcp://h:1883", Topic: "t", Password: "mqpass"},
	}}
	if err := r.validate(); err != nil || r.MaxAttempts != DefaultMaxAttempts {
		t.Fatalf("validate = %v, maxAttempts %d", err, r.MaxAttempts)
	}
	b, _ := json.Marshal(r.Redact())
	for _, secret := range []string{"s3cret", "Bearer tok", "pgpass", "mqpass"} {
		if strings.Contains(string(b), secret) {
			t.Errorf("redacted rule %s shows %q", b, secret)
		}
	}
	// A PATCH sending the redacted form back keeps the secrets.
	next := r.Redact().Actions
	keepSecrets(r.Actions, next)
	if next[0].Secret != "s3cret" || next[0].Headers["Authorization"] != "Bearer tok" || next[1].URL != r.Actions[1].URL || next[2].Password != "mqpass" {
		t.Fatalf("keepSecrets: %+v", next)
	}
}

func TestExpand(t *testing.T) {
	d := &Delivery{Envelope: Envelope{Topic: "/sys/pk/dk/thing/event/property/post", ProductKey: "pk", DeviceKey: "dk"}}
	if got := Expand("fwd/{productKey}/{deviceKey}/{topic}", d, '/'); got != "fwd/pk/dk/sys/pk/dk/thing/event/property/post" {
		t.Errorf("mqtt: %s", got)
	}
	if got := Expand("fwd.{topic}", d, '.'); got != "fwd.sys.pk.dk.thing.event.property.post" {
		t.Errorf("nats: %s", got)
	}
}

// TestEnvelopeIDForms: the id is written as a string (like the API's
// message id) plus a numeric logId, and read back from either the new form
// or the numeric id of envelopes stored by earlier versions.
func TestEnvelopeIDForms(t *testing.T) {
	for _, in := range []string{
		`{"id":"42","logId":42,"topic":"/t"}`,
		`{"id":42,"topic":"/t"}`,
		`{"logId":42,"topic":"/t"}`,
	} {
		var e Envelope
		if err := json.Unmarshal([]byte(in), &e); err != nil || e.ID != 42 || e.Topic != "/t" {
			t.Errorf("%s: %+v, %v", in, e, err)
		}
	}
	var e Envelope
	if err := json.Unmarshal([]byte(`{"id":"4x2"}`), &e); err == nil {
		t.Error("a non-numeric id string decoded")
	}
}

// TestSignatureV2 checks the timestamped signature against a value computed
// with openssl (printf '%s' '1700000000.{"id":"1"}' | openssl dgst -sha256
// -hmac k3y) and the verification's refusals.
func TestSignatureV2(t *testing.T) {
	secret, ts, body := []byte("k3y"), "1700000000", []byte(`{"id":"1"}`)
	const want = "v2=fdca3bbba6a11af507e3fb8dc0c9e5f2f84ba9dae0fda6fe67204e88c3d52bdd"
	if got := SignV2(secret, ts, body); got != want {
		t.Fatalf("SignV2 = %s, want %s", got, want)
	}
	at := time.Unix(1700000000, 0)
	for _, c := range []struct {
		name     string
		ts, sig  string
		body     []byte
		now      time.Time
		want     error
		wantNone bool
	}{
		{name: "valid", ts: ts, sig: want, body: body, now: at.Add(4 * time.Minute), wantNone: true},
		{name: "valid, receiver clock behind", ts: ts, sig: want, body: body, now: at.Add(-4 * time.Minute), wantNone: true},
		{name: "replayed later", ts: ts, sig: want, body: body, now: at.Add(6 * time.Minute), want: ErrSignatureExpired},
		{name: "from the future", ts: ts, sig: want, body: body, now: at.Add(-6 * time.Minute), want: ErrSignatureExpired},
		{name: "timestamp changed", ts: "1700000300", sig: want, body: body, now: at, want: ErrSignatureMismatch},
		{name: "body changed", ts: ts, sig: want, body: []byte(`{"id":"2"}`), now: at, want: ErrSignatureMismatch},
		{name: "old body-only signature", ts: ts, sig: Sign(secret, body), body: body, now: at, want: ErrSignatureMismatch},
		{name: "no signature", ts: ts, body: body, now: at, want: ErrSignatureMissing},
		{name: "no timestamp", sig: want, body: body, now: at, want: ErrSignatureMissing},
		{name: "timestamp not a number", ts: "x", sig: want, body: body, now: at, want: ErrSignatureMismatch},
	} {
		err := VerifySignature(secret, c.ts, c.sig, c.body, c.now, DefaultSignatureTolerance)
		if c.wantNone && err != nil || !c.wantNone && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}
