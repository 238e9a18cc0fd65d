package engine

// replayWindow is the 64-record anti-replay window of RFC 6347 §4.1.2.6 for
// one epoch: top is the highest sequence number accepted so far and bit i of
// bits marks top-i as received. Bit 0 (top itself) is set once any record
// was accepted, so bits == 0 means none was.
type replayWindow struct {
	top  uint64
	bits uint64
}

// any reports whether a record was accepted.
func (w *replayWindow) any() bool { return w.bits != 0 }

const windowSize = 64

// cidSize is the length of the connection IDs the engine issues.
const cidSize = 8

// cidKey is a connection ID as a key of the session table by CID: an
// array, so that an entry needs no allocation of its own.
type cidKey [cidSize]byte

// check reports whether seq may be accepted (not seen, not older than the
// window). It does not mark seq: call mark only after the record has been
// authenticated, so that forged records cannot move the window.
func (w *replayWindow) check(seq uint64) bool {
	if !w.any() || seq > w.top {
		return true
	}
	d := w.top - seq
	if d >= windowSize {
		return false
	}
	return w.bits&(1<<d) == 0
}

// mark records seq as received.
func (w *replayWindow) mark(seq uint64) {
	if !w.any() {
		w.top, w.bits = seq, 1
		return
	}
	if seq > w.top {
		d := seq - w.top
		if d >= windowSize {
			w.bits = 0
		} else {
			w.bits <<= d
		}
		w.bits |= 1
		w.top = seq
		return
	}
	if d := w.top - seq; d < windowSize {
		w.bits |= 1 << d
	}
}
