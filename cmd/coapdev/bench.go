package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"

	"github.com/coapgate/coapgate/internal/api"
)

// Modes of coapdev bench.
const (
	benchToken     = "token"
	benchSymmetric = "symmetric"
	benchDTLS      = "dtls"
	benchPlain     = "plain"
	benchDTLSPlain = "dtls-plain"
)

var benchDefaultServer = map[string]string{
	benchToken: "127.0.0.1:5683", benchSymmetric: "127.0.0.1:5682", benchDTLS: "127.0.0.1:5684",
	benchPlain: "127.0.0.1:5683", benchDTLSPlain: "127.0.0.1:5684",
}

type benchFlags struct {
	mode, server                 string
	apiURL, apiKey, product      string
	devices                      int
	devicesFile, seed            string
	path                         string
	pskIdentity, pskKey, cipher  string
	cid                          bool
	lifetime                     int
	rate                         float64
	outstanding, sockets, size   int
	duration, warmup, ackTimeout time.Duration
	setupTimeout, hold           time.Duration
	handshakes                   bool
	idle, serverPID              int
	jsonOut, quiet               bool
	srcIPs                       string
	laddrs                       []netip.Addr
}

func runBench(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "bench", "[flags]", `
Load generator: simulated devices with their own credentials send
confirmable POSTs over --sockets sockets (one sender and one receiver
goroutine each, answers matched by Message ID, CONs retransmitted per
RFC 7252), and a report of req/s and latency is printed at the end (a table,
or JSON with --json); a progress line goes to stderr every second.

Modes (--mode):
  token       5683: POST /auth per device, then POST /topic/sys/{pk}/{dk}/
              thing/event/property/post with the token in option 2088
  symmetric   5682: the same with AES-encrypted payload and sequence (2089)
  dtls        5684: one DTLS-PSK session per socket, identity pk,dk,2,lifetime
  plain       any CoAP server: POST --path (e.g. libcoap's coap-server)
  dtls-plain  any CoAP/DTLS-PSK server: --psk-identity, --psk-key (hex)
A 2.xx answer counts as success.

Devices (token, symmetric, dtls): --api/--api-key/--product create (or
reuse) devices bench-0..N-1 with a secret derived from --seed, or
--devices-file reads "pk,dk,secret" lines.

Load shape: --outstanding K requests in flight in total (closed loop, the
default) or --rate R req/s offered (open loop). --handshakes measures full
PSK handshakes/s instead (a new session each, --sockets in parallel);
--idle M opens M sessions, holds them, checks each still answers and, with
--server-pid, reports the server's RSS growth per session.

The exit status is 1 when nothing succeeded or any request failed.`, `
  coapdev bench --mode token --server 127.0.0.1:5683 --api http://127.0.0.1:8080 \
    --api-key "$KEY" --product "$PK" --devices 100 --duration 10s
  coapdev bench --mode plain --server 127.0.0.1:5700 --path /example_data --json`)
	f := &benchFlags{}
	fs.StringVar(&f.mode, "mode", benchToken, "token, symmetric, dtls, plain or dtls-plain")
	fs.StringVar(&f.server, "server", "", "server `host:port` (default by mode: 5683, 5682, 5684 on 127.0.0.1)")
	fs.StringVar(&f.apiURL, "api", "", "gateway API base `URL` to create the devices (e.g. http://127.0.0.1:8080)")
	fs.StringVar(&f.apiKey, "api-key", "", "API key (or env COAPGATE_API_KEY)")
	fs.StringVar(&f.product, "product", "", "product key of the devices created via --api")
	fs.IntVar(&f.devices, "devices", 32, "devices to create via --api")
	fs.StringVar(&f.devicesFile, "devices-file", "", "read devices from a CSV `file` of pk,dk,secret lines")
	fs.StringVar(&f.seed, "seed", "coapdev-bench", "seed of the secrets of devices created via --api")
	fs.StringVar(&f.path, "path", "/bench", "plain modes: request path")
	fs.StringVar(&f.pskIdentity, "psk-identity", "", "dtls-plain: PSK identity")
	fs.StringVar(&f.pskKey, "psk-key", "", "dtls-plain: PSK key in hex")
	fs.StringVar(&f.cipher, "cipher", "ccm8", "DTLS suite: ccm8 (TLS_PSK_WITH_AES_128_CCM_8) or cbc (TLS_PSK_WITH_AES_128_CBC_SHA256)")
	fs.BoolVar(&f.cid, "cid", false, "DTLS: ask for a Connection ID (RFC 9146)")
	fs.IntVar(&f.lifetime, "lifetime", 3600, "dtls: lifetime in the PSK identity, seconds")
	fs.Float64Var(&f.rate, "rate", 0, "open loop: offered req/s over all sockets (0: closed loop)")
	fs.IntVar(&f.outstanding, "outstanding", 256, "closed loop: requests in flight over all sockets")
	fs.IntVar(&f.sockets, "sockets", 32, "client sockets (DTLS sessions); handshakes in parallel with --handshakes")
	fs.IntVar(&f.size, "payload-size", 64, "payload bytes")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "measured time")
	fs.DurationVar(&f.warmup, "warmup", 2*time.Second, "load before measuring")
	fs.DurationVar(&f.ackTimeout, "ack-timeout", 2*time.Second, "RFC 7252 ACK_TIMEOUT before the first retransmission")
	fs.DurationVar(&f.setupTimeout, "timeout", 10*time.Second, "timeout of each setup step (auth, handshake)")
	fs.BoolVar(&f.handshakes, "handshakes", false, "measure full DTLS-PSK handshakes/s (dtls, dtls-plain)")
	fs.IntVar(&f.idle, "idle", 0, "open this many DTLS sessions and hold them (dtls, dtls-plain)")
	fs.DurationVar(&f.hold, "hold", 0, "with --idle: hold the sessions this long before checking them")
	fs.IntVar(&f.serverPID, "server-pid", 0, "with --idle: read this process's RSS from /proc")
	fs.BoolVar(&f.jsonOut, "json", false, "print the report as JSON")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress line")
	fs.StringVar(&f.srcIPs, "src-ips", "", "local IPv4 source `addresses` of the sockets, one or first-last; socket i binds the (i mod n)-th (e.g. 127.0.0.10-127.0.0.41, to spread sockets over a load balancer that hashes on the source address)")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	if f.apiKey == "" {
		f.apiKey = e.getenv("COAPGATE_API_KEY")
	}
	if msg := f.validate(); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	r, err := benchRun(ctx, e, f)
	if err != nil {
		fmt.Fprintf(e.stderr, "coapdev bench: %v\n", err)
		return exitError
	}
	if f.jsonOut {
		enc := json.NewEncoder(e.stdout)
		enc.SetIndent("", "  ")
		enc.Encode(r)
	} else {
		r.table(e.stdout)
	}
	if r.failed() {
		fmt.Fprintf(e.stderr, "coapdev bench: %s\n", r.failure())
		return exitError
	}
	return exitOK
}

