package engine

import (
	"encoding/binary"
	"errors"
)

// DTLS 1.2 content types (RFC 6347 §4.1) and handshake types (RFC 5246 §7.4).
const (
	ctChangeCipherSpec = 20
	ctAlert            = 21
	ctHandshake        = 22
	ctApplicationData  = 23
	ctCID              = 25 // tls12_cid (RFC 9146 §4)

	htClientHello        = 1
	htServerHello        = 2
	htHelloVerifyRequest = 3
	htCertificate        = 11
	htServerKeyExchange  = 12
	htServerHelloDone    = 14
	htClientKeyExchange  = 16
	htFinished           = 20

	recordHeaderLen    = 13
	handshakeHeaderLen = 12
	maxSeq             = 1<<48 - 1
	maxRecordPlaintext = 1 << 14
)

// Alert descriptions (RFC 5246 §7.2, RFC 4279 §2, RFC 5746).
const (
	alertCloseNotify        = 0
	alertUnexpectedMessage  = 10
	alertBadRecordMAC       = 20
	alertHandshakeFailure   = 40
	alertIllegalParameter   = 47
	alertDecodeError        = 50
	alertDecryptError       = 51
	alertProtocolVersion    = 70
	alertInternalError      = 80
	alertNoRenegotiation    = 100
	alertUnknownPSKIdentity = 115

	alertWarning = 1
	alertFatal   = 2
)

var errShortRecord = errors.New("truncated record")

// record is one DTLS record of a datagram; raw aliases the datagram.
type record struct {
	typ   byte
	major byte
	minor byte
	epoch uint16
	seq   uint64
	cid   []byte // connection ID of a tls12_cid record
	raw   []byte // header and fragment
	body  []byte // the fragment (ciphertext for epoch > 0)
}

// splitRecord returns the first record of b and the rest. The declared
// length must fit in b and in the protocol's limit for a ciphertext
// fragment (2^14 + 2048, RFC 5246 §6.2.3). A tls12_cid record carries a
// connection ID of cidLen bytes (0: such records are refused).
func splitRecord(b []byte, cidLen int) (r record, rest []byte, err error) {
	if len(b) < recordHeaderLen {
		return r, nil, errShortRecord
	}
	hl := recordHeaderLen
	if b[0] == ctCID {
		if cidLen == 0 || len(b) < recordHeaderLen+cidLen {
			return r, nil, errShortRecord
		}
		hl += cidLen
		r.cid = b[11 : 11+cidLen]
	}
	n := int(binary.BigEndian.Uint16(b[hl-2 : hl]))
	if n > len(b)-hl || n > maxRecordPlaintext+2048 {
		return r, nil, errShortRecord
	}
	r.typ, r.major, r.minor = b[0], b[1], b[2]
	r.epoch = binary.BigEndian.Uint16(b[3:5])
	r.seq = uint64(b[5])<<40 | uint64(b[6])<<32 | uint64(binary.BigEndian.Uint32(b[7:11]))
	r.raw = b[:hl+n]
	r.body = b[hl : hl+n]
	return r, b[hl+n:], nil
}

// validVersion accepts DTLS 1.2 records and, in epoch 0, DTLS 1.0 records
// (a ClientHello may be sent with the lowest version the client supports).
func (r *record) validVersion() bool {
	return r.major == 0xfe && (r.minor == 0xfd || (r.minor == 0xff && r.epoch == 0))
}

// putRecordHeader writes a 13-byte DTLS 1.2 record header to dst.
func putRecordHeader(dst []byte, typ byte, epoch uint16, seq uint64, n int) {
	dst[0], dst[1], dst[2] = typ, 0xfe, 0xfd
	binary.BigEndian.PutUint16(dst[3:], epoch)
	dst[5], dst[6] = byte(seq>>40), byte(seq>>32)
	binary.BigEndian.PutUint32(dst[7:], uint32(seq))
	binary.BigEndian.PutUint16(dst[11:], uint16(n))
}

// hsFragment is one handshake message fragment (RFC 6347 §4.2.2).
type hsFragment struct {
	typ    byte
	length int
	seq    uint16
	off    int
	data   []byte
}

// splitFragment returns the first handshake fragment of b and the rest.
func splitFragment(b []byte) (f hsFragment, rest []byte, err error) {
	if len(b) < handshakeHeaderLen {
		return f, nil, errShortRecord
	}
	f.typ = b[0]
	f.length = u24(b[1:])
	f.seq = binary.BigEndian.Uint16(b[4:])
	f.off = u24(b[6:])
	fl := u24(b[9:])
	if fl > len(b)-handshakeHeaderLen {
		return f, nil, errShortRecord
	}
	if f.off+fl > f.length {
		return f, nil, errFragmentBounds
	}
	f.data = b[handshakeHeaderLen : handshakeHeaderLen+fl]
	return f, b[handshakeHeaderLen+fl:], nil
}

func u24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

func put24(b []byte, v int) { b[0], b[1], b[2] = byte(v>>16), byte(v>>8), byte(v) }

// handshakeMessage returns the unfragmented encoding of a handshake message
// (header with fragment_offset 0 and fragment_length = length), the form
// that enters the Finished hash.
func handshakeMessage(typ byte, seq uint16, body []byte) []byte {
	m := make([]byte, handshakeHeaderLen+len(body))
	m[0] = typ
	put24(m[1:], len(body))
	binary.BigEndian.PutUint16(m[4:], seq)
	put24(m[9:], len(body))
	copy(m[handshakeHeaderLen:], body)
	return m
}
