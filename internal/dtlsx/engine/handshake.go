package engine

import (
	"crypto"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"

	pionec "github.com/pion/dtls/v3/pkg/crypto/elliptic"
	pionhash "github.com/pion/dtls/v3/pkg/crypto/hash"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	pionsig "github.com/pion/dtls/v3/pkg/crypto/signature"
	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	pionhs "github.com/pion/dtls/v3/pkg/protocol/handshake"
)

// ErrPSKPending, returned by Config.PSK, defers the answer: the caller
// looks the key up off the read loop and calls Engine.ProvidePSK.
var ErrPSKPending = errors.New("engine: PSK lookup pending")

// PSKRefusal, returned by Config.PSK or passed to ProvidePSK, refuses a
// PSK identity for Reason, which OnHandshakeFailure and Stats then report
// instead of the engine's own reason, however the handshake ends.
//
// With Hide, the refusal does not show on the wire: the handshake goes on
// with the key given beside the error (a decoy; none: a random one), so
// the client's Finished fails and gets decrypt_error exactly as with a
// wrong key (RFC 4279 §2: probing does not tell which identities exist).
// Without Hide, the handshake ends at once with handshake_failure (the
// key cannot be looked up now).
type PSKRefusal struct {
	Reason string
	Hide   bool
}

func (r *PSKRefusal) Error() string { return "engine: PSK identity refused: " + r.Reason }

var (
	errSeqExhausted  = errors.New("engine: sequence numbers of the epoch exhausted")
	errUnexpectedCCS = errors.New("engine: change cipher spec in epoch 1")
)

// Handshake states after the verified ClientHello.
const (
	stWaitCKE      = iota + 1 // flight 4 sent, waiting for ClientKeyExchange
	stWaitFinished            // keys derived, waiting for the client's Finished
	stWaitPSK                 // ClientKeyExchange received, its PSK being looked up
	stDone                    // flight 6 sent
)

// handshake is the server state of one handshake, allocated only for a
// ClientHello that carries a valid cookie.
type handshake struct {
	addr          netip.AddrPort
	state         uint8
	gen           uint32
	suite         *suite
	clientRandom  [32]byte
	clientVersion [2]byte
	serverRandom  [32]byte
	ems           bool
	transcript    []byte
	recvSeq       uint16 // next message_seq expected from the client
	sendSeq       uint16 // next message_seq to send
	seq0          uint64 // next epoch-0 record sequence number to send
	re            reassembly
	flight        []outMsg
	timeout       time.Duration
	tries         int
	deadline      time.Time
	sess          *Session
	master        []byte
	ecdhKey       *ecdh.PrivateKey // ECDHE: the server's ephemeral key
	rcid, wcid    []byte           // connection IDs (RFC 9146): ours, the client's
	pendingSeq    uint16           // stWaitPSK: the ClientKeyExchange waiting for its key
	pendingCKE    []byte
	pendingID     []byte
	refused       string   // a hidden PSK refusal's reason (PSKRefusal)
	early         [][]byte // epoch-1 records that arrived before the keys
}

// outMsg is one message of a flight: a change cipher spec, or a complete
// handshake message (header and body) sent in epoch 0 or 1.
type outMsg struct {
	ccs   bool
	epoch uint16
	msg   []byte
}

func (h *handshake) nextSeq0() uint64 {
	s := h.seq0
	h.seq0++
	return s
}

