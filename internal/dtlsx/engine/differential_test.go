package engine

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// The differential test drives pion's DTLS client through a relay that
// re-splits what each side sends at random boundaries: epoch-0 handshake
// messages are cut into fragments at random offsets (several fragments
// may share a record), records are reordered, duplicated and packed into
// datagrams anew (coalescing records of different datagrams, within the
// MTU), whole flights are duplicated. Epoch-1 records pass unchanged, since
// they are authenticated; epoch-0 records are renumbered by the relay, so
// that every record it sends in a direction has a sequence number of its
// own, as a sender that fragmented that way would give it. The server is
// the engine, or, for comparison, pion's server behind the same relay.
// Every handshake must complete and application data must come back
// byte for byte. The relay never drops a datagram, so nothing depends on a
// retransmission timer; the seeds make each run the same.

// relayMTU bounds the datagrams the relay sends.
const relayMTU = 1200

// diffFlightInterval is pion's retransmission timeout. Nothing is lost, so
// no handshake needs it unless a peer ignores what the relay made of a
// flight. Pion's client does, at times, with a server's final flight whose
// Finished the relay put before the ChangeCipherSpec (it drops the
// epoch-1 record it cannot decrypt yet) and then repeats its own flight;
// pion's server needs such a repeat more often than the engine. Nothing
// is asserted on it: the interval only bounds how long such a case takes.
const diffFlightInterval = 100 * time.Millisecond

// mangler re-splits the datagrams of one direction.
type mangler struct {
	mu     sync.Mutex
	rng    *rand.Rand
	cidLen int    // length of the CIDs in this direction's tls12_cid records
	seq0   uint64 // next epoch-0 record sequence number
	n      mangleStats
}

type mangleStats struct {
	fragments, coalesced, reordered, duplicated, flightsDuplicated int
}

func newMangler(seed uint64, dir uint64, cidLen int) *mangler {
	return &mangler{rng: rand.New(rand.NewPCG(seed, dir)), cidLen: cidLen}
}

// mangle returns the datagrams to deliver for the datagrams of one flight
// (the engine's output for one input) or of one write (pion's).
func (m *mangler) mangle(t testing.TB, in [][]byte) [][]byte {
	m.mu.Lock()
	defer m.mu.Unlock()
	var recs [][]byte
	for _, d := range in {
		for len(d) > 0 {
			r, rest, err := splitRecord(d, m.cidLen)
			if err != nil {
				t.Errorf("relay: malformed record from a peer: %v", err)
				return nil
			}
			d = rest
			switch {
			case r.epoch != 0:
				recs = append(recs, bytes.Clone(r.raw))
			case r.typ == ctHandshake:
				recs = append(recs, m.refragment(t, r.body)...)
			default:
				recs = append(recs, m.record(r.typ, r.body))
			}
		}
	}
	// Reorder: swap random pairs.
	if len(recs) > 1 {
		for range m.rng.IntN(len(recs)) {
			i, j := m.rng.IntN(len(recs)), m.rng.IntN(len(recs))
			if i != j {
				recs[i], recs[j] = recs[j], recs[i]
				m.n.reordered++
			}
		}
	}
	// Duplicate single records (a duplicate keeps its sequence number: it
	// is the network's copy, not a retransmission).
	for i := 0; i < len(recs); i++ {
		if m.rng.IntN(8) == 0 {
			recs = append(recs[:i+1], append([][]byte{recs[i]}, recs[i+1:]...)...)
			m.n.duplicated++
			i++
		}
	}
	// Pack into datagrams at random boundaries within the MTU.
	var out [][]byte
	var cur []byte
	for _, r := range recs {
		if len(cur) > 0 && (len(cur)+len(r) > relayMTU || m.rng.IntN(3) == 0) {
			out = append(out, cur)
			cur = nil
		}
		if len(cur) > 0 {
			m.n.coalesced++
		}
		cur = append(cur, r...)
	}
	if len(cur) > 0 {
		out = append(out, cur)
	}
	if len(out) > 0 && m.rng.IntN(6) == 0 {
		out = append(out, out...)
		m.n.flightsDuplicated++
	}
	return out
}

// record returns an epoch-0 record with the relay's next sequence number.
func (m *mangler) record(typ byte, body []byte) []byte {
	b := make([]byte, recordHeaderLen+len(body))
	putRecordHeader(b, typ, 0, m.seq0, len(body))
	m.seq0++
	copy(b[recordHeaderLen:], body)
	return b
}

