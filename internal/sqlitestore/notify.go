package sqlitestore

import "sync"

// notifier wakes tailing readers after commits that append to the message
// log: Changed hands out the current channel, notify closes it and starts a
// new one. Cheap when nobody listens (one mutex, one small allocation per
// commit).
type notifier struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; nil until someone asks
}

// Changed implements message.Notifier.
func (s *Store) Changed() <-chan struct{} {
	n := &s.notify
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.ch == nil {
		n.ch = make(chan struct{})
	}
	return n.ch
}

// notifyLog wakes everyone waiting on Changed. Call it after a commit that
// appended to the messages table.
func (s *Store) notifyLog() {
	n := &s.notify
	n.mu.Lock()
	if n.ch != nil {
		close(n.ch)
		n.ch = nil
	}
	n.mu.Unlock()
}
