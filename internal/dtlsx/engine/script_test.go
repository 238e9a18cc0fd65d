package engine

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/dtls/v3/pkg/crypto/ciphersuite"
	"github.com/pion/dtls/v3/pkg/crypto/prf"
	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	pionhs "github.com/pion/dtls/v3/pkg/protocol/handshake"
)

// harness drives an engine directly with a fake clock; whatever the engine
// sends is collected per address.
type harness struct {
	t    testing.TB
	e    *Engine
	now  time.Time
	sent map[netip.AddrPort][][]byte
	data map[netip.AddrPort][][]byte
}

func newHarness(t testing.TB, cfg Config) *harness {
	t.Helper()
	h := &harness{t: t, now: time.Unix(1_800_000_000, 0), sent: map[netip.AddrPort][][]byte{}, data: map[netip.AddrPort][][]byte{}}
	if cfg.PSK == nil {
		cfg.PSK = testPSK
	}
	cfg.Send = func(b []byte, a netip.AddrPort) { h.sent[a] = append(h.sent[a], append([]byte(nil), b...)) }
	cfg.OnData = func(s *Session, b []byte) { h.data[s.Addr()] = append(h.data[s.Addr()], append([]byte(nil), b...)) }
	e, err := New(cfg, h.now)
	if err != nil {
		t.Fatal(err)
	}
	h.e = e
	return h
}

// take returns and forgets what the engine sent to a.
func (h *harness) take(a netip.AddrPort) [][]byte {
	d := h.sent[a]
	delete(h.sent, a)
	return d
}

func (h *harness) advance(d time.Duration) {
	h.now = h.now.Add(d)
	h.e.Tick(h.now)
}

// tclient is a scripted DTLS 1.2 PSK client built from the same pion
// codecs, able to send what a real client would not.
type tclient struct {
	h        *harness
	addr     netip.AddrPort
	suites   []uint16
	ems      bool
	key      []byte
	identity string
	seq0     uint64
	msgSeq   uint16
	cr, sr   [32]byte
	cookie   []byte
	chBody   []byte
	trans    []byte
	suite    *suite
	master   []byte
	sess     *Session // client-side record protection
	kb       []byte
	cid      []byte // offered in the ClientHello when non-nil
	srvCID   []byte // the server's, from its ServerHello
	// RSA key transport: the server's certificate and hooks that spoil
	// the encrypted premaster secret (plaintext, ciphertext).
	serverCert *x509.Certificate
	rsaPlain   func([]byte) []byte
	rsaCipher  func([]byte) []byte
}

func newClient(h *harness, port uint16) *tclient {
	c := &tclient{h: h, addr: netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), port),
		suites: []uint16{TLS_PSK_WITH_AES_128_CCM_8}, ems: true, key: testKey, identity: "dev1"}
	for i := range c.cr {
		c.cr[i] = byte(port) + byte(i)
	}
	return c
}

func rec(typ byte, epoch uint16, seq uint64, body []byte) []byte {
	b := make([]byte, recordHeaderLen+len(body))
	putRecordHeader(b, typ, epoch, seq, len(body))
	copy(b[recordHeaderLen:], body)
	return b
}

func (c *tclient) send(b []byte) { c.h.e.HandleDatagram(b, c.addr, c.h.now) }

func (c *tclient) clientHelloBody() []byte {
	var rnd pionhs.Random
	rnd.UnmarshalFixed(c.cr)
	exts := []extension.Extension{&extension.RenegotiationInfo{}}
	if c.cid != nil {
		exts = append(exts, &extension.ConnectionID{CID: c.cid})
	}
	if c.ems {
		exts = append(exts, &extension.UseExtendedMasterSecret{Supported: true})
	}
	m := pionhs.MessageClientHello{
		Version: protocol.Version1_2, Random: rnd, Cookie: c.cookie,
		CipherSuiteIDs:     c.suites,
		CompressionMethods: []*protocol.CompressionMethod{{}},
		Extensions:         exts,
	}
	b, err := m.Marshal()
	if err != nil {
		c.h.t.Fatal(err)
	}
	return b
}

// hello sends a ClientHello (with the cookie if any) and returns it.
func (c *tclient) hello() []byte {
	body := c.clientHelloBody()
	c.chBody = body
	d := rec(ctHandshake, 0, c.seq0, handshakeMessage(htClientHello, c.msgSeq, body))
	c.seq0++
	c.send(d)
	return d
}