func (f *benchFlags) validate() string {
	def, ok := benchDefaultServer[f.mode]
	if !ok {
		return fmt.Sprintf("--mode %q: want token, symmetric, dtls, plain or dtls-plain", f.mode)
	}
	if f.server == "" {
		f.server = def
	}
	dtlsMode := f.mode == benchDTLS || f.mode == benchDTLSPlain
	switch {
	case (f.handshakes || f.idle > 0) && !dtlsMode:
		return "--handshakes and --idle need --mode dtls or dtls-plain"
	case f.handshakes && f.idle > 0:
		return "--handshakes and --idle exclude each other"
	case f.sockets < 1 || f.outstanding < 1 || f.size < 0 || f.rate < 0 || f.idle < 0:
		return "--sockets and --outstanding must be >= 1; --payload-size, --rate, --idle >= 0"
	case f.duration <= 0 || f.warmup < 0 || f.ackTimeout <= 0:
		return "--duration and --ack-timeout must be > 0, --warmup >= 0"
	case f.cipher != "ccm8" && f.cipher != "cbc":
		return fmt.Sprintf("--cipher %q: want ccm8 or cbc", f.cipher)
	case f.rate == 0 && f.outstanding < f.sockets:
		return "--outstanding must be >= --sockets"
	}
	if f.srcIPs != "" {
		a, err := srcAddrs(f.srcIPs)
		if err != nil {
			return err.Error()
		}
		f.laddrs = a
	}
	switch f.mode {
	case benchPlain:
	case benchDTLSPlain:
		if f.pskIdentity == "" || f.pskKey == "" {
			return "--mode dtls-plain needs --psk-identity and --psk-key"
		}
		if _, err := hex.DecodeString(f.pskKey); err != nil {
			return "--psk-key: want hex"
		}
	default:
		if f.devicesFile == "" && (f.apiURL == "" || f.product == "") {
			return "--mode " + f.mode + " needs --devices-file or --api with --product (and --api-key)"
		}
		if f.devices < 1 {
			return "--devices must be >= 1"
		}
	}
	return ""
}

