package engine

import (
	"bytes"
	"errors"
	"net/netip"
	"testing"
	"time"
)

// TestWriteLimitAndTakeover: a session sealing under a write limit stops
// at it and asks for more once at the low-water mark; another engine
// verifies a record of the session before adopting it at the peer's new
// address and continues from the reserved sequence numbers, so the peer
// never sees an (epoch, sequence number) twice; the first engine drops its
// copy without a word to the peer.
func TestWriteLimitAndTakeover(t *testing.T) {
	for _, cid := range []bool{false, true} {
		t.Run(map[bool]string{false: "address", true: "CID"}[cid], func(t *testing.T) {
			a := newHarness(t, Config{ConnectionID: cid})
			var lows []uint64
			a.e.SetReplication(Replication{OnLowWater: func(s *Session) { lows = append(lows, s.wseq) }})
			var closed []string
			a.e.cfg.OnClose = func(_ *Session, reason string) { closed = append(closed, reason) }
			c := newClient(a, 1)
			if cid {
				c.cid = []byte{}
			}
			c.connect()
			s := a.e.Session(c.addr)
			a.e.SetWriteLimit(s, 8, 4)
			seen := map[uint64]bool{}
			note := func(recs []record) {
				for _, r := range recs {
					if r.epoch == 1 && seen[r.seq] {
						t.Fatalf("sequence number %d sent twice", r.seq)
					}
					seen[r.seq] = true
				}
			}
			sent := 0
			for range 10 {
				switch err := a.e.Write(c.addr, []byte("from a")); {
				case err == nil:
					sent++
				case !errors.Is(err, ErrSeqReserved):
					t.Fatal(err)
				}
			}
			recs, _ := c.serverRecords()
			note(recs)
			// The Finished took 0: 1..7 are left below the limit.
			if sent != 7 || len(recs) != 7 || len(lows) != 1 || lows[0] != 4 {
				t.Fatalf("sent %d (%d records), low-water calls at %v", sent, len(recs), lows)
			}
			up, _ := c.sess.seal(ctApplicationData, []byte("to a"))
			c.send(up)
			blob, wseq, err := a.e.WriteState(s)
			if err != nil || wseq != 8 {
				t.Fatalf("write state: %d, %v", wseq, err)
			}

			// The peer's records now reach engine b, from a new address
			// when it has a CID (NAT rebinding), from the same address
			// otherwise (an address-preserving balancer).
			b := newHarness(t, Config{ConnectionID: cid})
			type unknown struct {
				cid  []byte
				addr netip.AddrPort
				rec  []byte
			}
			var got []unknown
			b.e.SetReplication(Replication{OnUnknown: func(cid []byte, addr netip.AddrPort, rec []byte) {
				got = append(got, unknown{bytes.Clone(cid), addr, bytes.Clone(rec)})
			}})
			c.h = b
			if cid {
				c.addr = netip.MustParseAddrPort("127.0.0.1:2")
			}
			next, _ := c.sess.seal(ctApplicationData, []byte("to b"))
			c.send(next)
			if len(got) != 1 || got[0].addr != c.addr || (len(got[0].cid) > 0) != cid {
				t.Fatalf("unknown records %+v", got)
			}
			// Proof of possession: a forged or replayed record fails.
			forged := bytes.Clone(next)
			forged[len(forged)-1] ^= 1
			if err := b.e.VerifyRecord(blob, forged); err == nil {
				t.Fatal("a record with a bad MAC verified")
			}
			if err := b.e.VerifyRecord(blob, up); err == nil {
				t.Fatal("a record a had accepted verified again")
			}
			if err := b.e.VerifyRecord(blob, got[0].rec); err != nil {
				t.Fatalf("the peer's record: %v", err)
			}
			if b.e.Stats().Sessions != 0 {
				t.Fatal("verification installed a session")
			}
			// Adopt from the reservation's end.
			if _, err := b.e.Adopt(blob, c.addr, 8, 16, 12); err != nil {
				t.Fatal(err)
			}
			b.e.HandleDatagram(got[0].rec, c.addr, b.now)
			if d := b.data[c.addr]; len(d) != 1 || string(d[0]) != "to b" {
				t.Fatalf("b delivered %q", d)
			}
			c.send(up) // a replay of what a accepted: the window came along
			if st := b.e.Stats(); st.RecordsReplayed != 1 || st.HandshakeStates != 0 || st.Imports != 1 {
				t.Fatalf("%+v", st)
			}
			for range 10 {
				_ = b.e.Write(c.addr, []byte("from b"))
			}
			recs, pts := c.serverRecords()
			note(recs)
			if len(pts) != 8 || string(pts[0]) != "from b" || recs[0].seq != 8 {
				t.Fatalf("b sent %d records from %d", len(pts), recs[0].seq)
			}
			// a learns it lost the session: it drops it silently.
			c.h = a
			a.e.Drop(s)
			if len(a.sent) != 0 || len(closed) != 1 || closed[0] != ReasonTakenOver || !a.e.Closed(s) {
				t.Fatalf("drop: sent %d datagrams, closed %v", len(a.sent), closed)
			}
		})
	}
}

