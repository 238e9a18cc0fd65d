package sqlitestore

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
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
