package natskv

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/dtlstest"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/coapgate/coapgate/internal/natstest"
	"github.com/coapgate/coapgate/internal/secretbox"
)

// bucket opens a fresh bucket, deleted at the end of the test.
func bucket(t *testing.T, nc *nats.Conn) (*Store, string) {
	t.Helper()
	name := fmt.Sprintf("coapgate_test_dtls_%d", time.Now().UnixNano())
	s, err := Open(context.Background(), nc, name, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		js, _ := jetstream.New(nc)
		_ = js.DeleteKeyValue(context.Background(), name)
	})
	return s, name
}

// TestStoreConformance: the session store's compare-and-set semantics, as
// every SessionStore has them.
func TestStoreConformance(t *testing.T) {
	s, _ := bucket(t, natstest.Connect(t))
	dtlstest.SessionStoreConformance(t, s)
}

// node is one native DTLS server with replication on a shared bucket.
type node struct {
	name string
	srv  *native.Server
	addr *net.UDPAddr
	reg  *prometheus.Registry
}

const testIdentity = "pk1,dk1,2,3600"

var testKey = dtlspsk.Key("secret")

func startNode(t *testing.T, name string, st native.SessionStore, keys *secretbox.Keyring, byAddr bool) *node {
	t.Helper()
	return startNodeReady(t, name, st, keys, byAddr, nil, 8)
}

func startNodeReady(t *testing.T, name string, st native.SessionStore, keys *secretbox.Keyring, byAddr bool, ready func() bool, reserve uint64, psk ...[]byte) *node {
	t.Helper()
	key := testKey
	if len(psk) > 0 {
		key = psk[0] // the device's key as this node's registry has it
	}
	return startNodeLookup(t, name, st, keys, byAddr, ready, reserve, func() []byte { return key })
}

// startNodeLookup starts a node whose registry gives the test identity the
// key current returns at each lookup.
func startNodeLookup(t *testing.T, name string, st native.SessionStore, keys *secretbox.Keyring, byAddr bool, ready func() bool, reserve uint64, current func() []byte) *node {
	t.Helper()
	reg := prometheus.NewRegistry()
	coap := coapx.NewServer(coapx.Config{Transport: "coap-dtls"}, coapx.HandlerFunc(func(ctx context.Context, req *coapx.Request) *coapx.Response {
		return &coapx.Response{Code: codes.Changed, Payload: []byte(name)}
	}), nil, nil)
	srv, err := native.New(native.Config{
		LookupPSK: func(_ context.Context, id dtlspsk.Identity) ([]byte, error) {
			if id.String() != testIdentity {
				return nil, &dtlspsk.Error{Reason: dtlspsk.ReasonUnknownDevice, Msg: "unknown"}
			}
			return current(), nil
		},
		ConnectionID: true,
		Registerer:   reg,
		Replication:  &native.Replication{Store: st, Keys: keys, Node: name, Reserve: reserve, ByAddress: byAddr, Lookups: 4, Ready: ready},
	}, coap)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = coap.Run(ctx) })
	wg.Go(func() { _ = srv.Serve(ctx, conn) })
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &node{name: name, srv: srv, addr: conn.LocalAddr().(*net.UDPAddr), reg: reg}
}