// clientHello answers a ClientHello from an address without a handshake in
// progress: a HelloVerifyRequest unless it carries a valid cookie, else a
// new handshake.
func (e *Engine) clientHello(r *record, addr netip.AddrPort, now time.Time) {
	f, _, err := splitFragment(r.body)
	if err != nil || f.typ != htClientHello {
		e.st.RecordsMalformed++
		return
	}
	if f.off != 0 || len(f.data) != f.length {
		// A stateless server cannot reassemble; ClientHellos fit a datagram.
		e.st.HandshakeFailures[reasonFragmentedHell]++
		return
	}
	body := f.data
	if len(body) < 2+32+1 {
		e.st.RecordsMalformed++
		return
	}
	p := 34
	sid := int(body[p])
	p += 1 + sid
	if sid > 32 || len(body) < p+1 {
		e.st.RecordsMalformed++
		return
	}
	cStart := p
	p += 1 + int(body[p])
	if len(body) < p {
		e.st.RecordsMalformed++
		return
	}
	pre, cookie, post := body[:cStart], body[cStart+1:p], body[p:]
	if body[0] != 0xfe || body[1] > 0xfd {
		// Offers DTLS 1.0 at most.
		e.statelessAlert(r.seq, alertProtocolVersion, addr)
		e.st.HandshakeFailures[ReasonBadVersion]++
		return
	}
	if !e.cookies.verify(cookie, addr, pre, post) {
		if len(cookie) > 0 {
			e.st.BadCookies++
		}
		e.helloVerify(r.seq, f.seq, addr, pre, post)
		return
	}
	reason := e.admit(addr)
	if reason == "" && e.cfg.AdmitHandshake != nil {
		reason = e.cfg.AdmitHandshake(addr, len(e.hs)*2 >= e.cfg.MaxHandshakes)
	}
	if reason != "" {
		e.st.HandshakeFailures[reason]++
		if e.cfg.OnHandshakeFailure != nil {
			e.cfg.OnHandshakeFailure(HandshakeFailure{Reason: reason, Addr: addr})
		}
		return
	}
	var ch pionhs.MessageClientHello
	if err := ch.Unmarshal(body); err != nil {
		e.statelessAlert(r.seq, alertDecodeError, addr)
		e.st.HandshakeFailures[ReasonBadMessage]++
		return
	}
	h := &handshake{
		addr:     addr,
		seq0:     r.seq, // above every HelloVerifyRequest sent to this client
		recvSeq:  f.seq + 1,
		sendSeq:  f.seq,
		timeout:  e.cfg.RetransmitInitial,
		deadline: now.Add(e.cfg.HandshakeTimeout),
	}
	e.st.HandshakeStates++
	e.addHandshake(h)
	h.clientRandom = ch.Random.MarshalFixed()
	h.clientVersion = [2]byte{body[0], body[1]}

	nullCompression := false
	for _, c := range ch.CompressionMethods {
		if c.ID == 0 {
			nullCompression = true
		}
	}
	if !nullCompression {
		e.fail(h, ReasonBadMessage, alertIllegalParameter)
		return
	}
	secureReneg := slices.Contains(ch.CipherSuiteIDs, tlsEmptyRenegotiationInfoSCSV)
	var curves []pionec.Curve
	// Without signature_algorithms a client implies SHA-1 (RFC 5246
	// §7.4.1.4.1); the engine signs with SHA-256 only, as every current
	// client offers it.
	ecdsaSHA256 := true
	for _, x := range ch.Extensions {
		switch x := x.(type) {
		case *extension.SupportedEllipticCurves:
			curves = x.EllipticCurves
		case *extension.SupportedSignatureAlgorithms:
			ecdsaSHA256 = false
			for _, a := range x.SignatureHashAlgorithms {
				if a.Hash == pionhash.SHA256 && a.Signature == pionsig.ECDSA {
					ecdsaSHA256 = true
				}
			}
		case *extension.UseExtendedMasterSecret:
			h.ems = x.Supported
		case *extension.ConnectionID:
			if e.cfg.ConnectionID {
				h.wcid = slices.Clone(x.CID)
				h.rcid = e.newCID()
			}
		case *extension.RenegotiationInfo:
			if x.RenegotiatedConnection != 0 {
				// Non-empty renegotiated_connection in an initial handshake
				// (RFC 5746 §3.6).
				e.fail(h, ReasonBadMessage, alertHandshakeFailure)
				return
			}
			secureReneg = true
		}
	}
	// Suite choice: the server's order, among the client's offers; ECDHE
	// needs a common curve (X25519, then P-256) and ECDSA with SHA-256.
	curve := pionec.Curve(0)
	for _, c := range []pionec.Curve{pionec.X25519, pionec.P256} {
		if slices.Contains(curves, c) {
			curve = c
			break
		}
	}
	h.suite = e.chooseSuite(ch.CipherSuiteIDs, curve != 0 && ecdsaSHA256)
	if h.suite == nil {
		e.fail(h, ReasonNoSuite, alertHandshakeFailure)
		return
	}
	if _, err := e.cfg.Rand.Read(h.serverRandom[:]); err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	var exts []extension.Extension
	if secureReneg {
		exts = append(exts, &extension.RenegotiationInfo{})
	}
	if h.ems {
		exts = append(exts, &extension.UseExtendedMasterSecret{Supported: true})
	}
	if h.rcid != nil {
		exts = append(exts, &extension.ConnectionID{CID: h.rcid})
	}
	var rnd pionhs.Random
	rnd.UnmarshalFixed(h.serverRandom)
	id := h.suite.id
	sh := pionhs.MessageServerHello{
		Version:           protocol.Version1_2,
		Random:            rnd,
		CipherSuiteID:     &id,
		CompressionMethod: &protocol.CompressionMethod{},
		Extensions:        exts,
	}
	shBody, err := sh.Marshal()
	if err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	h.transcript = append(h.transcript, handshakeMessage(htClientHello, f.seq, body)...)
	add := func(typ byte, b []byte) {
		m := handshakeMessage(typ, h.sendSeq, b)
		h.sendSeq++
		h.transcript = append(h.transcript, m...)
		h.flight = append(h.flight, outMsg{msg: m})
	}
	add(htServerHello, shBody)
	if !h.suite.psk {
		// RSA key transport and ECDHE_ECDSA: the server's chain.
		cert := e.rsaCert
		if h.suite.ecdhe {
			cert = e.ecCert
		}
		cm := pionhs.MessageCertificate{Certificate: cert.Certificate}
		cb, err := cm.Marshal()
		if err != nil {
			e.fail(h, ReasonBadMessage, alertInternalError)
			return
		}
		add(htCertificate, cb)
	}
	if h.suite.ecdhe {
		ske, err := e.serverKeyExchange(h, curve)
		if err != nil {
			e.fail(h, ReasonBadMessage, alertInternalError)
			return
		}
		add(htServerKeyExchange, ske)
	}
	add(htServerHelloDone, nil)
	h.state = stWaitCKE
	e.sendFlight(h)
	e.armHandshake(h, now)
}

