package engine

import (
	"context"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

func TestConnectionIDRebinding(t *testing.T) {
	for _, tc := range []struct {
		name string
		cid  []byte
		id   uint16
	}{
		{"client sends only", []byte{}, TLS_PSK_WITH_AES_128_CCM_8},
		{"both ways CCM_8", []byte{1, 2, 3, 4}, TLS_PSK_WITH_AES_128_CCM_8},
		{"both ways CBC", []byte{9, 9}, TLS_PSK_WITH_AES_128_CBC_SHA256},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{ConnectionID: true})
			c := newClient(h, 1)
			c.cid, c.suites = tc.cid, []uint16{tc.id}
			c.connect()
			if len(c.srvCID) != cidSize {
				t.Fatalf("server CID %x", c.srvCID)
			}
			app, _ := c.sess.seal(ctApplicationData, []byte("a"))
			if app[0] != ctCID {
				t.Fatal("client record without CID")
			}
			c.send(app)
			// NAT rebinding: the next record arrives from another port.
			older, _ := c.sess.seal(ctApplicationData, []byte("older"))
			newer, _ := c.sess.seal(ctApplicationData, []byte("b"))
			old := c.addr
			c.addr = netip.MustParseAddrPort("127.0.0.1:2")
			c.send(newer)
			if h.e.Session(c.addr) == nil || h.e.Session(old) != nil {
				t.Fatal("session did not follow the new address")
			}
			// A delayed older record from elsewhere does not move it back.
			h.e.HandleDatagram(older, old, h.now)
			if h.e.Session(c.addr) == nil {
				t.Fatal("an older record moved the session")
			}
			if err := h.e.Write(c.addr, []byte("down")); err != nil {
				t.Fatal(err)
			}
			recs, pts := c.serverRecords()
			if len(pts) != 1 || string(pts[0]) != "down" || (len(tc.cid) > 0) != (recs[0].raw[0] == ctCID) {
				t.Fatalf("client got %q", pts)
			}
			st := h.e.Stats()
			// The older record is delivered, but the session stays at the
			// newest address (OnData files data under the session's address).
			if st.Migrations != 1 || len(h.data[old]) != 1 || len(h.data[c.addr]) != 2 {
				t.Fatalf("%+v %q %q", st, h.data[old], h.data[c.addr])
			}
			// A record with an unknown CID goes nowhere.
			bad := append([]byte(nil), newer...)
			bad[11] ^= 1
			c.send(bad)
			if st := h.e.Stats(); st.RecordsDropped == 0 {
				t.Fatalf("%+v", st)
			}
		})
	}
}

// relay forwards datagrams between a client and the server; rebind makes
// it use a fresh socket (a new source port) towards the server.
type relay struct {
	mu     sync.Mutex
	front  *net.UDPConn // the client talks to this
	back   *net.UDPConn // towards the server
	server *net.UDPAddr
	client *net.UDPAddr
	wg     sync.WaitGroup
}

func newRelay(t *testing.T, server *net.UDPAddr) *relay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{front: front, server: server}
	r.rebind(t)
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			back := r.back
			r.mu.Unlock()
			_, _ = back.WriteToUDP(buf[:n], server)
		}
	}()
	t.Cleanup(func() {
		front.Close()
		r.mu.Lock()
		r.back.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

func (r *relay) rebind(t *testing.T) {
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	if r.back != nil {
		r.back.Close()
	}
	r.back = back
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			to := r.client
			r.mu.Unlock()
			_, _ = r.front.WriteToUDP(buf[:n], to)
		}
	}()
}

func TestPionClientConnectionIDThroughRebindingRelay(t *testing.T) {
	for name, gen := range map[string]func() []byte{
		"client sends only": dtls.OnlySendCIDGenerator(),
		"both ways":         dtls.RandomCIDGenerator(6),
	} {
		t.Run(name, func(t *testing.T) { pionRebinding(t, gen) })
	}
}

func pionRebinding(t *testing.T, gen func() []byte) {
	ts := startServer(t, Config{ConnectionID: true})
	r := newRelay(t, ts.addr)
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(pc, r.front.LocalAddr(),
		dtls.WithPSK(func([]byte) ([]byte, error) { return testKey, nil }),
		dtls.WithPSKIdentityHint([]byte("dev1")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(gen))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); pc.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		t.Fatal(err)
	}
	echo(t, c, "before")
	r.rebind(t)
	echo(t, c, "after")
	// Without a CID the rebound client would be an unknown address.
	if st := ts.e.Stats(); st.Migrations != 1 || st.Sessions != 1 || st.HandshakesDone != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestConnectionIDEarlyFinished: a tls12_cid Finished that arrives before
// the ClientKeyExchange (or while its key is looked up) is kept, not lost.
func TestConnectionIDEarlyFinished(t *testing.T) {
	h := newHarness(t, Config{ConnectionID: true})
	c := newClient(h, 1)
	c.cid = []byte{5}
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	if fin[0] != ctCID {
		t.Fatal("Finished without CID")
	}
	c.send(fin)
	c.send(ccs)
	c.send(cke)
	c.flight6()
	if st := h.e.Stats(); st.HandshakesDone != 1 || st.Retransmits != 0 {
		t.Fatalf("%+v", st)
	}
}