// benchReport is the final report (JSON field names are stable: bench/run.sh reads them).
type benchReport struct {
	Mode        string            `json:"mode"`
	Server      string            `json:"server"`
	Sockets     int               `json:"sockets"`
	Outstanding int               `json:"outstanding,omitempty"`
	Rate        float64           `json:"offeredRate,omitempty"`
	PayloadSize int               `json:"payloadSize"`
	Devices     int               `json:"devices,omitempty"`
	Seconds     float64           `json:"seconds"`
	Sent        uint64            `json:"sent"`
	OK          uint64            `json:"ok"`
	Errors      map[string]uint64 `json:"errors"`
	Timeouts    uint64            `json:"timeouts"`   // retransmissions exhausted
	Unanswered  int64             `json:"unanswered"` // still in flight when the run ended
	Retransmits uint64            `json:"retransmits"`
	Overload    uint64            `json:"overload,omitempty"`
	ReqPerSec   float64           `json:"reqPerSec"`
	LatencyMS   latencyMS         `json:"latencyMs"`
	// Handshakes mode.
	Handshakes   uint64  `json:"handshakes,omitempty"`
	HandshakeErr uint64  `json:"handshakeErrors,omitempty"`
	HandshakesPS float64 `json:"handshakesPerSec,omitempty"`
	// Idle mode.
	Idle *idleReport `json:"idle,omitempty"`
}

type latencyMS struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

