package engine

import (
	"testing"
	"time"
)

// TestIdleSessionReleasesState: an established session keeps its final
// flight only until the client shows it has it (an authenticated record
// other than a repeated Finished) or HandshakeTimeout, and its expanded
// record protection only for CipherCacheIdle without traffic; it is one
// entry of the session timer heap throughout, removed when it ends. Every
// record the server sends has an (epoch, sequence number) of its own.
func TestIdleSessionReleasesState(t *testing.T) {
	h := newHarness(t, Config{HandshakeTimeout: 30 * time.Second, CipherCacheIdle: 10 * time.Second, IdleTimeout: time.Hour})
	type pair struct {
		c     *tclient
		epoch uint16
		seq   uint64
	}
	sent := map[pair]bool{}
	records := func(c *tclient) [][]byte {
		t.Helper()
		recs, pts := c.serverRecords()
		for _, r := range recs {
			p := pair{c, r.epoch, r.seq}
			if sent[p] {
				t.Fatalf("epoch %d sequence number %d sent twice", r.epoch, r.seq)
			}
			sent[p] = true
		}
		return pts
	}
	heapOK := func(n int) {
		t.Helper()
		if len(h.e.stimers) != n {
			t.Fatalf("%d session timers, want %d", len(h.e.stimers), n)
		}
		for i, s := range h.e.stimers {
			if int(s.hidx) != i || (i > 0 && h.e.stimers[(i-1)/2].at > s.at) {
				t.Fatalf("session timer heap broken at %d", i)
			}
		}
	}
	var cs []*tclient
	for i := range 3 {
		c := newClient(h, uint16(100+i))
		c.cookieExchange()
		c.flight4()
		cke, ccs, fin := c.keyExchange()
		c.send(append(append(cke, ccs...), fin...))
		if pts := records(c); len(pts) != 2 {
			t.Fatalf("flight 6 of %d records", len(pts))
		}
		cs = append(cs, c)
	}
	heapOK(3)
	sess := func(c *tclient) *Session { return h.e.Session(c.addr) }
	for _, c := range cs {
		if s := sess(c); s.final == nil || s.cipher == nil {
			t.Fatal("a fresh session without its final flight or cipher")
		}
	}
	refinish := func(c *tclient) {
		fin, _ := c.sess.seal(ctHandshake, c.trans[len(c.trans)-handshakeHeaderLen-12:])
		c.send(fin)
	}

	// Application data shows that client 0 has the server's Finished.
	app, _ := cs[0].sess.seal(ctApplicationData, []byte("up"))
	cs[0].send(app)
	if sess(cs[0]).final != nil {
		t.Fatal("final flight kept after the client's application data")
	}
	refinish(cs[0])
	if pts := records(cs[0]); len(pts) != 0 {
		t.Fatal("final flight resent after application data")
	}

	h.advance(11 * time.Second)
	for _, c := range cs {
		if sess(c).cipher != nil {
			t.Fatal("cipher kept past CipherCacheIdle")
		}
	}
	// Client 1 did not get the server's Finished: it repeats its own.
	refinish(cs[1])
	if pts := records(cs[1]); len(pts) != 2 {
		t.Fatalf("final flight not resent: %d records", len(pts))
	}
	if st := h.e.Stats(); st.Retransmits != 1 {
		t.Fatalf("%+v", st)
	}

	h.advance(20 * time.Second) // 31 s after the handshakes
	for _, c := range cs {
		if sess(c).final != nil {
			t.Fatal("final flight kept past HandshakeTimeout")
		}
	}
	refinish(cs[2])
	if pts := records(cs[2]); len(pts) != 0 {
		t.Fatal("final flight resent after HandshakeTimeout")
	}
	if len(h.e.timers) != 0 || len(h.e.hs) != 0 {
		t.Fatalf("%d handshake timers, %d handshakes left", len(h.e.timers), len(h.e.hs))
	}
	heapOK(3)

	// The idle sessions still work: the cipher is rebuilt from the key block.
	for _, c := range cs {
		if err := h.e.Write(c.addr, []byte("down")); err != nil {
			t.Fatal(err)
		}
		if pts := records(c); len(pts) != 1 || string(pts[0]) != "down" {
			t.Fatalf("client got %q", pts)
		}
		up, _ := c.sess.seal(ctApplicationData, []byte("up again"))
		c.send(up)
	}
	if got := h.data[cs[2].addr]; len(got) != 1 || string(got[0]) != "up again" {
		t.Fatalf("delivered %q", got)
	}
	heapOK(3)
	h.e.Close(cs[1].addr)
	heapOK(2)
	h.advance(2 * time.Hour)
	heapOK(0)
	if st := h.e.Stats(); st.Sessions != 0 || st.SessionsClosed[CloseIdle] != 2 || st.SessionsClosed[CloseLocal] != 1 {
		t.Fatalf("%+v", st)
	}
}
