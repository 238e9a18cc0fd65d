package pgstore

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/presence"
)

func eventTypes(t *testing.T, s *Store, pk, dk string) []event.Event {
	t.Helper()
	evs, err := s.ListEvents(context.Background(), pk, dk, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	return evs
}

func wantTypes(t *testing.T, evs []event.Event, want ...event.Type) {
	t.Helper()
	if len(evs) != len(want) {
		t.Fatalf("events %+v, want types %v", evs, want)
	}
	for i, e := range evs {
		if e.Type != want[i] {
			t.Fatalf("events %+v, want types %v", evs, want)
		}
	}
}

// TestPresenceSharedByNodes: two nodes (two writers) report contacts of one
// device, in and out of order; the shared presence records one online
// transition, an offline one after a silence of a lifetime (noticed by a
// node's contact or by the sweep), and never two of a kind in a row.
func TestPresenceSharedByNodes(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	const life = 30 * time.Second
	c := func(first, last int, addr string) presence.Contact {
		return presence.Contact{ProductKey: "p", DeviceKey: "d", First: t0.Add(time.Duration(first) * time.Second),
			Last: t0.Add(time.Duration(last) * time.Second), Address: addr, Transport: "coap", Lifetime: life}
	}
	// Node A first, node B (the device moved) and A's late flush.
	for _, ct := range []presence.Contact{c(0, 5, "a"), c(4, 10, "b"), c(1, 6, "a")} {
		if err := s.RecordPresence(ctx, []presence.Contact{ct}); err != nil {
			t.Fatal(err)
		}
	}
	wantTypes(t, eventTypes(t, s, "p", "d"), event.Online)
	r, ok, err := s.LookupPresence(ctx, "p", "d")
	if err != nil || !ok || !r.Online || !r.LastSeen.Equal(t0.Add(10*time.Second)) || r.Address != "b" {
		t.Fatalf("shared presence %+v ok=%v err=%v: want online, last seen at 10 s via b", r, ok, err)
	}
	// Silence past the lifetime, noticed by node A's next contact before
	// any sweep: offline at 10 s + lifetime, then online.
	if err := s.RecordPresence(ctx, []presence.Contact{c(60, 61, "a")}); err != nil {
		t.Fatal(err)
	}
	evs := eventTypes(t, s, "p", "d")
	wantTypes(t, evs, event.Online, event.Offline, event.Online)
	if !evs[1].At.Equal(t0.Add(40*time.Second)) || evs[1].Peer != "b" {
		t.Fatalf("offline %+v: want at 40 s, last peer b", evs[1])
	}
	// The sweep: nothing before the lifetime passed, then once.
	if n, err := s.SweepPresence(ctx, t0.Add(90*time.Second)); err != nil || n != 0 {
		t.Fatalf("sweep before the lifetime passed: %d, %v", n, err)
	}
	for range 2 {
		if _, err := s.SweepPresence(ctx, t0.Add(92*time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	wantTypes(t, eventTypes(t, s, "p", "d"), event.Online, event.Offline, event.Online, event.Offline)
	// A node's stale flush (contacts before the offline) changes nothing.
	if err := s.RecordPresence(ctx, []presence.Contact{c(55, 59, "b")}); err != nil {
		t.Fatal(err)
	}
	wantTypes(t, eventTypes(t, s, "p", "d"), event.Online, event.Offline, event.Online, event.Offline)
}

// TestPresenceConcurrentNodes: three nodes flush contacts of the same
// devices at once; each device gets exactly one online transition.
func TestPresenceConcurrentNodes(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	t0 := time.Now().Truncate(time.Second)
	devices := []string{"d1", "d2", "d3", "d4", "d5"}
	var wg sync.WaitGroup
	errs := make(chan error, 3*4)
	for n := range 3 {
		for round := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var cs []presence.Contact
				// Each node lists the devices in another order.
				for i := range devices {
					dk := devices[(i+n)%len(devices)]
					at := t0.Add(time.Duration(round) * time.Second)
					cs = append(cs, presence.Contact{ProductKey: "p", DeviceKey: dk, First: at, Last: at.Add(time.Duration(n) * time.Millisecond),
						Address: "node", Transport: "coap", Lifetime: time.Minute})
				}
				errs <- s.RecordPresence(ctx, cs)
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for _, dk := range devices {
		wantTypes(t, eventTypes(t, s, "p", dk), event.Online)
	}
}

// TestCountPresence: the cluster's online count counts a device by its
// last contact and lifetime, before and after the sweep marks it offline,
// and every device the shared presence holds is seen.
func TestCountPresence(t *testing.T) {
	s, _ := openTest(t)
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0).UTC()
	var cs []presence.Contact
	for i, life := range []time.Duration{10 * time.Second, 20 * time.Second, 30 * time.Second} {
		cs = append(cs, presence.Contact{ProductKey: "p", DeviceKey: fmt.Sprint("d", i), First: t0, Last: t0,
			Address: "a", Transport: "coap", Lifetime: life})
	}
	if err := s.RecordPresence(ctx, cs); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		at     time.Duration
		online int
	}{{0, 3}, {10 * time.Second, 2}, {25 * time.Second, 1}, {30 * time.Second, 0}} {
		online, seen, err := s.CountPresence(ctx, t0.Add(tc.at))
		if err != nil || online != tc.online || seen != 3 {
			t.Fatalf("at %v: online %d seen %d (%v), want %d of 3", tc.at, online, seen, err, tc.online)
		}
	}
	if _, err := s.SweepPresence(ctx, t0.Add(15*time.Second)); err != nil {
		t.Fatal(err)
	}
	if online, seen, err := s.CountPresence(ctx, t0.Add(12*time.Second)); err != nil || online != 2 || seen != 3 {
		t.Fatalf("after the sweep: online %d seen %d (%v), want 2 of 3", online, seen, err)
	}
}
