package engine

import (
	"net/netip"
	"testing"
)

// TestHiddenPSKRefusal: a PSKRefusal with Hide goes on with the decoy key
// given (or a random one), so the client's Finished fails with
// decrypt_error exactly like a wrong key's, and the failure is reported
// under the refusal's reason, not bad_finished; without Hide the handshake
// ends at once with handshake_failure under the refusal's reason. Both
// synchronous and deferred (ProvidePSK) answers.
func TestHiddenPSKRefusal(t *testing.T) {
	var reported []string
	refuse := func(identity []byte, _ netip.AddrPort) ([]byte, error) {
		switch string(identity) {
		case "ghost":
			return []byte("decoy key 123456"), &PSKRefusal{Reason: "unknown_device", Hide: true}
		case "ghost-random":
			return nil, &PSKRefusal{Reason: "disabled_device", Hide: true}
		case "later":
			return nil, ErrPSKPending
		}
		return nil, &PSKRefusal{Reason: "store_unavailable"}
	}
	h := newHarness(t, Config{PSK: refuse, OnHandshakeFailure: func(f HandshakeFailure) { reported = append(reported, f.Reason) }})

	for i, tc := range []struct {
		identity string
		alert    byte
		reason   string
	}{
		{"ghost", alertDecryptError, "unknown_device"},
		{"ghost-random", alertDecryptError, "disabled_device"},
		{"down", alertHandshakeFailure, "store_unavailable"},
	} {
		c := newClient(h, uint16(10+i))
		c.identity = tc.identity
		c.cookieExchange()
		c.flight4()
		cke, ccs, fin := c.keyExchange()
		c.send(cke)
		if tc.alert == alertDecryptError {
			// Nothing yet: the refusal does not show before the Finished.
			if got := h.take(c.addr); len(got) != 0 {
				t.Fatalf("%s: %d datagrams after the ClientKeyExchange, want none", tc.identity, len(got))
			}
			c.send(append(ccs, fin...))
		}
		if d := plainAlert(t, c); d != tc.alert {
			t.Fatalf("%s: alert %d, want %d", tc.identity, d, tc.alert)
		}
		if n := len(reported); n == 0 || reported[n-1] != tc.reason {
			t.Fatalf("%s: reported %q, want %s last", tc.identity, reported, tc.reason)
		}
	}

	c := newClient(h, 20)
	c.identity = "later"
	c.cookieExchange()
	c.flight4()
	cke, ccs, fin := c.keyExchange()
	c.send(cke)
	h.e.ProvidePSK(c.addr, []byte("later"), nil, &PSKRefusal{Reason: "mode3_not_allowed", Hide: true})
	c.send(append(ccs, fin...))
	if d := plainAlert(t, c); d != alertDecryptError {
		t.Fatalf("deferred hidden refusal: alert %d", d)
	}
	st := h.e.Stats()
	if st.HandshakeFailures[ReasonBadFinished] != 0 || st.HandshakeFailures["unknown_device"] != 1 || st.HandshakeFailures["mode3_not_allowed"] != 1 || st.HandshakesActive != 0 || st.Sessions != 0 {
		t.Fatalf("%+v", st)
	}
	if len(reported) != 4 {
		t.Fatalf("reported %q, want one failure per handshake", reported)
	}
}

// TestAdmitHandshakeHook: AdmitHandshake is asked about verified
// ClientHellos only, with the pressure flag; its refusal allocates no
// state and is reported.
func TestAdmitHandshakeHook(t *testing.T) {
	var asked []bool
	var reported []string
	refuseUnderPressure := func(_ netip.AddrPort, pressure bool) string {
		asked = append(asked, pressure)
		if pressure {
			return "rate_limited"
		}
		return ""
	}
	h := newHarness(t, Config{MaxHandshakes: 2, MaxHandshakesPerAddress: 8, AdmitHandshake: refuseUnderPressure,
		OnHandshakeFailure: func(f HandshakeFailure) { reported = append(reported, f.Reason) }})
	c1 := newClient(h, 1)
	c1.cookieExchange() // no pressure: admitted
	if len(asked) != 1 || asked[0] {
		t.Fatalf("asked %v", asked)
	}
	c2 := newClient(h, 2)
	c2.cookieExchange() // its first ClientHello (no cookie) is not asked about
	if len(asked) != 2 || !asked[1] || len(reported) != 1 || reported[0] != "rate_limited" {
		t.Fatalf("asked %v, reported %q", asked, reported)
	}
	if st := h.e.Stats(); st.HandshakesActive != 1 || st.HandshakeFailures["rate_limited"] != 1 {
		t.Fatalf("%+v", st)
	}
}
