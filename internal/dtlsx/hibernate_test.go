package dtlsx

import (
	"bytes"
	"encoding/binary"
	"encoding/gob"
	"fmt"
	"regexp"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

const hibAfter = 10 * time.Second

func withHibernation(c *Config) { c.HibernateAfter = hibAfter }

func value(t *testing.T, c prometheus.Collector) float64 {
	t.Helper()
	var d dto.Metric
	switch m := c.(type) {
	case prometheus.Gauge: // first: a Gauge is a Counter too (Inc, Add)
		m.Write(&d)
		return d.GetGauge().GetValue()
	case prometheus.Counter:
		m.Write(&d)
		return d.GetCounter().GetValue()
	}
	t.Fatalf("not a counter or gauge: %T", c)
	return 0
}

// only returns the test server's single established session.
func (ts *testServer) only(t *testing.T) *Session {
	t.Helper()
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if len(ts.byAddr) != 1 {
		t.Fatalf("%d sessions", len(ts.byAddr))
	}
	for _, ss := range ts.byAddr {
		return ss
	}
	return nil
}

// hibernateNow moves the server's clock past HibernateAfter, sweeps, and
// waits for ss to hibernate.
func (ts *testServer) hibernateNow(t *testing.T, ss *Session) {
	t.Helper()
	ts.skew.Add(int64(hibAfter + time.Second))
	// As the server's own ticker does: sweep again until it happened (an
	// attempt gives up while a datagram is still inside pion).
	waitFor(t, func() bool {
		ts.sweep(ts.cfg.Now())
		return ss.Hibernated()
	}, "session hibernated")
}

// recordSeq returns the epoch and sequence number of b's first record.
func recordSeq(t *testing.T, b []byte) (uint16, uint64) {
	t.Helper()
	if len(b) < recordHeaderLen {
		t.Fatalf("short record: %x", b)
	}
	return binary.BigEndian.Uint16(b[3:5]), uint64(binary.BigEndian.Uint16(b[5:7]))<<32 | uint64(binary.BigEndian.Uint32(b[7:11]))
}

// TestHibernateResume: an idle session hibernates (its pion Conn is gone)
// and answers the next request from its snapshot, with its identity, for
// both PSK suites, with and without Connection ID; the records the server
// sends after resuming continue the sequence numbers of the epoch.
func TestHibernateResume(t *testing.T) {
	for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256} {
		for _, cid := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s/cid=%v", cipherName(suite), cid), func(t *testing.T) {
				ts := start(t, withHibernation)
				relay := newRelay(t, ts.addr)
				c, err := handshake(t, relay.client, relay.addr(), "pk,dk,2,300", dtlspsk.Key(secret), suite, cid)
				if err != nil {
					t.Fatal(err)
				}
				for range 3 {
					if r := post(t, c); r.Code != codes.Changed {
						t.Fatal(r.Code)
					}
				}
				ss := ts.only(t)
				ts.hibernateNow(t, ss)
				_, before := relay.captured()
				ss.mu.RLock()
				conn, snap := ss.conn, ss.snap
				ss.mu.RUnlock()
				if conn != nil || snap == nil {
					t.Fatalf("hibernated session keeps conn=%v snap=%v", conn != nil, snap != nil)
				}
				if g := value(t, ts.m.hibernated); g != 1 {
					t.Fatalf("hibernated gauge %v", g)
				}
				if ts.Sessions() != 1 {
					t.Fatalf("sessions %d: a hibernated session still counts", ts.Sessions())
				}
				for i := range 3 {
					if r := post(t, c); r.Code != codes.Changed || string(r.Payload) != "pk/dk" {
						t.Fatalf("request %d after hibernation: %v %q", i, r.Code, r.Payload)
					}
				}
				if ss.Hibernated() || value(t, ts.m.resumes) != 1 || value(t, ts.m.hibernated) != 0 {
					t.Fatalf("after resume: hibernated=%v resumes=%v gauge=%v", ss.Hibernated(), value(t, ts.m.resumes), value(t, ts.m.hibernated))
				}
				// Sequence numbers: every record the server sent after
				// resuming is above every one it sent before, same epoch.
				_, all := relay.captured()
				after := all[len(before):]
				if len(after) < 3 {
					t.Fatalf("%d server datagrams after resume", len(after))
				}
				var maxBefore uint64
				for _, b := range before {
					if e, q := recordSeq(t, b); e == 1 {
						maxBefore = max(maxBefore, q)
					}
				}
				prev := maxBefore
				for _, b := range after {
					e, q := recordSeq(t, b)
					if e != 1 || q <= prev {
						t.Fatalf("server record after resume: epoch %d seq %d, previous %d (max before hibernation %d)", e, q, prev, maxBefore)
					}
					prev = q
				}
				if maxBefore == 0 {
					t.Fatal("no epoch-1 record captured before hibernation")
				}
			})
		}
	}
}

