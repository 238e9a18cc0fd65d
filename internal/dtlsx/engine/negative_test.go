package engine

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"
)

// alertOf returns the alert description of the only record sent, which
// must be a plaintext fatal alert.
func plainAlert(t *testing.T, c *tclient) byte {
	t.Helper()
	recs, pts := c.serverRecords()
	if len(recs) != 1 || recs[0].typ != ctAlert || recs[0].epoch != 0 || pts[0][0] != alertFatal {
		t.Fatalf("want one fatal alert, got %d records", len(recs))
	}
	return pts[0][1]
}

func TestSpoofedClientHelloFloodAllocatesNothing(t *testing.T) {
	h := newHarness(t, Config{})
	legit := newClient(h, 9)
	const n = 5000
	for i := range n {
		spoof := newClient(h, uint16(10000+i))
		if i%2 == 1 {
			spoof.cookie = make([]byte, cookieLen) // a guessed cookie
		}
		spoof.hello()
		if i == n/2 {
			legit.connect() // a real client meanwhile
		}
	}
	st := h.e.Stats()
	if st.HelloVerifyRequests != n+1 || st.BadCookies != n/2 {
		t.Fatalf("HelloVerifyRequests %d BadCookies %d", st.HelloVerifyRequests, st.BadCookies)
	}
	if st.HandshakeStates != 1 || st.HandshakesDone != 1 || st.HandshakesActive != 0 || st.Sessions != 1 {
		t.Fatalf("state allocated for spoofed sources: %+v", st)
	}
	for _, tm := range h.e.timers {
		if tm.h.addr != legit.addr {
			t.Fatalf("timer for a spoofed source")
		}
	}
	for _, s := range h.e.stimers {
		if s.addr != legit.addr {
			t.Fatalf("session timer for a spoofed source")
		}
	}
}

func TestCookieBoundToAddressAndSecret(t *testing.T) {
	h := newHarness(t, Config{CookieRotate: time.Minute})
	a := newClient(h, 1)
	a.hello()
	_, pts := a.serverRecords()
	f, _, _ := splitFragment(pts[0])
	cookie := append([]byte(nil), f.data[3:]...)

	// The same ClientHello and cookie from another port: no state.
	b := newClient(h, 2)
	b.cr, b.cookie, b.msgSeq = a.cr, cookie, 1
	b.hello()
	if st := h.e.Stats(); st.HandshakeStates != 0 || st.BadCookies != 1 {
		t.Fatalf("cookie accepted from another address: %+v", st)
	}
	// A changed ClientHello (other suites) with a's cookie: no state.
	a.cookie, a.msgSeq, a.suites = cookie, 1, []uint16{TLS_PSK_WITH_AES_128_CBC_SHA}
	a.hello()
	if st := h.e.Stats(); st.HandshakeStates != 0 {
		t.Fatalf("cookie accepted for another ClientHello")
	}
	a.suites = []uint16{TLS_PSK_WITH_AES_128_CCM_8}
	// Two rotations later the cookie is stale.
	h.advance(61 * time.Second)
	h.advance(61 * time.Second)
	a.take()
	a.hello()
	if st := h.e.Stats(); st.HandshakeStates != 0 || st.BadCookies != 3 {
		t.Fatalf("stale cookie accepted: %+v", st)
	}
	// One rotation: still valid.
	c := newClient(h, 3)
	c.hello()
	_, pts = c.serverRecords()
	f, _, _ = splitFragment(pts[0])
	c.cookie, c.msgSeq = append([]byte(nil), f.data[3:]...), 1
	h.advance(61 * time.Second)
	c.hello()
	if st := h.e.Stats(); st.HandshakeStates != 1 {
		t.Fatalf("cookie of the previous secret refused: %+v", st)
	}
}

func (c *tclient) take() { c.h.take(c.addr) }

