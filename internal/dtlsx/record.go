package dtlsx

import "encoding/binary"

// DTLS 1.2 record layer constants (RFC 6347 §4.1, RFC 9146 §4).
const (
	recordHeaderLen    = 13
	handshakeHeaderLen = 12

	contentAlert     = 21
	contentHandshake = 22
	contentCID       = 25 // tls12_cid (RFC 9146)

	handshakeClientHello = 1
)

// clientHello describes the first record of a datagram when it is a
// plaintext ClientHello (epoch 0).
type clientHello struct {
	cookie bool     // carries a non-empty cookie (the HelloVerifyRequest echo)
	random [32]byte // client random: the same in a handshake's ClientHellos
}

// parseClientHello inspects the first record of b. It reports ok only for a
// well-formed DTLS handshake record of epoch 0 whose (first fragment of
// the) handshake message is a ClientHello: only such a datagram may create
// state for an unknown address.
func parseClientHello(b []byte) (ch clientHello, ok bool) {
	if len(b) < recordHeaderLen+handshakeHeaderLen+2+32+1 {
		return ch, false
	}
	if b[0] != contentHandshake || b[1] != 0xfe || (b[2] != 0xfd && b[2] != 0xff) || b[3] != 0 || b[4] != 0 {
		return ch, false
	}
	recLen := int(binary.BigEndian.Uint16(b[11:13]))
	if recLen > len(b)-recordHeaderLen || recLen < handshakeHeaderLen {
		return ch, false
	}
	h := b[recordHeaderLen : recordHeaderLen+recLen]
	if h[0] != handshakeClientHello {
		return ch, false
	}
	fragOff, fragLen := uint24(h[6:9]), uint24(h[9:12])
	if fragOff != 0 || fragLen > len(h)-handshakeHeaderLen {
		return ch, false
	}
	body := h[handshakeHeaderLen : handshakeHeaderLen+fragLen]
	// client_version(2) random(32) session_id<0..32> cookie<0..255>
	p := 2 + 32
	if len(body) < p+1 {
		return ch, false
	}
	copy(ch.random[:], body[2:p])
	sid := int(body[p])
	p += 1 + sid
	if sid > 32 || len(body) < p+1 {
		return ch, false
	}
	ck := int(body[p])
	p += 1 + ck
	if len(body) < p {
		return ch, false
	}
	ch.cookie = ck > 0
	return ch, true
}

func uint24(b []byte) int { return int(b[0])<<16 | int(b[1])<<8 | int(b[2]) }

// recordCID returns the connection ID of b's first record when it is a
// tls12_cid record with a CID of n bytes.
func recordCID(b []byte, n int) ([]byte, bool) {
	if n == 0 || len(b) < 11+n+2 || b[0] != contentCID {
		return nil, false
	}
	return b[11 : 11+n], true
}

// isEncryptedHandshake reports whether b's first record is a handshake
// record of a later epoch: during a handshake, the client's Finished.
func isEncryptedHandshake(b []byte) bool {
	return len(b) >= recordHeaderLen && (b[0] == contentHandshake || b[0] == contentCID) && (b[3] != 0 || b[4] != 0)
}

// fatalAlert returns a plaintext (epoch 0) fatal alert record with the
// given description (RFC 5246 §7.2). A client whose Finished the server
// could not decrypt still reads epoch 0, so it learns at once that the
// handshake failed instead of retransmitting until it times out.
func fatalAlert(desc byte) []byte {
	return []byte{contentAlert, 0xfe, 0xfd, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xf0, 0, 2, 2, desc}
}

// Alert descriptions (RFC 5246 §7.2, RFC 4279 §2).
const (
	alertHandshakeFailure   = 40  // no acceptable parameters; registry unavailable
	alertDecryptError       = 51  // wrong PSK, or an identity refused as if the key were wrong
	alertInternalError      = 80  // never sent: replaced (isInternalErrorAlert)
	alertUnknownPSKIdentity = 115 // malformed PSK identity
)

// isInternalErrorAlert reports whether b is a plaintext (epoch 0) fatal
// internal_error alert record.
func isInternalErrorAlert(b []byte) bool {
	return len(b) == recordHeaderLen+2 && b[0] == contentAlert && b[3] == 0 && b[4] == 0 &&
		b[recordHeaderLen] == 2 && b[recordHeaderLen+1] == alertInternalError
}

// fatalAlertLike returns a copy of the alert record b with description desc.
func fatalAlertLike(b []byte, desc byte) []byte {
	c := append([]byte(nil), b...)
	c[recordHeaderLen+1] = desc
	return c
}
