package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"time"

	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// Session is an established DTLS association with one peer address.
type Session struct {
	addr     netip.AddrPort
	identity []byte
	suite    *suite
	keys     []byte       // key block (RFC 5246 §6.3)
	cipher   recordCipher // built from keys on use, dropped when idle
	gen      uint32       // generation of the session's timer
	idle     time.Duration
	rcid     []byte // connection ID the peer puts in its records (ours)
	wcid     []byte // connection ID the peer asked for in ours
	wseq     uint64 // next sequence number of epoch 1 to send
	win      replayWindow
	lastSeen time.Time  // last authenticated record from the peer
	lastUse  time.Time  // last record sealed or opened
	hs       *handshake // the finished handshake, kept to retransmit its last flight
	closed   bool
	wlim     *writeLimit // reserved write sequence numbers (repl.go); nil: no limit
}

var errWrongCID = errors.New("engine: record with a wrong or empty connection ID")

// Addr returns the peer's address.
func (s *Session) Addr() netip.AddrPort { return s.addr }

// Identity returns the PSK identity the peer authenticated with.
func (s *Session) Identity() []byte { return s.identity }

// CipherSuite returns the negotiated suite's number.
func (s *Session) CipherSuite() uint16 { return s.suite.id }

// rc returns the record protection, building it from the key block if the
// session was idle.
func (s *Session) rc() recordCipher {
	if s.cipher == nil {
		c, err := s.suite.newCipher(s.keys)
		if err != nil {
			return brokenCipher{err}
		}
		s.cipher = c
	}
	return s.cipher
}

// brokenCipher fails every operation (a key block that does not build).
type brokenCipher struct{ err error }

func (b brokenCipher) Encrypt(*recordlayer.RecordLayer, []byte) ([]byte, error) { return nil, b.err }
func (b brokenCipher) Decrypt(recordlayer.Header, []byte) ([]byte, error)       { return nil, b.err }

// seal returns one epoch-1 record of type typ carrying b. Every call takes
// a fresh sequence number, so no (epoch, sequence number) pair is sent twice.
func (s *Session) seal(typ byte, b []byte) ([]byte, error) {
	if s.wseq > maxSeq {
		return nil, errSeqExhausted
	}
	if s.wlim != nil && !s.wlim.allow(s) {
		return nil, ErrSeqReserved
	}
	seq := s.wseq
	s.wseq++
	pkt := &recordlayer.RecordLayer{Header: recordlayer.Header{
		ContentType:    protocol.ContentType(typ),
		Version:        protocol.Version1_2,
		Epoch:          1,
		SequenceNumber: seq,
	}}
	if len(s.wcid) == 0 {
		raw := make([]byte, recordHeaderLen+len(b), recordHeaderLen+len(b)+s.suite.overhead)
		putRecordHeader(raw, typ, 1, seq, len(b))
		copy(raw[recordHeaderLen:], b)
		return s.rc().Encrypt(pkt, raw)
	}
	// tls12_cid: the header carries the CID, the inner plaintext is
	// content || real type (RFC 9146 §4), without padding.
	hl := recordHeaderLen + len(s.wcid)
	raw := make([]byte, hl+len(b)+1, hl+len(b)+1+s.suite.overhead)
	putRecordHeader(raw, ctCID, 1, seq, 0)
	copy(raw[11:], s.wcid)
	binary.BigEndian.PutUint16(raw[hl-2:], uint16(len(b)+1))
	copy(raw[hl:], b)
	raw[len(raw)-1] = typ
	pkt.Header.ContentType = ctCID
	pkt.Header.ConnectionID = s.wcid
	return s.rc().Encrypt(pkt, raw)
}

// open authenticates and decrypts an epoch-1 record in place and returns
// its plaintext. Change cipher spec records never reach it (pion's
// decrypters pass them through unauthenticated).
// For a tls12_cid record it returns the inner plaintext's content type.
func (s *Session) open(r *record) (byte, []byte, error) {
	if r.typ == ctChangeCipherSpec {
		return 0, nil, errUnexpectedCCS
	}
	if r.typ != ctCID {
		out, err := s.rc().Decrypt(recordlayer.Header{}, r.raw)
		if err != nil {
			return 0, nil, err
		}
		return r.typ, out[recordHeaderLen:], nil
	}
	if len(s.rcid) == 0 || string(r.cid) != string(s.rcid) {
		return 0, nil, errWrongCID
	}
	out, err := s.rc().Decrypt(recordlayer.Header{ConnectionID: make([]byte, len(s.rcid))}, r.raw)
	if err != nil {
		return 0, nil, err
	}
	pt := out[recordHeaderLen+len(s.rcid):]
	// Strip the zero padding; the last non-zero byte is the real type.
	i := len(pt) - 1
	for i >= 0 && pt[i] == 0 {
		i--
	}
	if i < 0 {
		return 0, nil, errWrongCID
	}
	return pt[i], pt[:i], nil
}