func TestClientStopsMidHandshake(t *testing.T) {
	h := newHarness(t, Config{RetransmitInitial: time.Second, HandshakeTimeout: 5 * time.Second, MaxRetransmits: 10})
	c := newClient(h, 1)
	c.cookieExchange()
	seen := map[uint64]bool{}
	note := func() int {
		recs, _ := c.serverRecords()
		for _, r := range recs {
			if seen[r.seq] {
				t.Fatalf("epoch 0 sequence number %d sent twice", r.seq)
			}
			seen[r.seq] = true
		}
		return len(recs)
	}
	if note() == 0 {
		t.Fatal("no flight 4")
	}
	// RFC 6347 §4.2.4.1: 1 s, then 2 s (doubling).
	h.advance(999 * time.Millisecond)
	if note() != 0 {
		t.Fatal("retransmitted before the timer")
	}
	h.advance(time.Millisecond)
	if note() == 0 {
		t.Fatal("no retransmission at 1 s")
	}
	h.advance(1999 * time.Millisecond)
	if note() != 0 {
		t.Fatal("second retransmission before 2 s")
	}
	h.advance(time.Millisecond)
	if note() == 0 {
		t.Fatal("no retransmission 2 s later")
	}
	if st := h.e.Stats(); st.HandshakesActive != 1 || st.Retransmits != 2 {
		t.Fatalf("%+v", st)
	}
	h.advance(2 * time.Second) // 5 s after the ClientHello: the handshake's end
	st := h.e.Stats()
	if st.HandshakesActive != 0 || st.HandshakeFailures[ReasonTimeout] != 1 || len(h.e.timers)+len(h.e.stimers) != 0 {
		t.Fatalf("state kept after the timeout: %+v, %d timers", st, len(h.e.timers)+len(h.e.stimers))
	}
}

