// Package message defines the stored uplink message and the Store that
// persists it. A message acknowledged to a device has been appended durably.
package message

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"time"
)

// Transport names how an uplink arrived.
const (
	TransportCoAP      = "coap"      // plain CoAP/UDP, token auth (5683)
	TransportSymmetric = "coap-sym"  // payload-encrypted CoAP (5682)
	TransportDTLS      = "coap-dtls" // CoAP over DTLS (5684)
	// TransportEvent marks a lifecycle event in the log (see EventTopic).
	TransportEvent = "event"
)

// EventTopicPrefix starts the topics of lifecycle events (a device going
// online or offline, a downlink command changing state). They are stored in
// the same ordered log as uplinks, under EventTopic(pk, dk, type), so that
// forwarding rules and the live stream see one sequence with one cursor.
// As in MQTT (v3.1.1 §4.7.2), a topic filter starting with a wildcard does
// not match a topic starting with '$', and listings leave events out unless
// Query.IncludeEvents is set.
const EventTopicPrefix = "$events/"

// EventTopic returns the log topic of a lifecycle event of one device,
// "$events/{pk}/{dk}/{typ}" (typ e.g. "online", "offline", "command").
func EventTopic(pk, dk, typ string) string {
	return EventTopicPrefix + pk + "/" + dk + "/" + typ
}

// IsEvent reports whether topic is a lifecycle event's topic.
func IsEvent(topic string) bool { return len(topic) > 0 && topic[0] == '$' }

// Message is one stored uplink.
type Message struct {
	ID            int64 // assigned by Store.Append; > 0 and increasing
	ProductKey    string
	DeviceKey     string
	Topic         string // always starts with "/"
	Payload       []byte
	ContentFormat uint16 // CoAP Content-Format number (50 JSON, 60 CBOR, 42 octets)
	ReceivedAt    time.Time
	Peer          string // remote address "ip:port"
	Transport     string
	// Exchange, when set, is the CoAP exchange that carried the uplink
	// (ExchangeKey). A store shared by several nodes keeps one entry per
	// exchange for ExchangeLifetime: appending it again (a retransmission
	// that reached another node) stores nothing and sets ID to the first
	// entry's. The embedded store leaves this to the node's own duplicate
	// detection and ignores it. Not stored with the message.
	Exchange string
}

// ExchangeLifetime is how long a shared store remembers an exchange key
// (RFC 7252 EXCHANGE_LIFETIME with the default transmission parameters).
const ExchangeLifetime = 247 * time.Second

// ExchangeKey identifies a CON uplink's exchange across nodes: the device,
// the CoAP Message ID, the token and a digest of the payload — what a
// retransmission repeats byte for byte (RFC 7252 §4.2). The peer address
// is not part of it: a load balancer that proxies (nginx) shows a flow
// re-hashed to another node from another address, and a DTLS session
// taken over by another node may arrive from a new address too. A
// different uplink of the same device differs in Message ID, token or
// payload; one equal in all three within ExchangeLifetime carries the same
// data and is stored once.
func ExchangeKey(pk, dk string, mid uint16, token, payload []byte) string {
	sum := sha256.Sum256(payload)
	return pk + "/" + dk + "|" + strconv.Itoa(int(mid)) + "|" + hex.EncodeToString(token) + "|" + hex.EncodeToString(sum[:16])
}

// Query selects stored messages. Zero fields do not filter.
type Query struct {
	ProductKey string
	DeviceKey  string
	From       time.Time // inclusive
	To         time.Time // exclusive
	// AfterID returns only messages with ID > AfterID (ascending order) or,
	// with Descending, ID < AfterID when AfterID > 0.
	AfterID    int64
	Descending bool
	Limit      int // <= 0 means 100; adapters cap it at 1000
	// IncludeEvents also returns lifecycle events (topics starting with
	// '$', see EventTopic); listings of uplinks leave it false.
	IncludeEvents bool
}

// Store persists messages. Append assigns IDs to msgs in order and returns
// only once all of them are durable (committed and synced) in one
// transaction: either all are stored or none is. Safe for concurrent use.
type Store interface {
	Append(ctx context.Context, msgs []*Message) error
	List(ctx context.Context, q Query) ([]Message, error)
}

// Notifier is implemented by stores that signal new log entries, so that
// tailing readers (forwarding rules, the live stream) need not poll.
type Notifier interface {
	// Changed returns a channel that is closed at the next commit that
	// appends to the log. Call it again after it fires.
	Changed() <-chan struct{}
}
