package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/sdk"
)

// TestRestartKeepsSessions: devices that never authenticate again keep
// working across restarts of a real server process on the same data
// directory, killed with SIGKILL and then stopped gracefully: the same
// symmetric-mode token (option 2089, on 5682 and on 5683) and the same
// dialect-E token (option 2101) keep publishing (2.04), and a datagram
// accepted before a restart, replayed after it with a new Message ID, is
// refused (4.01) and not stored. A device that authenticated but sent
// nothing before the kill publishes after it too.
func TestRestartKeepsSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("restart test: builds the server and kills a subprocess (skipped with -short)")
	}
	p := newProcServer(t)
	p.start()
	var prod struct{ ProductKey string }
	p.call("POST", "/products", nil, map[string]any{"name": "restart"}, &prod)
	newDev := func(dk string) device {
		var d struct{ DeviceKey, DeviceSecret string }
		p.call("POST", "/devices", nil, map[string]any{"productKey": prod.ProductKey, "deviceKey": dk}, &d)
		return device{pk: prod.ProductKey, dk: d.DeviceKey, secret: d.DeviceSecret}
	}
	// The listeners' addresses of the current start (each start binds new
	// ports; a replay is a replay on any of them).
	resolve := func(addr string) *net.UDPAddr {
		a, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	coapAddr := func() *net.UDPAddr { return resolve(p.coapAddr) }
	symAddr := func() *net.UDPAddr { return resolve(p.symAddr) }
	mid := int32(100)
	exchange := func(addr func() *net.UDPAddr, m message.Message) codes.Code {
		t.Helper()
		mid++
		m.MessageID = mid // a new Message ID: never a retransmission
		return rawExchange(t, udpConn(t, addr()), m).Code
	}

	// A symmetric-mode session: token and random from the 5682 auth.
	type symDev struct {
		d      device
		tok    string
		key    []byte
		seq    uint64
		addr   func() *net.UDPAddr
		last   message.Message // the last datagram accepted
		stored int
	}
	symAuth := func(dk string, addr func() *net.UDPAddr) *symDev {
		d := newDev(dk)
		c, err := sdk.Dial(context.Background(), p.symAddr, sdk.WithSymmetric(),
			sdk.WithCredentials(sdk.Credentials{ProductKey: d.pk, DeviceName: d.dk, DeviceSecret: d.secret}))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tok, err := c.Auth(context.Background())
		if err != nil {
			t.Fatalf("symmetric auth %s: %v", dk, err)
		}
		ss, _ := c.SymmetricSession()
		return &symDev{d: d, tok: tok, key: symKey(d.secret, ss.Random), seq: uint64(ss.SeqOffset), addr: addr}
	}
	symPublish := func(s *symDev) codes.Code {
		t.Helper()
		topic := fmt.Sprintf("/%s/%s/user/data", s.d.pk, s.d.dk)
		m := symUplink(t, 0, s.tok, s.key, s.seq, fmt.Appendf(nil, "seq %d", s.seq), topic)
		code := exchange(s.addr, m)
		if code == codes.Changed {
			s.last, s.stored = m, s.stored+1
			s.seq++
		}
		return code
	}

	// A dialect-E session: token from POST /auth/{pk}/{dk}, N in 2101.
	type eDev struct {
		d      device
		tok    string
		n      int
		last   message.Message
		stored int
	}
	eAuth := func(dk string) *eDev {
		d := newDev(dk)
		r := rawExchange(t, udpConn(t, coapAddr()), message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: 1,
			Options: message.Options{{ID: message.URIPath, Value: []byte("auth")}, {ID: message.URIPath, Value: []byte(d.pk)},
				{ID: message.URIPath, Value: []byte(d.dk)}, {ID: message.ContentFormat, Value: coapx.EncodeUint(50)}},
			Payload: []byte(`{"secureMode":2,"lifetime":3600,"sign":"` + signE(d.pk, d.dk, "3600", "2", d.secret) + `"}`)})
		var ar struct{ Token string }
		if r.Code != codes.Content || json.Unmarshal(r.Payload, &ar) != nil || ar.Token == "" {
			t.Fatalf("dialect-E auth: %v %s", r.Code, r.Payload)
		}
		return &eDev{d: d, tok: ar.Token, n: 1}
	}
	ePublish := func(e *eDev) codes.Code {
		t.Helper()
		opts := topicOpts("", 2088, fmt.Sprintf("/%s/%s/user/data", e.d.pk, e.d.dk)).Remove(2088)
		m := message.Message{Type: message.Confirmable, Code: codes.POST, Token: []byte{7},
			Options: append(opts, message.Option{ID: 2101, Value: opt2101(t, e.d.secret, dialectAIV, e.tok, e.n)}),
			Payload: fmt.Appendf(nil, "n %d", e.n)}
		code := exchange(coapAddr, m)
		if code == codes.Changed {
			e.last, e.stored = m, e.stored+1
			e.n++
		}
		return code
	}

	sym := symAuth("sym_5682", symAddr)
	symPlain := symAuth("sym_5683", coapAddr) // the same session type, used on the plain port
	idle := symAuth("sym_idle", symAddr)      // authenticated, silent until after the kill
	e := eAuth("sign_e")
	for _, s := range []*symDev{sym, symPlain} {
		if code := symPublish(s); code != codes.Changed {
			t.Fatalf("%s before any restart: %v", s.d.dk, code)
		}
	}
	if code := ePublish(e); code != codes.Changed {
		t.Fatalf("dialect E before any restart: %v", code)
	}

	replays := 0
	for _, restart := range []struct {
		name string
		do   func()
	}{{"SIGKILL", p.kill}, {"graceful", p.stop}} {
		restart.do()
		p.start()
		for _, s := range []*symDev{sym, symPlain} {
			if code := exchange(s.addr, s.last); code != codes.Unauthorized {
				t.Fatalf("after %s: %s's datagram accepted before it, replayed: %v, want 4.01", restart.name, s.d.dk, code)
			}
			replays++
			for range 3 {
				if code := symPublish(s); code != codes.Changed {
					t.Fatalf("after %s: %s with the same token: %v, want 2.04", restart.name, s.d.dk, code)
				}
			}
		}
		if code := exchange(coapAddr, e.last); code != codes.Unauthorized {
			t.Fatalf("after %s: dialect-E datagram replayed: %v, want 4.01", restart.name, code)
		}
		replays++
		for range 3 {
			if code := ePublish(e); code != codes.Changed {
				t.Fatalf("after %s: dialect E with the same token: %v, want 2.04", restart.name, code)
			}
		}
		if code := symPublish(idle); code != codes.Changed {
			t.Fatalf("after %s: device silent since its auth: %v, want 2.04", restart.name, code)
		}
	}
	// The sessions were rebuilt from the store (counted), not created anew.
	resp, err := http.Get(p.apiURL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !regexp.MustCompile(`(?m)^coapgate_replay_sessions_restored_total\{transport="coap"\} [1-9]`).Match(body) {
		t.Fatalf("no restored sessions counted:\n%s", regexp.MustCompile(`(?m)^coapgate_replay.*$`).FindAll(body, -1))
	}
	// What was acknowledged is stored once; no replay was stored.
	for _, c := range []struct {
		d    device
		want int
	}{{sym.d, sym.stored}, {symPlain.d, symPlain.stored}, {idle.d, idle.stored}, {e.d, e.stored}} {
		var page struct{ Items []json.RawMessage }
		p.call("GET", "/devices/"+c.d.pk+"/"+c.d.dk+"/messages", url.Values{"limit": {"1000"}}, nil, &page)
		if len(page.Items) != c.want {
			t.Fatalf("%s: %d messages stored, want the %d acknowledged", c.d.dk, len(page.Items), c.want)
		}
	}
	t.Logf("restart test: 2 restarts (SIGKILL, graceful); uplinks acknowledged with unchanged tokens: 5682 %d, 5683+2089 %d, silent-then-active %d, 2101 %d; %d replays after restarts refused",
		sym.stored, symPlain.stored, idle.stored, e.stored, replays)
}