// chooseSuite picks the key exchange by the server's order (the class of
// the first suite of Config.Suites the client offers: ECDHE, RSA or PSK),
// then, within it, the client's most preferred suite the server enables.
// ecdheOK tells whether an ECDHE suite can be served (common curve and
// signature algorithm).
func (e *Engine) chooseSuite(offered []uint16, ecdheOK bool) *suite {
	usable := func(id uint16) *suite {
		st := suites[id]
		if st == nil || !slices.Contains(e.cfg.Suites, id) || (st.ecdhe && !ecdheOK) {
			return nil
		}
		return st
	}
	class := func(st *suite) int {
		switch {
		case st.ecdhe:
			return 1
		case st.psk:
			return 2
		}
		return 3
	}
	for _, id := range e.cfg.Suites {
		st := usable(id)
		if st == nil || !slices.Contains(offered, id) {
			continue
		}
		for _, cid := range offered {
			if c := usable(cid); c != nil && class(c) == class(st) {
				return c
			}
		}
	}
	return nil
}

// helloVerify sends a HelloVerifyRequest with the record sequence number of
// the ClientHello (RFC 6347 §4.2.1) and keeps nothing.
func (e *Engine) helloVerify(recSeq uint64, msgSeq uint16, addr netip.AddrPort, pre, post []byte) {
	c := e.cookies.make(addr, pre, post)
	// HelloVerifyRequest: server_version (DTLS 1.0, RFC 6347 §4.2.1), cookie<0..2^8-1>.
	body := make([]byte, 0, 3+cookieLen)
	body = append(body, 0xfe, 0xff, cookieLen)
	body = append(body, c[:]...)
	msg := handshakeMessage(htHelloVerifyRequest, msgSeq, body)
	b := make([]byte, recordHeaderLen+len(msg))
	putRecordHeader(b, ctHandshake, 0, recSeq, len(msg))
	copy(b[recordHeaderLen:], msg)
	e.cfg.Send(b, addr)
	e.st.HelloVerifyRequests++
}