// refragment cuts the handshake fragments of an epoch-0 record at random
// offsets and packs the pieces, in order, into one or more records. A
// ClientHello stays whole: the cookie exchange is stateless, so a server
// may refuse a fragmented one (RFC 6347 §4.2.1; the engine does).
func (m *mangler) refragment(t testing.TB, body []byte) [][]byte {
	var pieces [][]byte
	for len(body) > 0 {
		f, rest, err := splitFragment(body)
		if err != nil {
			t.Errorf("relay: malformed handshake fragment: %v", err)
			return nil
		}
		body = rest
		if f.typ == htClientHello || len(f.data) < 2 {
			pieces = append(pieces, fragment(f, f.off, f.data))
			continue
		}
		cuts := m.rng.IntN(4) // 0..3 cuts at random offsets
		offs := []int{0}
		for range cuts {
			offs = append(offs, 1+m.rng.IntN(len(f.data)-1))
		}
		offs = append(offs, len(f.data))
		sortInts(offs)
		for i := 0; i+1 < len(offs); i++ {
			if offs[i] == offs[i+1] {
				continue
			}
			pieces = append(pieces, fragment(f, f.off+offs[i], f.data[offs[i]:offs[i+1]]))
			m.n.fragments++
		}
	}
	var recs [][]byte
	var cur []byte
	for _, p := range pieces {
		if len(cur) > 0 && m.rng.IntN(2) == 0 {
			recs = append(recs, m.record(ctHandshake, cur))
			cur = nil
		}
		cur = append(cur, p...)
	}
	if len(cur) > 0 {
		recs = append(recs, m.record(ctHandshake, cur))
	}
	return recs
}

// fragment encodes one handshake fragment of f's message.
func fragment(f hsFragment, off int, data []byte) []byte {
	b := make([]byte, handshakeHeaderLen+len(data))
	b[0] = f.typ
	put24(b[1:], f.length)
	binary.BigEndian.PutUint16(b[4:], f.seq)
	put24(b[6:], off)
	put24(b[9:], len(data))
	copy(b[handshakeHeaderLen:], data)
	return b
}

func sortInts(a []int) {
	for i := 1; i < len(a); i++ {
		for j := i; j > 0 && a[j] < a[j-1]; j-- {
			a[j], a[j-1] = a[j-1], a[j]
		}
	}
}

// memQueue is an unbounded datagram queue: a relay that pushes never
// waits for the reader.
type memQueue struct {
	mu     sync.Mutex
	q      [][]byte
	closed bool
	ready  chan struct{}
}

func newMemQueue() *memQueue { return &memQueue{ready: make(chan struct{}, 1)} }

func (q *memQueue) push(ds ...[]byte) {
	q.mu.Lock()
	q.q = append(q.q, ds...)
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

func (q *memQueue) close() {
	q.mu.Lock()
	q.closed = true
	q.mu.Unlock()
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// pop waits for a datagram until the queue is closed or deadline passes.
func (q *memQueue) pop(deadline time.Time) ([]byte, error) {
	for {
		q.mu.Lock()
		if len(q.q) > 0 {
			d := q.q[0]
			q.q = q.q[1:]
			more := len(q.q) > 0
			q.mu.Unlock()
			if more {
				select {
				case q.ready <- struct{}{}:
				default:
				}
			}
			return d, nil
		}
		closed := q.closed
		q.mu.Unlock()
		if closed {
			return nil, net.ErrClosed
		}
		if deadline.IsZero() {
			<-q.ready
			continue
		}
		tm := time.NewTimer(time.Until(deadline))
		select {
		case <-q.ready:
			tm.Stop()
		case <-tm.C:
			return nil, os.ErrDeadlineExceeded
		}
	}
}

// memConn is one end of the relay: a net.PacketConn whose reads come from
// in and whose writes go to send.
type memConn struct {
	local, remote net.Addr
	in            *memQueue
	send          func([]byte)
	mu            sync.Mutex
	deadline      time.Time
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	c.mu.Lock()
	dl := c.deadline
	c.mu.Unlock()
	d, err := c.in.pop(dl)
	if err != nil {
		return 0, nil, err
	}
	return copy(b, d), c.remote, nil
}

func (c *memConn) WriteTo(b []byte, _ net.Addr) (int, error) {
	c.send(bytes.Clone(b))
	return len(b), nil
}

func (c *memConn) Close() error                  { c.in.close(); return nil }
func (c *memConn) LocalAddr() net.Addr           { return c.local }
func (c *memConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }
func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	c.mu.Unlock()
	return nil
}
func (c *memConn) SetWriteDeadline(time.Time) error { return nil }

var (
	relayClientAddr = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 1), Port: 40000}
	relayServerAddr = &net.UDPAddr{IP: net.IPv4(192, 0, 2, 2), Port: 5684}
)

// diffCase is one seed's configuration.
type diffCase struct {
	seed  uint64
	suite dtls.CipherSuiteID
	cid   bool
	cert  bool
}

