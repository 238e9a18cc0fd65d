package presence

import (
	"testing"
	"time"
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
