package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/sdk"
)

// requireTool skips (fails in CI, where cluster tools are installed) when
// a test's private service cannot run here.
func requireTool(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("COAPGATE_REQUIRE_NGINX") != "" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// freeTCPPort returns a loopback TCP port that was free a moment ago, for
// a private server that cannot report a port 0 back.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func waitTCP(t *testing.T, addr, what string) {
	t.Helper()
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		if time.Now().After(end) {
			t.Fatalf("%s never listened on %s", what, addr)
		}
	}
}

// privatePostgres is a PostgreSQL server of the test's own (initdb and
// pg_ctl as the postgres user, in a temporary directory, on a free port),
// which it may stop and start: the shared server is never restarted.
type privatePostgres struct {
	t    *testing.T
	bin  string
	dir  string
	port int
	URL  string
}

func startPrivatePostgres(t *testing.T) *privatePostgres {
	t.Helper()
	const bin = "/usr/lib/postgresql/15/bin"
	if _, err := os.Stat(filepath.Join(bin, "pg_ctl")); err != nil {
		requireTool(t, "PostgreSQL server binaries not installed")
	}
	pu, err := user.Lookup("postgres")
	if err != nil || os.Geteuid() != 0 {
		requireTool(t, "a private PostgreSQL needs root and the postgres user")
	}
	dir, err := os.MkdirTemp("", "coapgate-pg-")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pu.Uid)
	gid, _ := strconv.Atoi(pu.Gid)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	p := &privatePostgres{t: t, bin: bin, dir: dir, port: freeTCPPort(t)}
	p.URL = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.port)
	p.run("initdb", "-D", filepath.Join(dir, "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")
	t.Cleanup(func() {
		_ = exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "pg_ctl"), "-D", filepath.Join(dir, "data"), "-m", "immediate", "-w", "stop").Run()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "log"))
			if len(b) > 4000 {
				b = b[len(b)-4000:]
			}
			t.Logf("private PostgreSQL log (tail):\n%s", b)
		}
		os.RemoveAll(dir)
	})
	p.Start()
	return p
}

func (p *privatePostgres) run(tool string, args ...string) {
	p.t.Helper()
	cmd := exec.Command("runuser", append([]string{"-u", "postgres", "--", filepath.Join(p.bin, tool)}, args...)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		p.t.Fatalf("%s: %v\n%s", tool, err, out)
	}
}

// Start starts the server and waits until it accepts connections.
func (p *privatePostgres) Start() {
	p.t.Helper()
	p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-l", filepath.Join(p.dir, "log"), "-w", "-o",
		fmt.Sprintf("-p %d -k %s -c listen_addresses=127.0.0.1 -c max_connections=200", p.port, p.dir), "start")
	waitTCP(p.t, fmt.Sprintf("127.0.0.1:%d", p.port), "private PostgreSQL")
}

// Stop shuts the server down (fast: open connections are cut).
func (p *privatePostgres) Stop() {
	p.t.Helper()
	p.run("pg_ctl", "-D", filepath.Join(p.dir, "data"), "-m", "fast", "-w", "stop")
}

// privateNATS is a nats-server of the test's own on a free port.
type privateNATS struct {
	t    *testing.T
	port int
	cmd  *exec.Cmd
	URL  string
}

func startPrivateNATS(t *testing.T) *privateNATS {
	t.Helper()
	if _, err := os.Stat("/usr/sbin/nats-server"); err != nil {
		requireTool(t, "nats-server not installed")
	}
	n := &privateNATS{t: t, port: freeTCPPort(t)}
	n.URL = fmt.Sprintf("nats://127.0.0.1:%d", n.port)
	n.Start()
	t.Cleanup(n.Stop)
	return n
}

func (n *privateNATS) Start() {
	n.t.Helper()
	n.cmd = exec.Command("/usr/sbin/nats-server", "-a", "127.0.0.1", "-p", strconv.Itoa(n.port))
	if err := n.cmd.Start(); err != nil {
		n.t.Fatal(err)
	}
	waitTCP(n.t, fmt.Sprintf("127.0.0.1:%d", n.port), "private nats-server")
}

