package engine

import "errors"

// Errors of handshake reassembly.
var (
	errFragmentTooLarge    = errors.New("declared handshake length exceeds the limit")
	errFragmentBounds      = errors.New("fragment outside its declared message")
	errFragmentMismatch    = errors.New("fragment disagrees with earlier fragments of its message")
	errFragmentConflicting = errors.New("overlapping fragments carry different bytes")
)

// reassembly collects the fragments of one handshake message (RFC 6347
// §4.2.3). The declared length is bounded before any buffer is allocated;
// every fragment must agree on type and length and lie within the message;
// overlapping bytes must be identical.
type reassembly struct {
	typ    byte
	length int
	buf    []byte
	have   []byte // bitmap of received bytes
	got    int    // number of received bytes
}

// add merges a fragment; done reports a complete message in r.buf.
func (r *reassembly) add(typ byte, length, off int, frag []byte, limit int) (done bool, err error) {
	if length > limit {
		return false, errFragmentTooLarge
	}
	if off < 0 || off+len(frag) > length {
		return false, errFragmentBounds
	}
	if r.buf == nil {
		r.typ, r.length = typ, length
		r.buf = make([]byte, length)
		r.have = make([]byte, (length+7)/8)
	} else if r.typ != typ || r.length != length {
		return false, errFragmentMismatch
	}
	for i, b := range frag {
		p := off + i
		if r.have[p/8]&(1<<(p%8)) != 0 {
			if r.buf[p] != b {
				return false, errFragmentConflicting
			}
			continue
		}
		r.buf[p] = b
		r.have[p/8] |= 1 << (p % 8)
		r.got++
	}
	return r.got == r.length, nil
}
