package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// Exported session format, version 1 (all integers big-endian):
//
//	version(1) suite(2) addr_len(1) addr(AddrPort.MarshalBinary)
//	identity_len(2) identity rcid_len(1) rcid wcid_len(1) wcid
//	write_seq(8) window_top(8) window_bits(8) window_any(1)
//	keys_len(1) keys
//
// It holds the session's keys: whoever stores or ships it must protect it
// like the keys themselves.
const exportVersion = 1

var errBadExport = errors.New("engine: malformed exported session")

// Export returns the established session of addr as bytes that Import
// turns back into a working session, on this engine or another one with
// the same configuration.
func (e *Engine) Export(addr netip.AddrPort) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.sessions[addr]
	if s == nil {
		return nil, ErrNoSession
	}
	return s.marshal(), nil
}

// marshal encodes s in the exported format (under the engine's lock).
func (s *Session) marshal() []byte {
	a, _ := s.addr.MarshalBinary()
	identity, rcid, wcid, keys := s.Identity(), s.rcid(), s.wcid(), s.keys()
	b := make([]byte, 0, 64+len(a)+len(s.mem))
	b = append(b, exportVersion)
	b = binary.BigEndian.AppendUint16(b, s.suite.id)
	b = append(b, byte(len(a)))
	b = append(b, a...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(identity)))
	b = append(b, identity...)
	b = append(b, byte(len(rcid)))
	b = append(b, rcid...)
	b = append(b, byte(len(wcid)))
	b = append(b, wcid...)
	b = binary.BigEndian.AppendUint64(b, s.wseq)
	b = binary.BigEndian.AppendUint64(b, s.win.top)
	b = binary.BigEndian.AppendUint64(b, s.win.bits)
	anyRec := byte(0)
	if s.win.any() {
		anyRec = 1
	}
	b = append(b, anyRec)
	b = append(b, byte(len(keys)))
	b = append(b, keys...)
	return b
}

// reader consumes an exported session.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if r.bad || n > len(r.b) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) u8() int {
	v := r.take(1)
	if v == nil {
		return 0
	}
	return int(v[0])
}

func (r *reader) u16() int {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int(binary.BigEndian.Uint16(v))
}

func (r *reader) u64() uint64 {
	v := r.take(8)
	if v == nil {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// Import installs an exported session, replacing any session at its
// address. The send sequence number moves forward by seqAdvance so that
// records the exporting node sent after the export are never repeated
// with the same (epoch, sequence number); the client's replay window
// accepts the jump.
func (e *Engine) Import(b []byte, seqAdvance uint64) (*Session, error) {
	s, err := e.decode(b, seqAdvance)
	if err != nil {
		return nil, err
	}
	return e.install(s)
}

// decode parses an exported session; its send sequence number moves
// forward by seqAdvance.
func (e *Engine) decode(b []byte, seqAdvance uint64) (*Session, error) {
	r := &reader{b: b}
	if r.u8() != exportVersion {
		return nil, fmt.Errorf("%w: version", errBadExport)
	}
	st := suites[uint16(r.u16())]
	var addr netip.AddrPort
	if err := addr.UnmarshalBinary(r.take(r.u8())); err != nil || !addr.IsValid() {
		return nil, fmt.Errorf("%w: address", errBadExport)
	}
	identity := r.take(r.u16())
	rcid := r.take(r.u8())
	wcid := r.take(r.u8())
	wseq := r.u64()
	var win replayWindow
	win.top, win.bits = r.u64(), r.u64()
	// window_any is redundant (bit 0 of window_bits is set once a record
	// was accepted); an export where they disagree is malformed.
	if anyRec := r.u8(); anyRec > 1 || (anyRec == 1) != win.any() || (!win.any() && win.top != 0) {
		r.bad = true
	}
	keys := r.take(r.u8())
	switch {
	case r.bad || len(r.b) != 0:
		return nil, errBadExport
	case st == nil || !e.suiteEnabled(st.id):
		return nil, fmt.Errorf("%w: cipher suite", errBadExport)
	case len(keys) != st.keyBlockLen():
		return nil, fmt.Errorf("%w: key block", errBadExport)
	case len(rcid) != 0 && len(rcid) != e.cidLen:
		return nil, fmt.Errorf("%w: connection ID", errBadExport)
	case !st.psk && len(identity) != 0:
		return nil, fmt.Errorf("%w: identity of a certificate session", errBadExport)
	case wseq > maxSeq || seqAdvance > maxSeq-wseq:
		return nil, fmt.Errorf("%w: sequence numbers exhausted", errBadExport)
	}
	s := newSession(st, keys, identity, rcid, wcid)
	s.addr, s.win = addr, win
	s.wseq = wseq + seqAdvance
	return s, nil
}

// install enters a decoded session in the table, replacing any session at
// its address.
func (e *Engine) install(s *Session) (*Session, error) {
	e.mu.Lock()
	if rcid := s.rcid(); len(rcid) > 0 {
		if other := e.byCID[cidKey(rcid)]; other != nil && other.addr != s.addr {
			e.mu.Unlock()
			return nil, fmt.Errorf("engine: connection ID of the imported session in use")
		}
	}
	if old := e.sessions[s.addr]; old != nil {
		e.closeSession(old, ReasonReplaced)
	} else if len(e.sessions) >= e.cfg.MaxSessions {
		e.mu.Unlock()
		return nil, fmt.Errorf("engine: %d sessions, the limit", len(e.sessions))
	}
	s.lastSeen = e.clock(e.now)
	e.sessions[s.addr] = s
	if rcid := s.rcid(); len(rcid) > 0 {
		e.byCID[cidKey(rcid)] = s
	}
	e.st.Imports++
	e.armSession(s, e.now)
	e.unlockAndNotify()
	return s, nil
}

func (e *Engine) suiteEnabled(id uint16) bool {
	for _, x := range e.cfg.Suites {
		if x == id {
			return true
		}
	}
	return false
}
