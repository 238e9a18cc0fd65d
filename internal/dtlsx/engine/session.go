package engine

import (
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
	cipher   recordCipher
	wseq     uint64 // next sequence number of epoch 1 to send
	win      replayWindow
	lastSeen time.Time
	gen      uint32
	hs       *handshake // the finished handshake, kept to retransmit its last flight
	closed   bool
}

// Addr returns the peer's address.
func (s *Session) Addr() netip.AddrPort { return s.addr }

// Identity returns the PSK identity the peer authenticated with.
func (s *Session) Identity() []byte { return s.identity }

// CipherSuite returns the negotiated suite's number.
func (s *Session) CipherSuite() uint16 { return s.suite.id }

// seal returns one epoch-1 record of type typ carrying b. Every call takes
// a fresh sequence number, so no (epoch, sequence number) pair is sent twice.
func (s *Session) seal(typ byte, b []byte) ([]byte, error) {
	if s.wseq > maxSeq {
		return nil, errSeqExhausted
	}
	seq := s.wseq
	s.wseq++
	raw := make([]byte, recordHeaderLen+len(b), recordHeaderLen+len(b)+s.suite.overhead)
	putRecordHeader(raw, typ, 1, seq, len(b))
	copy(raw[recordHeaderLen:], b)
	pkt := &recordlayer.RecordLayer{Header: recordlayer.Header{
		ContentType:    protocol.ContentType(typ),
		Version:        protocol.Version1_2,
		Epoch:          1,
		SequenceNumber: seq,
	}}
	return s.cipher.Encrypt(pkt, raw)
}

// open authenticates and decrypts an epoch-1 record in place and returns
// its plaintext. Change cipher spec records never reach it (pion's
// decrypters pass them through unauthenticated).
func (s *Session) open(r *record) ([]byte, error) {
	if r.typ == ctChangeCipherSpec {
		return nil, errUnexpectedCCS
	}
	out, err := s.cipher.Decrypt(recordlayer.Header{}, r.raw)
	if err != nil {
		return nil, err
	}
	return out[recordHeaderLen:], nil
}
