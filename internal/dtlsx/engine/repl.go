package engine

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Sessions shared between engines (nodes of a cluster): the hooks and
// methods a replicator needs on top of Export and Import. The replicator
// stores exported sessions, gives one engine at a time the right to send on
// a session, and hands every engine a disjoint range of write sequence
// numbers, so that no (epoch, sequence number) pair is ever sealed twice
// under the same keys, whichever engine seals it.

// ReasonTakenOver ends a session silently (no close_notify) because
// another engine now owns it (Drop).
const ReasonTakenOver = "taken_over"

// ErrSeqReserved: the session's write sequence numbers reached the limit
// SetWriteLimit gave; nothing is sent until the limit is raised.
var ErrSeqReserved = errors.New("engine: reserved write sequence numbers used up")

// Replication are the hooks of a session replicator (SetReplication).
type Replication struct {
	// OnUnknown gets an epoch-1 record that no session here can take: its
	// connection ID (cid non-nil) or, without one, its source address is
	// unknown. It runs under the engine's lock on the read loop: it must
	// not block nor call the engine, and must copy cid and rec to keep
	// them. The record is unauthenticated input.
	OnUnknown func(cid []byte, addr netip.AddrPort, rec []byte)
	// OnLowWater is called once per SetWriteLimit when the session's next
	// write sequence number reaches its low-water mark: time to reserve
	// more. It runs under the engine's lock: it must not block nor call
	// the engine.
	OnLowWater func(s *Session)
}

// SetReplication installs the replicator's hooks (before Serve).
func (e *Engine) SetReplication(r Replication) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.repl = &r
}

// unknownRecord counts a record without a session and offers it to the
// replicator.
func (e *Engine) unknownRecord(r *record, addr netip.AddrPort) {
	e.st.RecordsDropped++
	if e.repl == nil || e.repl.OnUnknown == nil || r.epoch != 1 || r.typ == ctChangeCipherSpec {
		return
	}
	var cid []byte
	if r.typ == ctCID {
		cid = r.cid
	}
	e.repl.OnUnknown(cid, addr, r.raw)
}

// ErrRecordRate: a session with a write limit sealed MaxRecordRate
// records a second (RecordBurst at once); the record is not sent.
var ErrRecordRate = errors.New("engine: record rate of a shared session exceeded")

// A session with a write limit (a replicated one) seals at most
// RecordBurst records at once and MaxRecordRate a second on average,
// far beyond what a CoAP device asks for. With that bound a store that
// lost its latest writes — restored from a backup, a crash before its
// disk sync — cannot make a node repeat a sequence number: the owner
// cannot have sealed more than RollbackMargin(time since the record was
// written) beyond the record's reservation, so a node taking the session
// over starts that far beyond it.
const (
	MaxRecordRate = 100_000
	RecordBurst   = MaxRecordRate
	recordPeriod  = int64(time.Second) / MaxRecordRate
	// clockSlack covers the wall clocks of two nodes (or of one node
	// across a restart) disagreeing, and steps of the clock.
	clockSlack = time.Hour
)

// RollbackMargin is how far beyond the reservation end of a session's
// record, written elapsed ago (by the writer's wall clock), a node taking
// the session over starts sending (see MaxRecordRate): the records the
// owner could have sealed since, plus twice the burst and an hour of
// clock disagreement.
func RollbackMargin(elapsed time.Duration) uint64 {
	elapsed = max(elapsed, 0) + clockSlack
	return uint64(elapsed/time.Second)*MaxRecordRate + uint64(elapsed%time.Second)/uint64(recordPeriod) + 2*RecordBurst
}

// writeLimit bounds the write sequence numbers a session may use: those
// below limit; reaching low tells the replicator once. It also caps the
// session's record rate (MaxRecordRate).
type writeLimit struct {
	limit, low uint64
	e          *Engine // its clock and OnLowWater
	at         int64   // engine time avail was refilled up to
	avail      uint32  // records that may be sealed now (at most RecordBurst)
	told       bool
}

