package api

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/registry"
)

// CoAP Content-Format numbers (RFC 7252 §12.3, RFC 8949 §9.5) whose payload
// is embedded as JSON in message responses.
const (
	contentFormatJSON = 50
	contentFormatCBOR = 60
)

// Message is the JSON form of a stored uplink. Payload holds the payload as
// a JSON value when it is JSON, or CBOR that JSON can represent; it is
// omitted otherwise. PayloadBase64 is always present.
type Message struct {
	ID            string          `json:"id"`
	ProductKey    string          `json:"productKey"`
	DeviceKey     string          `json:"deviceKey"`
	Topic         string          `json:"topic"`
	ContentFormat uint16          `json:"contentFormat"`
	ReceivedAt    time.Time       `json:"receivedAt"`
	Peer          string          `json:"peer"`
	Transport     string          `json:"transport"`
	PayloadBase64 string          `json:"payloadBase64"`
	Payload       json.RawMessage `json:"payload,omitempty"`
}

func messageJSON(m message.Message) Message {
	return Message{
		ID:            strconv.FormatInt(m.ID, 10),
		ProductKey:    m.ProductKey,
		DeviceKey:     m.DeviceKey,
		Topic:         m.Topic,
		ContentFormat: m.ContentFormat,
		ReceivedAt:    m.ReceivedAt.UTC(),
		Peer:          m.Peer,
		Transport:     m.Transport,
		PayloadBase64: base64.StdEncoding.EncodeToString(m.Payload),
		Payload:       payloadAsJSON(m.ContentFormat, m.Payload),
	}
}

// cborToAny decodes CBOR for re-encoding as JSON: maps must have text keys,
// bignums become *big.Int (which marshals as a JSON number), time tags
// become RFC 3339 strings, and other tags are reduced to their content.
var cborToAny = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DefaultMapType:       reflect.TypeOf(map[string]any(nil)),
		IntDec:               cbor.IntDecConvertSignedOrBigInt,
		BigIntDec:            cbor.BigIntDecodePointer,
		TimeTagToAny:         cbor.TimeTagToRFC3339Nano,
		UnrecognizedTagToAny: cbor.UnrecognizedTagContentToAny,
		MaxNestedLevels:      32,
	}.DecMode()
	if err != nil {
		panic(err) // static options
	}
	return dm
}()

// payloadAsJSON returns the payload as a JSON value, or nil when it is not
// JSON (format 50) or CBOR representable in JSON (format 60): binary
// payloads, invalid data, maps with non-text keys, NaN or infinities.
func payloadAsJSON(format uint16, p []byte) json.RawMessage {
	switch format {
	case contentFormatJSON:
		if json.Valid(p) && utf8.Valid(p) {
			return json.RawMessage(p)
		}
	case contentFormatCBOR:
		var v any
		if err := cborToAny.Unmarshal(p, &v); err != nil {
			return nil
		}
		b, err := json.Marshal(v)
		if err != nil {
			return nil
		}
		return b
	}
	return nil
}

func (s *server) listMessages(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "productKey", "deviceKey", "from", "to", "limit", "cursor", "after", "order"); err != nil {
		return err
	}
	q, err := parseMessageQuery(r)
	if err != nil {
		return err
	}
	if q.ProductKey = r.URL.Query().Get("productKey"); q.ProductKey != "" {
		if err := registry.ValidateProductKey(q.ProductKey); err != nil {
			return err
		}
	}
	if q.DeviceKey = r.URL.Query().Get("deviceKey"); q.DeviceKey != "" {
		if err := registry.ValidateDeviceKey(q.DeviceKey); err != nil {
			return err
		}
	}
	return s.writeMessages(w, r, q)
}

// listDeviceMessages lists one existing device's messages (404 for an
// unknown device; the messages of a deleted device remain reachable through
// /messages?productKey=&deviceKey=).
func (s *server) listDeviceMessages(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "from", "to", "limit", "cursor", "after", "order"); err != nil {
		return err
	}
	q, err := parseMessageQuery(r)
	if err != nil {
		return err
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	q.ProductKey, q.DeviceKey = d.ProductKey, d.DeviceKey
	return s.writeMessages(w, r, q)
}

func (s *server) writeMessages(w http.ResponseWriter, r *http.Request, q message.Query) error {
	ms, err := s.o.Messages.List(r.Context(), q)
	if err != nil {
		return fmt.Errorf("list messages: %w", err)
	}
	out := List[Message]{Items: make([]Message, 0, len(ms))}
	for _, m := range ms {
		out.Items = append(out.Items, messageJSON(m))
	}
	if len(ms) == q.Limit {
		out.NextCursor = strconv.FormatInt(ms[len(ms)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseMessageQuery reads from, to, limit, after and order.
func parseMessageQuery(r *http.Request) (message.Query, error) {
	v := r.URL.Query()
	var q message.Query
	var err error
	if q.Limit, err = parseLimit(r); err != nil {
		return q, err
	}
	if q.From, err = parseTime("from", v.Get("from")); err != nil {
		return q, err
	}
	if q.To, err = parseTime("to", v.Get("to")); err != nil {
		return q, err
	}
	if !q.From.IsZero() && !q.To.IsZero() && q.From.After(q.To) {
		return q, badRequest("from is after to")
	}
	a, err := pageCursor(v)
	if err != nil {
		return q, err
	}
	if a != "" {
		q.AfterID, err = strconv.ParseInt(a, 10, 64)
		if err != nil || q.AfterID < 1 {
			return q, badRequest("cursor must be a message id (a positive integer)")
		}
	}
	switch v.Get("order") {
	case "", "asc":
	case "desc":
		q.Descending = true
	default:
		return q, badRequest("order must be \"asc\" or \"desc\"")
	}
	return q, nil
}

// parseTime accepts RFC 3339 (with optional fractional seconds) or unix
// milliseconds; "" is the zero time (no bound).
func parseTime(name, s string) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if ms, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.UnixMilli(ms).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, badRequest("%s must be an RFC 3339 time or unix milliseconds", name)
	}
	return t.UTC(), nil
}
