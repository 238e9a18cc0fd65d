package engine

import (
	"encoding/binary"
	"errors"
	"net/netip"

	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// Session is an established DTLS association with one peer address.
//
// Its idle form is compact, since a server holds one per device: the key
// block, the PSK identity and both connection IDs share one allocation
// (mem), times are nanoseconds since the engine's epoch, and the session is
// its own entry in the engine's timer heap (at, hidx). The expanded record
// protection (cipher) and the final flight kept for retransmission (final)
// exist only while the session is in use or just established.
type Session struct {
	addr     netip.AddrPort
	suite    *suite
	mem      []byte       // key block | identity | wcid | rcid
	cipher   recordCipher // built from the key block on use, dropped when idle
	final    *finalFlight // the server's last flight, until the client shows it has it
	wseq     uint64       // next sequence number of epoch 1 to send
	win      replayWindow
	lastSeen int64 // engine time of the last authenticated record from the peer
	lastUse  int64 // engine time of the last record sealed or opened
	at       int64 // engine time of the session's next timer
	idle     int64 // idle timeout (ns; 0 until the first timer)
	hidx     int32 // index in the engine's session timer heap, -1 when not in it
	idLen    uint16
	keyLen   uint8
	wcidLen  uint8
	rcidLen  uint8
	closed   bool
	wlim     *writeLimit // reserved write sequence numbers (repl.go); nil: no limit
}

// finalFlight is what the server needs to send its last flight again
// (ChangeCipherSpec and Finished) when the client's Finished is repeated:
// the verify data and message sequence of the Finished and the next
// epoch-0 record sequence number.
type finalFlight struct {
	verify [12]byte
	msgSeq uint16
	seq0   uint64
	until  int64 // engine time after which it is dropped
}

// newSession returns a session whose variable-length parts (key block,
// identity, connection IDs: the peer's records carry rcid, ours wcid) are
// copied into one allocation. A PSK session's identity is never nil.
func newSession(st *suite, keys, identity, rcid, wcid []byte) *Session {
	mem := make([]byte, 0, len(keys)+len(identity)+len(wcid)+len(rcid))
	mem = append(mem, keys...)
	mem = append(mem, identity...)
	mem = append(mem, wcid...)
	mem = append(mem, rcid...)
	return &Session{
		suite: st, mem: mem, hidx: -1,
		keyLen: uint8(len(keys)), idLen: uint16(len(identity)),
		wcidLen: uint8(len(wcid)), rcidLen: uint8(len(rcid)),
	}
}

func (s *Session) keys() []byte {
	return s.mem[:s.keyLen:s.keyLen]
}

func (s *Session) wcid() []byte {
	o := int(s.keyLen) + int(s.idLen)
	return s.mem[o : o+int(s.wcidLen) : o+int(s.wcidLen)]
}

func (s *Session) rcid() []byte {
	o := int(s.keyLen) + int(s.idLen) + int(s.wcidLen)
	return s.mem[o : o+int(s.rcidLen) : o+int(s.rcidLen)]
}

var errWrongCID = errors.New("engine: record with a wrong or empty connection ID")

// Addr returns the peer's address.
func (s *Session) Addr() netip.AddrPort { return s.addr }

// Identity returns the PSK identity the peer authenticated with (nil for a
// certificate session). The caller must not modify it.
func (s *Session) Identity() []byte {
	if s.suite == nil || !s.suite.psk {
		return nil
	}
	o := int(s.keyLen)
	return s.mem[o : o+int(s.idLen) : o+int(s.idLen)]
}

// CipherSuite returns the negotiated suite's number.
func (s *Session) CipherSuite() uint16 { return s.suite.id }

// rc returns the record protection, building it from the key block if the
// session was idle.
func (s *Session) rc() recordCipher {
	if s.cipher == nil {
		c, err := s.suite.newCipher(s.keys())
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
	if s.wlim != nil {
		if err := s.wlim.allow(s); err != nil {
			return nil, err
		}
	}
	seq := s.wseq
	s.wseq++
	pkt := &recordlayer.RecordLayer{Header: recordlayer.Header{
		ContentType:    protocol.ContentType(typ),
		Version:        protocol.Version1_2,
		Epoch:          1,
		SequenceNumber: seq,
	}}
	wcid := s.wcid()
	if len(wcid) == 0 {
		raw := make([]byte, recordHeaderLen+len(b), recordHeaderLen+len(b)+s.suite.overhead)
		putRecordHeader(raw, typ, 1, seq, len(b))
		copy(raw[recordHeaderLen:], b)
		return s.rc().Encrypt(pkt, raw)
	}
	// tls12_cid: the header carries the CID, the inner plaintext is
	// content || real type (RFC 9146 §4), without padding.
	hl := recordHeaderLen + len(wcid)
	raw := make([]byte, hl+len(b)+1, hl+len(b)+1+s.suite.overhead)
	putRecordHeader(raw, ctCID, 1, seq, 0)
	copy(raw[11:], wcid)
	binary.BigEndian.PutUint16(raw[hl-2:], uint16(len(b)+1))
	copy(raw[hl:], b)
	raw[len(raw)-1] = typ
	pkt.Header.ContentType = ctCID
	pkt.Header.ConnectionID = wcid
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
	rcid := s.rcid()
	if len(rcid) == 0 || string(r.cid) != string(rcid) {
		return 0, nil, errWrongCID
	}
	out, err := s.rc().Decrypt(recordlayer.Header{ConnectionID: make([]byte, len(rcid))}, r.raw)
	if err != nil {
		return 0, nil, err
	}
	pt := out[recordHeaderLen+len(rcid):]
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