// allow reports whether s may seal with its next sequence number, or
// why not.
func (w *writeLimit) allow(s *Session) error {
	if s.wseq >= w.low && !w.told {
		w.told = true
		if r := w.e.repl; r != nil && r.OnLowWater != nil {
			r.OnLowWater(s)
		}
	}
	if s.wseq >= w.limit {
		return ErrSeqReserved
	}
	if now := w.e.clock(w.e.now); now > w.at {
		add := (now - w.at) / recordPeriod
		w.at += add * recordPeriod
		if int64(w.avail)+add >= RecordBurst {
			w.avail, w.at = RecordBurst, now
		} else {
			w.avail += uint32(add)
		}
	}
	if w.avail == 0 {
		return ErrRecordRate
	}
	w.avail--
	return nil
}

// SetWriteLimit lets s seal with sequence numbers below limit only; low
// (at most limit) is where OnLowWater asks for more. A limit never moves
// down.
func (e *Engine) SetWriteLimit(s *Session, limit, low uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.setLimit(s, limit, low)
}

func (e *Engine) setLimit(s *Session, limit, low uint64) {
	if s.wlim == nil {
		s.wlim = &writeLimit{e: e, avail: RecordBurst, at: e.clock(e.now)}
	}
	// A new limit, never lower; the rate state carries over.
	w := s.wlim
	w.limit = max(w.limit, limit)
	w.low, w.told = min(low, w.limit), false
}

// WriteState returns s exported (Export's format) and its next write
// sequence number; ErrNoSession once it ended.
func (e *Engine) WriteState(s *Session) ([]byte, uint64, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if s.closed {
		return nil, 0, ErrNoSession
	}
	return s.marshal(), s.wseq, nil
}

// SessionByCID returns the session whose peer's records carry the
// connection ID cid (nil: none here).
func (e *Engine) SessionByCID(cid []byte) *Session {
	if len(cid) != cidSize {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.byCID[cidKey(cid)]
}

// Closed reports whether s has ended.
func (e *Engine) Closed(s *Session) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return s.closed
}

// Drop ends s silently (no close_notify: the peer continues with the
// engine that took it over); OnClose gets ReasonTakenOver.
func (e *Engine) Drop(s *Session) {
	e.mu.Lock()
	if !s.closed {
		e.closeSession(s, ReasonTakenOver)
	}
	e.unlockAndNotify()
}

// VerifyRecord reports whether rec, one epoch-1 record, authenticates
// under the exported session b and is newer than b's replay window allows:
// the proof that a peer holds the session, required before taking it over
// (a spoofed connection ID or a replayed record must not move a session).
// It changes nothing.
func (e *Engine) VerifyRecord(b, rec []byte) error {
	s, err := e.decode(b, 0)
	if err != nil {
		return err
	}
	r, rest, err := splitRecord(slices.Clone(rec), e.cidLen)
	switch {
	case err != nil || len(rest) != 0 || !r.validVersion():
		return fmt.Errorf("engine: verify: malformed record")
	case r.epoch != 1 || r.typ == ctChangeCipherSpec:
		return fmt.Errorf("engine: verify: not an epoch-1 record")
	case (r.typ == ctCID) != (len(s.rcid()) > 0):
		return errWrongCID
	case !s.win.check(r.seq):
		return fmt.Errorf("engine: verify: record replayed")
	}
	if _, _, err := s.open(&r); err != nil {
		return fmt.Errorf("engine: verify: %w", err)
	}
	return nil
}

// Adopt installs the exported session b, taken over from another engine,
// at addr (where its peer is now): it seals from sequence number start
// (or the exported one, if higher) up to limit, low being the low-water
// mark (SetWriteLimit). Any session at addr is replaced.
func (e *Engine) Adopt(b []byte, addr netip.AddrPort, start, limit, low uint64) (*Session, error) {
	s, err := e.decode(b, 0)
	if err != nil {
		return nil, err
	}
	if !addr.IsValid() || start > maxSeq {
		return nil, fmt.Errorf("%w: address or sequence number", errBadExport)
	}
	s.addr = addr
	s.wseq = max(s.wseq, start)
	e.mu.Lock()
	e.setLimit(s, limit, low)
	e.mu.Unlock()
	return e.install(s)
}

// ConnectionID returns the connection ID the peer puts in its records (nil:
// none was negotiated). It never changes.
func (s *Session) ConnectionID() []byte { return s.rcid() }

// ExportedIdentity returns the PSK identity of an exported session (nil:
// a certificate session).
func (e *Engine) ExportedIdentity(b []byte) ([]byte, error) {
	s, err := e.decode(b, 0)
	if err != nil {
		return nil, err
	}
	return s.Identity(), nil
}
