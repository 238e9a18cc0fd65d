package engine

import (
	"bytes"
	"errors"
	"testing"
)

func TestExportImportContinuesSession(t *testing.T) {
	for _, cid := range []bool{false, true} {
		t.Run(map[bool]string{false: "address", true: "CID"}[cid], func(t *testing.T) {
			a := newHarness(t, Config{ConnectionID: cid})
			c := newClient(a, 1)
			if cid {
				c.cid = []byte{7, 7}
			}
			c.connect()
			seen, _ := c.sess.seal(ctApplicationData, []byte("to a"))
			c.send(seen)
			_ = a.e.Write(c.addr, []byte("from a"))
			c.serverRecords()
			blob, err := a.e.Export(c.addr)
			if err != nil {
				t.Fatal(err)
			}
			if len(blob) > 200 {
				t.Fatalf("exported session of %d bytes", len(blob))
			}
			// Another node continues the session.
			b := newHarness(t, Config{ConnectionID: cid})
			c.h = b
			s, err := b.e.Import(blob, 1<<20)
			if err != nil {
				t.Fatal(err)
			}
			if string(s.Identity()) != "dev1" {
				t.Fatalf("identity %q", s.Identity())
			}
			c.send(seen) // already accepted by a: the window came along
			next, _ := c.sess.seal(ctApplicationData, []byte("to b"))
			c.send(next)
			if got := b.data[c.addr]; len(got) != 1 || string(got[0]) != "to b" {
				t.Fatalf("b delivered %q", got)
			}
			if err := b.e.Write(c.addr, []byte("from b")); err != nil {
				t.Fatal(err)
			}
			recs, pts := c.serverRecords()
			if len(pts) != 1 || string(pts[0]) != "from b" || recs[0].seq < 1<<20 {
				t.Fatalf("b sent %q at sequence number %d", pts, recs[0].seq)
			}
			if st := b.e.Stats(); st.RecordsReplayed != 1 || st.Imports != 1 || st.HandshakeStates != 0 {
				t.Fatalf("%+v", st)
			}
			// Round trip: b's export differs only by the sequence numbers.
			blob2, err := b.e.Export(c.addr)
			if err != nil || len(blob2) != len(blob) {
				t.Fatalf("re-export: %v", err)
			}
		})
	}
}

func TestImportRejectsMalformed(t *testing.T) {
	a := newHarness(t, Config{})
	c := newClient(a, 1)
	c.connect()
	blob, _ := a.e.Export(c.addr)
	b := newHarness(t, Config{Suites: []uint16{TLS_PSK_WITH_AES_128_CBC_SHA}})
	if _, err := b.e.Import(blob, 0); !errors.Is(err, errBadExport) {
		t.Fatalf("import with a disabled suite: %v", err)
	}
	for i := range blob {
		if _, err := a.e.Import(blob[:i], 0); err == nil {
			t.Fatalf("truncated export (%d bytes) accepted", i)
		}
	}
	if _, err := a.e.Import(append(bytes.Clone(blob), 0), 0); err == nil {
		t.Fatal("trailing byte accepted")
	}
}

func FuzzImport(f *testing.F) {
	h := newHarness(f, Config{ConnectionID: true})
	c := newClient(h, 1)
	c.cid = []byte{1}
	c.connect()
	blob, _ := h.e.Export(c.addr)
	f.Add(blob)
	f.Fuzz(func(t *testing.T, b []byte) {
		h := newHarness(t, Config{ConnectionID: true})
		s, err := h.e.Import(b, 0)
		if err != nil {
			return
		}
		out, err := h.e.Export(s.Addr())
		if err != nil || !bytes.Equal(out, b) {
			t.Fatalf("import/export round trip differs")
		}
	})
}