// statelessAlert sends a fatal epoch-0 alert to a client without state.
func (e *Engine) statelessAlert(recSeq uint64, desc byte, addr netip.AddrPort) {
	b := make([]byte, recordHeaderLen+2)
	putRecordHeader(b, ctAlert, 0, recSeq, 2)
	b[13], b[14] = alertFatal, desc
	e.cfg.Send(b, addr)
}

// handshakeRecord processes a record from a client with a handshake in
// progress.
func (e *Engine) handshakeRecord(h *handshake, r *record, now time.Time) {
	switch {
	case r.epoch == 0 && r.typ == ctHandshake && e.restarted(h, r):
		// A ClientHello with another random: the client started over
		// (rebooted); this handshake is abandoned (RFC 6347 §4.2.8).
		e.fail(h, ReasonRestarted, -1)
		e.clientHello(r, h.addr, now)
	case r.epoch == 0 && r.typ == ctHandshake:
		retrans := false
		for body := r.body; len(body) > 0; {
			f, rest, err := splitFragment(body)
			if err != nil {
				e.st.RecordsMalformed++
				return
			}
			body = rest
			switch {
			case f.seq < h.recvSeq:
				retrans = true
			case f.seq > h.recvSeq:
				e.st.RecordsDropped++ // ahead of the next expected message
			default:
				done, err := h.re.add(f.typ, f.length, f.off, f.data, e.cfg.MaxHandshakeMessage)
				if errors.Is(err, errFragmentTooLarge) {
					e.st.RecordsMalformed++
					e.fail(h, ReasonBadMessage, alertIllegalParameter)
					return
				}
				if err != nil {
					// Start this message over: the genuine client's
					// retransmission reassembles it afresh.
					e.st.RecordsMalformed++
					h.re = reassembly{}
					continue
				}
				if done {
					typ, msg := h.re.typ, h.re.buf
					h.re = reassembly{}
					h.recvSeq++
					e.handshakeMessage(h, typ, f.seq, msg, now)
					if e.hs[h.addr] != h {
						return
					}
				}
			}
		}
		if retrans && h.state == stWaitCKE {
			e.sendFlight(h)
			e.st.Retransmits++
		}
	case r.epoch == 0 && r.typ == ctChangeCipherSpec:
		// The switch to epoch 1 is implied by the records' epoch.
	case r.epoch == 0 && r.typ == ctAlert:
		if len(r.body) >= 2 && (r.body[0] == alertFatal || r.body[1] == alertCloseNotify) {
			e.fail(h, ReasonPeerAlert, -1)
		}
	case r.epoch == 1 && (r.typ == ctHandshake || r.typ == ctCID) && (h.state == stWaitCKE || h.state == stWaitPSK):
		if len(h.early) < 2 {
			h.early = append(h.early, slices.Clone(r.raw))
		} else {
			e.st.RecordsDropped++
		}
	case r.epoch == 1 && (r.typ == ctHandshake || r.typ == ctCID) && h.state == stWaitFinished:
		e.clientFinished(h, r, now)
	default:
		if s := e.sessions[h.addr]; s != nil && r.epoch == 1 {
			e.sessionRecord(s, r, h.addr, now) // the previous association's traffic
			return
		}
		e.st.RecordsDropped++
	}
}

// restarted reports whether r starts with a ClientHello whose random is not
// the one of handshake h.
func (e *Engine) restarted(h *handshake, r *record) bool {
	f, _, err := splitFragment(r.body)
	return err == nil && f.typ == htClientHello && f.off == 0 && len(f.data) >= 34 &&
		string(f.data[2:34]) != string(h.clientRandom[:])
}

