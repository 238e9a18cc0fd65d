package engine

import (
	"net/netip"
	"testing"
	"time"
)

// clientFrom is a scripted client at ip:port.
func clientFrom(h *harness, ip string, port uint16) *tclient {
	c := newClient(h, port)
	c.addr = netip.AddrPortFrom(netip.MustParseAddr(ip), port)
	return c
}

// One source address may fill the free slots while there is no pressure,
// but once half of MaxHandshakes are in progress it gets no more than
// MaxHandshakesPerAddress, while other addresses still start theirs; the
// global bound still holds, and every slot is released when the stalled
// handshakes time out.
func TestHandshakeAdmissionPerAddress(t *testing.T) {
	h := newHarness(t, Config{MaxHandshakes: 8, MaxHandshakesPerAddress: 2, HandshakeTimeout: 5 * time.Second})
	port := uint16(1000)
	start := func(ip string) {
		port++
		clientFrom(h, ip, port).cookieExchange()
	}
	for range 4 { // below pressure: no per-address bound
		start("10.0.0.1")
	}
	if st := h.e.Stats(); st.HandshakesActive != 4 || len(st.HandshakeFailures) != 0 {
		t.Fatalf("4 handshakes from one address without pressure: %+v", st)
	}
	start("10.0.0.1") // under pressure, 10.0.0.1 is over its share
	if st := h.e.Stats(); st.HandshakesActive != 4 || st.HandshakeFailures[ReasonLimitAddress] != 1 {
		t.Fatalf("fifth handshake from a busy address under pressure: %+v", st)
	}
	start("10.0.0.2")
	start("10.0.0.2")
	start("10.0.0.2") // its third, under pressure
	if st := h.e.Stats(); st.HandshakesActive != 6 || st.HandshakeFailures[ReasonLimitAddress] != 2 {
		t.Fatalf("second address: %+v", st)
	}
	start("10.0.0.3")
	start("10.0.0.4")
	start("10.0.0.5") // every slot taken
	if st := h.e.Stats(); st.HandshakesActive != 8 || st.HandshakeFailures[ReasonLimit] != 1 {
		t.Fatalf("global bound: %+v", st)
	}
	h.advance(5 * time.Second) // every client stopped mid-handshake
	if st := h.e.Stats(); st.HandshakesActive != 0 || st.HandshakeFailures[ReasonTimeout] != 8 || len(h.e.hsPerIP) != 0 {
		t.Fatalf("state kept after the timeouts: %+v, per-address counts %v", st, h.e.hsPerIP)
	}
	start("10.0.0.1")
	if st := h.e.Stats(); st.HandshakesActive != 1 {
		t.Fatalf("address not admitted after its handshakes ended: %+v", st)
	}
}

// MaxSessions counts handshakes in progress: with one session
// established and one handshake in progress, a third peer is refused, but
// the established session's own address may start over.
func TestMaxSessionsCountsHandshakes(t *testing.T) {
	h := newHarness(t, Config{MaxSessions: 2})
	a := newClient(h, 1)
	a.connect()
	newClient(h, 2).cookieExchange()
	if st := h.e.Stats(); st.Sessions != 1 || st.HandshakesActive != 1 {
		t.Fatalf("%+v", st)
	}
	newClient(h, 3).cookieExchange()
	if st := h.e.Stats(); st.HandshakesActive != 1 || st.HandshakeFailures[ReasonLimitSessions] != 1 || st.HandshakeStates != 2 {
		t.Fatalf("third peer admitted past max sessions: %+v", st)
	}
	again := newClient(h, 1) // the established peer's address, new random
	again.cr[0] ^= 0xff
	again.cookieExchange()
	if st := h.e.Stats(); st.HandshakesActive != 2 || st.HandshakeFailures[ReasonLimitSessions] != 1 {
		t.Fatalf("established peer refused a new handshake: %+v", st)
	}
}