// serverMessages returns the handshake messages and record types the engine
// sent since the last call, decrypting epoch 1 with the client keys.
func (c *tclient) serverRecords() (recs []record, pts [][]byte) {
	for _, d := range c.h.take(c.addr) {
		if len(d) > c.h.e.cfg.MTU {
			c.h.t.Fatalf("datagram of %d bytes above the MTU", len(d))
		}
		for len(d) > 0 {
			r, rest, err := splitRecord(d, len(c.cid))
			if err != nil {
				c.h.t.Fatalf("server sent a malformed record: %v", err)
			}
			d = rest
			pt := r.body
			if r.epoch == 1 {
				raw := append([]byte(nil), r.raw...)
				r2, _, _ := splitRecord(raw, len(c.cid))
				var typ byte
				typ, pt, err = c.sess.open(&r2)
				r.typ = typ
				if err != nil {
					c.h.t.Fatalf("server record does not decrypt: %v", err)
				}
			}
			recs = append(recs, r)
			pts = append(pts, pt)
		}
	}
	return recs, pts
}

// verify runs the cookie exchange: ClientHello, HelloVerifyRequest,
// ClientHello with the cookie.
func (c *tclient) cookieExchange() {
	c.hello()
	recs, pts := c.serverRecords()
	if len(recs) != 1 || pts[0][0] != htHelloVerifyRequest {
		c.h.t.Fatalf("no HelloVerifyRequest: %v", recs)
	}
	f, _, _ := splitFragment(pts[0])
	c.cookie = append([]byte(nil), f.data[3:]...)
	c.msgSeq++
	c.hello()
	c.msgSeq++
}

// flight4 reads ServerHello and ServerHelloDone (possibly fragmented) and
// adds ClientHello and them to the transcript.
func (c *tclient) flight4() {
	_, pts := c.serverRecords()
	msgs := reassembleAll(c.h.t, pts)
	if len(msgs) < 2 || msgs[0][0] != htServerHello || msgs[len(msgs)-1][0] != htServerHelloDone {
		c.h.t.Fatalf("flight 4: %d messages", len(msgs))
	}
	c.trans = handshakeMessage(htClientHello, c.msgSeq-1, c.chBody)
	for _, m := range msgs {
		c.trans = append(c.trans, m...)
		if m[0] == htCertificate {
			var cm pionhs.MessageCertificate
			if err := cm.Unmarshal(m[handshakeHeaderLen:]); err != nil {
				c.h.t.Fatal(err)
			}
			cert, err := x509.ParseCertificate(cm.Certificate[0])
			if err != nil {
				c.h.t.Fatal(err)
			}
			c.serverCert = cert
		}
	}
	var sh pionhs.MessageServerHello
	if err := sh.Unmarshal(msgs[0][handshakeHeaderLen:]); err != nil {
		c.h.t.Fatal(err)
	}
	c.sr = sh.Random.MarshalFixed()
	c.suite = suites[*sh.CipherSuiteID]
	for _, x := range sh.Extensions {
		if x, ok := x.(*extension.ConnectionID); ok {
			c.srvCID = x.CID
		}
	}
}

// reassembleAll joins the handshake fragments of records into whole
// messages (in the unfragmented encoding), in message_seq order.
func reassembleAll(t testing.TB, pts [][]byte) [][]byte {
	t.Helper()
	byseq := map[uint16]*reassembly{}
	var order []uint16
	for _, pt := range pts {
		for len(pt) > 0 {
			f, rest, err := splitFragment(pt)
			if err != nil {
				break // a change cipher spec or alert body
			}
			pt = rest
			r := byseq[f.seq]
			if r == nil {
				r = &reassembly{}
				byseq[f.seq] = r
				order = append(order, f.seq)
			}
			if _, err := r.add(f.typ, f.length, f.off, f.data, 1<<16); err != nil {
				t.Fatal(err)
			}
		}
	}
	var out [][]byte
	for _, s := range order {
		r := byseq[s]
		out = append(out, handshakeMessage(r.typ, s, r.buf))
	}
	return out
}