// handshakeMessage processes a complete handshake message in order.
func (e *Engine) handshakeMessage(h *handshake, typ byte, seq uint16, body []byte, now time.Time) {
	if h.state != stWaitCKE || typ != htClientKeyExchange {
		e.fail(h, ReasonBadMessage, alertUnexpectedMessage)
		return
	}
	// ClientKeyExchange: psk_identity<0..2^16-1> (RFC 4279 §2), the
	// EncryptedPreMasterSecret<0..2^16-1> (RFC 5246 §7.4.7.1) or the
	// ECPoint<1..2^8-1> (RFC 8422 §5.7).
	if h.suite.ecdhe {
		if len(body) < 2 || int(body[0]) != len(body)-1 {
			e.fail(h, ReasonBadMessage, alertDecodeError)
			return
		}
	} else if len(body) < 2 || int(binary.BigEndian.Uint16(body)) != len(body)-2 {
		e.fail(h, ReasonBadMessage, alertDecodeError)
		return
	}
	var identity, pms []byte
	switch {
	case h.suite.ecdhe:
		pub, err := h.ecdhKey.Curve().NewPublicKey(body[1:])
		if err == nil {
			pms, err = h.ecdhKey.ECDH(pub)
		}
		if err != nil {
			e.fail(h, ReasonBadMessage, alertIllegalParameter)
			return
		}
		h.ecdhKey = nil
	case h.suite.psk:
		identity = slices.Clone(body[2:])
		var key []byte
		if e.cfg.PSK != nil {
			k, err := e.cfg.PSK(identity, h.addr)
			if errors.Is(err, ErrPSKPending) {
				// The caller looks the key up elsewhere and hands it to
				// ProvidePSK; the handshake waits (its timer runs on).
				h.state = stWaitPSK
				h.pendingSeq, h.pendingCKE, h.pendingID = seq, slices.Clone(body), identity
				return
			}
			e.pskAnswer(h, seq, body, identity, k, err, now)
			return
		}
		e.pskKeyExchange(h, seq, body, identity, key, now)
		return
	default:
		pms = e.rsaPremaster(h, body[2:])
	}
	e.keyExchange(h, seq, body, identity, pms, now)
}

// pskAnswer continues a PSK handshake with the answer of its lookup: a
// key, or a refusal (PSKRefusal; any other error or no key:
// unknown_psk_identity).
func (e *Engine) pskAnswer(h *handshake, seq uint16, body, identity, key []byte, err error, now time.Time) {
	var ref *PSKRefusal
	switch {
	case errors.As(err, &ref) && ref.Hide:
		h.refused = ref.Reason
		if len(key) == 0 {
			key = make([]byte, 16)
			_, _ = e.cfg.Rand.Read(key)
		}
	case errors.As(err, &ref):
		e.fail(h, ref.Reason, alertHandshakeFailure)
		return
	case err != nil:
		key = nil
	}
	e.pskKeyExchange(h, seq, body, identity, key, now)
}

// pskKeyExchange completes a PSK ClientKeyExchange with the identity's key
// (none: refused).
func (e *Engine) pskKeyExchange(h *handshake, seq uint16, body, identity, key []byte, now time.Time) {
	if len(key) == 0 {
		e.fail(h, ReasonUnknownPSK, alertUnknownPSKIdentity)
		return
	}
	e.keyExchange(h, seq, body, identity, prf.PSKPreMasterSecret(key), now)
}

// ProvidePSK completes a handshake whose PSK callback answered
// ErrPSKPending: key is the identity's key, nil or err to refuse it. A
// handshake that ended meanwhile (timeout, restart) ignores the answer.
func (e *Engine) ProvidePSK(addr netip.AddrPort, identity, key []byte, err error) {
	e.mu.Lock()
	h := e.hs[addr]
	if h != nil && h.state == stWaitPSK && string(h.pendingID) == string(identity) {
		seq, body := h.pendingSeq, h.pendingCKE
		h.pendingCKE, h.pendingID = nil, nil
		h.state = stWaitCKE
		e.pskAnswer(h, seq, body, identity, key, err, e.now)
	}
	e.unlockAndNotify()
}