type idleReport struct {
	Sessions        int     `json:"sessions"`
	Failed          int     `json:"failed"`
	Answered        int     `json:"answered"`
	RSSBeforeKB     int64   `json:"rssBeforeKB,omitempty"`
	RSSAfterKB      int64   `json:"rssAfterKB,omitempty"`
	BytesPerSession float64 `json:"bytesPerSession,omitempty"`
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (r *benchReport) errorCount() uint64 {
	var n uint64
	for _, v := range r.Errors {
		n += v
	}
	return n + r.Timeouts + r.HandshakeErr
}

func (r *benchReport) failed() bool { return r.failure() != "" }

func (r *benchReport) failure() string {
	switch {
	case r.Idle != nil:
		if r.Idle.Failed > 0 || r.Idle.Answered < r.Idle.Sessions || r.Idle.Sessions == 0 {
			return fmt.Sprintf("idle: %d of %d sessions failed, %d answered", r.Idle.Failed, r.Idle.Sessions, r.Idle.Answered)
		}
	case r.Handshakes > 0 || r.HandshakeErr > 0:
		if r.HandshakeErr > 0 {
			return fmt.Sprintf("%d handshakes failed", r.HandshakeErr)
		}
	case r.OK == 0:
		return "no request succeeded"
	case r.errorCount() > r.Timeouts || r.Timeouts+uint64(r.Unanswered) > r.Sent/1000:
		// Error answers fail the run; lost datagrams (an overflowing
		// receive buffer) only beyond 0.1 %.
		return fmt.Sprintf("requests failed: errors %s, %d timeouts, %d unanswered", fmtErrors(r.Errors), r.Timeouts, r.Unanswered)
	}
	if r.Handshakes == 0 && r.Idle == nil && r.OK == 0 {
		return "no request succeeded"
	}
	return ""
}

func (r *benchReport) table(w io.Writer) {
	row := func(k string, v any) { fmt.Fprintf(w, "%-14s %v\n", k, v) }
	row("mode", r.Mode)
	row("server", r.Server)
	switch {
	case r.Idle != nil:
		row("sessions", r.Idle.Sessions)
		row("failed", r.Idle.Failed)
		row("answered", r.Idle.Answered)
		if r.Idle.RSSAfterKB > 0 {
			row("server RSS", fmt.Sprintf("%d kB -> %d kB (%.1f KB per session)", r.Idle.RSSBeforeKB, r.Idle.RSSAfterKB, r.Idle.BytesPerSession/1024))
		}
		return
	case r.Handshakes > 0 || r.HandshakeErr > 0:
		row("parallel", r.Sockets)
		row("seconds", fmt.Sprintf("%.1f", r.Seconds))
		row("handshakes", r.Handshakes)
		row("errors", r.HandshakeErr)
		row("handshakes/s", fmt.Sprintf("%.0f", r.HandshakesPS))
	default:
		if r.Rate > 0 {
			row("offered", fmt.Sprintf("%.0f req/s over %d sockets", r.Rate, r.Sockets))
		} else {
			row("outstanding", fmt.Sprintf("%d over %d sockets", r.Outstanding, r.Sockets))
		}
		row("payload", fmt.Sprintf("%d B", r.PayloadSize))
		row("seconds", fmt.Sprintf("%.1f", r.Seconds))
		row("sent", r.Sent)
		row("ok", r.OK)
		row("errors", fmtErrors(r.Errors))
		row("timeouts", r.Timeouts)
		row("unanswered", r.Unanswered)
		row("retransmits", r.Retransmits)
		if r.Overload > 0 {
			row("not sent", fmt.Sprintf("%d (window full)", r.Overload))
		}
		row("req/s", fmt.Sprintf("%.0f", r.ReqPerSec))
	}
	row("latency ms", fmt.Sprintf("p50 %.2f  p90 %.2f  p99 %.2f  max %.2f", r.LatencyMS.P50, r.LatencyMS.P90, r.LatencyMS.P99, r.LatencyMS.Max))
}

func fmtErrors(m map[string]uint64) string {
	if len(m) == 0 {
		return "0"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%d ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

func codeName(c int) string { return fmt.Sprintf("%d.%02d", c>>5, c&31) }

func (st *loadStats) errorsByKind() map[string]uint64 {
	m := map[string]uint64{}
	for c := range st.codes {
		if n := st.codes[c].Load(); n > 0 && c>>5 != 2 {
			m[codeName(c)] = n
		}
	}
	if n := st.rst.Load(); n > 0 {
		m["rst"] = n
	}
	if n := st.writeErrs.Load(); n > 0 {
		m["write"] = n
	}
	if n := st.readErrs.Load(); n > 0 {
		m["read"] = n
	}
	if n := st.buildErrs.Load(); n > 0 {
		m["build"] = n
	}
	return m
}

// benchRun sets up devices and sockets and runs the measurement.
func benchRun(ctx context.Context, e *env, f *benchFlags) (*benchReport, error) {
	raddr, err := net.ResolveUDPAddr("udp", f.server)
	if err != nil {
		return nil, fmt.Errorf("--server: %w", err)
	}
	var devs []*benchDevice
	switch f.mode {
	case benchToken, benchSymmetric, benchDTLS:
		if f.devicesFile != "" {
			devs, err = readDevicesFile(f.devicesFile)
		} else {
			c := &api.Client{BaseURL: f.apiURL, Key: f.apiKey}
			devs, err = createDevices(ctx, c, f.product, f.seed, f.devices, 8)
		}
		if err != nil {
			return nil, fmt.Errorf("devices: %w", err)
		}
		if f.mode != benchDTLS {
			t0 := time.Now()
			if err := authDevices(ctx, f.server, devs, f.mode == benchSymmetric, f.setupTimeout, 32); err != nil {
				return nil, err
			}
			f.logf(e, "authenticated %d devices in %v", len(devs), time.Since(t0).Round(time.Millisecond))
		}
	}
	rep := &benchReport{Mode: f.mode, Server: f.server, Sockets: f.sockets, PayloadSize: f.size, Devices: len(devs)}
	if f.handshakes || f.idle > 0 {
		params := f.dtlsParams(devs)
		if f.handshakes {
			return rep, runHandshakes(ctx, e, f, raddr, params, rep)
		}
		return rep, runIdle(ctx, e, f, raddr, params, rep)
	}
	payload := benchPayload(f.size)
	if f.mode == benchPlain || f.mode == benchDTLSPlain {
		payload = []byte(strings.Repeat("x", f.size))
	}
	cfg := &loadConfig{rate: f.rate, outstanding: f.outstanding, ackTimeout: f.ackTimeout,
		warmup: f.warmup, duration: f.duration, drain: 3 * f.ackTimeout}
	st := &loadStats{}
	lanes := make([]*lane, f.sockets)
	defer func() {
		for _, l := range lanes {
			if l != nil {
				l.conn.Close()
			}
		}
	}()
	params := f.dtlsParams(devs)
	for i := range lanes {
		limit := f.outstanding / f.sockets
		if i < f.outstanding%f.sockets {
			limit++
		}
		if f.rate > 0 {
			limit = 0
		}
		b, keep, err := f.laneBuilder(i, devs, payload)
		if err != nil {
			return nil, err
		}
		var conn net.Conn
		switch f.mode {
		case benchDTLS, benchDTLSPlain:
			hctx, cancel := context.WithTimeout(ctx, f.setupTimeout)
			conn, err = dialDTLS(hctx, f.laddr(i), raddr, params(i))
			cancel()
		default:
			conn, err = net.DialUDP("udp", f.laddr(i), raddr)
			if err == nil {
				conn.(*net.UDPConn).SetReadBuffer(4 << 20)
			}
		}
		if err != nil {
			return nil, fmt.Errorf("socket %d: %w", i, err)
		}
		lanes[i] = newLane(conn, b, keep, cfg, st, limit, f.rate/float64(f.sockets))
	}
	if f.rate > 0 {
		rep.Rate = f.rate
	} else {
		rep.Outstanding = f.outstanding
	}

	stop := make(chan struct{})
	var measured time.Duration
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(stop)
		timer := func(d time.Duration) bool {
			select {
			case <-ctx.Done():
				return false
			case <-time.After(d):
				return true
			}
		}
		if f.warmup > 0 && !timer(f.warmup) {
			return
		}
		st.measuring.Store(true)
		t0 := time.Now()
		done := make(chan struct{})
		var pw sync.WaitGroup
		if !f.quiet {
			pw.Go(func() { progress(e.stderr, st, len(lanes), done) })
		}
		timer(f.duration)
		st.measuring.Store(false)
		measured = time.Since(t0)
		close(done)
		pw.Wait()
	})
	runLanes(ctx, lanes, stop)
	wg.Wait()
	for i := range lanes {
		lanes[i] = nil // closed by runLanes
	}

	var h histCounts
	st.lat.snapshot(&h)
	rep.Seconds = measured.Seconds()
	rep.Sent, rep.OK = st.sent.Load(), st.ok.Load()
	rep.Errors = st.errorsByKind()
	rep.Timeouts, rep.Unanswered = st.timeouts.Load(), max(0, st.inflight.Load())
	rep.Retransmits, rep.Overload = st.retransmits.Load(), st.overload.Load()
	if rep.Seconds > 0 {
		rep.ReqPerSec = float64(rep.OK) / rep.Seconds
	}
	rep.LatencyMS = latencyMS{P50: ms(h.quantile(0.5)), P90: ms(h.quantile(0.9)), P99: ms(h.quantile(0.99)), Max: ms(h.max())}
	return rep, ctx.Err()
}

func (f *benchFlags) logf(e *env, format string, a ...any) {
	if !f.quiet {
		fmt.Fprintf(e.stderr, "coapdev bench: "+format+"\n", a...)
	}
}

// laneBuilder returns the request builder of lane i and whether its
// datagrams must be kept for retransmission.
func (f *benchFlags) laneBuilder(i int, devs []*benchDevice, payload []byte) (builder, bool, error) {
	path := strings.Split(strings.Trim(f.path, "/"), "/")
	switch f.mode {
	case benchPlain, benchDTLSPlain:
		t, err := newTemplate(path, message.Options{cfOption(0)}, payload)
		return t, false, err
	case benchDTLS:
		t, err := newTemplate(devs[i%len(devs)].topicPath(), message.Options{
			cfOption(50), {ID: message.Accept, Value: encodeUint(50)}}, payload)
		return t, false, err
	}
	// Token and symmetric: lane i publishes for devices i, i+S, i+2S, ...
	var mine []*benchDevice
	for d := i % len(devs); d < len(devs); d += f.sockets {
		mine = append(mine, devs[d])
	}
	if f.mode == benchSymmetric {
		return &symBuilder{devs: mine, payload: payload}, true, nil
	}
	r := &rotation{}
	for _, d := range mine {
		t, err := tokenTemplate(d, payload)
		if err != nil {
			return nil, false, err
		}
		r.t = append(r.t, t)
	}
	return r, false, nil
}

// dtlsParams returns the session parameters of session i.
func (f *benchFlags) dtlsParams(devs []*benchDevice) func(i int) dtlsParams {
	suites := []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8}
	if f.cipher == "cbc" {
		suites = []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CBC_SHA256}
	}
	return func(i int) dtlsParams {
		p := dtlsParams{suites: suites, cid: f.cid}
		if f.mode == benchDTLSPlain {
			p.identity = f.pskIdentity
			p.key, _ = hex.DecodeString(f.pskKey)
		} else {
			p.identity, p.key = gatewayPSK(devs[i%len(devs)], f.lifetime)
		}
		return p
	}
}

