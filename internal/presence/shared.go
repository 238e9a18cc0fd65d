package presence

import (
	"time"

	"github.com/coapgate/coapgate/internal/event"
)

// Contact is what one node saw of a device between two flushes: its first
// and last contact there, and the last contact's address, transport and
// lifetime. Nodes of a cluster hand their contacts to the shared presence
// (Record.Apply), which decides the transitions once for all of them.
type Contact struct {
	ProductKey, DeviceKey string
	First, Last           time.Time
	Address, Transport    string
	Lifetime              time.Duration
}

// Record is a device's presence as the nodes of a cluster share it: its
// newest contact on any node, and whether it is online (an online
// transition was recorded and no offline one after it).
type Record struct {
	LastSeen           time.Time
	Lifetime           time.Duration
	Address, Transport string
	Online             bool
}

// Status returns r as a Status (Online(now) tells whether it is online).
func (r Record) Status() Status {
	return Status{LastSeen: r.LastSeen, Address: r.Address, Transport: r.Transport, Lifetime: r.Lifetime, offline: !r.Online}
}

// Apply merges one node's contact into r, which the caller holds locked
// (a row lock), and returns the new record and the transitions it makes:
// online when r was offline (or new) and the contact is newer than what r
// knew; offline then online when r was online but the contact came a
// lifetime or more after r's last one (a silence no node had noticed yet).
// Contacts arriving out of order (an older flush after a newer one) only
// move LastSeen forward, so each transition is recorded once whichever
// nodes the device talked to and in whatever order they flush.
func (r Record) Apply(c Contact) (Record, []event.Event) {
	var evs []event.Event
	newer := c.Last.After(r.LastSeen)
	online := r.Online
	if r.Online && !c.First.Before(r.LastSeen.Add(r.Lifetime)) {
		off := r.LastSeen.Add(r.Lifetime)
		evs = append(evs, event.Event{ProductKey: c.ProductKey, DeviceKey: c.DeviceKey, Type: event.Offline, At: off, Transport: r.Transport, Peer: r.Address})
		online = false
	}
	if !online && newer {
		at := c.First
		if !r.LastSeen.IsZero() {
			// Never before the offline transition it follows.
			if off := r.LastSeen.Add(r.Lifetime); at.Before(off) {
				at = off
			}
		}
		evs = append(evs, event.Event{ProductKey: c.ProductKey, DeviceKey: c.DeviceKey, Type: event.Online, At: at, Transport: c.Transport, Peer: c.Address})
		online = true
	}
	if newer {
		r.LastSeen, r.Lifetime, r.Address, r.Transport = c.Last, c.Lifetime, c.Address, c.Transport
	}
	r.Online = online
	return r, evs
}

// Expire returns r's offline transition when r is online and its lifetime
// passed at now (ok false otherwise), and the record after it.
func (r Record) Expire(pk, dk string, now time.Time) (Record, event.Event, bool) {
	if !r.Online || now.Before(r.LastSeen.Add(r.Lifetime)) {
		return r, event.Event{}, false
	}
	r.Online = false
	return r, event.Event{ProductKey: pk, DeviceKey: dk, Type: event.Offline, At: r.LastSeen.Add(r.Lifetime), Transport: r.Transport, Peer: r.Address}, true
}
