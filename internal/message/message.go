// Package message defines the stored uplink message and the Store that
// persists it. A message acknowledged to a device has been appended durably.
package message

import (
	"context"
	"time"
)

// Transport names how an uplink arrived.
const (
	TransportCoAP      = "coap"      // plain CoAP/UDP, token auth (5683)
	TransportSymmetric = "coap-sym"  // payload-encrypted CoAP (5682)
	TransportDTLS      = "coap-dtls" // CoAP over DTLS (5684)
)

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
}

// Store persists messages. Append assigns IDs to msgs in order and returns
// only once all of them are durable (committed and synced) in one
// transaction: either all are stored or none is. Safe for concurrent use.
type Store interface {
	Append(ctx context.Context, msgs []*Message) error
	List(ctx context.Context, q Query) ([]Message, error)
}
