// Package event holds device lifecycle events (online/offline transitions,
// docs/protocol.md §2 "Online status") and the Store interface adapters
// implement.
package event

import (
	"context"
	"time"
)

// Type is what happened to a device.
type Type string

// Event types.
const (
	// Online: first authenticated exchange after being offline.
	Online Type = "online"
	// Offline: the device's lifetime passed without a message; At is
	// last contact + lifetime.
	Offline Type = "offline"
)

// Event is one transition of a device.
type Event struct {
	ID         int64 // assigned by the store, increasing
	ProductKey string
	DeviceKey  string
	Type       Type
	At         time.Time
	Transport  string // of the contact that caused it (online) or the last one (offline)
	Peer       string
}

// Store persists events. Implementations are safe for concurrent use.
type Store interface {
	// AppendEvents stores events in order, assigning IDs.
	AppendEvents(ctx context.Context, evs []Event) error
	// ListEvents returns a device's events with ID > after in ID order,
	// at most limit (<= 0: 100).
	ListEvents(ctx context.Context, productKey, deviceKey string, after int64, limit int) ([]Event, error)
}