// TestCrashKill9SymmetricReplay: symmetric-mode devices publish back to
// back to a real server process, which is killed with SIGKILL mid-burst.
// After the restart every datagram that was acknowledged before the kill,
// sent again with a new Message ID, is refused; each device carries on with
// its token; and every acknowledged uplink is stored exactly once.
func TestCrashKill9SymmetricReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the server and kills a subprocess (skipped with -short)")
	}
	p := newProcServer(t)
	p.start()
	var prod struct{ ProductKey string }
	p.call("POST", "/products", nil, map[string]any{"name": "crash-sym"}, &prod)
	symAddr, err := net.ResolveUDPAddr("udp", p.symAddr)
	if err != nil {
		t.Fatal(err)
	}
	type dev struct {
		d     device
		tok   string
		key   []byte
		next  uint64
		acked []message.Message
	}
	const devices = 8
	devs := make([]*dev, devices)
	for i := range devs {
		var d struct{ DeviceKey, DeviceSecret string }
		p.call("POST", "/devices", nil, map[string]any{"productKey": prod.ProductKey, "deviceKey": fmt.Sprintf("s%02d", i)}, &d)
		dv := device{pk: prod.ProductKey, dk: d.DeviceKey, secret: d.DeviceSecret}
		c, err := sdk.Dial(context.Background(), p.symAddr, sdk.WithSymmetric(),
			sdk.WithCredentials(sdk.Credentials{ProductKey: dv.pk, DeviceName: dv.dk, DeviceSecret: dv.secret}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.Auth(context.Background())
		c.Close()
		if err != nil {
			t.Fatal(err)
		}
		ss, _ := c.SymmetricSession()
		devs[i] = &dev{d: dv, tok: tok, key: symKey(dv.secret, ss.Random), next: uint64(ss.SeqOffset)}
	}

	var (
		total  atomic.Int64
		killed atomic.Bool
		wg     sync.WaitGroup
	)
	for i, dv := range devs {
		wg.Go(func() {
			conn, err := net.DialUDP("udp", nil, symAddr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			topic := fmt.Sprintf("/%s/%s/user/data", dv.d.pk, dv.d.dk)
			buf := make([]byte, 1500)
			for n := 1; ; n++ {
				m := symUplink(t, int32(n), dv.tok, dv.key, dv.next, fmt.Appendf(nil, "%d", dv.next), topic)
				m.Token = []byte{byte(i), byte(n >> 8), byte(n)}
				b := make([]byte, 1280)
				k, err := coder.DefaultCoder.Encode(m, b)
				if err != nil {
					t.Error(err)
					return
				}
				if _, err := conn.Write(b[:k]); err != nil {
					return
				}
				_ = conn.SetReadDeadline(time.Now().Add(time.Second))
				k, err = conn.Read(buf)
				if err != nil {
					// Unanswered, but perhaps committed: the next uplink
					// takes a new number.
					dv.next++
					if killed.Load() {
						return
					}
					continue
				}
				r := message.Message{Options: make(message.Options, 0, 8)}
				if _, err := coder.DefaultCoder.Decode(buf[:k], &r); err == nil && r.MessageID == int32(n) && r.Code == codes.Changed {
					dv.acked = append(dv.acked, m)
					total.Add(1)
				}
				dv.next++
			}
		})
	}
	for deadline := time.Now().Add(60 * time.Second); total.Load() < 400 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // waits for the burst to be under way; nothing is timed
	}
	killed.Store(true)
	p.kill()
	wg.Wait()
	acked := int(total.Load())
	if acked < 200 {
		t.Fatalf("only %d uplinks acknowledged before the kill; the burst did not run", acked)
	}

	p.start()
	if symAddr, err = net.ResolveUDPAddr("udp", p.symAddr); err != nil { // the new start's port
		t.Fatal(err)
	}
	conn := udpConn(t, symAddr)
	mid, replayed := int32(30000), 0
	for _, dv := range devs {
		for _, m := range dv.acked {
			mid++
			m.MessageID = mid
			if r := rawExchange(t, conn, m); r.Code != codes.Unauthorized {
				t.Fatalf("%s: a datagram acknowledged before the kill, replayed after it: %v, want 4.01", dv.d.dk, r.Code)
			}
			replayed++
		}
		mid++
		if r := rawExchange(t, conn, symUplink(t, mid, dv.tok, dv.key, dv.next, []byte("after"), fmt.Sprintf("/%s/%s/user/data", dv.d.pk, dv.d.dk))); r.Code != codes.Changed {
			t.Fatalf("%s with its token after the kill: %v, want 2.04", dv.d.dk, r.Code)
		}
	}
	stored := 0
	for _, dv := range devs {
		var page struct {
			Items []struct{ PayloadBase64 []byte }
		}
		p.call("GET", "/devices/"+dv.d.pk+"/"+dv.d.dk+"/messages", url.Values{"limit": {"1000"}}, nil, &page)
		seen := map[string]bool{}
		for _, it := range page.Items {
			if seen[string(it.PayloadBase64)] {
				t.Fatalf("%s: payload %q stored twice", dv.d.dk, it.PayloadBase64)
			}
			seen[string(it.PayloadBase64)] = true
		}
		for _, m := range dv.acked {
			if !seen[string(cbcOpen(t, dv.key, m.Payload))] {
				t.Fatalf("%s: an acknowledged uplink is missing", dv.d.dk)
			}
		}
		stored += len(page.Items)
	}
	t.Logf("symmetric crash test: %d uplinks acknowledged before SIGKILL, all %d replayed after the restart refused with 4.01, every device went on with its token; %d stored (each once)",
		acked, replayed, stored)
}

// procServer is a `coapgate serve` subprocess on one data directory, for
// tests that kill it or restart it. Every start binds port 0 and reads its
// addresses from its start line (as TestCrashKill9 does): no port is picked
// in advance for another process to take.
type procServer struct {
	t                         *testing.T
	bin, data, key            string
	env                       []string
	logf                      *os.File
	cmd                       *exec.Cmd
	coapAddr, symAddr, apiURL string // of the current start
	dtlsAddr                  string // of the current start ("" without DTLS)
	client                    *api.Client
}

// newProcServer builds the server binary and creates an API key in a new
// data directory; env adds COAPGATE_* settings. Call start to run it. The
// process is killed at the end of the test.
func newProcServer(t *testing.T, env ...string) *procServer {
	t.Helper()
	dir := t.TempDir()
	p := &procServer{t: t, bin: filepath.Join(dir, "coapgate"), data: filepath.Join(dir, "data")}
	if out, err := exec.Command("go", "build", "-o", p.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	if err := os.MkdirAll(p.data, 0o700); err != nil {
		t.Fatal(err)
	}
	keyOut, err := exec.Command(p.bin, "apikey", "create", "--name", "proc", "--data-dir", p.data).Output()
	if err != nil {
		t.Fatalf("apikey create: %v", err)
	}
	p.key = strings.TrimSpace(string(keyOut))
	p.env = append([]string{"COAPGATE_DATA_DIR=" + p.data, "COAPGATE_COAP_LISTEN=127.0.0.1:0",
		"COAPGATE_COAP_SYMMETRIC_LISTEN=127.0.0.1:0", "COAPGATE_DTLS_LISTEN=",
		"COAPGATE_API_LISTEN=127.0.0.1:0", "COAPGATE_LOG_LEVEL=info"}, env...)
	if p.logf, err = os.Create(filepath.Join(dir, "server.log")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if p.cmd != nil {
			_ = p.cmd.Process.Kill()
			_ = p.cmd.Wait()
		}
		p.logf.Close()
	})
	return p
}

// start runs the server, reads its addresses from its start line and waits
// until its API answers.
func (p *procServer) start() {
	p.t.Helper()
	p.cmd = exec.Command(p.bin, "serve")
	p.cmd.Env = append(os.Environ(), p.env...)
	p.cmd.Stdout = p.logf
	stderr, err := p.cmd.StderrPipe()
	if err != nil {
		p.t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	addrs := make(chan [4]string, 1)
	go func() { // copies the log to the file until the process ends
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(p.logf, line)
			if !sent && strings.Contains(line, `msg="coapgate started"`) {
				addrs <- [4]string{logField(line, "coap"), logField(line, "coap_sym"), logField(line, "api"), logField(line, "dtls")}
				sent = true
			}
		}
		if !sent {
			close(addrs)
		}
	}()
	a, ok := <-addrs
	if !ok || a[0] == "" || a[2] == "" {
		b, _ := os.ReadFile(p.logf.Name())
		p.t.Fatalf("server did not start:\n%s", b)
	}
	p.coapAddr, p.symAddr, p.apiURL, p.dtlsAddr = a[0], a[1], "http://"+a[2], a[3]
	p.client = &api.Client{BaseURL: p.apiURL, Key: p.key}
	waitHealthy(p.t, p.apiURL)
}

// kill ends the server with SIGKILL (no shutdown code runs).
func (p *procServer) kill() { p.signal(syscall.SIGKILL) }

// stop ends the server with SIGTERM: a graceful shutdown.
func (p *procServer) stop() { p.signal(syscall.SIGTERM) }

func (p *procServer) signal(sig syscall.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
	_ = p.cmd.Wait()
	p.cmd = nil
}

// call sends an API request and decodes the JSON answer into out.
func (p *procServer) call(method, path string, query url.Values, body, out any) {
	p.t.Helper()
	b, err := p.client.Do(context.Background(), method, path, query, body)
	if err != nil {
		p.t.Fatalf("%s %s: %v", method, path, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			p.t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
}