func (n *privateNATS) Stop() {
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// uplinker is a device sending CON uplinks, each with a new Message ID
// (and, in symmetric mode, a new sequence number: a lost answer is not
// retried with the same number), one at a time, to the address target()
// returns, and recording what was acknowledged.
type uplinker struct {
	name   string
	tok    string
	key    []byte // symmetric session key; nil for a plain token
	seq    uint64
	topic  string
	target func() *net.UDPAddr

	mu          sync.Mutex
	acked       []int64 // 2090 log ids of 2.04 answers
	unavailable int     // 5.03 with Max-Age
	noMaxAge    int     // 5.03 without Max-Age
	other       map[codes.Code]int
}

func (u *uplinker) run(t *testing.T, stop <-chan struct{}) {
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Error(err)
		return
	}
	defer conn.Close()
	buf := make([]byte, 2048)
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		default:
		}
		mid := int32(uint16(k + 1))
		body := fmt.Appendf(nil, `{"id":"%d","params":{"k":%d}}`, k, k)
		var m message.Message
		if u.key != nil {
			u.seq++
			m = symUplink(t, mid, u.tok, u.key, u.seq, body, u.topic)
			m.Token = []byte{byte(k >> 8), byte(k)}
		} else {
			m = message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid, Token: []byte{byte(k >> 8), byte(k)},
				Options: topicOpts(u.tok, 2088, u.topic), Payload: body}
		}
		sortOptions(m.Options)
		b := make([]byte, 2048)
		n, err := coder.DefaultCoder.Encode(m, b)
		if err != nil {
			t.Error(err)
			return
		}
		if _, err := conn.WriteToUDP(b[:n], u.target()); err != nil {
			time.Sleep(20 * time.Millisecond)
			continue
		}
		_ = conn.SetReadDeadline(time.Now().Add(time.Second))
		nr, err := conn.Read(buf)
		if err != nil {
			continue // no answer: not acknowledged
		}
		r := message.Message{Options: make(message.Options, 0, 16)}
		if _, err := coder.DefaultCoder.Decode(buf[:nr], &r); err != nil || r.MessageID != mid {
			continue
		}
		u.mu.Lock()
		switch r.Code {
		case codes.Changed:
			v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
			id, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				u.mu.Unlock()
				t.Errorf("%s: 2.04 without a valid 2090: %q", u.name, v)
				return
			}
			u.acked = append(u.acked, id)
		case codes.ServiceUnavailable:
			if age, ok := coapx.Uint(r.Options, message.MaxAge); ok && age > 0 {
				u.unavailable++
			} else {
				u.noMaxAge++
			}
		default:
			if u.other == nil {
				u.other = map[codes.Code]int{}
			}
			u.other[r.Code]++
		}
		u.mu.Unlock()
		if r.Code == codes.ServiceUnavailable {
			time.Sleep(50 * time.Millisecond) // Max-Age says later; a test has no minutes
		}
	}
}

func (u *uplinker) counts() (acked, unavailable int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.acked), u.unavailable
}

// fleet runs uplinkers until stopped.
type fleet struct {
	t    *testing.T
	devs []*uplinker
	stop chan struct{}
	wg   sync.WaitGroup
}

func startFleet(t *testing.T, devs []*uplinker) *fleet {
	f := &fleet{t: t, devs: devs, stop: make(chan struct{})}
	for _, u := range devs {
		f.wg.Go(func() { u.run(t, f.stop) })
	}
	return f
}

func (f *fleet) Stop() {
	close(f.stop)
	f.wg.Wait()
}

func (f *fleet) totals() (acked, unavailable int) {
	for _, u := range f.devs {
		a, un := u.counts()
		acked += a
		unavailable += un
	}
	return acked, unavailable
}

// waitFor waits until cond holds (a hang guard of generous length, not a
// timing assert).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for end := time.Now().Add(90 * time.Second); !cond(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("never: %s", what)
		}
	}
}