// TestHibernateReplay: a record captured before hibernation and replayed
// afterwards is refused — while hibernated (before any state is rebuilt)
// and after the session resumed.
func TestHibernateReplay(t *testing.T) {
	for _, cid := range []bool{true, false} {
		t.Run(fmt.Sprintf("cid=%v", cid), func(t *testing.T) {
			// One worker: requests are handled in arrival order. A 1ns
			// exchange lifetime: a replayed request would reach the handler
			// again instead of being answered from the dedup cache.
			ts := startCoAP(t, withHibernation, coapx.Config{Workers: 1, Transport: "coap-dtls", ExchangeLifetime: time.Nanosecond, NonLifetime: time.Nanosecond})
			relay := newRelay(t, ts.addr)
			c, err := handshake(t, relay.client, relay.addr(), "pk,dk,2,300", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, cid)
			if err != nil {
				t.Fatal(err)
			}
			post(t, c)
			sent, _ := relay.captured()
			old := sent[len(sent)-1] // the request's record
			if e, _ := recordSeq(t, old); e != 1 {
				t.Fatalf("captured record of epoch %d", e)
			}
			ss := ts.only(t)
			ts.hibernateNow(t, ss)
			replay := func() { relay.up.Load().WriteToUDP(old, ts.addr) }

			replay()
			waitFor(t, func() bool { return value(t, ts.m.asleepRejected) == 1 }, "replay refused while hibernated")
			if !ss.Hibernated() || value(t, ts.m.resumes) != 0 {
				t.Fatal("a replayed record resumed the session")
			}
			if r := post(t, c); r.Code != codes.Changed {
				t.Fatal(r.Code)
			}
			if n := ts.handled.Load(); n != 2 {
				t.Fatalf("handled %d requests, want 2", n)
			}
			// Resumed: pion's cutoff (the snapshot's remote sequence
			// number) refuses it. The replay is queued before the next
			// request, and one worker handles requests in order.
			replay()
			if r := post(t, c); r.Code != codes.Changed {
				t.Fatal(r.Code)
			}
			if n := ts.handled.Load(); n != 3 {
				t.Fatalf("handled %d requests, want 3: the replayed record was accepted after resume", n)
			}
		})
	}
}

// TestHibernateServerWrite: a write on a hibernated session (a server
// request or a late response) resumes it.
func TestHibernateServerWrite(t *testing.T) {
	ts := start(t, withHibernation)
	c, err := dialPSK(t, ts.addr, "pk,dk,2,300", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, true)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c)
	ss := ts.only(t)
	ts.hibernateNow(t, ss)
	m := message.Message{Type: message.NonConfirmable, Code: codes.POST, MessageID: 77, Token: []byte{7}}
	n, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, n)
	coder.DefaultCoder.Encode(m, b)
	if err := ss.WriteDatagram(b); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, err = c.Read(buf)
	if err != nil || !bytes.Equal(buf[:n], b) {
		t.Fatalf("server datagram after resume: %x %v", buf[:n], err)
	}
	if ss.Hibernated() {
		t.Fatal("still hibernated after a write")
	}
}

// TestHibernatedExpiry: a hibernated session still ends after its
// lifetime without a datagram, with its offline event, and leaves nothing.
func TestHibernatedExpiry(t *testing.T) {
	var downs atomic.Int32
	ts := start(t, func(c *Config) {
		withHibernation(c)
		c.OnDown = func(_ *Session, reason string) {
			if reason == CloseIdle {
				downs.Add(1)
			}
		}
	})
	c, err := dialPSK(t, ts.addr, "pk,dk,2,30", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, true)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c)
	ss := ts.only(t)
	ts.hibernateNow(t, ss) // 11 s idle
	ts.skew.Add(int64(18 * time.Second))
	ts.sweep(ts.cfg.Now()) // 29 s
	if ts.Sessions() != 1 || !ss.Hibernated() {
		t.Fatal("closed before its lifetime")
	}
	ts.skew.Add(int64(2 * time.Second))
	ts.sweep(ts.cfg.Now()) // 31 s
	if ts.Sessions() != 0 || downs.Load() != 1 || value(t, ts.m.hibernated) != 0 {
		t.Fatalf("after lifetime: sessions %d downs %d hibernated %v", ts.Sessions(), downs.Load(), value(t, ts.m.hibernated))
	}
	ts.mu.Lock()
	routes := len(ts.byAddr) + len(ts.byCID)
	ts.mu.Unlock()
	if routes != 0 {
		t.Fatalf("%d routes left", routes)
	}
	if err := ss.WriteDatagram([]byte{0x40, 0, 0, 1}); err == nil {
		t.Fatal("write on an expired hibernated session succeeded")
	}
}

