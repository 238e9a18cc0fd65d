package registry

import (
	"cmp"
	"context"
	"slices"
	"sync"
)

// DeviceChange names a device whose record changed: created, updated,
// disabled or enabled, its tokens revoked, its secret rotated, or deleted.
// An empty DeviceKey means every device of the product.
type DeviceChange struct {
	ProductKey string
	DeviceKey  string
}

// ChangeFeed carries device changes from the writer (the management API)
// to every part of every gateway node that holds state derived from a
// device record: device caches, and live DTLS sessions bound
// to the device's incarnation and secret. A single node uses LocalChanges;
// a cluster needs an implementation that delivers a change to every node
// (within a second) before Publish returns or shortly after.
//
// Publish returns once the change is handed on; an error means some node
// may not have seen it (the writer logs it; nodes still converge through
// their device cache TTL and the per-request binding checks). Subscribe
// registers fn for every later change and returns a function that removes
// it; fn must not block for long (it may end sessions). Both are safe for
// concurrent use.
type ChangeFeed interface {
	Publish(ctx context.Context, c DeviceChange) error
	Subscribe(fn func(DeviceChange)) (cancel func())
}

// LocalChanges is the in-process ChangeFeed of a single node: Publish calls
// every subscriber synchronously, in subscription order. The zero value is
// ready to use.
type LocalChanges struct {
	mu   sync.RWMutex
	next int
	subs map[int]func(DeviceChange) // guarded by mu
}

var _ ChangeFeed = (*LocalChanges)(nil)

// Publish implements ChangeFeed; it never fails.
func (l *LocalChanges) Publish(_ context.Context, c DeviceChange) error {
	l.mu.RLock()
	ids := make([]int, 0, len(l.subs))
	for id := range l.subs {
		ids = append(ids, id)
	}
	slices.SortFunc(ids, cmp.Compare) // subscription order
	fns := make([]func(DeviceChange), len(ids))
	for i, id := range ids {
		fns[i] = l.subs[id]
	}
	l.mu.RUnlock()
	for _, fn := range fns {
		fn(c)
	}
	return nil
}

// Subscribe implements ChangeFeed.
func (l *LocalChanges) Subscribe(fn func(DeviceChange)) (cancel func()) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.subs == nil {
		l.subs = make(map[int]func(DeviceChange))
	}
	l.next++
	id := l.next
	l.subs[id] = fn
	return func() {
		l.mu.Lock()
		delete(l.subs, id)
		l.mu.Unlock()
	}
}
