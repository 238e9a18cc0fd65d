package main

import (
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/thing"
)

// decodePoints is the point projector's point.DecodeFunc: the typed records
// thing.Decode finds in a stored uplink (measure points, properties, events,
// attributes, device info) as samples. A payload that fails validation
// (answered with a non-200 reply when it arrived) is reported as an error:
// the projector skips and counts it, its raw form stays in the log.
//
// A batch item naming another device (a gateway reporting for a
// sub-device) is dropped: the publishing device may write only its own
// points, as it may publish only to its own topics.
func decodePoints(m *message.Message) ([]point.Sample, error) {
	req, err := thing.Decode(m.Topic, m.Payload, m.ContentFormat, m.ReceivedAt)
	if err != nil {
		return nil, err
	}
	var out []point.Sample
	for _, r := range req.Records {
		if r.Value == nil || !sameDevice(r, m) {
			continue // attribute query/delete name no values
		}
		out = append(out, point.Sample{
			ProductKey: m.ProductKey, DeviceKey: m.DeviceKey,
			Kind: string(r.Kind), Name: r.Name, Time: r.Time, Value: r.Value,
		})
	}
	return out, nil
}

func sameDevice(r thing.Record, m *message.Message) bool {
	return (r.ProductKey == "" || r.ProductKey == m.ProductKey) && (r.DeviceKey == "" || r.DeviceKey == m.DeviceKey)
}
