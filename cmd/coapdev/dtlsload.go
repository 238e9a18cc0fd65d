package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/sdk"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// runDTLSLoad is the DTLS load generator behind docs/BENCHMARKS.md: full
// PSK handshakes per second, uplinks per second over established sessions,
// and idle sessions held open for a memory reading of the server.
func runDTLSLoad(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "dtls-load", "[flags]", `
Load a gateway's DTLS-PSK listener as one device (--product/--device/--secret,
or the COAPDEV_* variables), with --sessions sessions opened by --concurrency
workers. Prints one line per phase:

  handshakes: N in T (R/s) p50=… p99=…
  uplinks: N in T (R/s) p50=… p99=…      (with --uplinks > 0)
  holding N idle sessions for D          (with --hold > 0)

Every session makes a full handshake (cookie exchange included). With
--uplinks M each session then sends M confirmable publishes, one at a time.
With --hold the sessions stay open and idle for that long before they close.
Run the gateway with --dtls.handshake-rate 0: all sessions come from one
address.

With --park (for 100,000 sessions and more) each session gets its own
source address from --src-ips (ports 10000..59999 of each address), and
the client keeps only a snapshot of its DTLS state after the handshake (its
socket is closed silently), so the generator stays small. After --hold
every session is resumed from the same address and must answer one
confirmable publish:

  verified: N answered in T (R/s) failed=M`, `
  coapdev dtls-load --server 127.0.0.1:5684 --sessions 5000 --concurrency 64 --hold 60s
  coapdev dtls-load --server 127.0.0.1:5684 --sessions 100000 --park --src-ips 127.0.0.2-127.0.0.3 --hold 60s`)
	d := addDTLSDeviceFlags(fs)
	sessions := fs.Int("sessions", 1000, "sessions to open")
	conc := fs.Int("concurrency", 32, "handshakes (and publishing sessions) in parallel")
	uplinks := fs.Int("uplinks", 0, "confirmable publishes per session after the handshakes")
	hold := fs.Duration("hold", 0, "keep the sessions open and idle this long")
	closeEach := fs.Bool("close", false, "close each session right after its handshake (pure handshake rate)")
	park := fs.Bool("park", false, "keep only each session's DTLS state after its handshake; after --hold resume each and check it answers")
	srcIPs := fs.String("src-ips", "127.0.0.1", "with --park: local IPv4 source addresses, one or first-last (50,000 sessions each)")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	d.applyEnv(e.getenv)
	d.dtls = true
	if msg := d.resolve(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	if m := d.missing(); len(m) > 0 {
		return usageError(e, fs, "missing %v", m)
	}
	if *sessions < 1 || *conc < 1 {
		return usageError(e, fs, "--sessions and --concurrency must be >= 1")
	}
	if *park {
		return runDTLSPark(ctx, e, d, *sessions, *conc, *srcIPs, *hold)
	}
	p := sdk.DTLSPSK{ProductKey: d.product, DeviceName: d.device, Secret: d.secret, Lifetime: time.Duration(d.lifetime) * time.Second}
	clients := make([]*sdk.Client, *sessions)
	defer func() {
		for _, c := range clients {
			if c != nil {
				c.Close()
			}
		}
	}()
	var failed atomic.Int64
	lat := make([]time.Duration, *sessions)
	next := atomic.Int64{}
	start := time.Now()
	var wg sync.WaitGroup
	for range *conc {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= *sessions || ctx.Err() != nil {
					return
				}
				t0 := time.Now()
				hctx, cancel := context.WithTimeout(ctx, d.timeout)
				c, err := sdk.Dial(hctx, d.server, sdk.WithDTLSPSK(p))
				cancel()
				lat[i] = time.Since(t0)
				if err != nil {
					failed.Add(1)
					continue
				}
				if *closeEach {
					c.Close()
					continue
				}
				clients[i] = c
			}
		})
	}
	wg.Wait()
	el := time.Since(start)
	ok := int64(*sessions) - failed.Load()
	fmt.Fprintf(e.stdout, "handshakes: %d in %v (%.0f/s) %s failed=%d\n", ok, el.Round(time.Millisecond), float64(ok)/el.Seconds(), percentiles(lat), failed.Load())

	if *uplinks > 0 {
		topic := "/" + d.product + "/" + d.device + "/user/load"
		body := []byte(`{"id":"1","params":{"v":1234567890}}`)
		ulat := make([][]time.Duration, *sessions)
		var ufail atomic.Int64
		next.Store(0)
		start = time.Now()
		for range *conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= *sessions || ctx.Err() != nil {
						return
					}
					if clients[i] == nil {
						continue
					}
					for range *uplinks {
						t0 := time.Now()
						if _, err := clients[i].Publish(ctx, topic, body); err != nil {
							ufail.Add(1)
						}
						ulat[i] = append(ulat[i], time.Since(t0))
					}
				}
			})
		}
		wg.Wait()
		el = time.Since(start)
		all := slices.Concat(ulat...)
		n := int64(len(all)) - ufail.Load()
		fmt.Fprintf(e.stdout, "uplinks: %d in %v (%.0f/s) %s failed=%d\n", n, el.Round(time.Millisecond), float64(n)/el.Seconds(), percentiles(all), ufail.Load())
	}
	if *hold > 0 && !*closeEach {
		fmt.Fprintf(e.stdout, "holding %d idle sessions for %v\n", ok, *hold)
		select {
		case <-ctx.Done():
		case <-time.After(*hold):
		}
	}
	if failed.Load() > 0 {
		return exitError
	}
	return exitOK
}

