// Package presence tracks which devices are online: a device is online from
// its first authenticated exchange until its lifetime passes with no message
// from it (docs/protocol.md §2, "Online status").
package presence

import (
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/event"
)

// maxPending bounds the transitions waiting for DrainEvents; beyond it the
// oldest are dropped (and counted).
const maxPending = 1 << 16

// Status is one device's last contact.
type Status struct {
	LastSeen  time.Time
	Address   string
	Transport string
	Lifetime  time.Duration
	// Since is the first contact since the previous Drain (set in the
	// statuses Drain hands out only).
	Since   time.Time
	offline bool // the offline transition was recorded
}

// Online reports whether the device is online at now.
func (s Status) Online(now time.Time) bool {
	return !s.LastSeen.IsZero() && now.Sub(s.LastSeen) < s.Lifetime
}

type key struct{ pk, dk string }

// Tracker is an in-memory, per-node presence table. Safe for concurrent use.
type Tracker struct {
	mu      sync.Mutex
	state   map[key]Status    // guarded by mu
	dirty   map[key]time.Time // guarded by mu; seen since the last Drain, from when
	pending []event.Event     // guarded by mu; transitions since the last DrainEvents
	dropped int               // guarded by mu
	tokens  map[key]int64     // guarded by mu; newest token issue time (unix s) noted per device
}

// NewTracker returns an empty Tracker.
func NewTracker() *Tracker {
	return &Tracker{state: make(map[key]Status), dirty: make(map[key]time.Time), tokens: make(map[key]int64)}
}

// NoteToken records that a token issued at issued was handed to or used by
// the device; NewestToken returns the newest issue time noted (ok false
// when none was, on this node since it started). The token lifetime lets
// only a device's newest token slide with its activity.
func (t *Tracker) NoteToken(pk, dk string, issued time.Time) {
	k, s := key{pk, dk}, issued.Unix()
	t.mu.Lock()
	if cur, ok := t.tokens[k]; !ok || s > cur {
		t.tokens[k] = s
	}
	t.mu.Unlock()
}

// NewestToken returns the newest token issue time noted for the device.
func (t *Tracker) NewestToken(pk, dk string) (time.Time, bool) {
	t.mu.Lock()
	s, ok := t.tokens[key{pk, dk}]
	t.mu.Unlock()
	return time.Unix(s, 0), ok
}

// Seen records contact from a device and reports whether it was offline
// before (an offline→online transition).
func (t *Tracker) Seen(pk, dk, addr, transport string, lifetime time.Duration, now time.Time) (cameOnline bool) {
	k := key{pk, dk}
	t.mu.Lock()
	prev, ok := t.state[k]
	t.state[k] = Status{LastSeen: now, Address: addr, Transport: transport, Lifetime: lifetime}
	if since, ok := t.dirty[k]; !ok || now.Before(since) {
		t.dirty[k] = now
	}
	came := !ok || !prev.Online(now)
	if came {
		if ok && !prev.offline {
			// Back before a Sweep noticed: the offline transition first.
			t.record(event.Event{ProductKey: pk, DeviceKey: dk, Type: event.Offline, At: prev.LastSeen.Add(prev.Lifetime), Transport: prev.Transport, Peer: prev.Address})
		}
		t.record(event.Event{ProductKey: pk, DeviceKey: dk, Type: event.Online, At: now, Transport: transport, Peer: addr})
	}
	t.mu.Unlock()
	return came
}

// record queues an event; t.mu is held.
func (t *Tracker) record(e event.Event) {
	if len(t.pending) >= maxPending {
		t.pending = t.pending[1:]
		t.dropped++
	}
	t.pending = append(t.pending, e)
}

// Sweep records the offline transition of every device whose lifetime has
// passed at now without a message (docs/protocol.md §2); At is last contact +
// lifetime. It returns how many went offline.
func (t *Tracker) Sweep(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for k, s := range t.state {
		if s.offline || s.Online(now) {
			continue
		}
		s.offline = true
		t.state[k] = s
		t.record(event.Event{ProductKey: k.pk, DeviceKey: k.dk, Type: event.Offline, At: s.LastSeen.Add(s.Lifetime), Transport: s.Transport, Peer: s.Address})
		n++
	}
	return n
}

// DrainEvents returns the transitions recorded since the previous call, in
// order, and how many were dropped for room meanwhile.
func (t *Tracker) DrainEvents() (evs []event.Event, dropped int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	evs, dropped = t.pending, t.dropped
	t.pending, t.dropped = nil, 0
	return evs, dropped
}

// Lookup returns a device's status if it has been seen by this node.
func (t *Tracker) Lookup(pk, dk string) (Status, bool) {
	t.mu.Lock()
	s, ok := t.state[key{pk, dk}]
	t.mu.Unlock()
	return s, ok
}

// Forget drops a device (deleted or disabled).
func (t *Tracker) Forget(pk, dk string) {
	t.mu.Lock()
	delete(t.state, key{pk, dk})
	delete(t.dirty, key{pk, dk})
	delete(t.tokens, key{pk, dk})
	t.mu.Unlock()
}

// Online counts devices online at now.
func (t *Tracker) Online(now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.state {
		if s.Online(now) {
			n++
		}
	}
	return n
}

// OnlineVia counts devices online at now whose last contact came over
// transport (each device counts for one transport: its latest).
func (t *Tracker) OnlineVia(transport string, now time.Time) int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	for _, s := range t.state {
		if s.Transport == transport && s.Online(now) {
			n++
		}
	}
	return n
}

// Drain returns the devices seen since the previous Drain, for a batched
// write of lastSeenAt/lastAddress to the registry.
func (t *Tracker) Drain(fn func(pk, dk string, s Status)) {
	t.mu.Lock()
	dirty := t.dirty
	t.dirty = make(map[key]time.Time, len(dirty))
	out := make([]struct {
		k key
		s Status
	}, 0, len(dirty))
	for k, since := range dirty {
		st := t.state[k]
		st.Since = since
		out = append(out, struct {
			k key
			s Status
		}{k, st})
	}
	t.mu.Unlock()
	for _, e := range out {
		fn(e.k.pk, e.k.dk, e.s)
	}
}

// Len counts the devices in the table (online, or seen and now offline).
func (t *Tracker) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.state)
}
