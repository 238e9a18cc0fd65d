package main

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
)

// TestE2EMeasurePoints: a device publishes measure points over CoAP; the
// projector makes them visible as latest values and history in the API.
func TestE2EMeasurePoints(t *testing.T) {
	g := startTestGateway(t)
	d := g.newDevice("", "meter_1")
	c := g.dial(d)
	ctx := context.Background()
	t0 := time.UnixMilli(1_700_000_000_000).UTC()
	var last int64
	for i := range 5 {
		resp, err := c.PostMeasurePoints(ctx, map[string]any{"temp": 20 + i, "state": "ok"}, t0.Add(time.Duration(i)*time.Minute))
		if err != nil || resp.Code != codes.Changed {
			t.Fatalf("publish %d: %v", i, err)
		}
		if last, err = strconv.ParseInt(resp.MessageID, 10, 64); err != nil {
			t.Fatalf("message id %q: %v", resp.MessageID, err)
		}
	}
	wctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := g.s.points.WaitFor(wctx, last); err != nil {
		t.Fatal(err)
	}

	base := "/api/v1/devices/" + d.pk + "/" + d.dk + "/measurepoints"
	var latest struct {
		Items []struct {
			Name, MessageID string
			Value           any
			Time            time.Time
		}
	}
	if code := g.api("GET", base, nil, &latest); code != 200 {
		t.Fatalf("latest: %d", code)
	}
	if len(latest.Items) != 2 || latest.Items[1].Name != "temp" || latest.Items[1].Value != 24.0 ||
		latest.Items[1].MessageID != strconv.FormatInt(last, 10) || !latest.Items[1].Time.Equal(t0.Add(4*time.Minute)) ||
		latest.Items[0].Name != "state" || latest.Items[0].Value != "ok" {
		t.Fatalf("latest = %+v", latest.Items)
	}
	var hist struct {
		Items []struct {
			Value any
			Time  time.Time
		}
		NextCursor string
	}
	if code := g.api("GET", base+"/temp/history?order=desc&limit=3", nil, &hist); code != 200 {
		t.Fatalf("history: %d", code)
	}
	if len(hist.Items) != 3 || hist.Items[0].Value != 24.0 || hist.Items[2].Value != 22.0 || hist.NextCursor == "" {
		t.Fatalf("history = %+v", hist)
	}
	var buckets struct{ Items []map[string]any }
	q := fmt.Sprintf("/temp/history?interval=1h&agg=avg,count&from=%d&to=%d", t0.Add(-time.Hour).UnixMilli(), t0.Add(time.Hour).UnixMilli())
	if code := g.api("GET", base+q, nil, &buckets); code != 200 {
		t.Fatalf("aggregate: %d", code)
	}
	var n, sum float64
	for _, b := range buckets.Items {
		n += b["count"].(float64)
		sum += b["avg"].(float64) * b["count"].(float64)
	}
	if n != 5 || sum != 20+21+22+23+24 {
		t.Fatalf("buckets = %v", buckets.Items)
	}
}

func TestDecodePoints(t *testing.T) {
	recv := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	at := time.UnixMilli(1_700_000_000_000).UTC()
	mustCBOR := func(v any) []byte {
		b, err := cbor.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	topic := func(s string) string { return "/sys/p1/d1/thing/" + s }
	tests := []struct {
		name    string
		topic   string
		cf      uint16
		payload []byte
		want    []point.Sample // sorted by name
		wantErr bool
	}{
		{"measure points json", topic("measurepoint/post"), 50,
			[]byte(`{"id":"1","params":{"measurepoints":{"temp":21.5,"n":3},"time":1700000000000}}`),
			[]point.Sample{{Kind: "point", Name: "n", Value: int64(3), Time: at}, {Kind: "point", Name: "temp", Value: 21.5, Time: at}}, false},
		{"measure points cbor", topic("measurepoint/post"), 60,
			mustCBOR(map[string]any{"params": map[string]any{"measurepoints": map[string]any{"temp": 21.5}, "time": 1700000000000}}),
			[]point.Sample{{Kind: "point", Name: "temp", Value: 21.5, Time: at}}, false},
		{"batch", topic("measurepoint/post/batch"), 50,
			[]byte(`{"params":[{"measurepoints":{"a":"x"}},{"measurepoints":{"b":true},"time":1700000000000}]}`),
			[]point.Sample{{Kind: "point", Name: "a", Value: "x", Time: recv}, {Kind: "point", Name: "b", Value: true, Time: at}}, false},
		{"properties", topic("event/property/post"), 50,
			[]byte(`{"params":{"p":{"value":"on","time":1700000000000},"q":1}}`),
			[]point.Sample{{Kind: "point", Name: "p", Value: "on", Time: at}, {Kind: "point", Name: "q", Value: int64(1), Time: recv}}, false},
		{"batch item of another device is dropped", topic("measurepoint/post/batch"), 50,
			[]byte(`{"params":[{"productKey":"p1","deviceKey":"other","measurepoints":{"a":1}},{"measurepoints":{"b":2}}]}`),
			[]point.Sample{{Kind: "point", Name: "b", Value: int64(2), Time: recv}}, false},
		{"event", topic("event/overheat/post"), 50,
			[]byte(`{"params":{"events":{"level":"high"},"time":1700000000000}}`),
			[]point.Sample{{Kind: "event", Name: "overheat", Value: map[string]any{"level": "high"}, Time: at}}, false},
		{"attributes", topic("attribute/update"), 50,
			[]byte(`{"params":{"attributes":{"fw":"1.2"}}}`),
			[]point.Sample{{Kind: "attribute", Name: "fw", Value: "1.2", Time: recv}}, false},
		{"raw topic carries none", topic("model/up_raw"), 42, []byte{1, 2, 3}, nil, false},
		{"custom topic carries none", "/p1/d1/user/x", 50, []byte(`{}`), nil, false},
		{"broken json", topic("measurepoint/post"), 50, []byte(`{"params":`), nil, true},
		{"no measurepoints", topic("measurepoint/post"), 50, []byte(`{"params":{"time":1}}`), nil, true},
		{"bad time", topic("measurepoint/post"), 50, []byte(`{"params":{"measurepoints":{"a":1},"time":"noon"}}`), nil, true},
		{"params not an object", topic("attribute/update"), 50, []byte(`{"params":[]}`), nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodePoints(&message.Message{ProductKey: "p1", DeviceKey: "d1", Topic: tt.topic,
				ContentFormat: tt.cf, Payload: tt.payload, ReceivedAt: recv})
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, want error %v", err, tt.wantErr)
			}
			sortSamples(got)
			for i := range got {
				got[i].ProductKey, got[i].DeviceKey = "", "" // always the publisher's
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("samples = %+v, want %+v", got, tt.want)
			}
		})
	}
}

func sortSamples(ss []point.Sample) {
	slices.SortFunc(ss, func(a, b point.Sample) int { return strings.Compare(a.Name, b.Name) })
}
