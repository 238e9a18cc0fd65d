// Package thing decodes the thing-model requests devices publish over CoAP
// (docs/protocol.md §4): measure points (dialect E), properties and events
// (dialect A), attributes, device info, replies to downlinks and activation,
// in JSON (Content-Format 50) or CBOR (60, RFC 8949) alike.
//
// Decode turns an uplink into a Request of typed Records, or explains with an
// *Error carrying the reply code why the payload is not a valid request. The
// package does not log and holds no state; it is safe for concurrent use.
//
// Reply codes (the "code" of the reply JSON the gateway sends back):
//
//	200 success
//	400 malformed payload: not JSON/CBOR, not an object/map, trailing data,
//	    nesting deeper than MaxDepth, empty payload
//	460 request parameter error: id, method, params or a record of the wrong
//	    type, a name empty or longer than MaxNameLen, a non-finite number, a
//	    time that is not unix milliseconds, more than MaxRecords records
//	500 internal error (a bug: Decode recovered from a panic)
package thing

import (
	"fmt"
	"time"
)

// Kind is the kind of request a topic carries.
type Kind string

// Request kinds, by topic (docs/protocol.md §4). Topics are the full topics as
// stored: "/sys/{pk}/{dk}/thing/…".
const (
	KindMeasurePointPost  Kind = "measurepoint.post"       // thing/measurepoint/post
	KindMeasurePointBatch Kind = "measurepoint.post.batch" // thing/measurepoint/post/batch
	KindPropertyPost      Kind = "property.post"           // thing/event/property/post
	KindEventPost         Kind = "event.post"              // thing/event/{id}/post
	KindAttributeUpdate   Kind = "attribute.update"        // thing/attribute/update
	KindAttributeQuery    Kind = "attribute.query"         // thing/attribute/query
	KindAttributeDelete   Kind = "attribute.delete"        // thing/attribute/delete
	KindDeviceInfoUpdate  Kind = "deviceinfo.update"       // thing/deviceinfo/update
	KindRawUp             Kind = "raw.up"                  // thing/model/up_raw: opaque bytes
	KindReply             Kind = "reply"                   // thing/…/…_reply: a device's answer to a downlink
	KindActivate          Kind = "activate"                // /ext/session/{pk}/{dk}/thing/activate/info
	KindCustom            Kind = "custom"                  // outside /sys and /ext: opaque, not decoded
	KindThing             Kind = "thing"                   // any other /sys or /ext topic: an object with id/method/params
)

// Reply codes; see the package documentation.
const (
	CodeSuccess   = 200
	CodeMalformed = 400
	CodeBadParams = 460
	CodeInternal  = 500
)

// Limits that stop abusive payloads.
const (
	MaxRecords = 1000 // records per request (measure points over all batch items, properties, attributes)
	MaxDepth   = 16   // nesting of objects/arrays, the root object being level 1
	MaxNameLen = 128  // characters in a point, property, attribute or event name
	MaxIDLen   = 128  // characters in a request id
)

// Request is a decoded uplink.
type Request struct {
	Kind Kind
	// ID is the request "id" as the device sent it: a string's content, or a
	// number's literal text (JSON) / decimal form (CBOR); "" if absent or null.
	ID string
	// IDIsNumber reports that ID was sent as a number: replies echo it as a
	// number, not as a string.
	IDIsNumber bool
	Method     string   // "method" as sent, "" if absent
	Records    []Record // one per measure point / property / event / attribute, in a stable order
	Reply      *Reply   // Kind "reply" (not down_raw_reply): the device's answer to a downlink
	// Raw is the payload, not copied, for the opaque kinds: "raw.up",
	// "custom" and the reply to a raw downlink (thing/model/down_raw_reply).
	Raw []byte
}

// RecordKind says what a Record holds.
type RecordKind string

// Record kinds.
const (
	RecordPoint     RecordKind = "point"     // a measure point (E) or property (A)
	RecordEvent     RecordKind = "event"     // an event; Name is the event id from the topic
	RecordAttribute RecordKind = "attribute" // an attribute or device info entry
)

// Record is one typed datum of a request.
type Record struct {
	Kind RecordKind
	Name string // point/property/attribute name, or the event id (from the topic)
	// Value is float64, int64 (integers that fit), string, bool,
	// map[string]any or []any, the same types inside maps and arrays (where
	// nil, from null, may also appear). JSON numbers keep their integer-ness:
	// 40 is int64, 40.0 float64. Value is nil only for attribute query and
	// delete, which name attributes without values.
	Value any
	// Time is the device's timestamp ("time" in unix ms in params, in a batch
	// item, or per point in the {"value":…,"time":…} form) or else the
	// receivedAt given to Decode.
	Time time.Time
	// Quality is the measure point's "quality" in the {"value":…,"quality":…}
	// form (dialect E), nil when absent.
	Quality any
	// ProductKey and DeviceKey name the (sub-)device of a batch item that
	// names one; empty means the publishing device.
	ProductKey, DeviceKey string
}

// Reply is a device's answer to a downlink (thing/service/…_reply).
type Reply struct {
	ID      string // the "id" of the downlink it answers, as sent
	Code    int
	Data    any // "data" with the Record.Value types; nil if absent
	Message string
}

// Error is a payload that is not a valid thing-model request. Code is the
// reply code (CodeMalformed, CodeBadParams, …), Message says why in terms of
// the payload's fields, fit for the device.
type Error struct {
	Code    int
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("thing: %s (code %d)", e.Message, e.Code) }

func malformed(format string, args ...any) *Error {
	return &Error{Code: CodeMalformed, Message: fmt.Sprintf(format, args...)}
}

func badParams(format string, args ...any) *Error {
	return &Error{Code: CodeBadParams, Message: fmt.Sprintf(format, args...)}
}