// keyExchange derives the master secret and keys from the premaster
// secret and waits for the client's Finished.
func (e *Engine) keyExchange(h *handshake, seq uint16, body, identity, pms []byte, now time.Time) {
	h.transcript = append(h.transcript, handshakeMessage(htClientKeyExchange, seq, body)...)
	var err error
	if h.ems {
		sum := sha256.Sum256(h.transcript)
		h.master, err = prf.ExtendedMasterSecret(pms, sum[:], prfHash)
	} else {
		h.master, err = prf.MasterSecret(pms, h.clientRandom[:], h.serverRandom[:], prfHash)
	}
	clear(pms)
	if err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	kb, err := h.suite.keyBlock(h.master, h.clientRandom[:], h.serverRandom[:])
	if err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	c, err := h.suite.newCipher(kb)
	if err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	h.sess = newSession(h.suite, kb, identity, h.rcid, h.wcid)
	h.sess.addr, h.sess.cipher = h.addr, c
	h.state = stWaitFinished
	early := h.early
	h.early = nil
	for _, raw := range early {
		r, _, err := splitRecord(raw, e.cidLen)
		if err != nil || e.hs[h.addr] != h {
			return
		}
		e.handshakeRecord(h, &r, now)
	}
}

// serverKeyExchange draws the ephemeral ECDH key and returns the signed
// ServerECDHParams (RFC 8422 §5.4): named curve, public point, and an
// ECDSA-SHA256 signature over both randoms and the parameters.
func (e *Engine) serverKeyExchange(h *handshake, curve pionec.Curve) ([]byte, error) {
	c := ecdh.X25519()
	if curve == pionec.P256 {
		c = ecdh.P256()
	}
	k, err := c.GenerateKey(e.cfg.Rand)
	if err != nil {
		return nil, fmt.Errorf("ecdh key: %w", err)
	}
	h.ecdhKey = k
	pub := k.PublicKey().Bytes()
	params := []byte{3, byte(curve >> 8), byte(curve), byte(len(pub))} // named_curve
	params = append(params, pub...)
	d := sha256.New()
	d.Write(h.clientRandom[:])
	d.Write(h.serverRandom[:])
	d.Write(params)
	sig, err := e.ecCert.PrivateKey.(*ecdsa.PrivateKey).Sign(e.cfg.Rand, d.Sum(nil), crypto.SHA256)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	out := append(params, byte(pionhash.SHA256), byte(pionsig.ECDSA))
	out = binary.BigEndian.AppendUint16(out, uint16(len(sig)))
	return append(out, sig...), nil
}

// rsaPremaster decrypts the client's premaster secret with the RFC 5246
// §7.4.7.1 countermeasure against Bleichenbacher's attack: a random
// premaster secret is drawn first and kept, in constant time, whenever the
// decryption fails, has the wrong length or carries a version other than
// the ClientHello's. No alert and no timing tells the cases apart; a wrong
// premaster secret only shows as the client's Finished failing, like a
// wrong key.
func (e *Engine) rsaPremaster(h *handshake, ct []byte) []byte {
	random := make([]byte, 48)
	_, _ = e.cfg.Rand.Read(random)
	random[0], random[1] = h.clientVersion[0], h.clientVersion[1]
	pms := slices.Clone(random)
	// DecryptPKCS1v15SessionKey leaves pms untouched, in constant time,
	// unless the padding is valid and the message 48 bytes long.
	if err := rsa.DecryptPKCS1v15SessionKey(e.cfg.Rand, e.rsaCert.PrivateKey.(*rsa.PrivateKey), ct, pms); err != nil {
		// Only a ciphertext of the wrong length (public) gets here.
		return random
	}
	good := subtle.ConstantTimeByteEq(pms[0], h.clientVersion[0]) & subtle.ConstantTimeByteEq(pms[1], h.clientVersion[1])
	subtle.ConstantTimeCopy(1-good, pms, random)
	return pms
}