func percentiles(d []time.Duration) string {
	if len(d) == 0 {
		return ""
	}
	s := slices.Clone(d)
	slices.Sort(s)
	q := func(f float64) time.Duration {
		return s[min(len(s)-1, int(f*float64(len(s))))].Round(10 * time.Microsecond)
	}
	return fmt.Sprintf("p50=%v p99=%v", q(0.50), q(0.99))
}

// portsPerIP is how many source ports --park uses on each --src-ips address.
const portsPerIP = 50000

// parkAddrs returns n distinct source addresses from spec ("a" or "a-b").
func parkAddrs(spec string, n int) ([]netip.AddrPort, error) {
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		last = first
	}
	a, err := netip.ParseAddr(first)
	if err != nil {
		return nil, fmt.Errorf("--src-ips %q: %w", spec, err)
	}
	b, err := netip.ParseAddr(last)
	if err != nil {
		return nil, fmt.Errorf("--src-ips %q: %w", spec, err)
	}
	out := make([]netip.AddrPort, 0, n)
	for ip := a; len(out) < n; ip = ip.Next() {
		if ip.Compare(b) > 0 || !ip.IsValid() {
			return nil, fmt.Errorf("--src-ips %q: %d addresses give %d sessions, want %d", spec, len(out)/portsPerIP, len(out), n)
		}
		for port := 10000; port < 10000+portsPerIP && len(out) < n; port++ {
			out = append(out, netip.AddrPortFrom(ip, uint16(port)))
		}
	}
	return out, nil
}

// sealedConn is a client socket whose writes can be switched off, so that
// closing a pion Conn after its state was exported sends no close_notify
// (which would consume a sequence number the resumed Conn reuses, and end
// the session on the server).
type sealedConn struct {
	*net.UDPConn
	sealed atomic.Bool
}

func (c *sealedConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.sealed.Load() {
		return len(b), nil
	}
	return c.UDPConn.WriteTo(b, addr)
}

