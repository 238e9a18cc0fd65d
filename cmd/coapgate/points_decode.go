package main

// Temporary thing-model decoder for the point projector, until
// internal/thing (thing.Decode) replaces it. It reads the request shapes of
// PROTOCOL.md §4 in JSON (Content-Format 50, or none) and CBOR (60).

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"time"

	"github.com/fxamacker/cbor/v2"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
)

// errNoParams is a thing-model request without a params object.
var errNoParams = errors.New("points: request has no params object")

// cborDecMode decodes CBOR maps with text keys into map[string]any.
var cborDecMode = func() cbor.DecMode {
	dm, err := cbor.DecOptions{
		DefaultMapType:  reflect.TypeOf(map[string]any(nil)),
		MaxNestedLevels: 32,
	}.DecMode()
	if err != nil {
		panic(err) // static options
	}
	return dm
}()

// decodePoints is the projector's point.DecodeFunc: measure points
// (thing/measurepoint/post, …/batch), properties
// (thing/event/property/post), events (thing/event/{id}/post) and
// attributes (thing/attribute/update). Other topics carry no points.
func decodePoints(m *message.Message) ([]point.Sample, error) {
	prefix := "/sys/" + m.ProductKey + "/" + m.DeviceKey + "/thing/"
	rest, ok := strings.CutPrefix(m.Topic, prefix)
	if !ok {
		return nil, nil
	}
	var kind, event string
	switch {
	case rest == "measurepoint/post" || rest == "measurepoint/post/batch" || rest == "event/property/post":
		kind = point.KindPoint
	case rest == "attribute/update":
		kind = point.KindAttribute
	case strings.HasPrefix(rest, "event/") && strings.HasSuffix(rest, "/post"):
		kind = point.KindEvent
		event = strings.TrimSuffix(strings.TrimPrefix(rest, "event/"), "/post")
		if event == "" || strings.Contains(event, "/") {
			return nil, nil
		}
	default:
		return nil, nil
	}
	var req struct {
		Params any `json:"params" cbor:"params"`
	}
	switch m.ContentFormat {
	case 60:
		if err := cborDecMode.Unmarshal(m.Payload, &req); err != nil {
			return nil, fmt.Errorf("decode cbor request: %w", err)
		}
	default:
		dec := json.NewDecoder(bytes.NewReader(m.Payload))
		dec.UseNumber() // keep integers integers
		if err := dec.Decode(&req); err != nil {
			return nil, fmt.Errorf("decode json request: %w", err)
		}
	}
	var out []point.Sample
	add := func(name string, v any, at time.Time) {
		out = append(out, point.Sample{Kind: kind, Name: name, Value: v, Time: at})
	}
	params := func(p any) (map[string]any, time.Time, error) {
		obj, ok := p.(map[string]any)
		if !ok {
			return nil, time.Time{}, errNoParams
		}
		at, err := paramTime(obj["time"], m.ReceivedAt)
		return obj, at, err
	}
	switch {
	case kind == point.KindPoint && rest == "event/property/post":
		obj, _, err := params(req.Params)
		if err != nil {
			return nil, err
		}
		// Dialect A: {"temp":21.5} or {"temp":{"value":21.5,"time":ms}}.
		for name, v := range obj {
			at := m.ReceivedAt
			if vt, ok := v.(map[string]any); ok && len(vt) <= 2 {
				if val, ok := vt["value"]; ok {
					if at, err = paramTime(vt["time"], m.ReceivedAt); err != nil {
						return nil, err
					}
					v = val
				}
			}
			add(name, v, at)
		}
	case kind == point.KindPoint:
		// measurepoint/post: one params object; the batch: an array of them.
		list, isList := req.Params.([]any)
		if !isList {
			list = []any{req.Params}
		}
		for _, p := range list {
			obj, at, err := params(p)
			if err != nil {
				return nil, err
			}
			mp, ok := obj["measurepoints"].(map[string]any)
			if !ok {
				return nil, errors.New("points: params has no measurepoints object")
			}
			for name, v := range mp {
				add(name, v, at)
			}
		}
	case kind == point.KindAttribute:
		obj, at, err := params(req.Params)
		if err != nil {
			return nil, err
		}
		attrs, ok := obj["attributes"].(map[string]any)
		if !ok {
			return nil, errors.New("points: params has no attributes object")
		}
		for name, v := range attrs {
			add(name, v, at)
		}
	case kind == point.KindEvent:
		obj, at, err := params(req.Params)
		if err != nil {
			return nil, err
		}
		v, ok := obj["events"]
		if !ok {
			delete(obj, "time")
			v = obj
		}
		add(event, v, at)
	}
	return out, nil
}

// paramTime reads a unix-millisecond "time" field; absent means def.
func paramTime(v any, def time.Time) (time.Time, error) {
	var ms int64
	switch x := v.(type) {
	case nil:
		return def, nil
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return time.Time{}, fmt.Errorf("points: time %q is not unix milliseconds", x)
		}
		ms = n
	case uint64:
		ms = int64(x)
	case int64:
		ms = x
	case float64:
		ms = int64(x)
	default:
		return time.Time{}, fmt.Errorf("points: time of type %T is not unix milliseconds", v)
	}
	return time.UnixMilli(ms).UTC(), nil
}
