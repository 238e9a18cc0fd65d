// Package dtlstest holds helpers for tests of DTLS servers across nodes.
package dtlstest

import (
	"encoding/binary"
	"net"
	"sync"
	"testing"
)

// Relay stands between a DTLS client and the servers, as the device's NAT
// or a balancer would: it forwards the client's datagrams to a target
// server from a socket of its own, which Rebind replaces (a new source
// address and port: NAT rebinding), and Retarget sends them to another
// server (a re-hash). It counts the client's ClientHellos and notes every
// epoch-1 sequence number the servers send, to find any sent twice.
type Relay struct {
	t     testing.TB
	front *net.UDPConn

	mu     sync.Mutex
	client *net.UDPAddr
	back   *net.UDPConn
	target *net.UDPAddr
	seqs   map[uint64]int // epoch-1 sequence numbers from the servers
	hellos int            // ClientHellos from the client
	wg     sync.WaitGroup
}

// NewRelay starts a relay whose client side listens on 127.0.0.1 and
// whose server side sends from src (any port) to target. It stops when
// the test ends.
func NewRelay(t testing.TB, src net.IP, target *net.UDPAddr) *Relay {
	t.Helper()
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	r := &Relay{t: t, front: front, target: target, seqs: map[uint64]int{}}
	r.Rebind(src)
	r.wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			if n > 13 && buf[0] == 22 && buf[3] == 0 && buf[4] == 0 && buf[13] == 1 {
				r.hellos++
			}
			back, to := r.back, r.target
			r.mu.Unlock()
			_, _ = back.WriteToUDP(buf[:n], to)
		}
	})
	t.Cleanup(func() {
		front.Close()
		r.mu.Lock()
		r.back.Close()
		r.mu.Unlock()
		r.wg.Wait()
	})
	return r
}

// Addr is where the client sends.
func (r *Relay) Addr() net.Addr { return r.front.LocalAddr() }

// Rebind moves the relay's traffic to a new socket on src.
func (r *Relay) Rebind(src net.IP) {
	back, err := net.ListenUDP("udp", &net.UDPAddr{IP: src})
	if err != nil {
		r.t.Fatal(err)
	}
	r.mu.Lock()
	old := r.back
	r.back = back
	r.mu.Unlock()
	if old != nil {
		old.Close() // its reader ends
	}
	r.wg.Go(func() {
		buf := make([]byte, 65535)
		for {
			n, _, err := back.ReadFromUDP(buf)
			if err != nil {
				return
			}
			r.note(buf[:n])
			r.mu.Lock()
			c := r.client
			r.mu.Unlock()
			if c != nil {
				_, _ = r.front.WriteToUDP(buf[:n], c)
			}
		}
	})
}

// Retarget sends the client's next datagrams to another server.
func (r *Relay) Retarget(to *net.UDPAddr) {
	r.mu.Lock()
	r.target = to
	r.mu.Unlock()
}

// note records the sequence numbers of the servers' epoch-1 records (they
// carry no connection ID towards the client: it asked for none).
func (r *Relay) note(d []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(d) >= 13 {
		epoch := binary.BigEndian.Uint16(d[3:5])
		seq := uint64(binary.BigEndian.Uint16(d[5:7]))<<32 | uint64(binary.BigEndian.Uint32(d[7:11]))
		n := int(binary.BigEndian.Uint16(d[11:13]))
		if epoch == 1 {
			r.seqs[seq]++
		}
		if 13+n > len(d) {
			return
		}
		d = d[13+n:]
	}
}

// Check reports an error for every epoch-1 sequence number the servers
// sent more than once, and returns the number of distinct records seen and
// of the client's ClientHellos.
func (r *Relay) Check(t testing.TB, name string) (records, hellos int) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	for seq, n := range r.seqs {
		if n > 1 {
			t.Errorf("%s: epoch 1 sequence number %d sent %d times", name, seq, n)
		}
	}
	return len(r.seqs), r.hellos
}
