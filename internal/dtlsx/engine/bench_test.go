package engine

import (
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"
)

// BenchmarkPSKHandshake measures full PSK handshakes (cookie exchange
// included) through the engine, without sockets.
func BenchmarkPSKHandshake(b *testing.B) {
	for _, id := range []uint16{TLS_PSK_WITH_AES_128_CCM_8, TLS_PSK_WITH_AES_128_CBC_SHA256} {
		b.Run(SuiteName(id), func(b *testing.B) {
			h := newHarness(b, Config{})
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				c := newClient(h, uint16(i))
				c.suites = []uint16{id}
				c.connect()
				h.e.Close(c.addr)
				h.take(c.addr)
			}
		})
	}
}

// BenchmarkIdleSessionMemory establishes b.N sessions (at least 1000) and
// reports the heap they hold once idle (their last flight and cipher
// released): bytes/session, the engine's heap with its sessions minus the
// heap once the engine is dropped (the test clients and harness stay).
func BenchmarkIdleSessionMemory(b *testing.B) {
	for _, tc := range []struct {
		name string
		id   uint16
		cid  bool
	}{
		{"CCM_8", TLS_PSK_WITH_AES_128_CCM_8, false},
		{"CCM_8+CID", TLS_PSK_WITH_AES_128_CCM_8, true},
		{"CBC_SHA256", TLS_PSK_WITH_AES_128_CBC_SHA256, false},
	} {
		b.Run(tc.name, func(b *testing.B) {
			n := max(b.N, 1000)
			h := newHarness(b, Config{ConnectionID: tc.cid, IdleTimeout: time.Hour})
			clients := make([]*tclient, 0, n)
			for i := range n {
				c := newClient(h, 0)
				c.addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 5684)
				c.suites = []uint16{tc.id}
				if tc.cid {
					c.cid = []byte{}
				}
				clients = append(clients, c)
			}
			var with, without runtime.MemStats
			b.ResetTimer()
			for _, c := range clients {
				c.connect()
				app, _ := c.sess.seal(ctApplicationData, []byte("x"))
				c.send(app)
				_ = h.e.Write(c.addr, []byte("y"))
				h.take(c.addr)
				delete(h.data, c.addr)
			}
			h.advance(h.e.cfg.HandshakeTimeout + time.Second)
			b.StopTimer()
			for _, c := range clients {
				c.sess, c.trans, c.chBody, c.master, c.kb = nil, nil, nil, nil, nil
			}
			runtime.GC()
			runtime.ReadMemStats(&with)
			if got := h.e.Stats().Sessions; got != n {
				b.Fatalf("%d sessions, want %d", got, n)
			}
			if p := os.Getenv("ENGINE_HEAP_PROFILE"); p != "" {
				if f, err := os.Create(p); err == nil {
					_ = pprof.WriteHeapProfile(f)
					f.Close()
				}
			}
			h.e = nil
			runtime.GC()
			runtime.ReadMemStats(&without)
			b.ReportMetric(float64(with.HeapAlloc-without.HeapAlloc)/float64(n), "B/session")
			runtime.KeepAlive(clients)
			runtime.KeepAlive(h)
		})
	}
}