// progress prints one line per second until done is closed.
func progress(w io.Writer, st *loadStats, sessions int, done <-chan struct{}) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	var prev, cur histCounts
	var prevOK uint64
	last, start := time.Now(), time.Now()
	for {
		select {
		case <-done:
			return
		case now := <-t.C:
			st.lat.snapshot(&cur)
			d := cur.sub(&prev)
			ok := st.ok.Load()
			rate := float64(ok-prevOK) / now.Sub(last).Seconds()
			fmt.Fprintf(w, "%5.0fs %8.0f req/s  p50 %6.2f ms  p99 %6.2f ms  ok %d  errors %s  timeouts %d  retx %d  inflight %d  sessions %d\n",
				now.Sub(start).Seconds(), rate, ms(d.quantile(0.5)), ms(d.quantile(0.99)), ok,
				fmtErrors(st.errorsByKind()), st.timeouts.Load(), st.retransmits.Load(), st.inflight.Load(), sessions)
			prev, prevOK, last = cur, ok, now
		}
	}
}

// runHandshakes makes full PSK handshakes (a new session and socket each)
// with --sockets in parallel for --warmup + --duration.
func runHandshakes(ctx context.Context, e *env, f *benchFlags, raddr *net.UDPAddr, params func(int) dtlsParams, rep *benchReport) error {
	var measuring atomic.Bool
	var ok, bad atomic.Uint64
	var h hist
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var seq atomic.Int64
	for range f.sockets {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				i := int(seq.Add(1) - 1)
				t0 := time.Now()
				hctx, cancel := context.WithTimeout(ctx, f.setupTimeout)
				c, err := dialDTLS(hctx, f.laddr(i), raddr, params(i))
				cancel()
				m := measuring.Load()
				if err != nil {
					if m && ctx.Err() == nil {
						bad.Add(1)
						if bad.Load() <= 3 {
							f.logf(e, "handshake: %v", err)
						}
					}
					continue
				}
				c.Close()
				if m {
					ok.Add(1)
					h.add(time.Since(t0))
				}
			}
		})
	}
	sleep(ctx, f.warmup)
	measuring.Store(true)
	t0 := time.Now()
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		var prev uint64
		for {
			select {
			case <-done:
				return
			case <-t.C:
				n := ok.Load()
				if !f.quiet {
					fmt.Fprintf(e.stderr, "%5.0fs %8d handshakes/s  errors %d\n", time.Since(t0).Seconds(), n-prev, bad.Load())
				}
				prev = n
			}
		}
	}()
	sleep(ctx, f.duration)
	measuring.Store(false)
	el := time.Since(t0)
	close(done)
	close(stop)
	wg.Wait()
	var c histCounts
	h.snapshot(&c)
	rep.Seconds = el.Seconds()
	rep.Handshakes, rep.HandshakeErr = ok.Load(), bad.Load()
	rep.HandshakesPS = float64(rep.Handshakes) / el.Seconds()
	rep.LatencyMS = latencyMS{P50: ms(c.quantile(0.5)), P90: ms(c.quantile(0.9)), P99: ms(c.quantile(0.99)), Max: ms(c.max())}
	if rep.Handshakes == 0 && rep.HandshakeErr == 0 {
		rep.HandshakeErr = 1 // nothing completed at all
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// runIdle opens --idle sessions, holds them, reads the server's RSS growth
// and checks every session still answers one request.
func runIdle(ctx context.Context, e *env, f *benchFlags, raddr *net.UDPAddr, params func(int) dtlsParams, rep *benchReport) error {
	ir := &idleReport{Sessions: f.idle}
	rep.Idle = ir
	if f.serverPID > 0 {
		ir.RSSBeforeKB = rssKB(f.serverPID)
	}
	conns := make([]net.Conn, f.idle)
	defer func() {
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
	}()
	var failed atomic.Int64
	var next atomic.Int64
	var wg sync.WaitGroup
	t0 := time.Now()
	for range f.sockets {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= f.idle || ctx.Err() != nil {
					return
				}
				hctx, cancel := context.WithTimeout(ctx, f.setupTimeout)
				c, err := dialDTLS(hctx, f.laddr(i), raddr, params(i))
				cancel()
				if err != nil {
					if failed.Add(1) <= 3 {
						f.logf(e, "session %d: %v", i, err)
					}
					continue
				}
				conns[i] = c
			}
		})
	}
	wg.Wait()
	ir.Failed = int(failed.Load())
	f.logf(e, "opened %d sessions in %v; holding %v", f.idle-ir.Failed, time.Since(t0).Round(time.Millisecond), f.hold+2*time.Second)
	sleep(ctx, f.hold+2*time.Second) // let the server settle (GC) before reading RSS
	if f.serverPID > 0 {
		ir.RSSAfterKB = rssKB(f.serverPID)
		if n := f.idle - ir.Failed; n > 0 && ir.RSSAfterKB > 0 {
			ir.BytesPerSession = float64(ir.RSSAfterKB-ir.RSSBeforeKB) * 1024 / float64(n)
		}
	}
	// Every session must still answer.
	payload := benchPayload(f.size)
	var answered atomic.Int64
	var h hist
	next.Store(0)
	path := strings.Split(strings.Trim(f.path, "/"), "/")
	for range max(f.sockets, 64) {
		wg.Go(func() {
			buf := make([]byte, maxDatagram)
			for {
				i := int(next.Add(1) - 1)
				if i >= f.idle || ctx.Err() != nil {
					return
				}
				if conns[i] == nil {
					continue
				}
				p := path
				if f.mode == benchDTLS {
					p = []string{"topic", "sys", "", "", "thing", "event", "property", "post"}
					id := strings.Split(params(i).identity, ",")
					p[2], p[3] = id[0], id[1]
				}
				req, err := encodeRequest(buf, 2, uint16(i), p, message.Options{cfOption(50)}, payload) // POST
				if err != nil {
					continue
				}
				t := time.Now()
				if askOnce(conns[i], req, uint16(i), f.ackTimeout) {
					answered.Add(1)
					h.add(time.Since(t))
				}
			}
		})
	}
	wg.Wait()
	ir.Answered = int(answered.Load())
	var c histCounts
	h.snapshot(&c)
	rep.LatencyMS = latencyMS{P50: ms(c.quantile(0.5)), P90: ms(c.quantile(0.9)), P99: ms(c.quantile(0.99)), Max: ms(c.max())}
	return ctx.Err()
}

