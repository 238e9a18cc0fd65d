// Package eventtest is the conformance suite every event.Store adapter must
// pass. Events also enter the message log, so the store under test is the
// adapter's event, message and notifier stores together.
package eventtest

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
)

// Store is what the suite needs of an adapter.
type Store interface {
	event.Store
	message.Store
	message.Notifier
}

// Run runs the suite; newStore returns a new empty store per call.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Helper()
	for _, tt := range []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"AppendList", testAppendList},
		{"InLog", testInLog},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

// WaitChanged waits for ch to fire; adapters may signal asynchronously (a
// database notification), so it waits up to a generous bound that only a
// lost signal reaches.
func WaitChanged(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(30 * time.Second):
		t.Fatalf("Changed did not fire after %s", what)
	}
}

func testAppendList(t *testing.T, s Store) {
	ctx := context.Background()
	at := time.Unix(1_700_000_000, 123).UTC()
	evs := []event.Event{
		{ProductKey: "pk", DeviceKey: "dk", Type: event.Online, At: at, Transport: "coap-dtls", Peer: "127.0.0.1:1"},
		{ProductKey: "pk", DeviceKey: "other", Type: event.Online, At: at},
		{ProductKey: "pk", DeviceKey: "dk", Type: event.Offline, At: at.Add(time.Minute), Transport: "coap-dtls", Peer: "127.0.0.1:1"},
	}
	if err := s.AppendEvents(ctx, evs); err != nil {
		t.Fatal(err)
	}
	if evs[0].ID == 0 || evs[2].ID <= evs[0].ID {
		t.Fatalf("ids %d %d", evs[0].ID, evs[2].ID)
	}
	got, err := s.ListEvents(ctx, "pk", "dk", 0, 0)
	if err != nil || len(got) != 2 {
		t.Fatalf("list: %v %v", got, err)
	}
	if got[0] != evs[0] || got[1] != evs[2] {
		t.Fatalf("got %+v, want %+v %+v", got, evs[0], evs[2])
	}
	if got, _ := s.ListEvents(ctx, "pk", "dk", evs[0].ID, 1); len(got) != 1 || got[0].Type != event.Offline {
		t.Fatalf("page after first: %+v", got)
	}
	if got, err := s.ListEvents(ctx, "pk", "nobody", 0, 0); err != nil || len(got) != 0 {
		t.Fatalf("unknown device: %+v, %v", got, err)
	}
}

// testInLog: events also enter the message log (one ordered sequence for
// forwarding and the live stream) but stay out of uplink listings; an
// append wakes Changed.
func testInLog(t *testing.T, s Store) {
	ctx := context.Background()
	changed := s.Changed()
	up := &message.Message{ProductKey: "pk", DeviceKey: "dk", Topic: "/sys/pk/dk/thing/event/property/post",
		Payload: []byte(`{}`), ContentFormat: 50, ReceivedAt: time.Unix(1, 0), Transport: message.TransportCoAP}
	if err := s.Append(ctx, []*message.Message{up}); err != nil {
		t.Fatal(err)
	}
	WaitChanged(t, changed, "Append")
	changed = s.Changed()
	ev := []event.Event{{ProductKey: "pk", DeviceKey: "dk", Type: event.Online, At: time.Unix(2, 0).UTC(), Transport: "coap-dtls", Peer: "127.0.0.1:9"}}
	if err := s.AppendEvents(ctx, ev); err != nil {
		t.Fatal(err)
	}
	WaitChanged(t, changed, "AppendEvents")
	plain, err := s.List(ctx, message.Query{ProductKey: "pk", DeviceKey: "dk"})
	if err != nil || len(plain) != 1 || plain[0].ID != up.ID {
		t.Fatalf("uplink listing: %+v %v", plain, err)
	}
	all, err := s.List(ctx, message.Query{AfterID: 0, IncludeEvents: true})
	if err != nil || len(all) != 2 {
		t.Fatalf("log: %+v %v", all, err)
	}
	got := all[1]
	if got.ID <= up.ID || got.Topic != "$events/pk/dk/online" || got.Transport != message.TransportEvent {
		t.Fatalf("event entry %+v", got)
	}
	want := `{"productKey":"pk","deviceKey":"dk","type":"online","at":"1970-01-01T00:00:02Z","transport":"coap-dtls","peer":"127.0.0.1:9"}`
	if string(got.Payload) != want {
		t.Fatalf("payload %s, want %s", got.Payload, want)
	}
}