func diffCases(n int) []diffCase {
	suites := []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_CBC_SHA256,
		dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}
	var cs []diffCase
	for i := range n {
		s := suites[i%len(suites)]
		cs = append(cs, diffCase{seed: uint64(i + 1), suite: s, cid: i%3 == 0, cert: s == dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256})
	}
	return cs
}

func (c diffCase) String() string {
	return fmt.Sprintf("seed%d/%s/cid=%v", c.seed, SuiteName(uint16(c.suite)), c.cid)
}

// clientOptions configures pion's client for c.
func (c diffCase) clientOptions(pool *x509.CertPool) []dtls.ClientOption {
	opts := []dtls.ClientOption{dtls.WithCipherSuites(c.suite), dtls.WithMTU(relayMTU),
		dtls.WithFlightInterval(diffFlightInterval)}
	if c.cert {
		opts = append(opts, dtls.WithRootCAs(pool), dtls.WithServerName("localhost"))
	} else {
		opts = append(opts, dtls.WithPSK(func([]byte) ([]byte, error) { return testKey, nil }), dtls.WithPSKIdentityHint([]byte("dev1")))
	}
	if c.cid {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(4)))
	}
	return opts
}

// diffMessages returns the seed's application data: sizes from 1 byte to
// a full record of the relay's MTU.
func diffMessages(seed uint64) [][]byte {
	rng := rand.New(rand.NewPCG(seed, 99))
	var ms [][]byte
	for range 4 + rng.IntN(4) {
		b := make([]byte, 1+rng.IntN(1000))
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		ms = append(ms, b)
	}
	return ms
}

// clientRoundTrip runs the handshake of pion's client on conn and echoes
// msgs; it returns what came back.
func clientRoundTrip(conn net.PacketConn, opts []dtls.ClientOption, msgs [][]byte) ([][]byte, error) {
	c, err := dtls.ClientWithOptions(conn, relayServerAddr, opts...)
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		return nil, fmt.Errorf("handshake: %w", err)
	}
	var got [][]byte
	buf := make([]byte, 2048)
	for _, m := range msgs {
		if _, err := c.Write(m); err != nil {
			return got, fmt.Errorf("write: %w", err)
		}
		_ = c.SetReadDeadline(time.Now().Add(60 * time.Second))
		n, err := c.Read(buf)
		if err != nil {
			return got, fmt.Errorf("read: %w", err)
		}
		got = append(got, bytes.Clone(buf[:n]))
	}
	return got, nil
}

