// Package replay holds the anti-replay state of the session modes: the
// sequence numbers of symmetric-encryption uplinks (option 2089, docs/protocol.md
// §3.4) and of dialect E's non-DTLS sign (option 2101, §2.2).
//
// A Window accepts every sequence number at or above a floor that it has not
// seen, within a bounded number of values below the highest one accepted (the
// sliding window of RFC 4303 §3.4.3 and RFC 6347 §4.1.2.6, without the
// integrity check those protocols run first: here the caller decrypts). A
// Window of size 1 accepts only strictly increasing numbers.
//
// Sessions is the per-node table of windows, keyed by the token's (product
// key, device key, random). A node creates the state of the tokens it issues;
// it is bounded (LRU). A token without state that this node may have had and
// forgotten (issued at or before the second the node started, or at or
// before the token of a still-valid session that was evicted) is refused, so
// a replay is never accepted because of a restart or an eviction. The state
// is per node: a token issued by another node after this one started gets a
// fresh window here, so a datagram replayed to another node of a cluster is
// not detected (a shared store is later work).
package replay

import (
	"errors"
	"math/bits"
)

// Errors of Window.Check; each is a refused (replayed or stale) number.
var (
	ErrBelowFloor = errors.New("replay: sequence number below the session's first")
	ErrRepeated   = errors.New("replay: sequence number already used")
	ErrTooOld     = errors.New("replay: sequence number older than the window")
)

// IsReplay reports whether err is one of the Window's refusals.
func IsReplay(err error) bool {
	return errors.Is(err, ErrBelowFloor) || errors.Is(err, ErrRepeated) || errors.Is(err, ErrTooOld)
}

// MaxWindow bounds the window size (8 KiB of bits per session).
const MaxWindow = 1 << 16

// Window is the anti-replay state of one session. It is not safe for
// concurrent use; Session serialises access.
type Window struct {
	floor   uint64
	size    uint64
	high    uint64   // highest accepted number, valid when started
	started bool     // a number has been accepted
	seen    []uint64 // bit i set: high-i was accepted (i < size)
}

// NewWindow returns a window accepting numbers >= floor, remembering size
// values (1..MaxWindow, clamped) at and below the highest accepted one.
func NewWindow(floor uint64, size int) *Window {
	size = min(max(size, 1), MaxWindow)
	return &Window{floor: floor, size: uint64(size), seen: make([]uint64, (size+63)/64)}
}

// Check reports whether seq would be accepted; it changes nothing.
func (w *Window) Check(seq uint64) error {
	switch {
	case seq < w.floor:
		return ErrBelowFloor
	case !w.started || seq > w.high:
		return nil
	case w.high-seq >= w.size:
		return ErrTooOld
	case w.bit(w.high - seq):
		return ErrRepeated
	}
	return nil
}

// Accept records seq as used; call it only after Check(seq) returned nil.
// A number outside the window is ignored (it could not pass Check).
func (w *Window) Accept(seq uint64) {
	switch {
	case !w.started:
		w.started, w.high = true, seq
		clear(w.seen)
	case seq > w.high:
		w.shift(seq - w.high)
		w.high = seq
	case w.high-seq >= w.size:
		return
	}
	w.set(w.high - seq)
}

func (w *Window) bit(i uint64) bool { return w.seen[i/64]&(1<<(i%64)) != 0 }
func (w *Window) set(i uint64)      { w.seen[i/64] |= 1 << (i % 64) }

// shift moves every bit i to i+d (the high-water mark rose by d); bits
// shifted past the window fall off.
func (w *Window) shift(d uint64) {
	n := uint64(len(w.seen))
	if d >= n*64 {
		clear(w.seen)
		return
	}
	words, off := d/64, d%64
	for i := n - 1; ; i-- {
		var v uint64
		if i >= words {
			v = w.seen[i-words] << off
			if off != 0 && i > words {
				v |= w.seen[i-words-1] >> (64 - off)
			}
		}
		w.seen[i] = v
		if i == 0 {
			break
		}
	}
	if r := w.size % 64; r != 0 {
		w.seen[n-1] &= 1<<r - 1 // keep Accepted exact: nothing beyond size
	}
}

// Accepted returns how many numbers at or below the high-water mark are
// marked (for tests and diagnostics).
func (w *Window) Accepted() int {
	n := 0
	for _, v := range w.seen {
		n += bits.OnesCount64(v)
	}
	return n
}
