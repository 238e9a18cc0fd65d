package message

import "sync"

// Broadcast wakes tailing readers after appends to the log: Changed hands
// out the current channel, Wake closes it and starts a new one. Cheap when
// nobody listens (one mutex, one small allocation per wake). The zero value
// is ready to use; adapters embed it to implement Notifier.
type Broadcast struct {
	mu sync.Mutex
	ch chan struct{} // guarded by mu; nil until someone asks
}

// Changed returns a channel closed by the next Wake.
func (b *Broadcast) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

// Wake closes the channel Changed handed out, waking everyone waiting on it.
func (b *Broadcast) Wake() {
	b.mu.Lock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
	b.mu.Unlock()
}
