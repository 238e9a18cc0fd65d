// Package command is the downlink command queue (docs/protocol.md §2.1, §4):
// commands (set measure points or properties, invoke a service, raw down)
// wait per device until the device fetches them (option 2100 on an uplink's
// response, then GET /topic/{requestTopic}) or takes a server push, and are
// completed by the device's POST /topic/{requestTopic}_reply.
//
// The Store persists commands and appends every state change to the message
// log in the same transaction; the Queue keeps a per-node in-memory count of
// pending commands per device so that the uplink path can ask HasPending
// without touching storage, expires due commands and pushes new ones to
// devices with a live session.
package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// State is where a command is in its life.
type State string

// Command states. pending → delivered → replied|failed; pending or
// delivered → expired (TTL passed); pending → cancelled. A reply may also
// complete a pending command (a push whose ACK was lost).
const (
	StatePending   State = "pending"
	StateDelivered State = "delivered"
	StateReplied   State = "replied" // the device answered code 200
	StateFailed    State = "failed"  // the device answered another code
	StateExpired   State = "expired"
	StateCancelled State = "cancelled"
)

// ValidState reports whether s names a state.
func ValidState(s State) bool {
	switch s {
	case StatePending, StateDelivered, StateReplied, StateFailed, StateExpired, StateCancelled:
		return true
	}
	return false
}

// How a command reached the device.
const (
	ViaGet  = "get"  // the device fetched it after option 2100
	ViaPush = "push" // a server-initiated CON request was acknowledged
)

// Errors of the package.
var (
	ErrNotFound = errors.New("command: not found")
	// ErrState means the command is not in a state the operation applies to
	// (cancelling a delivered command, completing an expired one).
	ErrState = errors.New("command: wrong state")
	// ErrInvalid is a command that cannot be queued (bad type, params, TTL).
	ErrInvalid = errors.New("command: invalid")
)

// Command is one downlink command.
type Command struct {
	// ID is what the device sees in the request's "id" and echoes in its
	// reply: the decimal row id.
	ID         string
	ProductKey string
	DeviceKey  string
	// Topic is the full request topic, "/sys/{pk}/{dk}/thing/service/…".
	Topic  string
	Method string // "thing.service.measurepoint.set"; "" for raw down
	Params json.RawMessage
	Raw    []byte // down_raw payload (Topic ends in thing/model/down_raw)
	State  State

	CreatedAt    time.Time
	ExpiresAt    time.Time
	DeliveredAt  time.Time // zero until delivered
	RepliedAt    time.Time // zero until replied (or failed)
	Attempts     int       // deliveries tried (GETs answered, pushes sent)
	DeliveredVia string    // ViaGet or ViaPush

	ReplyCode    int
	ReplyData    json.RawMessage
	ReplyMessage string
}

// IsRaw reports whether c is a raw-down command (opaque payload).
func (c *Command) IsRaw() bool { return strings.HasSuffix(c.Topic, "/thing/model/down_raw") }

// Reply is a device's answer to a command (docs/protocol.md §4):
// {"id":"…","code":200,"data":{…},"message":"success"}.
type Reply struct {
	ID      string
	Code    int
	Data    json.RawMessage
	Message string
}

// ListQuery selects commands of one device, newest first.
type ListQuery struct {
	ProductKey, DeviceKey string
	State                 State // "" for all
	// Before returns commands with a row id below it (the cursor of the
	// previous page); 0 starts at the newest.
	Before int64
	Limit  int
}

// Transition is a command after a state change with the state it left.
type Transition struct {
	Command
	From State
}

// Store persists commands. Every method that changes a command's state
// appends the change to the message log in the same transaction.
type Store interface {
	CreateCommand(ctx context.Context, c *Command) error // sets ID, State pending
	GetCommand(ctx context.Context, pk, dk, id string) (Command, error)
	ListCommands(ctx context.Context, q ListQuery) ([]Command, error)
	// NextPendingCommand returns the oldest pending, unexpired command of
	// the device (of topic, unless topic is ""), ErrNotFound when none.
	NextPendingCommand(ctx context.Context, pk, dk, topic string, now time.Time) (Command, error)
	// MarkCommandDelivered moves a pending, unexpired command to delivered.
	MarkCommandDelivered(ctx context.Context, id, via string, now time.Time) (Command, error)
	// CompleteCommand records a reply of a pending or delivered command.
	CompleteCommand(ctx context.Context, pk, dk string, r Reply, now time.Time) (Transition, error)
	// ExpireCommands expires up to limit pending or delivered commands
	// whose ExpiresAt is at or before now.
	ExpireCommands(ctx context.Context, now time.Time, limit int) ([]Transition, error)
	// CancelCommand cancels a pending command.
	CancelCommand(ctx context.Context, pk, dk, id string, now time.Time) (Command, error)
	// PendingCommandCounts returns the number of pending, unexpired
	// commands of every device that has some (the Queue's start state).
	PendingCommandCounts(ctx context.Context, now time.Time) (map[DeviceKey]int, error)
}

