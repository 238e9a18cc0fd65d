package sdk

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strconv"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Errors of the package.
var (
	// ErrTimeout means every transmission of a request went unanswered
	// (RFC 7252 §4.2 MAX_RETRANSMIT exhausted), or an awaited separate or NON
	// response did not come in time.
	ErrTimeout = errors.New("sdk: request timed out")
	// ErrClosed is returned by requests on, or pending at, a closed Client.
	ErrClosed = errors.New("sdk: client closed")
	// ErrReset means the server answered a request with RST (RFC 7252 §4.2).
	ErrReset = errors.New("sdk: request reset by server")
	// ErrNoCredentials means a token is needed but none is stored and no
	// credentials were given (WithCredentials).
	ErrNoCredentials = errors.New("sdk: no token and no credentials")
	// ErrInvalidTopic is returned for a topic that cannot be sent as Uri-Path.
	ErrInvalidTopic = errors.New("sdk: invalid topic")
	// ErrInvalidOption is returned by Dial for an invalid Option.
	ErrInvalidOption = errors.New("sdk: invalid option")
	// ErrMalformed means a datagram or a payload could not be decoded.
	ErrMalformed = errors.New("sdk: malformed message")
	// ErrNoToken means a 2.xx auth response carried no token.
	ErrNoToken = errors.New("sdk: auth response has no token")
)

// Response is the server's answer to a request.
type Response struct {
	// Code is the response code, 2.xx for a Response returned without error.
	Code codes.Code
	// Payload is the response body: for a publish, the reply JSON (docs/protocol.md §4).
	Payload []byte
	// MessageID is the platform message ID of the uplink (option 2090), "" if absent.
	MessageID string
	// ContentFormat is the payload's Content-Format, valid if the option was present.
	ContentFormat message.MediaType
	// Options are all options of the response; they do not alias SDK buffers.
	Options message.Options

	hasContentFormat bool
}

// Reply is the thing-model reply a publish is answered with (docs/protocol.md §4):
// {"id":"123","code":200,"data":{},"message":"success"}.
type Reply struct {
	ID      string          `json:"id"`
	Code    int             `json:"code"`
	Data    json.RawMessage `json:"data,omitempty"`
	Message string          `json:"message"`
}

// UnmarshalJSON accepts id as a string or as a number.
func (r *Reply) UnmarshalJSON(b []byte) error {
	var aux struct {
		ID      json.RawMessage `json:"id"`
		Code    int             `json:"code"`
		Data    json.RawMessage `json:"data"`
		Message string          `json:"message"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	id, err := idString(aux.ID)
	if err != nil {
		return err
	}
	*r = Reply{ID: id, Code: aux.Code, Data: aux.Data, Message: aux.Message}
	return nil
}

func idString(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || string(raw) == "null" {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var n json.Number
	if err := json.Unmarshal(raw, &n); err != nil {
		return "", fmt.Errorf("reply id: %w", err)
	}
	return n.String(), nil
}

var mapStringAnyType = reflect.TypeOf(map[string]any(nil))

// cborReplyDecMode decodes CBOR maps with string keys so that data can be
// re-encoded as JSON.
var cborReplyDecMode, _ = cbor.DecOptions{
	DefaultMapType:  mapStringAnyType,
	MaxNestedLevels: 32,
}.DecMode()

// Reply decodes the payload as the thing-model reply: CBOR when the response's
// Content-Format is 60, JSON otherwise. Data is always returned as JSON.
func (r *Response) Reply() (Reply, error) {
	if r == nil {
		return Reply{}, fmt.Errorf("%w: no response", ErrMalformed)
	}
	return decodeReply(r.Payload, r.hasContentFormat && r.ContentFormat == CBOR)
}

// decodeReply decodes a reply payload (pure; fuzzed).
func decodeReply(payload []byte, isCBOR bool) (Reply, error) {
	var rep Reply
	if !isCBOR {
		if err := json.Unmarshal(payload, &rep); err != nil {
			return Reply{}, fmt.Errorf("%w: reply JSON: %w", ErrMalformed, err)
		}
		return rep, nil
	}
	var aux struct {
		ID      any    `cbor:"id"`
		Code    int    `cbor:"code"`
		Data    any    `cbor:"data"`
		Message string `cbor:"message"`
	}
	if err := cborReplyDecMode.Unmarshal(payload, &aux); err != nil {
		return Reply{}, fmt.Errorf("%w: reply CBOR: %w", ErrMalformed, err)
	}
	switch id := aux.ID.(type) {
	case nil:
	case string:
		rep.ID = id
	case uint64:
		rep.ID = strconv.FormatUint(id, 10)
	case int64:
		rep.ID = strconv.FormatInt(id, 10)
	default:
		return Reply{}, fmt.Errorf("%w: reply CBOR: id of type %T", ErrMalformed, aux.ID)
	}
	rep.Code, rep.Message = aux.Code, aux.Message
	if aux.Data != nil {
		data, err := json.Marshal(aux.Data)
		if err != nil {
			return Reply{}, fmt.Errorf("%w: reply CBOR data: %w", ErrMalformed, err)
		}
		rep.Data = data
	}
	return rep, nil
}

// StatusError is a non-2.xx response. Use errors.As to read the code.
type StatusError struct {
	Code    codes.Code
	Payload []byte
}

func (e *StatusError) Error() string {
	return "sdk: server answered " + codeString(e.Code) + " " + e.Code.String()
}

// TooLargeError is a 4.13 Request Entity Too Large answer (RFC 7959 §2.9.3).
// errors.As also finds the underlying *StatusError.
type TooLargeError struct {
	// Size1 is the largest body the server accepts, 0 if it did not say.
	Size1 uint32
	Err   *StatusError
}

func (e *TooLargeError) Error() string {
	if e.Size1 > 0 {
		return fmt.Sprintf("sdk: request body too large (server accepts at most %d bytes)", e.Size1)
	}
	return "sdk: request body too large"
}

func (e *TooLargeError) Unwrap() error { return e.Err }

// statusError turns a non-2.xx response into its typed error.
func statusError(r *Response) error {
	se := &StatusError{Code: r.Code, Payload: r.Payload}
	if r.Code == codes.RequestEntityTooLarge {
		tl := &TooLargeError{Err: se}
		if v, err := r.Options.GetUint32(message.Size1); err == nil {
			tl.Size1 = v
		}
		return tl
	}
	return se
}

// isSuccess reports whether c is of class 2.
func isSuccess(c codes.Code) bool { return c>>5 == 2 }