// event reads a node's replication counter.
func (n *node) event(ev string) int {
	mfs, _ := n.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "coapgate_dtls_replication_total" && m.GetLabel()[0].GetValue() == ev {
				return int(m.GetCounter().GetValue())
			}
			if ev == "handshakes" && mf.GetName() == "coapgate_dtls_handshakes_total" {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

func newKeys(t *testing.T) *secretbox.Keyring {
	k := make([]byte, secretbox.KeySize)
	_, _ = rand.Read(k)
	kr, err := secretbox.New(k)
	if err != nil {
		t.Fatal(err)
	}
	return kr
}

// client is a pion DTLS client whose datagrams a reader goroutine
// delivers (the test waits on them with its own timer).
type client struct {
	c  *dtls.Conn
	in chan []byte
}

// exchange sends a CON request and returns the answering node's name.
func exchange(t *testing.T, c *client, mid uint16) string {
	t.Helper()
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(mid), Token: []byte{byte(mid >> 8), byte(mid)}}
	b := make([]byte, 256)
	n, err := coder.DefaultCoder.Encode(m, b)
	if err != nil {
		t.Fatal(err)
	}
	for try := range 12 { // CoAP retransmission, with a generous bound
		if _, err := c.c.Write(b[:n]); err != nil {
			t.Fatal(err)
		}
		timer := time.NewTimer(time.Duration(try+1) * 500 * time.Millisecond)
	wait:
		for {
			select {
			case <-timer.C:
				break wait
			case d := <-c.in:
				var r message.Message
				if _, err := coder.DefaultCoder.Decode(d, &r); err != nil || r.MessageID != int32(mid) {
					continue
				}
				timer.Stop()
				if r.Code != codes.Changed {
					t.Fatalf("request %d: %v", mid, r.Code)
				}
				return string(r.Payload)
			}
		}
	}
	t.Fatalf("request %d: no answer", mid)
	return ""
}

func dial(t *testing.T, r *dtlstest.Relay, cid bool) *client {
	t.Helper()
	c, err := dtlstest.DialPSK(t, r, testIdentity, testKey, cid, 64, 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &client{c: c.Conn, in: c.In}
}

// waitFor polls cond with a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// logEvents logs the nodes' replication counters.
func logEvents(t *testing.T, nodes ...*node) {
	for _, n := range nodes {
		var evs []string
		for _, ev := range []string{"exported", "extended", "imported", "taken_over", "lookups", "lookup_misses", "lookup_refused", "lookup_dropped", "cas_conflicts", "failures", "deleted"} {
			evs = append(evs, fmt.Sprintf("%s=%d", ev, n.event(ev)))
		}
		t.Logf("node %s: %s", n.name, strings.Join(evs, " "))
	}
}

// TestTakeoverBetweenNodes: a session moves between two nodes back and
// forth, by connection ID after NAT rebinding and by address behind an
// address-preserving balancer, without a new handshake; the nodes' write
// reservations (8 records here) never let them send an (epoch, sequence
// number) twice; the node that lost the session drops it.
func TestTakeoverBetweenNodes(t *testing.T) {
	for _, cid := range []bool{true, false} {
		t.Run(map[bool]string{true: "CID", false: "address"}[cid], func(t *testing.T) {
			nc := natstest.Connect(t)
			st, _ := bucket(t, nc)
			keys := newKeys(t)
			a := startNode(t, "a", st, keys, !cid)
			b := startNode(t, "b", st, keys, !cid)
			r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
			c := dial(t, r, cid)
			mid := uint16(1)
			nodes := []*node{a, b}
			t.Cleanup(func() {
				if t.Failed() {
					logEvents(t, nodes...)
				}
			})
			for round := range 4 {
				at := nodes[round%2]
				if round > 0 {
					if cid {
						r.Rebind(net.IPv4(127, 0, 0, 1)) // a new source port: another node
					}
					r.Retarget(at.addr)
				}
				for range 12 { // more than one reservation
					if got := exchange(t, c, mid); got != at.name {
						t.Fatalf("round %d: answered by %s, want %s", round, got, at.name)
					}
					mid++
				}
				if round > 0 {
					other := nodes[(round+1)%2]
					waitFor(t, "the old owner to drop the session", func() bool {
						return other.event("taken_over") >= (round+1)/2
					})
				}
			}
			records, hellos := r.Check(t, "client")
			if hellos != 2 { // ClientHello twice (cookie exchange), then none
				t.Fatalf("%d handshake records from the client", hellos)
			}
			if a.event("handshakes") != 1 || b.event("handshakes") != 0 {
				t.Fatalf("handshakes: a %d, b %d", a.event("handshakes"), b.event("handshakes"))
			}
			if a.event("imported") != 1 || b.event("imported") != 2 || a.event("extended") == 0 || b.event("extended") == 0 {
				t.Fatalf("imported a %d b %d, extended a %d b %d", a.event("imported"), b.event("imported"), a.event("extended"), b.event("extended"))
			}
			t.Logf("%d records from the nodes, none repeated; a: %d extensions, b: %d", records, a.event("extended"), b.event("extended"))
		})
	}
}

// gated is a store whose lookups wait while it is closed.
type gated struct {
	*Store
	mu     sync.Mutex
	closed chan struct{} // nil: open
}

func (g *gated) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	g.mu.Lock()
	c := g.closed
	g.mu.Unlock()
	if c != nil {
		select {
		case <-c:
		case <-ctx.Done():
		}
	}
	return g.Store.Get(ctx, key)
}

func (g *gated) close() { g.mu.Lock(); g.closed = make(chan struct{}); g.mu.Unlock() }
func (g *gated) open()  { g.mu.Lock(); close(g.closed); g.closed = nil; g.mu.Unlock() }

// sessions reads a node's established sessions.
func (n *node) sessions() int {
	mfs, _ := n.reg.Gather()
	for _, mf := range mfs {
		if mf.GetName() == "coapgate_dtls_sessions" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	return -1
}

// unexpected reads a node's count of records without a session.
func (n *node) unexpected() int {
	mfs, _ := n.reg.Gather()
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			if mf.GetName() == "coapgate_dtls_records_rejected_total" && m.GetLabel()[0].GetValue() == "unexpected" {
				return int(m.GetCounter().GetValue())
			}
		}
	}
	return 0
}