// TestHibernateShutdown: Serve returns with hibernated and active sessions
// alike ended (shutdown) and their goroutines gone.
func TestHibernateShutdown(t *testing.T) {
	var downs atomic.Int32
	ts := start(t, func(c *Config) {
		withHibernation(c)
		c.OnDown = func(_ *Session, reason string) {
			if reason == CloseShutdown {
				downs.Add(1)
			}
		}
	})
	c1, err := dialPSK(t, ts.addr, "pk,dk,2,300", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c1)
	ss := ts.only(t)
	ts.hibernateNow(t, ss)
	c2, err := dialPSK(t, ts.addr, "pk,dk,2,300", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CBC_SHA256, false)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c2)
	ts.stop() // waits for Serve, which waits for every session goroutine
	if downs.Load() != 2 || ts.Sessions() != 0 || value(t, ts.m.hibernated) != 0 {
		t.Fatalf("after shutdown: downs %d sessions %d hibernated %v", downs.Load(), ts.Sessions(), value(t, ts.m.hibernated))
	}
}

// TestSnapshotMirror: serializedState re-encodes pion's snapshot byte for
// byte, and the compact snapshot restores the same state: a pion upgrade
// that changes its snapshot fails here.
func TestSnapshotMirror(t *testing.T) {
	ts := start(t, nil)
	c, err := dialPSK(t, ts.addr, "pk,dk,2,300", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, true)
	if err != nil {
		t.Fatal(err)
	}
	post(t, c)
	ss := ts.only(t)
	ss.mu.RLock()
	conn := ss.conn
	ss.mu.RUnlock()
	st, ok := conn.ConnectionState()
	if !ok {
		t.Fatal("no state")
	}
	st.IdentityHint = nil // not kept: the session holds the parsed identity
	orig, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var m serializedState
	if err := gob.NewDecoder(bytes.NewReader(orig)).Decode(&m); err != nil {
		t.Fatal(err)
	}
	var again bytes.Buffer
	if err := gob.NewEncoder(&again).Encode(&m); err != nil {
		t.Fatal(err)
	}
	// Gob type ids are per process (pion's type was registered first), so
	// the streams differ in those bytes; the type descriptions must name
	// the same fields in the same order, and the values take the same
	// room: a field added, removed or retyped on either side fails here.
	if a, b := gobNames(orig), gobNames(again.Bytes()); !slices.Equal(a, b) || len(a) < 17 {
		t.Fatalf("pion's snapshot fields changed:\npion %q\nours %q", a, b)
	}
	if d := len(orig) - again.Len(); d < -4 || d > 4 {
		t.Fatalf("mirror re-encodes to %d bytes, pion's snapshot is %d", again.Len(), len(orig))
	}
	sn, err := compact(&m)
	if err != nil {
		t.Fatal(err)
	}
	if got := sn.serialized(); fmt.Sprintf("%+v", *got) != fmt.Sprintf("%+v", m) {
		t.Fatalf("compact snapshot loses state:\n%+v\n%+v", *got, m)
	}
	if len(sn.localCID) != cidLen {
		t.Fatalf("local CID %x", sn.localCID)
	}
}

// gobNames returns the runs of 4 or more letters in a gob stream: the
// names in its type descriptions.
func gobNames(b []byte) []string {
	return regexp.MustCompile(`[A-Za-z]{4,}`).FindAllString(string(b), -1)
}

func TestAcceptAsleep(t *testing.T) {
	rec := func(typ byte, epoch uint16, seq uint64) []byte {
		b := make([]byte, recordHeaderLen+8)
		b[0], b[1], b[2] = typ, 0xfe, 0xfd
		binary.BigEndian.PutUint16(b[3:5], epoch)
		binary.BigEndian.PutUint16(b[5:7], uint16(seq>>32))
		binary.BigEndian.PutUint32(b[7:11], uint32(seq))
		return b
	}
	for _, c := range []struct {
		b    []byte
		want bool
	}{
		{rec(contentApplicationData, 1, 10), true},
		{rec(contentCID, 1, 1<<40), true},
		{rec(contentApplicationData, 1, 9), false}, // below the cutoff: replay
		{rec(contentApplicationData, 0, 10), false},
		{rec(contentApplicationData, 2, 10), false},
		{rec(20, 1, 10), false}, // change_cipher_spec
		{rec(contentApplicationData, 1, 10)[:12], false},
	} {
		if got := acceptAsleep(c.b, 1, 10); got != c.want {
			t.Errorf("%x: %v, want %v", c.b, got, c.want)
		}
	}
}
