package dtlstest

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// Client is a PSK device on pion's DTLS client (TLS_PSK_WITH_AES_128_CCM_8)
// talking through a Relay. The datagrams it receives arrive on In (dropped
// when In is full); Closed is closed once its session ends (close_notify
// or an error).
type Client struct {
	Conn   *dtls.Conn
	In     chan []byte
	Closed chan struct{}
}

// DialPSK completes a handshake with identity and key through r within
// timeout; cid asks for a connection ID in the server's records. The
// client is closed when the test ends.
func DialPSK(t testing.TB, r *Relay, identity string, key []byte, cid bool, in int, timeout time.Duration) (*Client, error) {
	t.Helper()
	opts := []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
	if cid {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(pc, r.Addr(), opts...)
	if err != nil {
		pc.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		c.Close()
		pc.Close()
		return nil, err
	}
	cl := &Client{Conn: c, In: make(chan []byte, in), Closed: make(chan struct{})}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(cl.Closed)
		for {
			buf := make([]byte, 1500)
			n, err := c.Read(buf)
			if err != nil {
				return
			}
			select {
			case cl.In <- buf[:n]:
			default:
			}
		}
	})
	t.Cleanup(func() { c.Close(); pc.Close(); wg.Wait() })
	return cl, nil
}
