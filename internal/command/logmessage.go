package command

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

// logJSON is the log payload of a command state change.
type logJSON struct {
	CommandID  string          `json:"commandId"`
	ProductKey string          `json:"productKey"`
	DeviceKey  string          `json:"deviceKey"`
	State      string          `json:"state"`
	Topic      string          `json:"topic"`
	Method     string          `json:"method"`
	At         string          `json:"at"`
	Via        string          `json:"via,omitempty"`
	Code       *int            `json:"code,omitempty"`
	Reply      json.RawMessage `json:"reply,omitempty"`
	Message    string          `json:"message,omitempty"`
}

// LogMessage is c's current state as a message log entry
// ($events/{pk}/{dk}/command), which adapters append in the transaction
// that changes c.
func LogMessage(c *Command, at time.Time) (*message.Message, error) {
	ev := logJSON{
		CommandID: c.ID, ProductKey: c.ProductKey, DeviceKey: c.DeviceKey, State: string(c.State),
		Topic: c.Topic, Method: c.Method, At: at.UTC().Format(time.RFC3339Nano),
	}
	switch c.State {
	case StateDelivered:
		ev.Via = c.DeliveredVia
	case StateReplied, StateFailed:
		code := c.ReplyCode
		ev.Code, ev.Reply, ev.Message = &code, c.ReplyData, c.ReplyMessage
	}
	body, err := json.Marshal(ev)
	if err != nil {
		return nil, fmt.Errorf("command event: %w", err)
	}
	return &message.Message{
		ProductKey: c.ProductKey, DeviceKey: c.DeviceKey,
		Topic:   message.EventTopic(c.ProductKey, c.DeviceKey, "command"),
		Payload: body, ContentFormat: 50, ReceivedAt: at, Transport: message.TransportEvent,
	}, nil
}
