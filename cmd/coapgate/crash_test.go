package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
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

// TestCrashKill9 is the durability proof of the data plane: a real server
// process takes a burst of CON uplinks from 16 devices and is killed with
// SIGKILL in the middle of it. After a restart on the same data directory,
// every uplink that was answered 2.04 (its option-2090 message ID) must be
// in the store, and must reach a webhook forwarding rule at least once.
func TestCrashKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: builds the server and kills a subprocess (skipped with -short)")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "coapgate")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	keyOut, err := exec.Command(bin, "apikey", "create", "--name", "crash", "--data-dir", data).Output()
	if err != nil {
		t.Fatalf("apikey create: %v", err)
	}
	key := strings.TrimSpace(string(keyOut))

	// The webhook receiver counts deliveries per log id.
	var (
		hookMu sync.Mutex
		hooked = map[int64]int{}
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			ID int64 `json:"id,string"` // the log id, a string like the API's message id
		}
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil || env.ID == 0 {
			http.Error(w, "bad envelope", http.StatusBadRequest)
			return
		}
		hookMu.Lock()
		hooked[env.ID]++
		hookMu.Unlock()
	}))
	defer hook.Close()

	logf, err := os.Create(filepath.Join(dir, "server.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	// The server binds port 0 and names its addresses in its start line:
	// no port is picked in advance for another process to take.
	var coapAddr, apiURL string
	start := func() *exec.Cmd {
		cmd := exec.Command(bin, "serve")
		cmd.Env = append(os.Environ(), "COAPGATE_DATA_DIR="+data, "COAPGATE_COAP_LISTEN=127.0.0.1:0",
			"COAPGATE_COAP_SYMMETRIC_LISTEN=", "COAPGATE_DTLS_LISTEN=", "COAPGATE_API_LISTEN=127.0.0.1:0",
			"COAPGATE_LOG_LEVEL=info", "COAPGATE_FORWARD_BACKOFF_BASE=50ms", "COAPGATE_FORWARD_BACKOFF_MAX=500ms")
		cmd.Stdout = logf
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		addrs := make(chan [2]string, 1)
		go func() { // copies the log to the file until the process ends
			sc := bufio.NewScanner(stderr)
			sent := false
			for sc.Scan() {
				line := sc.Text()
				fmt.Fprintln(logf, line)
				if !sent && strings.Contains(line, `msg="coapgate started"`) {
					addrs <- [2]string{logField(line, "coap"), logField(line, "api")}
					sent = true
				}
			}
			if !sent {
				close(addrs)
			}
		}()
		a, ok := <-addrs
		if !ok || a[0] == "" || a[1] == "" {
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("server did not start:\n%s", b)
		}
		coapAddr, apiURL = a[0], "http://"+a[1]
		waitHealthy(t, apiURL)
		return cmd
	}
	srv := start()
	defer func() { _ = srv.Process.Kill(); _ = srv.Wait() }()

	client := &api.Client{BaseURL: apiURL, Key: key}
	call := func(method, path string, query url.Values, body, out any) {
		t.Helper()
		b, err := client.Do(context.Background(), method, path, query, body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		if out != nil {
			if err := json.Unmarshal(b, out); err != nil {
				t.Fatalf("%s %s: decode: %v", method, path, err)
			}
		}
	}
	var prod struct{ ProductKey string }
	call("POST", "/products", nil, map[string]any{"name": "crash"}, &prod)
	call("POST", "/rules", nil, map[string]any{
		"name": "crash-hook", "topicFilter": "/sys/#", "startFrom": "beginning", "maxAttempts": 100,
		"actions": []map[string]any{{"type": "webhook", "url": hook.URL, "secret": "s3cret"}},
	}, nil)

	const devices = 16
	type dev struct {
		dk, token string
	}
	devs := make([]dev, devices)
	for i := range devs {
		var d struct{ DeviceKey, DeviceSecret string }
		call("POST", "/devices", nil, map[string]any{"productKey": prod.ProductKey, "deviceKey": fmt.Sprintf("c%02d", i)}, &d)
		c, err := sdk.Dial(context.Background(), coapAddr, sdk.WithCredentials(sdk.Credentials{
			ProductKey: prod.ProductKey, DeviceName: d.DeviceKey, DeviceSecret: d.DeviceSecret}))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := c.Auth(context.Background())
		c.Close()
		if err != nil {
			t.Fatalf("auth %s: %v", d.DeviceKey, err)
		}
		devs[i] = dev{dk: d.DeviceKey, token: tok}
	}

	// The burst: each device sends CON publishes back to back on its own
	// socket and records the 2090 message ID of every 2.04.
	var (
		ackMu  sync.Mutex
		acked  []int64
		total  atomic.Int64
		killed atomic.Bool
		wg     sync.WaitGroup
	)
	for i, d := range devs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := net.Dial("udp", coapAddr)
			if err != nil {
				t.Error(err)
				return
			}
			defer conn.Close()
			topic := "/sys/" + prod.ProductKey + "/" + d.dk + "/thing/event/property/post"
			buf := make([]byte, 1500)
			for n := 1; ; n++ {
				m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(n), Token: []byte{byte(i), byte(n >> 8), byte(n)},
					Options: topicOpts(d.token, 2088, topic),
					Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, n, n)}
				sz, _ := coder.DefaultCoder.Size(m)
				b := make([]byte, sz)
				if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
					t.Error(err)
					return
				}
				if _, err := conn.Write(b); err != nil {
					return
				}
				_ = conn.SetReadDeadline(time.Now().Add(time.Second))
				k, err := conn.Read(buf)
				if err != nil {
					if killed.Load() {
						return // the server is gone: the burst ends
					}
					continue // a lost answer: not acknowledged, moves on
				}
				r := message.Message{Options: make(message.Options, 0, 8)}
				if _, err := coder.DefaultCoder.Decode(buf[:k], &r); err != nil || r.MessageID != int32(n) || r.Code != codes.Changed {
					continue
				}
				v, ok := coapx.Bytes(r.Options, 2090)
				id, err := strconv.ParseInt(string(v), 10, 64)
				if !ok || err != nil {
					t.Errorf("2.04 without a valid 2090: %q", v)
					return
				}
				ackMu.Lock()
				acked = append(acked, id)
				ackMu.Unlock()
				total.Add(1)
			}
		}()
	}
	// Kill mid-burst: once enough uplinks are acknowledged, while all
	// devices are still sending.
	deadline := time.Now().Add(60 * time.Second)
	for total.Load() < 1500 && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	killed.Store(true)
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = srv.Wait()
	wg.Wait()
	ackMu.Lock()
	ackedIDs := append([]int64(nil), acked...)
	ackMu.Unlock()
	if len(ackedIDs) < 1000 {
		t.Fatalf("only %d uplinks acknowledged before the kill; the burst did not run", len(ackedIDs))
	}

	srv = start()
	client = &api.Client{BaseURL: apiURL, Key: key} // the new start's port
	// Every acknowledged uplink is in the store.
	stored := map[int64]bool{}
	for after := int64(0); ; {
		var page struct {
			Items []struct {
				ID string `json:"id"`
			} `json:"items"`
		}
		q := url.Values{"limit": {"1000"}}
		if after > 0 {
			q.Set("after", strconv.FormatInt(after, 10))
		}
		call("GET", "/messages", q, nil, &page)
		if len(page.Items) == 0 {
			break
		}
		for _, it := range page.Items {
			id, _ := strconv.ParseInt(it.ID, 10, 64)
			stored[id] = true
			after = id
		}
	}
	lost := 0
	for _, id := range ackedIDs {
		if !stored[id] {
			lost++
		}
	}
	if lost > 0 {
		t.Fatalf("%d of %d acknowledged uplinks are missing from the store after SIGKILL", lost, len(ackedIDs))
	}
	// And each reaches the webhook at least once.
	var missing, dups, delivered int
	for end := time.Now().Add(90 * time.Second); ; {
		hookMu.Lock()
		missing, dups, delivered = 0, 0, len(hooked)
		for _, id := range ackedIDs {
			if hooked[id] == 0 {
				missing++
			}
		}
		for _, n := range hooked {
			if n > 1 {
				dups++
			}
		}
		hookMu.Unlock()
		if missing == 0 || time.Now().After(end) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Logf("crash test: %d uplinks acknowledged before SIGKILL, %d stored after restart (acknowledged ones all present), "+
		"%d distinct log ids delivered to the webhook, %d delivered more than once, %d acknowledged not delivered",
		len(ackedIDs), len(stored), delivered, dups, missing)
	if missing > 0 {
		t.Fatalf("%d acknowledged uplinks never reached the webhook", missing)
	}
}

// logField returns the value of key=value in a text-format log line.
func logField(line, key string) string {
	for _, f := range strings.Fields(line) {
		if v, ok := strings.CutPrefix(f, key+"="); ok {
			return v
		}
	}
	return ""
}

func waitHealthy(t *testing.T, base string) {
	t.Helper()
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		resp, err := http.Get(base + "/api/v1/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
	}
	t.Fatalf("server at %s not healthy within 30s", base)
}
