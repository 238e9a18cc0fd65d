package main

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/internal/coapx"
)

// nginxStreamModule is where Debian's libnginx-mod-stream installs it.
const nginxStreamModule = "/usr/lib/nginx/modules/ngx_stream_module.so"

// startNginxUDP runs nginx (as this test's process) in front of the
// nodes' CoAP listeners: UDP, hashed on the source address. It returns
// the balancer's address.
func startNginxUDP(t *testing.T, c *testCluster) *net.UDPAddr {
	t.Helper()
	skip := t.Skip
	if os.Getenv("COAPGATE_REQUIRE_NGINX") != "" {
		skip = t.Fatal // CI installs it
	}
	bin, err := exec.LookPath("nginx")
	if err != nil {
		skip("nginx not installed (apt-get install nginx libnginx-mod-stream)")
	}
	if _, err := os.Stat(nginxStreamModule); err != nil {
		skip("nginx stream module not installed (libnginx-mod-stream)")
	}
	dir := t.TempDir()
	listen := nginxListenAddr(t) // nginx cannot report a port 0 back
	var servers strings.Builder
	for _, nd := range c.nodes {
		// As docs/deployment.md configures it: a node found dead stays out
		// for a minute, so that a device hashed to two dead nodes in turn
		// does not retry them alternately while each one's mark expires.
		fmt.Fprintf(&servers, "    server %s max_fails=1 fail_timeout=60s;\n", nd.coap)
	}
	conf := fmt.Sprintf(`load_module %s;
pid %s/nginx.pid;
error_log %s/error.log info;
worker_processes 1;
events { worker_connections 1024; }
stream {
  upstream coapgate {
    hash $remote_addr consistent;
%s  }
  server {
    listen %s udp;
    proxy_pass coapgate;
    proxy_timeout 60s;
  }
}
`, nginxStreamModule, dir, dir, servers.String(), listen)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-g", "daemon off;")
	out, err := os.Create(filepath.Join(dir, "out.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		out.Close()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", b)
		}
	})
	// Ready once its error log says the worker started.
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
		if strings.Contains(string(b), "start worker process") {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("nginx did not start:\n%s", b)
		}
	}
	a, err := net.ResolveUDPAddr("udp", listen)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// nginxListenAddr returns a loopback UDP address that was free a moment
// ago, for nginx's listen directive (nginx does not report a port 0 back).
func nginxListenAddr(t *testing.T) string {
	t.Helper()
	c, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	return c.LocalAddr().String()
}

// publishes reads a node's count of stored uplinks from its metrics.
func publishes(t *testing.T, nd *clusterNode) int {
	return int(metricSum(t, nd, "coapgate_publish_total{", `result="stored"`))
}

// metricSum adds up a node's samples whose line starts with prefix and
// contains label.
func metricSum(t *testing.T, nd *clusterNode, prefix, label string) float64 {
	t.Helper()
	return scrapeSum(t, nd.api+"/metrics", prefix, label)
}

// scrapeSum reads the Prometheus page at url and adds up the samples whose
// line starts with prefix and contains label (0 if none).
func scrapeSum(t *testing.T, url, prefix, label string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	total := 0.0
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, prefix) && strings.Contains(l, label) {
			f := strings.Fields(l)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatalf("metric line %q", l)
			}
			total += v
		}
	}
	return total
}

// TestClusterBehindNginx runs three nodes behind nginx's UDP stream
// balancer (hash on the source address). Devices on distinct loopback
// addresses authenticate and publish through the balancer; they spread
// over the nodes, every uplink is acknowledged and stored, and a webhook
// rule receives each exactly once.
func TestClusterBehindNginx(t *testing.T) {
	c := startCluster(t, 3)
	lb := startNginxUDP(t, c)
	n1 := c.nodes[0]
	hook := newHookReceiver(t)
	var prod struct{ ProductKey string }
	c.call(n1, "POST", "/products", map[string]any{"name": "lb"}, &prod)
	c.call(n1, "POST", "/rules", map[string]any{
		"name": "lb-hook", "topicFilter": "/sys/#", "startFrom": "beginning", "maxAttempts": 100,
		"actions": []map[string]any{{"type": "webhook", "url": hook.srv.URL}},
	}, nil)

	const devices, perDevice = 12, 5
	var acked []int64
	for i := range devices {
		var dev struct{ DeviceKey, DeviceSecret string }
		c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": fmt.Sprintf("lb%02d", i)}, &dev)
		// Each device has its own source address (127.0.0.10+i), so the
		// balancer's hash spreads them.
		src := &net.UDPAddr{IP: net.IPv4(127, 0, 0, byte(10+i))}
		conn, err := net.DialUDP("udp", src, lb)
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		// Authenticate through the balancer from 127.0.0.1 (one node); the
		// token then publishes from the device's own address (another node
		// for most devices).
		tok := sdkToken(t, lb.String(), prod.ProductKey, dev.DeviceKey, dev.DeviceSecret)
		topic := "/sys/" + prod.ProductKey + "/" + dev.DeviceKey + "/thing/event/property/post"
		for k := range perDevice {
			m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(1000 + k), Token: []byte{byte(i), byte(k)},
				Options: topicOpts(tok, 2088, topic), Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, k, k)}
			r := rawExchange(t, conn, m)
			if r.Code != codes.Changed {
				t.Fatalf("uplink of %s through nginx: %v", dev.DeviceKey, r.Code)
			}
			v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
			id, err := strconv.ParseInt(string(v), 10, 64)
			if err != nil {
				t.Fatalf("2090 %q", v)
			}
			acked = append(acked, id)
		}
	}
	served := 0
	var spread []string
	for _, nd := range c.nodes {
		p := publishes(t, nd)
		spread = append(spread, fmt.Sprintf("%s=%d", nd.name, p))
		if p > 0 {
			served++
		}
	}
	if served < 2 {
		t.Fatalf("the balancer sent every device to one node: %v", spread)
	}
	hook.waitAll(t, acked)
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		hook.mu.Lock()
		total := 0
		for _, v := range hook.got {
			total += v
		}
		hook.mu.Unlock()
		var page struct {
			Items []struct{ ID string } `json:"items"`
		}
		c.call(c.nodes[1], "GET", "/messages?limit=1000", nil, &page)
		if len(page.Items) != len(acked) {
			t.Fatalf("stored %d uplinks, want %d", len(page.Items), len(acked))
		}
		if total == len(acked) && len(hook.got) == len(acked) {
			break
		}
		if total > len(acked) || time.Now().After(end) {
			t.Fatalf("webhook got %d deliveries of %d distinct entries, want %d each once", total, len(hook.got), len(acked))
		}
	}
	t.Logf("behind nginx: %d devices, %d uplinks, per node %v, each delivered once", devices, len(acked), spread)
}
