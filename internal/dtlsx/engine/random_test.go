package engine

import (
	"math/rand/v2"
	"testing"
)

// TestRandomFlightBoundaries: flight 5 cut at random fragment boundaries
// (with overlaps), shuffled, partly duplicated and packed into random
// datagrams always completes the handshake exactly once.
func TestRandomFlightBoundaries(t *testing.T) {
	for seed := range uint64(300) {
		rng := rand.New(rand.NewPCG(seed, 7))
		h := newHarness(t, Config{})
		c := newClient(h, 1)
		c.suites = []uint16{DefaultSuites[seed%uint64(len(DefaultSuites))]}
		c.cookieExchange()
		c.flight4()
		cke, ccs, fin := c.keyExchange()
		msg := cke[recordHeaderLen:]
		body := msg[handshakeHeaderLen:]
		var recs [][]byte
		// Random fragments covering the body, possibly overlapping.
		for off := 0; off < len(body); {
			start := max(0, off-rng.IntN(3))
			end := min(len(body), off+1+rng.IntN(len(body)))
			f := append([]byte(nil), msg[:handshakeHeaderLen]...)
			put24(f[6:], start)
			put24(f[9:], end-start)
			recs = append(recs, rec(ctHandshake, 0, c.nextSeq(), append(f, body[start:end]...)))
			off = end
		}
		recs = append(recs, ccs, fin)
		rng.Shuffle(len(recs), func(i, j int) { recs[i], recs[j] = recs[j], recs[i] })
		for i := range recs {
			if rng.IntN(4) == 0 {
				recs = append(recs, recs[i])
			}
		}
		// Pack into datagrams of 1-3 records.
		for len(recs) > 0 {
			n := min(len(recs), 1+rng.IntN(3))
			var d []byte
			for _, r := range recs[:n] {
				d = append(d, r...)
			}
			recs = recs[n:]
			c.send(d)
		}
		st := h.e.Stats()
		if st.HandshakesDone != 1 || st.Sessions != 1 || st.HandshakeStates != 1 {
			t.Fatalf("seed %d: %+v", seed, st)
		}
		// The client gets the server's Finished (possibly more than once).
		_, pts := c.serverRecords()
		found := false
		for _, pt := range pts {
			if f, _, err := splitFragment(pt); err == nil && f.typ == htFinished {
				found = true
			}
		}
		if !found {
			t.Fatalf("seed %d: no server Finished", seed)
		}
	}
}
