package event

import (
	"encoding/json"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

// logJSON is the log payload of a device lifecycle event.
type logJSON struct {
	ProductKey string `json:"productKey"`
	DeviceKey  string `json:"deviceKey"`
	Type       string `json:"type"`
	At         string `json:"at"`
	Transport  string `json:"transport"`
	Peer       string `json:"peer"`
}

// LogMessage is e as a message log entry (message.EventTopic, JSON
// payload), which adapters append in the transaction that stores e, so
// forwarding rules and the live stream see online/offline transitions in
// order with the uplinks.
func LogMessage(e *Event) *message.Message {
	body, _ := json.Marshal(logJSON{ // cannot fail: strings only
		ProductKey: e.ProductKey, DeviceKey: e.DeviceKey, Type: string(e.Type),
		At: e.At.UTC().Format(time.RFC3339Nano), Transport: e.Transport, Peer: e.Peer,
	})
	return &message.Message{
		ProductKey: e.ProductKey, DeviceKey: e.DeviceKey,
		Topic:   message.EventTopic(e.ProductKey, e.DeviceKey, string(e.Type)),
		Payload: body, ContentFormat: 50, ReceivedAt: e.At,
		Peer: e.Peer, Transport: message.TransportEvent,
	}
}