// TestClusterRestarts runs two nodes on a private PostgreSQL and a private
// NATS, behind nginx, with token and symmetric-mode devices sending bursts
// of CON uplinks and a webhook rule, through three failures:
//   - PostgreSQL restarted (a real stop and start): while it is down the
//     devices get 5.03 with Max-Age (never one without); the nodes
//     recover by themselves;
//   - NATS restarted: uplinks are acknowledged throughout (PostgreSQL is
//     the log; NATS only carries device changes), a device disabled
//     meanwhile is refused by the other node once its cache entry expires
//     (the fallback), and both nodes reconnect by themselves;
//   - one node SIGKILLed during a burst through nginx: the survivor takes
//     its devices over.
//
// Every uplink answered 2.04 in any phase is stored and reaches the
// webhook's receiver at least once.
func TestClusterRestarts(t *testing.T) {
	if testing.Short() {
		t.Skip("cluster test: builds the server and runs subprocesses (skipped with -short)")
	}
	pg := startPrivatePostgres(t)
	nats := startPrivateNATS(t)
	c := startClusterOn(t, 2, pg.URL, "COAPGATE_CLUSTER_NATS_URL="+nats.URL,
		"COAPGATE_STORE_UNAVAILABLE_MAX_AGE=7s", "COAPGATE_AUTH_DEVICE_CACHE_TTL=1s")
	lb := startNginxUDP(t, c)
	n1, n2 := c.nodes[0], c.nodes[1]
	hook := newHookReceiver(t)
	var prod struct{ ProductKey string }
	c.call(n1, "POST", "/products", map[string]any{"name": "restarts"}, &prod)
	c.call(n2, "POST", "/rules", map[string]any{
		"name": "restart-hook", "topicFilter": "/sys/#", "startFrom": "beginning", "maxAttempts": 100,
		"actions": []map[string]any{{"type": "webhook", "url": hook.srv.URL}},
	}, nil)

	// Four devices: two plain-token, two symmetric, authenticated via n1.
	var devs []*uplinker
	for i := range 4 {
		dk := fmt.Sprintf("r%d", i)
		var dev struct{ DeviceKey, DeviceSecret string }
		c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": dk}, &dev)
		opts := []sdk.Option{sdk.WithCredentials(sdk.Credentials{ProductKey: prod.ProductKey, DeviceName: dk, DeviceSecret: dev.DeviceSecret})}
		sym := i%2 == 1
		if sym {
			opts = append(opts, sdk.WithSymmetric())
		}
		sc, err := sdk.Dial(context.Background(), n1.coap.String(), opts...)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := sc.Auth(context.Background())
		u := &uplinker{name: dk, tok: tok, topic: "/sys/" + prod.ProductKey + "/" + dk + "/thing/event/property/post"}
		if ss, ok := sc.SymmetricSession(); sym && ok {
			u.key, u.seq = symKey(dev.DeviceSecret, ss.Random), ss.SeqOffset-1
		}
		sc.Close()
		if err != nil {
			t.Fatalf("auth %s: %v", dk, err)
		}
		node := c.nodes[i%2] // phases 1 and 2: straight to a node, both nodes busy
		u.target = func() *net.UDPAddr { return node.coap }
		devs = append(devs, u)
	}

	// Phase 1: PostgreSQL stopped and started during the burst.
	f := startFleet(t, devs)
	waitFor(t, "20 uplinks acknowledged before the PostgreSQL restart", func() bool { a, _ := f.totals(); return a >= 20 })
	pg.Stop()
	beforeDown, _ := f.totals()
	waitFor(t, "5.03 with Max-Age while PostgreSQL is down", func() bool { _, u := f.totals(); return u >= 8 })
	duringDown, _ := f.totals()
	pg.Start()
	// Recovered by itself: every device (on both nodes) acknowledged again.
	base := make([]int, len(devs))
	for i, u := range devs {
		base[i], _ = u.counts()
	}
	waitFor(t, "every device acknowledged again after PostgreSQL came back", func() bool {
		for i, u := range devs {
			if a, _ := u.counts(); a < base[i]+5 {
				return false
			}
		}
		return true
	})
	f.Stop()
	// Uplinks acknowledged between the stop and the first 5.03s were
	// in flight (committed before the shutdown); none is acknowledged
	// while the 5.03s come.
	t.Logf("PostgreSQL restart: %d acknowledged before the stop, %d by the time 8 got 5.03, then recovery on both nodes", beforeDown, duringDown)
	for _, u := range devs {
		if u.noMaxAge > 0 {
			t.Fatalf("%s got %d 5.03 without Max-Age", u.name, u.noMaxAge)
		}
		for code, n := range u.other {
			if code != codes.Unauthorized || u.key == nil {
				t.Fatalf("%s got %d × %v", u.name, n, code)
			}
		}
	}

	// Phase 2: NATS killed and restarted during the burst.
	f = startFleet(t, devs)
	waitFor(t, "uplinks acknowledged before the NATS restart", func() bool { a, _ := f.totals(); return a >= duringDown+20 })
	nats.Stop()
	natsDown, _ := f.totals()
	// A device disabled through n1 while NATS is down: n2 does not hear of
	// it, but refuses it once its cached record expires.
	var victim struct{ DeviceKey, DeviceSecret string }
	c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": "victim"}, &victim)
	vtok := sdkToken(t, n2.coap.String(), prod.ProductKey, "victim", victim.DeviceSecret)
	vconn := udpConn(t, n2.coap)
	vmid := int32(0)
	victimCode := func() codes.Code {
		vmid++
		return rawExchange(t, vconn, message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: vmid, Token: []byte{byte(vmid)},
			Options: topicOpts(vtok, 2088, "/sys/"+prod.ProductKey+"/victim/thing/event/property/post"), Payload: []byte(`{"id":"1"}`)}).Code
	}
	if code := victimCode(); code != codes.Changed {
		t.Fatalf("victim before it is disabled: %v", code)
	}
	c.call(n1, "PATCH", "/devices/"+prod.ProductKey+"/victim", map[string]any{"enabled": false}, nil)
	waitFor(t, "n2 refuses the device disabled through n1 while NATS is down (cache expiry)", func() bool { return victimCode() == codes.Forbidden })
	waitFor(t, "uplinks acknowledged while NATS is down", func() bool { a, _ := f.totals(); return a >= natsDown+20 })
	nats.Start()
	for _, nd := range c.nodes {
		waitFor(t, nd.name+" reconnected to NATS by itself", func() bool {
			b, _ := os.ReadFile(filepath.Join(c.dir, nd.name+".log"))
			return strings.Contains(string(b), "cluster: NATS reconnected")
		})
	}
	c.call(n1, "PATCH", "/devices/"+prod.ProductKey+"/victim", map[string]any{"enabled": true}, nil)
	waitFor(t, "n2 accepts the device enabled again", func() bool { return victimCode() == codes.Changed })
	natsUp, _ := f.totals()
	waitFor(t, "uplinks acknowledged after NATS came back", func() bool { a, _ := f.totals(); return a >= natsUp+20 })
	f.Stop()

	// Phase 3: through nginx; n2 is SIGKILLed during the burst.
	for _, u := range devs {
		u.target = func() *net.UDPAddr { return lb }
	}
	f = startFleet(t, devs)
	waitFor(t, "uplinks acknowledged through nginx", func() bool { a, _ := f.totals(); return a >= natsUp+60 })
	c.kill(n2)
	killedAt, _ := f.totals()
	waitFor(t, "uplinks acknowledged after the SIGKILL", func() bool { a, _ := f.totals(); return a >= killedAt+60 })
	f.Stop()

	// Every acknowledged uplink of every phase is stored, and delivered.
	var acked []int64
	for _, u := range devs {
		acked = append(acked, u.acked...)
	}
	c.requireStored(t, n1, acked)
	got := hook.waitAll(t, acked)
	dups := 0
	for _, id := range acked {
		if got[id] > 1 {
			dups++
		}
	}
	_, unavailable := f.totals()
	t.Logf("%d uplinks acknowledged in all (%d before the SIGKILL), all stored and delivered; %d delivered more than once; %d answered 5.03 with Max-Age",
		len(acked), killedAt, dups, unavailable)
}
