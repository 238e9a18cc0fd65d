package sdk

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

func TestTopicPath(t *testing.T) {
	tests := []struct {
		topic string
		want  []string
		err   bool
	}{
		{"/sys/pk/dk/thing/event/property/post", []string{"topic", "sys", "pk", "dk", "thing", "event", "property", "post"}, false},
		{"pk/dk/user/up", []string{"topic", "pk", "dk", "user", "up"}, false},
		{"/ext/session/pk/dk/thing/activate/info", []string{"topic", "ext", "session", "pk", "dk", "thing", "activate", "info"}, false},
		{"", nil, true},
		{"/", nil, true},
		{"/sys//dk", nil, true},
		{"/sys/pk/", nil, true},
		{"/sys/./x", nil, true},
		{"/" + string(bytes.Repeat([]byte("a"), 256)), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.topic, func(t *testing.T) {
			got, err := topicPath(tt.topic)
			if tt.err {
				if !errors.Is(err, ErrInvalidTopic) {
					t.Fatalf("err = %v, want ErrInvalidTopic", err)
				}
				return
			}
			if err != nil || !slices.Equal(got, tt.want) {
				t.Fatalf("topicPath = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
}

func TestEncodeUint(t *testing.T) {
	tests := []struct {
		v    uint32
		want []byte
	}{
		{0, []byte{}},
		{50, []byte{50}},
		{1024, []byte{4, 0}},
		{0x10000, []byte{1, 0, 0}},
		{0xffffffff, []byte{0xff, 0xff, 0xff, 0xff}},
	}
	for _, tt := range tests {
		if got := encodeUint(tt.v); !bytes.Equal(got, tt.want) {
			t.Errorf("encodeUint(%d) = %x, want %x", tt.v, got, tt.want)
		}
	}
}

// TestRequestGolden pins the bytes of a publish datagram.
func TestRequestGolden(t *testing.T) {
	r := &request{
		code: codes.POST, path: []string{"topic", "a", "b"}, confirmable: true,
		contentFormat: JSON, accept: JSON, hasAccept: true,
		authOption: OptionToken2088, authToken: "T", payload: []byte("{}"),
	}
	m, err := buildMessage(r, 0x1234, []byte{1, 2, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	got, err := encodeMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{
		0x44, 0x02, 0x12, 0x34, 1, 2, 3, 4, // CON POST MID 0x1234, token
		0xb5, 't', 'o', 'p', 'i', 'c', // Uri-Path (11) "topic"
		0x01, 'a', 0x01, 'b', // Uri-Path "a", "b"
		0x11, 50, // Content-Format (12) 50
		0x51, 50, // Accept (17) 50
		0xe1, 0x07, 0x0a, 'T', // option 2088: delta 2071 = 269 + 0x070a, "T"
		0xff, '{', '}',
	}
	if !bytes.Equal(got, want) {
		t.Errorf("datagram\n got %x\nwant %x", got, want)
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		name string
		typ  message.Type
		code codes.Code
		want inboundKind
	}{
		{"empty ACK", message.Acknowledgement, codes.Empty, kindEmptyACK},
		{"piggybacked", message.Acknowledgement, codes.Changed, kindPiggybacked},
		{"RST", message.Reset, codes.Empty, kindReset},
		{"separate CON", message.Confirmable, codes.Content, kindConResponse},
		{"NON response", message.NonConfirmable, codes.Changed, kindNonResponse},
		{"ping", message.Confirmable, codes.Empty, kindConRequestOrPing},
		{"CON request", message.Confirmable, codes.GET, kindConRequestOrPing},
		{"NON request", message.NonConfirmable, codes.POST, kindIgnore},
		{"ACK with request code", message.Acknowledgement, codes.GET, kindIgnore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := message.Message{Type: tt.typ, Code: tt.code}
			if got := classify(&m); got != tt.want {
				t.Errorf("classify = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewResponseCopies(t *testing.T) {
	data := []byte{0x64, 0x44, 0, 1, 7, 7, 7, 7}
	data = append(data, 0xe2, 0x07, 0x1d, '4', '2') // option 2090: delta 269 + 0x071d, "42"
	data = append(data, 0xff, 'o', 'k')
	m, err := decodeMessage(data)
	if err != nil {
		t.Fatal(err)
	}
	r := newResponse(&m)
	for i := range data {
		data[i] = 0
	}
	if r.MessageID != "42" || string(r.Payload) != "ok" || string(r.Options[0].Value) != "42" || r.Code != codes.Changed {
		t.Errorf("response aliases the datagram: %+v", r)
	}
}

func TestDecodeReply(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		cbor    bool
		want    Reply
		err     bool
	}{
		{"string id", []byte(`{"id":"123","code":200,"data":{},"message":"success"}`), false, Reply{ID: "123", Code: 200, Data: []byte("{}"), Message: "success"}, false},
		{"numeric id", []byte(`{"id":123,"code":400,"message":"bad"}`), false, Reply{ID: "123", Code: 400, Message: "bad"}, false},
		{"cbor", []byte{0xa3, 0x62, 'i', 'd', 0x61, '5', 0x64, 'c', 'o', 'd', 'e', 0x18, 200, 0x64, 'd', 'a', 't', 'a', 0xa0}, true, Reply{ID: "5", Code: 200, Data: []byte("{}")}, false},
		{"not json", []byte("nope"), false, Reply{}, true},
		{"bad id", []byte(`{"id":{}}`), false, Reply{}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeReply(tt.payload, tt.cbor)
			if tt.err {
				if !errors.Is(err, ErrMalformed) {
					t.Fatalf("err = %v, want ErrMalformed", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.ID != tt.want.ID || got.Code != tt.want.Code || got.Message != tt.want.Message || string(got.Data) != string(tt.want.Data) {
				t.Errorf("decodeReply = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestAuthPayloadVector(t *testing.T) {
	b, err := authPayload(vecCreds, JSON)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"productKey":"a1MZxOdcBnO","deviceName":"test_01","clientId":"a1MZxOdcBnO.test_01","sign":"2db0e24ea7eb7f2570fa153fa5559f74","signmethod":"hmacmd5"}`
	if string(b) != want {
		t.Errorf("auth payload\n%s\nwant\n%s", b, want)
	}
}

func TestStatusErrorMessage(t *testing.T) {
	err := error(&StatusError{Code: codes.Unauthorized})
	if got := err.Error(); got != "sdk: server answered 4.01 Unauthorized" {
		t.Errorf("Error() = %q", got)
	}
}

func TestParseAuthToken(t *testing.T) {
	cborTok := []byte{0xa1, 0x65, 't', 'o', 'k', 'e', 'n', 0x61, 'T'}
	tests := []struct {
		name    string
		payload []byte
		cbor    bool
		want    string
		err     error
	}{
		{"json", []byte(`{"token":"T"}`), false, "T", nil},
		{"cbor", cborTok, true, "T", nil},
		{"no token", []byte(`{"random":"x"}`), false, "", ErrNoToken},
		{"empty", nil, false, "", ErrMalformed},
		{"cbor as json", cborTok, false, "", ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseAuthToken(tt.payload, tt.cbor)
			if got != tt.want || !errors.Is(err, tt.err) {
				t.Errorf("parseAuthToken = %q, %v; want %q, %v", got, err, tt.want, tt.err)
			}
		})
	}
}

func TestCredentialsRedacted(t *testing.T) {
	var buf bytes.Buffer
	slog.New(slog.NewTextHandler(&buf, nil)).Info("x", "creds", vecCreds)
	for _, s := range []string{buf.String(), fmt.Sprint(vecCreds), fmt.Sprintf("%+v", vecCreds), fmt.Sprintf("%#v", vecCreds)} {
		if strings.Contains(s, vecDS) || !strings.Contains(s, vecPK) {
			t.Errorf("secret not redacted: %s", s)
		}
	}
}

func TestParseNTPReply(t *testing.T) {
	for _, tc := range []struct {
		in string
		ok bool
	}{
		{`{"deviceSendTime":"1","serverRecvTime":"1700000000123","serverSendTime":"1700000000125"}`, true},
		{`{"serverRecvTime":1700000000123,"serverSendTime":1700000000123}`, true},
		{`{"serverRecvTime":"x","serverSendTime":"1"}`, false},
		{`{"serverRecvTime":"5","serverSendTime":"4"}`, false},
		{`{"code":200}`, false},
		{`not json`, false},
	} {
		recv, send, err := parseNTPReply([]byte(tc.in))
		if (err == nil) != tc.ok {
			t.Fatalf("%s: %v", tc.in, err)
		}
		if tc.ok && (recv.UnixMilli() != 1700000000123 || send.Before(recv)) {
			t.Fatalf("%s: %v %v", tc.in, recv, send)
		}
	}
}