// keyExchange returns ClientKeyExchange, ChangeCipherSpec and Finished as
// three records, and derives the client's keys.
func (c *tclient) keyExchange() (cke, ccs, fin []byte) {
	var body, pms []byte
	if c.suite.psk {
		body = make([]byte, 2+len(c.identity))
		binary.BigEndian.PutUint16(body, uint16(len(c.identity)))
		copy(body[2:], c.identity)
		pms = prf.PSKPreMasterSecret(c.key)
	} else {
		pms = make([]byte, 48)
		pms[0], pms[1] = 0xfe, 0xfd
		_, _ = rand.Read(pms[2:])
		plain := pms
		if c.rsaPlain != nil {
			plain = c.rsaPlain(pms)
		}
		ct, err := rsa.EncryptPKCS1v15(rand.Reader, c.serverCert.PublicKey.(*rsa.PublicKey), plain)
		if err != nil {
			c.h.t.Fatal(err)
		}
		if c.rsaCipher != nil {
			ct = c.rsaCipher(ct)
		}
		body = binary.BigEndian.AppendUint16(nil, uint16(len(ct)))
		body = append(body, ct...)
	}
	ckeMsg := handshakeMessage(htClientKeyExchange, c.msgSeq, body)
	c.msgSeq++
	c.trans = append(c.trans, ckeMsg...)
	if c.ems {
		sum := sha256.Sum256(c.trans)
		c.master, _ = prf.ExtendedMasterSecret(pms, sum[:], prfHash)
	} else {
		c.master, _ = prf.MasterSecret(pms, c.cr[:], c.sr[:], prfHash)
	}
	kb, err := c.suite.keyBlock(c.master, c.cr[:], c.sr[:])
	if err != nil {
		c.h.t.Fatal(err)
	}
	c.kb = append([]byte(nil), kb...)
	c.sess = newSession(c.suite, nil, nil, c.cid, c.srvCID)
	c.sess.cipher = clientCipher(c.h.t, c.suite, kb)
	vd, _ := prf.VerifyDataClient(c.master, c.trans, prfHash)
	finMsg := handshakeMessage(htFinished, c.msgSeq, vd)
	c.msgSeq++
	c.trans = append(c.trans, finMsg...)
	cke = rec(ctHandshake, 0, c.seq0, ckeMsg)
	ccs = rec(ctChangeCipherSpec, 0, c.seq0+1, []byte{1})
	c.seq0 += 2
	fin, err = c.sess.seal(ctHandshake, finMsg)
	if err != nil {
		c.h.t.Fatal(err)
	}
	return cke, ccs, fin
}

func clientCipher(t testing.TB, s *suite, kb []byte) recordCipher {
	take := func(n int) []byte { b := kb[:n:n]; kb = kb[n:]; return b }
	cMAC, sMAC := take(s.macLen), take(s.macLen)
	cKey, sKey := take(s.keyLen), take(s.keyLen)
	cIV, sIV := take(s.ivLen), take(s.ivLen)
	if s.aead {
		c, err := ciphersuite.NewCCM(ciphersuite.CCMTagLength8, cKey, cIV, sKey, sIV)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	c, err := ciphersuite.NewCBC(cKey, cIV, cMAC, sKey, sIV, sMAC, prf.HashFunc(s.mac))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// flight6 checks the server's ChangeCipherSpec and Finished.
func (c *tclient) flight6() {
	recs, pts := c.serverRecords()
	if len(recs) != 2 || recs[0].typ != ctChangeCipherSpec || recs[1].epoch != 1 {
		c.h.t.Fatalf("flight 6: %d records", len(recs))
	}
	want, _ := prf.VerifyDataServer(c.master, c.trans, prfHash)
	f, _, err := splitFragment(pts[1])
	if err != nil || f.typ != htFinished || string(f.data) != string(want) {
		c.h.t.Fatalf("server Finished wrong")
	}
}

// connect runs a whole handshake.
func (c *tclient) connect() {
	c.h.t.Helper()
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	c.send(append(append(cke, ccs...), fin...))
	c.flight6()
}

func TestScriptedHandshakeAllSuites(t *testing.T) {
	for _, id := range DefaultSuites {
		for _, ems := range []bool{true, false} {
			t.Run(SuiteName(id), func(t *testing.T) {
				h := newHarness(t, Config{})
				c := newClient(h, 4000)
				c.suites, c.ems = []uint16{id}, ems
				c.connect()
				app, _ := c.sess.seal(ctApplicationData, []byte("up"))
				c.send(app)
				if got := h.data[c.addr]; len(got) != 1 || string(got[0]) != "up" {
					t.Fatalf("delivered %q", got)
				}
				if err := h.e.Write(c.addr, []byte("down")); err != nil {
					t.Fatal(err)
				}
				_, pts := c.serverRecords()
				if len(pts) != 1 || string(pts[0]) != "down" {
					t.Fatalf("client got %q", pts)
				}
			})
		}
	}
}