// TestLookupsBounded: records with unknown or spoofed connection IDs cost
// a bounded number of lookups (4 here), every other one is dropped and
// counted; a spoofed record of a stored session (bad MAC) does not move it.
func TestLookupsBounded(t *testing.T) {
	nc := natstest.Connect(t)
	st, _ := bucket(t, nc)
	keys := newKeys(t)
	g := &gated{Store: st}
	a := startNode(t, "a", st, keys, false)
	b := startNode(t, "b", g, keys, false)
	r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c := dial(t, r, true)
	if got := exchange(t, c, 1); got != "a" {
		t.Fatalf("answered by %s", got)
	}
	waitFor(t, "the session stored", func() bool { return a.event("exported") == 1 })
	keysList := storedKeys(t, st)
	if len(keysList) != 1 || !strings.HasPrefix(keysList[0], "c.") {
		t.Fatalf("stored keys %v", keysList)
	}
	cid, err := hex.DecodeString(keysList[0][2:])
	if err != nil {
		t.Fatal(err)
	}
	spoof, err := net.DialUDP("udp", nil, b.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer spoof.Close()
	rec := func(cid []byte, seq uint64) []byte {
		d := []byte{25, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(d[7:], uint32(seq))
		d = append(d, cid...)
		body := make([]byte, 40)
		_, _ = rand.Read(body)
		d = binary.BigEndian.AppendUint16(d, uint16(len(body)))
		return append(d, body...)
	}
	// A record with the session's CID and a forged MAC.
	_, _ = spoof.Write(rec(cid, 100))
	waitFor(t, "the forged record refused", func() bool { return b.event("lookup_refused") == 1 })
	// A burst of unknown CIDs while the store does not answer.
	g.close()
	l0, d0, u0 := b.event("lookups"), b.event("lookup_dropped"), b.unexpected()
	const burst = 100
	for i := range burst {
		id := make([]byte, 8)
		_, _ = rand.Read(id)
		_, _ = spoof.Write(rec(id, uint64(i)))
	}
	waitFor(t, "the burst accounted for", func() bool {
		l, d, u := b.event("lookups")-l0, b.event("lookup_dropped")-d0, b.unexpected()-u0
		return l == 4 && l+d == u && u > 50
	})
	g.open()
	waitFor(t, "the lookups to end", func() bool { return b.event("lookup_misses") == 4 })
	// The session did not move: a still answers.
	if got := exchange(t, c, 2); got != "a" {
		t.Fatalf("answered by %s", got)
	}
	if b.event("imported") != 0 || a.event("taken_over") != 0 || b.sessions() != 0 {
		t.Fatal("a forged record moved the session")
	}
	t.Logf("burst of %d: %d received, 4 lookups made, %d dropped", burst, b.unexpected()-u0, b.event("lookup_dropped")-d0)
}

func storedKeys(t *testing.T, s *Store) []string {
	t.Helper()
	ks, err := s.kv.Keys(context.Background())
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return ks
}

// TestSealedRecord: the stored value opens only with the cluster's keys
// and never shows the session's keys in the clear.
func TestSealedRecord(t *testing.T) {
	nc := natstest.Connect(t)
	st, _ := bucket(t, nc)
	keys := newKeys(t)
	a := startNode(t, "a", st, keys, false)
	r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c := dial(t, r, true)
	exchange(t, c, 1)
	waitFor(t, "the session stored", func() bool { return a.event("exported") == 1 })
	k := storedKeys(t, st)[0]
	val, _, err := st.Get(context.Background(), k)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(val), secretbox.Prefix) || strings.Contains(string(val), testIdentity) {
		t.Fatalf("stored value not sealed: %.40q", val)
	}
	if _, err := keys.Open(string(val), "dtls.session:"+k); err != nil {
		t.Fatalf("open with the cluster key: %v", err)
	}
	if _, err := newKeys(t).Open(string(val), "dtls.session:"+k); err == nil {
		t.Fatal("opened with another key")
	}
	if _, err := keys.Open(string(val), "dtls.session:c.00"); err == nil {
		t.Fatal("opened under another key name")
	}
}

// TestNATSDown: with the NATS server gone, a replicated session keeps
// working within its reservation, and new handshakes still work (their
// sessions stay local, counted). A private NATS server, stopped by the
// test.
func TestNATSDown(t *testing.T) {
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("nats-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port), "-js", "-sd", t.TempDir())
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	stop := func() {
		if !stopped {
			stopped = true
			_ = srv.Process.Kill()
			_ = srv.Wait()
		}
	}
	t.Cleanup(stop)
	var nc *nats.Conn
	waitFor(t, "the private NATS server", func() bool {
		nc, err = nats.Connect(fmt.Sprintf("nats://127.0.0.1:%d", port), nats.MaxReconnects(-1))
		return err == nil
	})
	t.Cleanup(nc.Close)
	st, err := Open(context.Background(), nc, "dtls", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	a := startNodeReady(t, "a", st, newKeys(t), false, func() bool { return nc.Status() == nats.CONNECTED }, 64)
	r1 := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c1 := dial(t, r1, true)
	exchange(t, c1, 1)
	waitFor(t, "the session stored", func() bool { return a.event("exported") == 1 })
	stop()
	waitFor(t, "the node to see NATS gone", func() bool { return nc.Status() != nats.CONNECTED })
	// The replicated session continues within its reservation (64, of
	// which a few are used).
	for mid := uint16(2); mid < 12; mid++ {
		if got := exchange(t, c1, mid); got != "a" {
			t.Fatalf("answered by %s", got)
		}
	}
	// A new device handshakes and publishes; its session is local.
	r2 := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c2 := dial(t, r2, true)
	if got := exchange(t, c2, 1); got != "a" {
		t.Fatalf("answered by %s", got)
	}
	if a.event("local_only") != 1 || a.event("handshakes") != 2 {
		t.Fatalf("local_only %d, handshakes %d", a.event("local_only"), a.event("handshakes"))
	}
}

// moveTo sends the client's traffic to node to from a new source port
// (NAT rebinding) and sends one CON request there, without waiting for an
// answer: the record that makes to look the session up.
func moveTo(t *testing.T, r *dtlstest.Relay, c *client, to *node) {
	t.Helper()
	r.Rebind(net.IPv4(127, 0, 0, 1))
	r.Retarget(to.addr)
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 2, Token: []byte{2}}
	buf := make([]byte, 64)
	n, _ := coder.DefaultCoder.Encode(m, buf)
	if _, err := c.c.Write(buf[:n]); err != nil {
		t.Fatal(err)
	}
}

// TestChangedKeyNotTakenOver: a node whose registry has another key for
// the device (a secret rotated while the owner was away) does not take
// the session over, even with a record that authenticates, and deletes
// its record.
func TestChangedKeyNotTakenOver(t *testing.T) {
	nc := natstest.Connect(t)
	st, _ := bucket(t, nc)
	keys := newKeys(t)
	a := startNode(t, "a", st, keys, false)
	b := startNodeReady(t, "b", st, keys, false, nil, 8, dtlspsk.Key("rotated"))
	r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c := dial(t, r, true)
	exchange(t, c, 1)
	waitFor(t, "the session stored", func() bool { return a.event("exported") == 1 })
	moveTo(t, r, c, b)
	waitFor(t, "the takeover refused and the record deleted", func() bool {
		return b.event("stale") == 1 && b.event("deleted") == 1
	})
	if b.event("imported") != 0 || b.sessions() != 0 || len(storedKeys(t, st)) != 0 {
		t.Fatalf("imported %d, sessions %d, keys %v", b.event("imported"), b.sessions(), storedKeys(t, st))
	}
}

// TestRecordCarriesTheSessionsKey: the stored record names the key the
// session was made with, not the registry's key when the record is
// written. Here the device's secret changes right after the owner's
// handshake lookup: the record must still carry the old key, so a node
// that knows only the new secret refuses the takeover.
func TestRecordCarriesTheSessionsKey(t *testing.T) {
	nc := natstest.Connect(t)
	st, _ := bucket(t, nc)
	keys := newKeys(t)
	rotated := dtlspsk.Key("rotated")
	var lookups atomic.Int32
	a := startNodeLookup(t, "a", st, keys, false, nil, 8, func() []byte {
		if lookups.Add(1) == 1 {
			return testKey // the handshake's lookup
		}
		return rotated // every later one: the secret was rotated meanwhile
	})
	b := startNodeReady(t, "b", st, keys, false, nil, 8, rotated)
	r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), a.addr)
	c := dial(t, r, true)
	exchange(t, c, 1)
	waitFor(t, "the session stored", func() bool { return a.event("exported") == 1 })
	moveTo(t, r, c, b)
	waitFor(t, "the takeover refused", func() bool { return b.event("stale") == 1 || b.event("imported") == 1 })
	if b.event("imported") != 0 || b.sessions() != 0 {
		t.Fatalf("a session keyed with the old secret was taken over by a node with the new one (imported %d, sessions %d)", b.event("imported"), b.sessions())
	}
}
