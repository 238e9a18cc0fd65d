package sqlitestore

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
)

func TestEvents(t *testing.T) {
	s, _ := openTemp(t)
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
}

// Events also enter the message log (one ordered sequence for forwarding
// and the live stream) but stay out of uplink listings; an append wakes
// Changed.
func TestEventsInLog(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	changed := s.Changed()
	up := &message.Message{ProductKey: "pk", DeviceKey: "dk", Topic: "/sys/pk/dk/thing/event/property/post",
		Payload: []byte(`{}`), ContentFormat: 50, ReceivedAt: time.Unix(1, 0), Transport: message.TransportCoAP}
	if err := s.Append(ctx, []*message.Message{up}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire after Append")
	}
	changed = s.Changed()
	ev := []event.Event{{ProductKey: "pk", DeviceKey: "dk", Type: event.Online, At: time.Unix(2, 0).UTC(), Transport: "coap-dtls", Peer: "127.0.0.1:9"}}
	if err := s.AppendEvents(ctx, ev); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	default:
		t.Fatal("Changed did not fire after AppendEvents")
	}
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