// DeviceKey names one device.
type DeviceKey struct{ ProductKey, DeviceKey string }

// Kind is the type of a command as the API names it.
type Kind string

// Command kinds and their request topics (docs/protocol.md §4).
const (
	KindSetMeasurepoints Kind = "setMeasurepoints" // thing/service/measurepoint/set (dialect E)
	KindSetProperties    Kind = "setProperties"    // thing/service/property/set (dialect A)
	KindInvokeService    Kind = "invokeService"    // thing/service/{id}
	KindRawDown          Kind = "rawDown"          // thing/model/down_raw
)

// Spec is what a command is made from.
type Spec struct {
	Kind    Kind
	Service string          // KindInvokeService
	Params  json.RawMessage // a JSON object (absent: {})
	Raw     []byte          // KindRawDown
}

// maxServiceLen bounds a service id (one topic segment).
const maxServiceLen = 64

// Build validates s and returns the command's topic, method and params for
// device pk/dk (errors wrap ErrInvalid).
func Build(pk, dk string, s Spec) (topic, method string, params json.RawMessage, err error) {
	base := "/sys/" + pk + "/" + dk + "/"
	if s.Kind == KindRawDown {
		if len(s.Params) > 0 {
			return "", "", nil, fmt.Errorf("%w: rawDown takes raw, not params", ErrInvalid)
		}
		if len(s.Raw) == 0 {
			return "", "", nil, fmt.Errorf("%w: rawDown needs a non-empty raw payload", ErrInvalid)
		}
		return base + "thing/model/down_raw", "", nil, nil
	}
	if len(s.Raw) > 0 {
		return "", "", nil, fmt.Errorf("%w: only rawDown takes raw", ErrInvalid)
	}
	params = s.Params
	if len(bytes.TrimSpace(params)) == 0 {
		params = json.RawMessage(`{}`)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(params, &obj); err != nil || obj == nil {
		return "", "", nil, fmt.Errorf("%w: params must be a JSON object", ErrInvalid)
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, params); err != nil {
		return "", "", nil, fmt.Errorf("%w: params: %v", ErrInvalid, err)
	}
	params = buf.Bytes()
	switch s.Kind {
	case KindSetMeasurepoints:
		return base + "thing/service/measurepoint/set", "thing.service.measurepoint.set", params, nil
	case KindSetProperties:
		return base + "thing/service/property/set", "thing.service.property.set", params, nil
	case KindInvokeService:
		if !validService(s.Service) {
			return "", "", nil, fmt.Errorf("%w: service must be 1..%d letters, digits, '_' or '-' (and not a reserved name)", ErrInvalid, maxServiceLen)
		}
		return base + "thing/service/" + s.Service, "thing.service." + s.Service, params, nil
	}
	return "", "", nil, fmt.Errorf("%w: type %q: want setMeasurepoints, setProperties, invokeService or rawDown", ErrInvalid, s.Kind)
}

func validService(s string) bool {
	if s == "" || len(s) > maxServiceLen || s == "property" || s == "measurepoint" || strings.HasSuffix(s, "_reply") {
		return false
	}
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' || r == '-') {
			return false
		}
	}
	return true
}

// IsRequestTopic reports whether segs (a topic split at '/', without the
// leading empty segment) is a downlink request topic of some device:
// sys/{pk}/{dk}/thing/service/… or sys/{pk}/{dk}/thing/model/down_raw.
func IsRequestTopic(segs []string) bool {
	if len(segs) < 6 || segs[0] != "sys" || segs[3] != "thing" {
		return false
	}
	switch {
	case segs[4] == "service":
		return !strings.HasSuffix(segs[len(segs)-1], "_reply")
	case segs[4] == "model":
		return len(segs) == 6 && segs[5] == "down_raw"
	}
	return false
}