// clientFinished verifies the client's Finished and completes the
// handshake with the server's ChangeCipherSpec and Finished.
func (e *Engine) clientFinished(h *handshake, r *record, now time.Time) {
	s := h.sess
	if !s.win.check(r.seq) {
		e.st.RecordsReplayed++
		return
	}
	typ, pt, err := s.open(r)
	if err != nil {
		// Wrong key: tell the client now rather than let it retransmit
		// (decrypt_error: its Finished could not be validated).
		e.st.RecordsBadMAC++
		e.fail(h, ReasonBadFinished, alertDecryptError)
		return
	}
	s.win.mark(r.seq)
	f, rest, err := splitFragment(pt)
	if err != nil || typ != ctHandshake || len(rest) != 0 || f.typ != htFinished || f.seq != h.recvSeq || f.off != 0 || f.length != 12 || len(f.data) != 12 {
		e.fail(h, ReasonBadMessage, alertUnexpectedMessage)
		return
	}
	want, err := prf.VerifyDataClient(h.master, h.transcript, prfHash)
	if err != nil || subtle.ConstantTimeCompare(want, f.data) != 1 {
		e.fail(h, ReasonBadFinished, alertDecryptError)
		return
	}
	if old := e.sessions[h.addr]; old == nil && len(e.sessions) >= e.cfg.MaxSessions {
		e.fail(h, ReasonLimitSessions, alertInternalError)
		return
	}
	h.recvSeq++
	h.transcript = append(h.transcript, handshakeMessage(htFinished, f.seq, f.data)...)
	sv, err := prf.VerifyDataServer(h.master, h.transcript, prfHash)
	if err != nil {
		e.fail(h, ReasonBadMessage, alertInternalError)
		return
	}
	// The handshake ends here: the session keeps only what it takes to
	// send the final flight again (the client's Finished or
	// ClientKeyExchange repeated: ours was lost), until the client's
	// first other authenticated record or HandshakeTimeout.
	f6 := &finalFlight{msgSeq: h.sendSeq, seq0: h.seq0, until: e.clock(now.Add(e.cfg.HandshakeTimeout))}
	copy(f6.verify[:], sv)
	h.sendSeq++
	h.transcript, h.master, h.flight, h.sess = nil, nil, nil, nil
	h.state = stDone
	e.dropHandshake(h)
	h.gen++

	if old := e.sessions[h.addr]; old != nil {
		e.closeSession(old, ReasonReplaced)
	}
	s.final = f6
	e.resendFinal(s)
	s.lastSeen, s.lastUse = e.clock(now), e.clock(now)
	e.sessions[h.addr] = s
	if rcid := s.rcid(); len(rcid) > 0 {
		e.byCID[cidKey(rcid)] = s
	}
	e.st.HandshakesDone++
	e.deliver = append(e.deliver, delivery{s: s, up: true})
	e.armSession(s, now)
}

// resendFinal sends the server's last flight, ChangeCipherSpec and
// Finished, in one datagram; each send takes fresh record sequence
// numbers in both epochs.
func (e *Engine) resendFinal(s *Session) {
	f6 := s.final
	fin := handshakeMessage(htFinished, f6.msgSeq, f6.verify[:])
	rec, err := s.seal(ctHandshake, fin)
	if err != nil {
		return
	}
	b := make([]byte, recordHeaderLen+1, recordHeaderLen+1+len(rec))
	putRecordHeader(b, ctChangeCipherSpec, 0, f6.seq0, 1)
	f6.seq0++
	b[recordHeaderLen] = 1
	e.cfg.Send(append(b, rec...), s.addr)
}