// runDTLSPark is dtls-load --park: handshakes from distinct source
// addresses, client state parked as pion snapshots, hold, then every
// session resumed and checked with one confirmable publish.
func runDTLSPark(ctx context.Context, e *env, d *deviceFlags, n, conc int, srcIPs string, hold time.Duration) int {
	addrs, err := parkAddrs(srcIPs, n)
	if err != nil {
		fmt.Fprintln(e.stderr, err)
		return exitUsage
	}
	raddr, err := net.ResolveUDPAddr("udp", d.server)
	if err != nil {
		fmt.Fprintf(e.stderr, "--server %q: %v\n", d.server, err)
		return exitUsage
	}
	key := dtlspsk.Key(d.secret)
	id := dtlspsk.Identity{ProductKey: d.product, DeviceKey: d.device, SecureMode: dtlspsk.ModeDevice, Lifetime: time.Duration(d.lifetime) * time.Second}
	opts := []dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithPSKIdentityHint([]byte(id.String())),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	ropts := []dtls.Option{
		dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
	}
	states := make([][]byte, n)
	lat := make([]time.Duration, n)
	var failed atomic.Int64
	var (
		whyMu sync.Mutex
		why   = map[string]int{} // failures by kind, for the report
	)
	each := func(f func(i int) error) {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range conc {
			wg.Go(func() {
				for {
					i := int(next.Add(1) - 1)
					if i >= n || ctx.Err() != nil {
						return
					}
					if err := f(i); err != nil {
						if failed.Add(1) <= 5 {
							fmt.Fprintf(e.stderr, "session %d (%v): %v\n", i, addrs[i], err)
						}
						whyMu.Lock()
						why[failureKind(err)]++
						whyMu.Unlock()
					}
				}
			})
		}
		wg.Wait()
	}
	bind := func(i int) (*sealedConn, error) {
		pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(addrs[i]))
		if err != nil {
			return nil, err
		}
		return &sealedConn{UDPConn: pc}, nil
	}
	start := time.Now()
	each(func(i int) error {
		t0 := time.Now()
		pc, err := bind(i)
		if err != nil {
			return err
		}
		defer pc.Close()
		c, err := dtls.ClientWithOptions(pc, raddr, opts...)
		if err != nil {
			return err
		}
		hctx, cancel := context.WithTimeout(ctx, d.timeout)
		defer cancel()
		if err := c.HandshakeContext(hctx); err != nil {
			c.Close()
			return err
		}
		lat[i] = time.Since(t0)
		pc.sealed.Store(true)
		defer c.Close()
		st, ok := c.ConnectionState()
		if !ok {
			return errors.New("no connection state")
		}
		states[i], err = st.MarshalBinary()
		return err
	})
	el := time.Since(start)
	ok := int64(n) - failed.Load()
	fmt.Fprintf(e.stdout, "handshakes: %d in %v (%.0f/s) %s failed=%d\n", ok, el.Round(time.Millisecond), float64(ok)/el.Seconds(), percentiles(lat), failed.Load())
	if hold > 0 {
		fmt.Fprintf(e.stdout, "holding %d idle sessions for %v\n", ok, hold)
		select {
		case <-ctx.Done():
		case <-time.After(hold):
		}
	}
	hsFailed := failed.Swap(0)
	path := []string{"topic", d.product, d.device, "user", "load"}
	body := []byte(`{"id":"1","params":{"v":1234567890}}`)
	start = time.Now()
	each(func(i int) error {
		if states[i] == nil {
			return nil // its handshake failed
		}
		var st dtls.State
		if err := st.UnmarshalBinary(states[i]); err != nil {
			return err
		}
		pc, err := bind(i)
		if err != nil {
			return err
		}
		defer pc.Close()
		c, err := dtls.ResumeWithOptions(&st, pc, raddr, ropts...)
		if err != nil {
			return err
		}
		defer func() { pc.sealed.Store(true); c.Close() }()
		req := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(i & 0xffff), Token: []byte{byte(i >> 16), byte(i >> 8), byte(i)}, Payload: body}
		for _, seg := range path {
			req.Options = append(req.Options, message.Option{ID: message.URIPath, Value: []byte(seg)})
		}
		req.Options = append(req.Options, message.Option{ID: message.ContentFormat, Value: []byte{50}})
		b := make([]byte, 512)
		m, err := coder.DefaultCoder.Encode(req, b)
		if err != nil {
			return err
		}
		b = b[:m]
		buf := make([]byte, 2048)
		for try := range 3 { // CoAP retransmission (the server deduplicates)
			if _, err := c.Write(b); err != nil {
				return err
			}
			c.SetReadDeadline(time.Now().Add(d.timeout / 3))
			k, err := c.Read(buf)
			if err != nil {
				if try < 2 {
					continue
				}
				return fmt.Errorf("no answer: %w", err)
			}
			resp := message.Message{Options: make(message.Options, 0, 16)}
			if _, err := coder.DefaultCoder.Decode(buf[:k], &resp); err != nil {
				return err
			}
			if resp.Code < codes.Created || resp.Code > codes.Content {
				return fmt.Errorf("answered %v", resp.Code)
			}
			return nil
		}
		return nil
	})
	el = time.Since(start)
	vok := ok - failed.Load()
	fmt.Fprintf(e.stdout, "verified: %d answered in %v (%.0f/s) failed=%d\n", vok, el.Round(time.Millisecond), float64(vok)/el.Seconds(), failed.Load())
	if len(why) > 0 {
		kinds := make([]string, 0, len(why))
		for k, v := range why {
			kinds = append(kinds, fmt.Sprintf("%s=%d", k, v))
		}
		slices.Sort(kinds)
		fmt.Fprintf(e.stdout, "failures by kind (handshakes and checks): %s\n", strings.Join(kinds, " "))
	}
	if hsFailed > 0 || failed.Load() > 0 {
		return exitError
	}
	return exitOK
}

// failureKind classes a session's failure for the report: the generator's
// own source port taken by another process, no answer, or anything else.
func failureKind(err error) string {
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return "source_port_in_use"
	case strings.HasPrefix(err.Error(), "no answer"):
		return "no_answer"
	case strings.HasPrefix(err.Error(), "answered"):
		return "error_response"
	}
	return "other"
}