// ReplyRequestTopic returns the request topic a reply topic answers
// ("/sys/…/thing/service/x_reply" → "/sys/…/thing/service/x"), false when
// topic is not a command reply topic.
func ReplyRequestTopic(topic string) (string, bool) {
	req, ok := strings.CutSuffix(topic, "_reply")
	if !ok {
		return "", false
	}
	segs := strings.Split(strings.TrimPrefix(req, "/"), "/")
	if !IsRequestTopic(segs) {
		return "", false
	}
	return req, true
}

// requestBody is the command as the device receives it.
type requestBody struct {
	ID      string          `json:"id" cbor:"id"`
	Version string          `json:"version" cbor:"version"`
	Method  string          `json:"method" cbor:"method"`
	Params  json.RawMessage `json:"params" cbor:"-"`
	// CBORParams carries params decoded for the CBOR encoding.
	CBORParams any `json:"-" cbor:"params"`
}

// Payload renders the command as the device receives it: the raw bytes
// for raw down, else {"id","version":"1.0","method","params"} in JSON
// (cbor false) or CBOR.
func (c *Command) Payload(asCBOR bool) ([]byte, error) {
	if c.IsRaw() {
		return c.Raw, nil
	}
	b := requestBody{ID: c.ID, Version: "1.0", Method: c.Method, Params: c.Params}
	if len(b.Params) == 0 {
		b.Params = json.RawMessage(`{}`)
	}
	if !asCBOR {
		return json.Marshal(b)
	}
	if err := json.Unmarshal(b.Params, &b.CBORParams); err != nil {
		return nil, fmt.Errorf("command %s: params: %w", c.ID, err)
	}
	return cbor.Marshal(b)
}

// maxReplyData bounds the reply data kept with a command.
const maxReplyData = 16 << 10

var errReply = errors.New("command: not a reply")

// ParseReply decodes a device's reply (JSON, or CBOR when asCBOR) into a
// Reply: id as a string or number, code a number, data any JSON value.
func ParseReply(body []byte, asCBOR bool) (Reply, error) {
	var raw struct {
		ID      any    `json:"id" cbor:"id"`
		Code    any    `json:"code" cbor:"code"`
		Data    any    `json:"data" cbor:"data"`
		Message string `json:"message" cbor:"message"`
	}
	if asCBOR {
		if err := cbor.Unmarshal(body, &raw); err != nil {
			return Reply{}, fmt.Errorf("%w: CBOR: %v", errReply, err)
		}
	} else {
		d := json.NewDecoder(bytes.NewReader(body))
		d.UseNumber()
		if err := d.Decode(&raw); err != nil {
			return Reply{}, fmt.Errorf("%w: JSON: %v", errReply, err)
		}
	}
	r := Reply{Message: raw.Message}
	var ok bool
	if r.ID, ok = scalar(raw.ID); !ok || r.ID == "" {
		return Reply{}, fmt.Errorf("%w: no id", errReply)
	}
	code, ok := scalar(raw.Code)
	n, err := strconv.Atoi(code)
	if !ok || err != nil {
		return Reply{}, fmt.Errorf("%w: code is not an integer", errReply)
	}
	r.Code = n
	if raw.Data != nil {
		d, err := json.Marshal(jsonable(raw.Data))
		if err != nil {
			return Reply{}, fmt.Errorf("%w: data: %v", errReply, err)
		}
		if len(d) <= maxReplyData {
			r.Data = d
		}
	}
	return r, nil
}

// scalar formats a decoded id or code.
func scalar(v any) (string, bool) {
	switch x := v.(type) {
	case string:
		return x, true
	case json.Number:
		return x.String(), true
	case uint64:
		return strconv.FormatUint(x, 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		if x == float64(int64(x)) {
			return strconv.FormatInt(int64(x), 10), true
		}
	}
	return "", false
}

// jsonable turns CBOR's map[any]any into map[string]any so that it
// marshals as JSON (non-string keys are formatted).
func jsonable(v any) any {
	switch x := v.(type) {
	case map[any]any:
		m := make(map[string]any, len(x))
		for k, e := range x {
			m[fmt.Sprint(k)] = jsonable(e)
		}
		return m
	case []any:
		for i := range x {
			x[i] = jsonable(x[i])
		}
	}
	return v
}