// FuzzVerifyRecord: any bytes offered as the proof record of a stored
// session are refused without a panic, unless they are a record the
// peer sealed; nothing is installed either way.
func FuzzVerifyRecord(f *testing.F) {
	h := newHarness(f, Config{ConnectionID: true})
	c := newClient(h, 1)
	c.cid = []byte{}
	c.connect()
	blob, _ := h.e.Export(c.addr)
	good, _ := c.sess.seal(ctApplicationData, []byte("proof"))
	f.Add(good)
	f.Add(good[:13])
	f.Add([]byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 9})
	f.Fuzz(func(t *testing.T, rec []byte) {
		err := h.e.VerifyRecord(blob, rec)
		if err == nil && !bytes.Equal(rec, good) {
			t.Fatalf("a record other than the peer's verified: %x", rec)
		}
		if h.e.Stats().Imports != 0 {
			t.Fatal("verification installed a session")
		}
	})
}

// TestRecordRateCap: a session with a write limit seals at most
// RecordBurst records at once and MaxRecordRate a second on average,
// whatever its reservation; new limits do not refill the burst. That is
// the bound RollbackMargin relies on.
func TestRecordRateCap(t *testing.T) {
	h := newHarness(t, Config{})
	c := newClient(h, 1)
	c.connect()
	s := h.e.Session(c.addr)
	h.e.SetWriteLimit(s, 1<<40, 1<<39)
	write := func(n int) (sent int) {
		for range n {
			switch err := h.e.Write(c.addr, []byte("x")); {
			case err == nil:
				sent++
			case !errors.Is(err, ErrRecordRate):
				t.Fatal(err)
			}
		}
		h.take(c.addr)
		return sent
	}
	if n := write(RecordBurst + 10); n != RecordBurst {
		t.Fatalf("at once: %d records sealed, want the burst %d", n, RecordBurst)
	}
	h.e.SetWriteLimit(s, 1<<41, 1<<40) // a new reservation: no new burst
	if n := write(10); n != 0 {
		t.Fatalf("after a new limit: %d records, want 0", n)
	}
	h.advance(10 * time.Millisecond)
	if n, want := write(MaxRecordRate), MaxRecordRate/100; n != want {
		t.Fatalf("10 ms later: %d records, want %d", n, want)
	}
	h.advance(5 * time.Second)
	if n := write(RecordBurst + 10); n != RecordBurst {
		t.Fatalf("5 s later: %d records, want the burst %d (it does not accumulate)", n, RecordBurst)
	}
	// The margin covers what the owner could have sealed since the write.
	for _, elapsed := range []time.Duration{0, time.Second, 24 * time.Hour} {
		if m, most := RollbackMargin(elapsed), uint64((elapsed+time.Hour).Seconds()*MaxRecordRate)+2*RecordBurst; m < most {
			t.Fatalf("RollbackMargin(%v) = %d, below %d", elapsed, m, most)
		}
	}
	if RollbackMargin(-time.Hour) != RollbackMargin(0) {
		t.Fatal("a record written in the future shrinks the margin")
	}
}