func TestMaxRetransmitsBoundsHandshake(t *testing.T) {
	h := newHarness(t, Config{RetransmitInitial: time.Second, HandshakeTimeout: time.Hour, MaxRetransmits: 2})
	c := newClient(h, 1)
	c.cookieExchange()
	for range 3 {
		h.advance(10 * time.Second)
	}
	if st := h.e.Stats(); st.HandshakesActive != 0 || st.Retransmits != 2 || st.HandshakeFailures[ReasonTimeout] != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestDuplicatedFlights(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.cookieExchange()
	ch2 := rec(ctHandshake, 0, c.seq0, handshakeMessage(htClientHello, c.msgSeq-1, c.chBody))
	c.seq0++
	first, _ := c.serverRecords()
	c.send(ch2) // the client's flight 3 again: the server repeats flight 4
	again, _ := c.serverRecords()
	if len(again) != len(first) || again[0].seq <= first[len(first)-1].seq {
		t.Fatalf("flight 4 not retransmitted with fresh sequence numbers")
	}
	h.sent[c.addr] = [][]byte{again[0].raw, again[1].raw}
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	flight5 := append(append(cke, ccs...), fin...)
	c.send(flight5)
	c.flight6()
	// Our Finished was lost: the client repeats flight 5 (new record
	// sequence numbers for the encrypted Finished).
	cke2 := append([]byte(nil), cke...)
	binary.BigEndian.PutUint16(cke2[9:], 100)
	c.send(cke2)
	c.flight6()
	fin2, _ := c.sess.seal(ctHandshake, c.trans[len(c.trans)-handshakeHeaderLen-12:])
	c.send(fin2)
	c.flight6()
	st := h.e.Stats()
	if st.HandshakesDone != 1 || st.HandshakeStates != 1 || st.Retransmits != 3 || st.Sessions != 1 {
		t.Fatalf("%+v", st)
	}
	// Application data ends the retention of the last flight.
	app, _ := c.sess.seal(ctApplicationData, []byte("x"))
	c.send(app)
	c.send(fin2) // replayed: dropped by the window
	c.send(cke2)
	if recs, _ := c.serverRecords(); len(recs) != 0 {
		t.Fatalf("flight 6 resent after application data")
	}
}

func TestReorderedFlight5(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	c.send(fin) // before the keys exist: buffered
	c.send(ccs)
	c.send(cke)
	c.flight6()
	if st := h.e.Stats(); st.HandshakesDone != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestWrongPSK(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.key = []byte("wrong key 123456")
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	c.send(append(append(cke, ccs...), fin...))
	if d := plainAlert(t, c); d != alertDecryptError {
		t.Fatalf("alert %d", d)
	}
	if st := h.e.Stats(); st.HandshakeFailures[ReasonBadFinished] != 1 || st.HandshakesActive != 0 || st.Sessions != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestUnknownIdentity(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.identity = "nobody"
	c.cookieExchange()
	c.flight4()
	cke, _, _ := c.keyExchange()
	c.send(cke)
	if d := plainAlert(t, c); d != alertUnknownPSKIdentity {
		t.Fatalf("alert %d", d)
	}
	if st := h.e.Stats(); st.HandshakeFailures[ReasonUnknownPSK] != 1 || st.HandshakesActive != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestNoCommonSuite(t *testing.T) {
	h := newHarness(t, Config{Suites: []uint16{TLS_PSK_WITH_AES_128_CCM_8}})
	c := newClient(h, 1)
	c.suites = []uint16{TLS_PSK_WITH_AES_256_CBC_SHA}
	c.cookieExchange()
	if d := plainAlert(t, c); d != alertHandshakeFailure {
		t.Fatalf("alert %d", d)
	}
}

func TestTamperedAndReplayedRecords(t *testing.T) {
	for _, id := range DefaultSuites {
		t.Run(SuiteName(id), func(t *testing.T) {
			h := newHarness(t, Config{})
			c := newClient(h, 1)
			c.suites = []uint16{id}
			c.connect()
			good, _ := c.sess.seal(ctApplicationData, []byte("one"))
			bad := append([]byte(nil), good...)
			bad[len(bad)-1] ^= 1 // the MAC or tag
			c.send(bad)
			bad = append([]byte(nil), good...)
			bad[recordHeaderLen+16] ^= 0x80 // ciphertext
			c.send(bad)
			c.send(good)
			c.send(good) // replayed
			if got := h.data[c.addr]; len(got) != 1 || string(got[0]) != "one" {
				t.Fatalf("delivered %q", got)
			}
			st := h.e.Stats()
			if st.RecordsBadMAC != 2 || st.RecordsReplayed != 1 || st.Sessions != 1 {
				t.Fatalf("%+v", st)
			}
			// Silently discarded: no alert went out.
			if recs, _ := c.serverRecords(); len(recs) != 0 {
				t.Fatalf("%d records sent in answer to forged records", len(recs))
			}
			// A record older than the 64-record window is refused.
			old, _ := c.sess.seal(ctApplicationData, []byte("old"))
			for range 64 {
				r, _ := c.sess.seal(ctApplicationData, []byte("n"))
				c.send(r)
			}
			c.send(old)
			if st := h.e.Stats(); st.RecordsReplayed != 2 {
				t.Fatalf("old record accepted: %+v", st)
			}
		})
	}
}

// cbcRecord builds an epoch-1 application data record of a CBC suite with a
// correct MAC and the given padding bytes (RFC 5246 §6.2.3.2).
func cbcRecord(c *tclient, seq uint64, content, padding []byte) []byte {
	s := c.suite
	cMAC := c.kb[:s.macLen]
	cKey := c.kb[2*s.macLen : 2*s.macLen+s.keyLen]
	m := hmac.New(s.mac, cMAC)
	var hdr [13]byte
	binary.BigEndian.PutUint64(hdr[:], seq)
	binary.BigEndian.PutUint16(hdr[:], 1)
	hdr[8], hdr[9], hdr[10] = ctApplicationData, 0xfe, 0xfd
	binary.BigEndian.PutUint16(hdr[11:], uint16(len(content)))
	m.Write(hdr[:])
	m.Write(content)
	pt := append(append(append([]byte(nil), content...), m.Sum(nil)...), padding...)
	iv := make([]byte, 16)
	block, _ := aes.NewCipher(cKey)
	ct := make([]byte, len(pt))
	cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
	return rec(ctApplicationData, 1, seq, append(iv, ct...))
}

func TestCBCBadPadding(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.suites = []uint16{TLS_PSK_WITH_AES_128_CBC_SHA}
	c.connect()
	content := []byte("0123456789a") // 11 + 20 MAC = 31: one byte of padding
	// Correct padding first, to show the builder is right.
	c.send(cbcRecord(c, 10, content, []byte{0}))
	if len(h.data[c.addr]) != 1 {
		t.Fatal("well-padded record refused")
	}
	// 17 bytes of padding whose value is 16 but one byte is off.
	pad := make([]byte, 17)
	for i := range pad {
		pad[i] = 16
	}
	pad[3] = 15
	c.send(cbcRecord(c, 11, content, pad))
	// Padding length pointing beyond the record.
	c.send(cbcRecord(c, 12, content, []byte{200}))
	if st := h.e.Stats(); st.RecordsBadMAC != 2 || len(h.data[c.addr]) != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestOversizedAndOverlappingFragments(t *testing.T) {
	h := newHarness(t, Config{MaxHandshakeMessage: 1024})
	c := newClient(h, 1)
	c.cookieExchange()
	c.flight4()
	// A fragment declaring a 1 MB message: refused before any buffer.
	big := make([]byte, handshakeHeaderLen+10)
	big[0] = htClientKeyExchange
	put24(big[1:], 1<<20)
	binary.BigEndian.PutUint16(big[4:], c.msgSeq)
	put24(big[9:], 10)
	c.send(rec(ctHandshake, 0, 50, big))
	if d := plainAlert(t, c); d != alertIllegalParameter {
		t.Fatalf("alert %d", d)
	}
	if st := h.e.Stats(); st.HandshakesActive != 0 || st.HandshakeFailures[ReasonBadMessage] != 1 {
		t.Fatalf("%+v", st)
	}

	c = newClient(h, 2)
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	msg := cke[recordHeaderLen:]
	body := msg[handshakeHeaderLen:]
	frag := func(off, end int, data []byte) []byte {
		f := append([]byte(nil), msg[:handshakeHeaderLen]...)
		put24(f[6:], off)
		put24(f[9:], end-off)
		return rec(ctHandshake, 0, c.nextSeq(), append(f, data...))
	}
	// Outside the declared length.
	c.send(frag(2, len(body)+1, append(append([]byte(nil), body[2:]...), 0)))
	// Conflicting overlap: the reassembly restarts.
	c.send(frag(0, 4, body[:4]))
	c.send(frag(2, 4, []byte{body[2] ^ 1, body[3]}))
	if st := h.e.Stats(); st.RecordsMalformed != 1+2 || st.HandshakesActive != 1 {
		t.Fatalf("%+v", st)
	}
	// Consistent overlapping fragments reassemble.
	c.send(frag(0, 4, body[:4]))
	c.send(frag(2, len(body), body[2:]))
	c.send(ccs)
	c.send(fin)
	c.flight6()
	if st := h.e.Stats(); st.HandshakesDone != 1 {
		t.Fatalf("%+v", st)
	}
}

func (c *tclient) nextSeq() uint64 { s := c.seq0 + 100; c.seq0++; return s }

func TestRenegotiationRefused(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.connect()
	app, _ := c.sess.seal(ctApplicationData, []byte("x"))
	c.send(app)
	ch, _ := c.sess.seal(ctHandshake, handshakeMessage(htClientHello, c.msgSeq, c.clientHelloBody()))
	c.send(ch)
	recs, pts := c.serverRecords()
	if len(recs) != 1 || recs[0].typ != ctAlert || pts[0][0] != alertWarning || pts[0][1] != alertNoRenegotiation {
		t.Fatalf("no no_renegotiation alert: %v %v", recs, pts)
	}
	app, _ = c.sess.seal(ctApplicationData, []byte("y"))
	c.send(app)
	if st := h.e.Stats(); st.Renegotiations != 1 || st.Sessions != 1 || len(h.data[c.addr]) != 2 {
		t.Fatalf("%+v", st)
	}
}

func TestCloseNotifyAndIdle(t *testing.T) {
	h := newHarness(t, Config{IdleTimeout: time.Minute})
	c := newClient(h, 1)
	c.connect()
	cn, _ := c.sess.seal(ctAlert, []byte{alertWarning, alertCloseNotify})
	c.send(cn)
	recs, pts := c.serverRecords()
	if len(recs) != 1 || pts[0][1] != alertCloseNotify {
		t.Fatal("no close_notify in answer")
	}
	if err := h.e.Write(c.addr, []byte("late")); err != ErrNoSession {
		t.Fatalf("write after close: %v", err)
	}

	d := newClient(h, 2)
	d.connect()
	h.advance(30 * time.Second)
	app, _ := d.sess.seal(ctApplicationData, []byte("x"))
	d.send(app) // activity moves the idle deadline
	h.advance(45 * time.Second)
	if h.e.Session(d.addr) == nil {
		t.Fatal("active session closed")
	}
	h.advance(16 * time.Second)
	st := h.e.Stats()
	if h.e.Session(d.addr) != nil || st.SessionsClosed[CloseIdle] != 1 || st.SessionsClosed[ClosePeer] != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestNewHandshakeReplacesSession(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.connect()
	old := c.sess
	c2 := newClient(h, 1) // same address, the device rebooted
	c2.cr[0] ^= 0xff
	c2.cookieExchange()
	// The old session still works during the new handshake.
	app, _ := old.seal(ctApplicationData, []byte("old"))
	c2.send(app)
	c2.flight4()
	cke, ccs, fin := c2.keyExchange()
	c2.send(append(append(cke, ccs...), fin...))
	c2.flight6()
	st := h.e.Stats()
	if st.HandshakesDone != 2 || st.Sessions != 1 || st.SessionsClosed[ReasonReplaced] != 1 || len(h.data[c.addr]) != 1 {
		t.Fatalf("%+v", st)
	}
}

func TestFlightFragmentationWithinMTU(t *testing.T) {
	h := newHarness(t, Config{MTU: 256})
	addr := netip.MustParseAddrPort("127.0.0.1:1")
	body := make([]byte, 3000)
	for i := range body {
		body[i] = byte(i * 7)
	}
	msg := handshakeMessage(11, 1, body)
	hs := &handshake{addr: addr, flight: []outMsg{{msg: msg}, {msg: handshakeMessage(htServerHelloDone, 2, nil)}}}
	h.e.sendFlight(hs)
	dgs := h.take(addr)
	var pts [][]byte
	for _, d := range dgs {
		if len(d) > 256 {
			t.Fatalf("datagram of %d bytes", len(d))
		}
		for len(d) > 0 {
			r, rest, err := splitRecord(d, h.e.cidLen)
			if err != nil {
				t.Fatal(err)
			}
			pts = append(pts, r.body)
			d = rest
		}
	}
	msgs := reassembleAll(t, pts)
	if len(msgs) != 2 || string(msgs[0]) != string(msg) || len(dgs) < 3000/256 {
		t.Fatalf("%d messages from %d datagrams", len(msgs), len(dgs))
	}
}

// TestClientRestartsMidHandshake: a device that reboots during a handshake
// sends a ClientHello with a new random; it gets a fresh cookie exchange
// at once instead of the old handshake's flight until that times out.
func TestClientRestartsMidHandshake(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.cookieExchange()
	c.serverRecords()
	c2 := newClient(h, 1)
	c2.cr[0] ^= 0xff
	c2.connect()
	st := h.e.Stats()
	if st.HandshakesDone != 1 || st.HandshakeFailures[ReasonRestarted] != 1 || st.HandshakesActive != 0 {
		t.Fatalf("%+v", st)
	}
	// The same ClientHello again (a retransmission) is not a restart.
	c3 := newClient(h, 2)
	c3.cookieExchange()
	c3.serverRecords()
	c3.msgSeq--
	c3.hello()
	if recs, _ := c3.serverRecords(); len(recs) == 0 || h.e.Stats().HandshakeFailures[ReasonRestarted] != 1 {
		t.Fatal("a retransmitted ClientHello was taken for a restart")
	}
}
