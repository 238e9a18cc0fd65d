package engine

import (
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestPendingPSK: a PSK callback that defers (ErrPSKPending) parks the
// handshake; ProvidePSK completes it, refuses it, or is ignored once the
// handshake has timed out. A Finished arriving meanwhile is kept.
func TestPendingPSK(t *testing.T) {
	var asked []netip.AddrPort
	pending := func(_ []byte, from netip.AddrPort) ([]byte, error) {
		asked = append(asked, from)
		return nil, ErrPSKPending
	}
	h := newHarness(t, Config{PSK: pending, HandshakeTimeout: 5 * time.Second})

	ok := newClient(h, 1)
	ok.cookieExchange()
	ok.flight4()
	cke, ccs, fin := ok.keyExchange()
	ok.send(append(append(cke, ccs...), fin...)) // Finished before the key
	if len(asked) != 1 || h.e.Stats().HandshakesActive != 1 {
		t.Fatalf("asked %v", asked)
	}
	h.e.ProvidePSK(ok.addr, []byte("other"), testKey, nil) // another identity: ignored
	if h.e.Stats().HandshakesDone != 0 {
		t.Fatal("key for another identity accepted")
	}
	h.e.ProvidePSK(ok.addr, []byte("dev1"), testKey, nil)
	ok.flight6()

	refused := newClient(h, 2)
	refused.cookieExchange()
	refused.flight4()
	cke, _, _ = refused.keyExchange()
	refused.send(cke)
	h.e.ProvidePSK(refused.addr, []byte("dev1"), nil, errors.New("unknown"))
	if d := plainAlert(t, refused); d != alertUnknownPSKIdentity {
		t.Fatalf("alert %d", d)
	}

	late := newClient(h, 3)
	late.cookieExchange()
	late.flight4()
	cke, _, _ = late.keyExchange()
	late.send(cke)
	h.advance(6 * time.Second)
	h.e.ProvidePSK(late.addr, []byte("dev1"), testKey, nil)
	st := h.e.Stats()
	if st.HandshakesDone != 1 || st.HandshakeFailures[ReasonUnknownPSK] != 1 || st.HandshakeFailures[ReasonTimeout] != 1 || st.HandshakesActive != 0 {
		t.Fatalf("%+v", st)
	}
}