// askOnce sends a CON (retransmitted up to MAX_RETRANSMIT times) and
// reports whether a 2.xx ACK with its Message ID came back.
func askOnce(c net.Conn, req []byte, mid uint16, timeout time.Duration) bool {
	rb := make([]byte, maxDatagram)
	for try := 0; try <= maxRetransmit; try++ {
		if _, err := c.Write(req); err != nil {
			return false
		}
		deadline := time.Now().Add(timeout << try)
		c.SetReadDeadline(deadline)
		for {
			n, err := c.Read(rb)
			if err != nil {
				break // timeout: retransmit
			}
			b := rb[:n]
			if len(b) >= 4 && b[0]>>4&3 == 2 && uint16(b[2])<<8|uint16(b[3]) == mid {
				return b[1]>>5 == 2
			}
		}
	}
	return false
}

// rssKB reads VmRSS of pid from /proc; 0 if unknown.
func rssKB(pid int) int64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return n
		}
	}
	return 0
}

// maxSrcIPs bounds --src-ips (a typo like 10.0.0.1-10.255.0.1 must not
// allocate millions of addresses).
const maxSrcIPs = 65536

// srcAddrs parses --src-ips: "a" or "a-b", IPv4.
func srcAddrs(spec string) ([]netip.Addr, error) {
	first, last, ok := strings.Cut(spec, "-")
	if !ok {
		last = first
	}
	a, err := netip.ParseAddr(first)
	if err != nil || !a.Is4() {
		return nil, fmt.Errorf("--src-ips %q: want IPv4 a or a-b", spec)
	}
	b, err := netip.ParseAddr(last)
	if err != nil || !b.Is4() || b.Less(a) {
		return nil, fmt.Errorf("--src-ips %q: want IPv4 a or a-b with a <= b", spec)
	}
	var out []netip.Addr
	for ip := a; ip.IsValid() && !b.Less(ip); ip = ip.Next() {
		if len(out) == maxSrcIPs {
			return nil, fmt.Errorf("--src-ips %q: more than %d addresses", spec, maxSrcIPs)
		}
		out = append(out, ip)
	}
	return out, nil
}

// laddr is the local address socket i binds (nil: any, by the kernel).
func (f *benchFlags) laddr(i int) *net.UDPAddr {
	if len(f.laddrs) == 0 {
		return nil
	}
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(f.laddrs[i%len(f.laddrs)], 0))
}
