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
// key, device key, random), bounded in memory (LRU). Each session's State is
// made durable by the caller with the uplink that advanced it; a Store lets
// the table rebuild a session it does not hold (after a restart or an
// eviction), so a valid token keeps working and a number accepted before is
// refused after. A token with neither state here nor in the Store that this
// node may have had and forgotten (issued at or before the second the node
// started, or at or before the token of a still-valid session that was
// evicted) is refused, so a replay is never accepted because of a restart or
// an eviction. A token issued by another node after this one started and
// unknown to the Store gets a fresh window here: a Store shared by the nodes
// of a cluster closes that gap.
//
// Sessions slide: a session stays valid for Config.Lifetime after its last
// accepted number (and at least until its token's own expiry).
package replay

import (
	"encoding/binary"
	"errors"
	"math/bits"
	"time"
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

// State is the durable form of one session's anti-replay state: what a
// node needs to rebuild the session's Window after a restart, or another
// node to take the session over. Version grows with every accepted number,
// so a store keeps the newest of two states of one session whatever the
// order their writes commit in.
type State struct {
	Key     Key
	Floor   uint64
	Size    int
	High    uint64   // highest accepted number; meaningful when Started
	Started bool     // a number has been accepted
	Seen    []uint64 // bit i set: High-i was accepted (i < Size)
	Version uint64
	// Expires is when the session ends unless it is used again (the
	// sliding lifetime); a store may forget the state after it.
	Expires time.Time
	// Accepted is the number whose acceptance produced this state (0: none,
	// the state of a new session). It is not part of the stored form: a
	// store shared by several nodes admits it against the stored window
	// (Admit) so that a number is accepted once cluster-wide.
	Accepted uint64
}

// Admit is the cluster-wide acceptance of next's number: cur is the stored
// state of next's session (ok false: none is stored), read under the
// store's lock on it. The number (next.Accepted) is checked against cur's
// window, not next's, which is one node's view: a number another node
// accepted is refused with the Window's error (IsReplay). Otherwise the
// number is added and the result, to be stored, is cur's window plus the
// number, one version further, with the later expiry of both. A new
// session's state (Accepted 0) is admitted as it is when none is stored.
func Admit(cur State, ok bool, next State) (State, error) {
	if !ok {
		cur = State{Key: next.Key, Floor: next.Floor, Size: next.Size, Expires: next.Expires}
		if next.Accepted == 0 {
			cur = next
			cur.Seen = append([]uint64(nil), next.Seen...)
			return cur, nil
		}
	}
	if next.Accepted != 0 {
		w := restoreWindow(cur, max(cur.Size, 1))
		if err := w.Check(next.Accepted); err != nil {
			return cur, err
		}
		w.Accept(next.Accepted)
		st := w.snapshot()
		st.Key, st.Version, st.Expires = cur.Key, cur.Version, cur.Expires
		cur = st
	}
	cur.Version++
	if next.Expires.After(cur.Expires) {
		cur.Expires = next.Expires
	}
	cur.Accepted = 0
	return cur, nil
}

// snapshot returns w's state (Key, Version and Expires are the caller's).
func (w *Window) snapshot() State {
	return State{Floor: w.floor, Size: int(w.size), High: w.high, Started: w.started, Seen: append([]uint64(nil), w.seen...)}
}

// restoreWindow rebuilds a Window from st with size values; a state saved
// with another size keeps what fits: a smaller window forgets the oldest
// numbers (refused as too old), a larger one marks what the saved one did
// not cover as used.
func restoreWindow(st State, size int) *Window {
	w := NewWindow(st.Floor, size)
	if !st.Started {
		return w
	}
	w.started, w.high = true, st.High
	known := min(uint64(max(st.Size, 0)), w.size, uint64(len(st.Seen))*64)
	for i := range known {
		if st.Seen[i/64]&(1<<(i%64)) != 0 {
			w.set(i)
		}
	}
	// Numbers the saved window had already forgotten count as used: they
	// were refused as too old before and must stay refused.
	for i := known; i < w.size && i <= w.high; i++ {
		w.set(i)
	}
	return w
}

// stateVersion1 is the first byte of State's binary form.
const stateVersion1 = 1

// ErrBadState means a State's binary form does not decode.
var ErrBadState = errors.New("replay: malformed state")

// AppendBinary appends the binary form of st's window (floor, size, high,
// started, bitmap; not Key, Version, Expires, which stores keep apart) to b:
// version(1) floor(8) size(4) high(8) started(1) words(8 each), big endian.
func (st State) AppendBinary(b []byte) []byte {
	b = append(b, stateVersion1)
	b = binary.BigEndian.AppendUint64(b, st.Floor)
	b = binary.BigEndian.AppendUint32(b, uint32(max(st.Size, 0)))
	b = binary.BigEndian.AppendUint64(b, st.High)
	if st.Started {
		b = append(b, 1)
	} else {
		b = append(b, 0)
	}
	for _, w := range st.Seen {
		b = binary.BigEndian.AppendUint64(b, w)
	}
	return b
}

// UnmarshalBinary sets st's window fields from the form AppendBinary
// writes; Key, Version and Expires are left alone.
func (st *State) UnmarshalBinary(b []byte) error {
	const head = 1 + 8 + 4 + 8 + 1
	if len(b) < head || b[0] != stateVersion1 || (len(b)-head)%8 != 0 || b[head-1] > 1 {
		return ErrBadState
	}
	size := binary.BigEndian.Uint32(b[9:])
	if size > MaxWindow || (len(b)-head)/8 > (MaxWindow+63)/64 {
		return ErrBadState
	}
	st.Floor = binary.BigEndian.Uint64(b[1:])
	st.Size = int(size)
	st.High = binary.BigEndian.Uint64(b[13:])
	st.Started = b[head-1] == 1
	st.Seen = make([]uint64, (len(b)-head)/8)
	for i := range st.Seen {
		st.Seen[i] = binary.BigEndian.Uint64(b[head+8*i:])
	}
	return nil
}
