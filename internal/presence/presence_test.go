package presence

import (
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
)

func TestOnlineVia(t *testing.T) {
	tr := NewTracker()
	now := time.Unix(1000, 0)
	tr.Seen("p", "a", "1.2.3.4:1", "coap", time.Minute, now)
	tr.Seen("p", "b", "1.2.3.4:2", "coap-sym", time.Minute, now)
	tr.Seen("p", "c", "1.2.3.4:3", "coap-sym", time.Second, now.Add(-time.Hour)) // offline
	tr.Seen("p", "a", "1.2.3.4:1", "coap-sym", time.Minute, now)                 // moved: counts once, for its latest transport
	if got := tr.OnlineVia("coap", now); got != 0 {
		t.Errorf("coap: %d, want 0", got)
	}
	if got := tr.OnlineVia("coap-sym", now); got != 2 {
		t.Errorf("coap-sym: %d, want 2", got)
	}
	if got := tr.Online(now); got != 2 {
		t.Errorf("all: %d, want 2", got)
	}
}

// TestTransitions: online at first contact, offline exactly lifetime after
// the last one (fake clock), online again on the next contact.
func TestTransitions(t *testing.T) {
	tr := NewTracker()
	t0 := time.Unix(1_700_000_000, 0)
	if !tr.Seen("pk", "dk", "a:1", "coap-dtls", 30*time.Second, t0) {
		t.Fatal("first contact is not a transition")
	}
	tr.Seen("pk", "dk", "a:1", "coap-dtls", 30*time.Second, t0.Add(10*time.Second))
	if n := tr.Sweep(t0.Add(39 * time.Second)); n != 0 {
		t.Fatalf("offline before lifetime: %d", n)
	}
	if n := tr.Sweep(t0.Add(40 * time.Second)); n != 1 {
		t.Fatalf("not offline at lifetime: %d", n)
	}
	if n := tr.Sweep(t0.Add(50 * time.Second)); n != 0 {
		t.Fatal("offline recorded twice")
	}
	tr.Seen("pk", "dk", "a:2", "coap-dtls", 30*time.Second, t0.Add(60*time.Second))
	evs, dropped := tr.DrainEvents()
	if dropped != 0 || len(evs) != 3 {
		t.Fatalf("events %+v dropped %d", evs, dropped)
	}
	want := []struct {
		typ string
		at  time.Duration
	}{{"online", 0}, {"offline", 40 * time.Second}, {"online", 60 * time.Second}}
	for i, w := range want {
		if string(evs[i].Type) != w.typ || !evs[i].At.Equal(t0.Add(w.at)) {
			t.Errorf("event %d = %s at %v, want %s at +%v", i, evs[i].Type, evs[i].At.Sub(t0), w.typ, w.at)
		}
	}
	// Back before a sweep noticed: offline is recorded first.
	tr.Seen("pk", "dk", "a:2", "coap-dtls", 30*time.Second, t0.Add(200*time.Second))
	evs, _ = tr.DrainEvents()
	if len(evs) != 2 || evs[0].Type != "offline" || !evs[0].At.Equal(t0.Add(90*time.Second)) || evs[1].Type != "online" {
		t.Fatalf("late events %+v", evs)
	}
}

// TestRecordApply: the shared record's transitions, contact by contact.
func TestRecordApply(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := func(first, last int) Contact {
		return Contact{ProductKey: "p", DeviceKey: "d", First: t0.Add(time.Duration(first) * time.Second),
			Last: t0.Add(time.Duration(last) * time.Second), Address: "a", Transport: "coap", Lifetime: 10 * time.Second}
	}
	var r Record
	steps := []struct {
		c    Contact
		want []event.Type
	}{
		{c(0, 2), []event.Type{event.Online}},
		{c(1, 5), nil}, // another node, overlapping
		{c(0, 1), nil}, // a late, older flush
		{c(15, 16), []event.Type{event.Offline, event.Online}}, // silent 5 s..15 s: a lifetime
		{c(20, 21), nil},
	}
	for i, st := range steps {
		var evs []event.Event
		r, evs = r.Apply(st.c)
		if len(evs) != len(st.want) {
			t.Fatalf("step %d: events %+v, want %v", i, evs, st.want)
		}
		for j, e := range evs {
			if e.Type != st.want[j] {
				t.Fatalf("step %d: events %+v, want %v", i, evs, st.want)
			}
		}
		if i == 3 && (!evs[0].At.Equal(t0.Add(15*time.Second)) || !evs[1].At.Equal(t0.Add(15*time.Second))) {
			t.Fatalf("offline at %v, online at %v; want both at 15 s (5 s + lifetime; the contact)", evs[0].At, evs[1].At)
		}
	}
	if !r.Online || !r.LastSeen.Equal(t0.Add(21*time.Second)) {
		t.Fatalf("record %+v", r)
	}
	off, e, ok := r.Expire("p", "d", t0.Add(31*time.Second))
	if !ok || off.Online || e.Type != event.Offline || !e.At.Equal(t0.Add(31*time.Second)) {
		t.Fatalf("expire at 31 s: %+v %+v %v", off, e, ok)
	}
	if _, _, ok := off.Expire("p", "d", t0.Add(40*time.Second)); ok {
		t.Fatal("an offline record expired twice")
	}
	if _, _, ok := r.Expire("p", "d", t0.Add(30*time.Second)); ok {
		t.Fatal("expired before its lifetime passed")
	}
}
