package engine

import (
	"testing"
)

// FuzzDatagram feeds arbitrary datagrams to an engine with one established
// session, one handshake waiting for the ClientKeyExchange and from an
// unknown address: nothing may panic, and no input from the unknown
// address may create state (it cannot carry a valid cookie).
func FuzzDatagram(f *testing.F) {
	// Seeds: a ClientHello, a ClientHello with a cookie, flight 5, records
	// of an established session.
	h := newHarness(f, Config{})
	c := newClient(h, 1)
	f.Add(c.hello())
	c.cookie = make([]byte, cookieLen)
	f.Add(c.hello())
	c = newClient(h, 2)
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	f.Add(append(append(cke, ccs...), fin...))
	c.send(append(append(cke, ccs...), fin...))
	app, _ := c.sess.seal(ctApplicationData, []byte("data"))
	f.Add(app)
	al, _ := c.sess.seal(ctAlert, []byte{alertWarning, alertCloseNotify})
	f.Add(al)
	f.Add([]byte{ctHandshake, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, htClientKeyExchange, 0xff, 0xff, 0xff, 0, 2, 0, 0, 0, 0, 0, 0})

	f.Fuzz(func(t *testing.T, data []byte) {
		h := newHarness(t, Config{MaxHandshakeMessage: 2048})
		est := newClient(h, 1)
		est.connect()
		mid := newClient(h, 2)
		mid.cookieExchange()
		mid.flight4()
		stranger := newClient(h, 3)
		before := h.e.Stats().HandshakeStates
		for _, cl := range []*tclient{est, mid, stranger} {
			cl.send(append([]byte(nil), data...))
		}
		st := h.e.Stats()
		if st.HandshakeStates != before {
			t.Fatalf("state created from an unverified source")
		}
		if st.HandshakesActive > 1 || st.Sessions > 2 {
			t.Fatalf("%+v", st)
		}
		h.advance(h.e.cfg.HandshakeTimeout)
	})
}

// FuzzReassembly checks that fragments never make the reassembly exceed
// its declared length or accept bytes outside it.
func FuzzReassembly(f *testing.F) {
	f.Add([]byte{htClientKeyExchange, 0, 0, 6, 0, 2, 0, 0, 0, 0, 0, 3, 0, 4, 'a', htClientKeyExchange, 0, 0, 6, 0, 2, 0, 0, 3, 0, 0, 3, 'b', 'c', 'd'})
	f.Add([]byte{htClientKeyExchange, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		var r reassembly
		for len(data) > 0 {
			fr, rest, err := splitFragment(data)
			if err != nil {
				return
			}
			data = rest
			done, err := r.add(fr.typ, fr.length, fr.off, fr.data, 4096)
			if err != nil {
				r = reassembly{}
				continue
			}
			if len(r.buf) != r.length || r.got > r.length || r.length > 4096 {
				t.Fatalf("reassembly of %d bytes for %d declared, %d got", len(r.buf), r.length, r.got)
			}
			if done {
				r = reassembly{}
			}
		}
	})
}