// sendFlight (re)transmits the handshake's last flight: each handshake
// message fragmented to fit the MTU, records packed into datagrams of at
// most MTU bytes, every record with a fresh sequence number.
func (e *Engine) sendFlight(h *handshake) {
	mtu := e.cfg.MTU
	e.out = e.out[:0]
	add := func(rec []byte) {
		if len(e.out) > 0 && len(e.out)+len(rec) > mtu {
			e.flush(h.addr)
		}
		e.out = append(e.out, rec...)
	}
	for _, m := range h.flight {
		if m.ccs {
			b := make([]byte, recordHeaderLen+1)
			putRecordHeader(b, ctChangeCipherSpec, 0, h.nextSeq0(), 1)
			b[13] = 1
			add(b)
			continue
		}
		overhead := recordHeaderLen + handshakeHeaderLen
		if m.epoch == 1 {
			overhead += h.suite.overhead
		}
		room := mtu - overhead
		body := m.msg[handshakeHeaderLen:]
		for off := 0; off == 0 || off < len(body); {
			n := min(room, len(body)-off)
			frag := make([]byte, handshakeHeaderLen+n)
			copy(frag, m.msg[:handshakeHeaderLen])
			put24(frag[6:], off)
			put24(frag[9:], n)
			copy(frag[handshakeHeaderLen:], body[off:off+n])
			if m.epoch == 0 {
				b := make([]byte, recordHeaderLen+len(frag))
				putRecordHeader(b, ctHandshake, 0, h.nextSeq0(), len(frag))
				copy(b[recordHeaderLen:], frag)
				add(b)
			} else {
				b, err := h.sess.seal(ctHandshake, frag)
				if err != nil {
					return
				}
				add(b)
			}
			off += n
			if n == 0 {
				break
			}
		}
	}
	e.flush(h.addr)
}

func (e *Engine) flush(addr netip.AddrPort) {
	if len(e.out) == 0 {
		return
	}
	b := slices.Clone(e.out)
	e.out = e.out[:0]
	e.cfg.Send(b, addr)
}

// newCID returns a connection ID no session uses.
func (e *Engine) newCID() []byte {
	for {
		c := make([]byte, cidSize)
		if _, err := e.cfg.Rand.Read(c); err != nil {
			return nil
		}
		if e.byCID[cidKey(c)] == nil {
			return c
		}
	}
}

// moveSession rebinds s to a new peer address.
func (e *Engine) moveSession(s *Session, to netip.AddrPort) {
	if e.sessions[s.addr] == s {
		delete(e.sessions, s.addr)
	}
	if other := e.sessions[to]; other != nil {
		e.closeSession(other, ReasonReplaced)
	}
	s.addr = to
	e.sessions[to] = s
	e.st.Migrations++
}

// sessionRecord processes an epoch-1 record of an established session.
func (e *Engine) sessionRecord(s *Session, r *record, from netip.AddrPort, now time.Time) {
	if r.epoch != 1 || r.typ == ctChangeCipherSpec {
		e.st.RecordsDropped++
		return
	}
	if !s.win.check(r.seq) {
		e.st.RecordsReplayed++
		return
	}
	e.touch(s, now)
	typ, pt, err := s.open(r)
	if err != nil {
		// Invalid records are discarded silently (RFC 6347 §4.1.2.7).
		e.st.RecordsBadMAC++
		return
	}
	newest := !s.win.any() || r.seq > s.win.top
	s.win.mark(r.seq)
	s.lastSeen = e.clock(now)
	if from != s.addr && newest {
		// Only an authenticated record newer than any before moves the
		// session to a new address (RFC 9146 §6).
		e.moveSession(s, from)
	}
	switch typ {
	case ctApplicationData:
		s.final = nil // the client has the server's Finished
		e.deliver = append(e.deliver, delivery{s: s, b: pt})
	case ctAlert:
		if len(pt) != 2 {
			e.st.RecordsMalformed++
			return
		}
		switch {
		case pt[1] == alertCloseNotify:
			if rec, err := s.seal(ctAlert, []byte{alertWarning, alertCloseNotify}); err == nil {
				e.cfg.Send(rec, s.addr)
			}
			e.closeSession(s, ClosePeer)
		case pt[0] == alertFatal:
			e.closeSession(s, CloseFatal)
		}
	case ctHandshake:
		f, _, err := splitFragment(pt)
		switch {
		case err != nil:
			e.st.RecordsMalformed++
		case f.typ == htFinished && s.final != nil:
			e.resendFinal(s) // our Finished was lost
			e.st.Retransmits++
		case f.typ == htClientHello:
			s.final = nil
			e.st.Renegotiations++
			if rec, err := s.seal(ctAlert, []byte{alertWarning, alertNoRenegotiation}); err == nil {
				e.cfg.Send(rec, s.addr)
			}
		default:
			e.st.RecordsDropped++
		}
	default:
		e.st.RecordsDropped++
	}
}