// runEngineDiff runs one case against the engine; the relay drives the
// engine synchronously and mangles its output per input, i.e. per flight.
func runEngineDiff(t *testing.T, c diffCase, pki testPKI) (mangleStats, mangleStats) {
	cidLen := 0
	if c.cid {
		cidLen = 4 // the client's CID, in the server's records
	}
	up, down := newMangler(c.seed, 1, cidSize), newMangler(c.seed, 2, cidLen)
	clientIn := newMemQueue()
	clientAP := netip.MustParseAddrPort(relayClientAddr.String())
	var (
		relayMu sync.Mutex // one client datagram through the engine at a time
		outbox  [][]byte
		e       *Engine
		up1     *Session // the session OnEstablished saw
	)
	cfg := Config{
		PSK:          testPSK,
		ConnectionID: true,
		Suites:       []uint16{uint16(c.suite)},
		MTU:          relayMTU,
		Send:         func(b []byte, _ netip.AddrPort) { outbox = append(outbox, bytes.Clone(b)) },
		OnData:       func(s *Session, b []byte) { _ = e.WriteSession(s, b) },
		OnEstablished: func(s *Session) {
			if up1 != nil {
				t.Errorf("a second session: %v", s.Addr())
			}
			up1 = s
		},
	}
	if c.cert {
		cfg.Certificates = []tls.Certificate{pki.ecCert}
	}
	e, err := New(cfg, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	conn := &memConn{local: relayClientAddr, remote: relayServerAddr, in: clientIn, send: func(b []byte) {
		relayMu.Lock()
		defer relayMu.Unlock()
		for _, d := range up.mangle(t, [][]byte{b}) {
			e.HandleDatagram(d, clientAP, time.Now())
			if len(outbox) > 0 {
				clientIn.push(down.mangle(t, outbox)...)
				outbox = nil
			}
		}
	}}
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	msgs := diffMessages(c.seed)
	got, err := clientRoundTrip(conn, c.clientOptions(pool), msgs)
	if err != nil {
		t.Fatalf("engine: %v", err)
	}
	checkEcho(t, "engine", msgs, got)
	relayMu.Lock()
	defer relayMu.Unlock()
	// The client closed the session (close_notify) on the way out.
	st := e.Stats()
	if st.HandshakesDone != 1 || st.HandshakesActive != 0 || len(st.HandshakeFailures) != 0 ||
		st.Sessions != 0 || st.SessionsClosed[ClosePeer] != 1 {
		t.Fatalf("engine stats %+v", st)
	}
	if st.RecordsBadMAC != 0 || st.RecordsMalformed != 0 {
		t.Fatalf("engine rejected records of a well-formed relay: %+v", st)
	}
	if s := up1; s == nil || s.CipherSuite() != uint16(c.suite) || (!c.cert && string(s.Identity()) != "dev1") {
		t.Fatalf("session %+v", s)
	}
	return up.n, down.n
}

// runPionDiff runs one case against pion's server behind the same relay
// (mangling per write: pion writes a flight in one or more writes).
func runPionDiff(t *testing.T, c diffCase, pki testPKI) {
	cidLen := 0
	if c.cid {
		cidLen = 4
	}
	up, down := newMangler(c.seed, 1, 4), newMangler(c.seed, 2, cidLen)
	clientIn, serverIn := newMemQueue(), newMemQueue()
	cconn := &memConn{local: relayClientAddr, remote: relayServerAddr, in: clientIn,
		send: func(b []byte) { serverIn.push(up.mangle(t, [][]byte{b})...) }}
	sconn := &memConn{local: relayServerAddr, remote: relayClientAddr, in: serverIn,
		send: func(b []byte) { clientIn.push(down.mangle(t, [][]byte{b})...) }}
	sopts := []dtls.ServerOption{dtls.WithCipherSuites(c.suite), dtls.WithMTU(relayMTU),
		dtls.WithFlightInterval(diffFlightInterval), dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(4))}
	if c.cert {
		sopts = append(sopts, dtls.WithCertificates(pki.ecCert))
	} else {
		sopts = append(sopts, dtls.WithPSK(func(id []byte) ([]byte, error) { return testPSK(id, netip.AddrPort{}) }))
	}
	srv, err := dtls.ServerWithOptions(sconn, relayClientAddr, sopts...)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // echo server, ends when the connection is closed
		defer wg.Done()
		buf := make([]byte, 2048)
		for {
			n, err := srv.Read(buf)
			if err != nil {
				return
			}
			if _, err := srv.Write(buf[:n]); err != nil {
				return
			}
		}
	}()
	defer func() { srv.Close(); sconn.Close(); wg.Wait() }()
	pool := x509.NewCertPool()
	pool.AddCert(pki.ca)
	msgs := diffMessages(c.seed)
	got, err := clientRoundTrip(cconn, c.clientOptions(pool), msgs)
	if err != nil {
		t.Fatalf("pion server: %v", err)
	}
	checkEcho(t, "pion server", msgs, got)
}

func checkEcho(t *testing.T, who string, sent, got [][]byte) {
	t.Helper()
	if len(got) != len(sent) {
		t.Fatalf("%s: %d of %d messages came back", who, len(got), len(sent))
	}
	for i := range sent {
		if !bytes.Equal(sent[i], got[i]) {
			t.Fatalf("%s: message %d came back different (%d bytes, sent %d)", who, i, len(got[i]), len(sent[i]))
		}
	}
}

// TestDifferentialPionClientRelay: over many seeds, pion's client
// completes the handshake with the engine through the re-splitting relay
// and application data comes back identically; pion's own server behind
// the same relay does the same (a check that the relay's output is valid
// DTLS, not only something the engine accepts).
func TestDifferentialPionClientRelay(t *testing.T) {
	n := 48
	if testing.Short() || raceEnabled {
		n = 8
	}
	pki := loadPKI(t)
	var up, down mangleStats
	for _, c := range diffCases(n) {
		t.Run(c.String(), func(t *testing.T) {
			u, d := runEngineDiff(t, c, pki)
			up.add(u)
			down.add(d)
			runPionDiff(t, c, pki)
		})
	}
	// The relay did what it is for, in both directions.
	for _, x := range []struct {
		dir string
		n   mangleStats
	}{{"client to server", up}, {"server to client", down}} {
		t.Logf("%s: %+v", x.dir, x.n)
		if x.n.fragments == 0 || x.n.coalesced == 0 || x.n.reordered == 0 || x.n.duplicated == 0 || x.n.flightsDuplicated == 0 {
			t.Errorf("%s: relay left a transformation unused: %+v", x.dir, x.n)
		}
	}
}

func (s *mangleStats) add(o mangleStats) {
	s.fragments += o.fragments
	s.coalesced += o.coalesced
	s.reordered += o.reordered
	s.duplicated += o.duplicated
	s.flightsDuplicated += o.flightsDuplicated
}
