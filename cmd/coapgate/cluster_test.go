package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/lease/pglease"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
)

// clusterNode is one `coapgate serve` process of a test cluster.
type clusterNode struct {
	name string
	cmd  *exec.Cmd
	coap *net.UDPAddr
	api  string // base URL
	done chan struct{}
}

// testCluster is N gateway processes on one PostgreSQL schema.
type testCluster struct {
	t      *testing.T
	bin    string
	dir    string
	env    []string
	pgURL  string
	schema string
	key    string // admin API key
	nodes  []*clusterNode
}

// startCluster builds the binary and starts n nodes sharing a fresh
// schema, a token key and a secret key file; every listener is on port 0
// and its address is read back from the node's start log line. env adds
// settings (KEY=value) to every node's environment.
func startCluster(t *testing.T, n int, env ...string) *testCluster {
	t.Helper()
	if testing.Short() {
		t.Skip("cluster test: builds the server and runs subprocesses (skipped with -short)")
	}
	return startClusterOn(t, n, pgtest.Schema(t), env...)
}

// startClusterOn is startCluster on the database at pgURL.
func startClusterOn(t *testing.T, n int, pgURL string, env ...string) *testCluster {
	t.Helper()
	dir := t.TempDir()
	c := &testCluster{t: t, bin: filepath.Join(dir, "coapgate"), dir: dir, pgURL: pgURL}
	if out, err := exec.Command("go", "build", "-o", c.bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	var tk [32]byte
	_, _ = rand.Read(tk[:])
	c.env = append(os.Environ(),
		"COAPGATE_STORE_DRIVER=postgres", "COAPGATE_STORE_POSTGRES_URL="+pgURL,
		"COAPGATE_STORE_SECRET_KEY_FILE="+filepath.Join(dir, "secret.key"),
		"COAPGATE_AUTH_TOKEN_KEY="+hex.EncodeToString(tk[:]),
		"COAPGATE_COAP_LISTEN=127.0.0.1:0", "COAPGATE_COAP_SYMMETRIC_LISTEN=", "COAPGATE_DTLS_LISTEN=",
		"COAPGATE_API_LISTEN=127.0.0.1:0", "COAPGATE_LOG_FORMAT=json", "COAPGATE_LOG_LEVEL=info",
		"COAPGATE_CLUSTER_LEASE_RETRY=100ms",
		"COAPGATE_FORWARD_BACKOFF_BASE=50ms", "COAPGATE_FORWARD_BACKOFF_MAX=500ms")
	c.env = append(c.env, env...)
	// The first API key (this also creates the shared secret key file).
	cmd := exec.Command(c.bin, "apikey", "create", "--name", "cluster", "--data-dir", filepath.Join(dir, "admin"))
	cmd.Env = c.env
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("apikey create: %v", err)
	}
	c.key = strings.TrimSpace(string(out))
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, pgURL)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&c.schema); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		c.nodes = append(c.nodes, c.start(fmt.Sprintf("n%d", i+1)))
	}
	t.Cleanup(func() {
		for _, nd := range c.nodes {
			c.kill(nd)
		}
	})
	return c
}

// start runs one node and waits for its start line.
func (c *testCluster) start(name string) *clusterNode {
	t := c.t
	t.Helper()
	data := filepath.Join(c.dir, name)
	logf, err := os.Create(filepath.Join(c.dir, name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			if len(b) > 8000 {
				b = b[len(b)-8000:]
			}
			t.Logf("log of %s (tail):\n%s", name, b)
		}
	})
	cmd := exec.Command(c.bin, "serve")
	cmd.Env = append(c.env, "COAPGATE_DATA_DIR="+data, "COAPGATE_CLUSTER_NODE="+name)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	nd := &clusterNode{name: name, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); pw.Close(); close(nd.done) }()
	started := make(chan map[string]any, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		for sc.Scan() {
			line := sc.Bytes()
			_, _ = logf.Write(append(line, '\n'))
			var rec map[string]any
			if json.Unmarshal(line, &rec) == nil && rec["msg"] == "coapgate started" {
				started <- rec
			}
		}
		_, _ = io.Copy(io.Discard, pr)
	}()
	select {
	case rec := <-started:
		a, err := net.ResolveUDPAddr("udp", fmt.Sprint(rec["coap"]))
		if err != nil {
			t.Fatal(err)
		}
		nd.coap, nd.api = a, "http://"+fmt.Sprint(rec["api"])
	case <-nd.done:
		t.Fatalf("node %s exited at start (see its log)", name)
	case <-time.After(60 * time.Second): // a hang guard
		t.Fatalf("node %s did not start", name)
	}
	return nd
}

func (c *testCluster) kill(nd *clusterNode) {
	_ = nd.cmd.Process.Signal(syscall.SIGKILL)
	<-nd.done
}

// call is an API request to node nd; out receives the JSON answer.
func (c *testCluster) call(nd *clusterNode, method, path string, body, out any) {
	c.t.Helper()
	cl := &api.Client{BaseURL: nd.api, Key: c.key}
	b, err := cl.Do(context.Background(), method, path, nil, body)
	if err != nil {
		c.t.Fatalf("%s %s on %s: %v", method, path, nd.name, err)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			c.t.Fatalf("%s %s: decode: %v", method, path, err)
		}
	}
}

// holder returns the node name holding lease name ("" when none).
func (c *testCluster) holder(name string) string {
	c.t.Helper()
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, c.pgURL)
	if err != nil {
		c.t.Fatal(err)
	}
	defer conn.Close(ctx)
	k := uint64(pglease.Key(c.schema, name))
	var app string
	err = conn.QueryRow(ctx, `SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
		WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1 AND l.classid = $1 AND l.objid = $2`,
		uint32(k>>32), uint32(k)).Scan(&app)
	if err == pgx.ErrNoRows {
		return ""
	}
	if err != nil {
		c.t.Fatal(err)
	}
	return strings.TrimPrefix(app, "coapgate-lease ")
}

// waitHolder waits until some node other than not holds lease name.
func (c *testCluster) waitHolder(name, not string) string {
	c.t.Helper()
	for end := time.Now().Add(60 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		if h := c.holder(name); h != "" && h != not {
			return h
		}
	}
	c.t.Fatalf("no node (other than %q) took lease %s", not, name)
	return ""
}

func (c *testCluster) node(name string) *clusterNode {
	for _, nd := range c.nodes {
		if nd.name == name {
			return nd
		}
	}
	c.t.Fatalf("no node %s", name)
	return nil
}

// hookReceiver counts webhook deliveries per log id.
type hookReceiver struct {
	mu  sync.Mutex
	got map[int64]int
	srv *httptest.Server
}

func newHookReceiver(t *testing.T) *hookReceiver {
	h := &hookReceiver{got: map[int64]int{}}
	h.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			ID int64 `json:"id,string"` // the log id, a string like the API's message id
		}
		if err := json.NewDecoder(r.Body).Decode(&env); err != nil || env.ID == 0 {
			http.Error(w, "bad envelope", http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		h.got[env.ID]++
		h.mu.Unlock()
	}))
	t.Cleanup(h.srv.Close)
	return h
}

// waitAll waits until every id was delivered at least once and returns a
// copy of the counts.
func (h *hookReceiver) waitAll(t *testing.T, ids []int64) map[int64]int {
	t.Helper()
	for end := time.Now().Add(90 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		h.mu.Lock()
		missing := 0
		for _, id := range ids {
			if h.got[id] == 0 {
				missing++
			}
		}
		cp := make(map[int64]int, len(h.got))
		for k, v := range h.got {
			cp[k] = v
		}
		h.mu.Unlock()
		if missing == 0 {
			return cp
		}
		if time.Now().After(end) {
			t.Fatalf("%d of %d acknowledged uplinks never reached the webhook", missing, len(ids))
		}
	}
}

// next0 returns a live node other than dead.
func next0(c *testCluster, dead string) *clusterNode {
	for _, nd := range c.nodes {
		if nd.name != dead {
			return nd
		}
	}
	c.t.Fatal("no live node")
	return nil
}

// exchangeTo sends m from conn to addr and returns the answer.
func exchangeTo(t *testing.T, conn *net.UDPConn, addr *net.UDPAddr, m message.Message) *message.Message {
	t.Helper()
	slices.SortStableFunc(m.Options, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
	sz, _ := coder.DefaultCoder.Size(m)
	b := make([]byte, sz)
	if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.WriteToUDP(b, addr); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 2048)
	_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	k, _, err := conn.ReadFromUDP(buf)
	if err != nil {
		t.Fatalf("no answer from %s: %v", addr, err)
	}
	r := &message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(buf[:k], r); err != nil {
		t.Fatal(err)
	}
	return r
}

// uplink publishes one CON through addr and returns the 2090 log id.
func clusterUplink(t *testing.T, conn *net.UDPConn, mid int32, tok, topic string, n int) int64 {
	t.Helper()
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid, Token: []byte{byte(mid >> 8), byte(mid)},
		Options: topicOpts(tok, 2088, topic), Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, n, n)}
	r := rawExchange(t, conn, m)
	if r.Code != codes.Changed {
		t.Fatalf("uplink %d: %v", n, r.Code)
	}
	v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
	id, err := strconv.ParseInt(string(v), 10, 64)
	if err != nil {
		t.Fatalf("uplink %d: 2090 %q", n, v)
	}
	return id
}

// TestClusterThreeNodes runs three gateway processes on one PostgreSQL
// schema: a token issued by one node publishes through all; a webhook rule
// created through one node gets every uplink exactly once although three
// nodes run its worker (one holds the lease); when the node holding the
// forwarding lease is killed with SIGKILL, another takes it over and every
// acknowledged uplink still reaches the receiver; the point projector's
// lease is held by a live node and points stay current.
func TestClusterThreeNodes(t *testing.T) {
	c := startCluster(t, 3)
	n1 := c.nodes[0]
	hook := newHookReceiver(t)

	var prod struct{ ProductKey string }
	c.call(n1, "POST", "/products", map[string]any{"name": "cluster"}, &prod)
	var dev struct{ DeviceKey, DeviceSecret string }
	c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": "c1"}, &dev)
	// The rule is created through n2: n1 and n3 learn it from the store.
	var rule struct{ ID string }
	c.call(c.nodes[1], "POST", "/rules", map[string]any{
		"name": "cluster-hook", "topicFilter": "/sys/#", "startFrom": "beginning", "maxAttempts": 100,
		"actions": []map[string]any{{"type": "webhook", "url": hook.srv.URL}},
	}, &rule)
	fwdLease := forward.LeaseName(rule.ID, 0)

	// A token issued through n1.
	tok := sdkToken(t, n1.coap.String(), prod.ProductKey, dev.DeviceKey, dev.DeviceSecret)
	topic := "/sys/" + prod.ProductKey + "/" + dev.DeviceKey + "/thing/event/property/post"
	conns := map[string]*net.UDPConn{}
	for _, nd := range c.nodes {
		conns[nd.name] = udpConn(t, nd.coap)
	}

	// Phase 1, normal case: uplinks through every node, each delivered once.
	var acked []int64
	mid := int32(100)
	n := 0
	for range 10 {
		for _, nd := range c.nodes {
			mid++
			n++
			acked = append(acked, clusterUplink(t, conns[nd.name], mid, tok, topic, n))
		}
	}
	// A CON retransmitted to another node (a load balancer re-hash): same
	// Message ID, first to n1 then to n2 and n3, each time from another
	// source port, as a proxying balancer (nginx) shows a re-hashed flow to
	// the new node.
	mid++
	n++
	retx := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid, Token: []byte{9, 9},
		Options: topicOpts(tok, 2088, topic), Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, n, n)}
	var retxID string
	for _, nd := range c.nodes {
		rc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		r := exchangeTo(t, rc, nd.coap, retx)
		v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
		if r.Code != codes.Changed || (retxID != "" && string(v) != retxID) {
			t.Fatalf("retransmission to %s: %v, log id %s, first %s", nd.name, r.Code, v, retxID)
		}
		retxID = string(v)
	}
	id, _ := strconv.ParseInt(retxID, 10, 64)
	acked = append(acked, id)
	var page struct {
		Items []struct{ ID string } `json:"items"`
	}
	c.call(c.nodes[2], "GET", "/messages?limit=1000", nil, &page)
	if len(page.Items) != len(acked) {
		t.Fatalf("stored %d uplinks, want %d (the retransmission once)", len(page.Items), len(acked))
	}
	last := acked[len(acked)-1]

	hook.waitAll(t, acked)
	// Exactly once: the shared cursor is past every uplink and the shared
	// delivered counter equals the number of uplinks (a second node
	// delivering too would add to it).
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var rs struct {
			Actions []struct {
				Cursor    int64 `json:"cursor"`
				Delivered int64 `json:"delivered"`
			} `json:"actions"`
		}
		c.call(n1, "GET", "/rules/"+rule.ID+"/status", nil, &rs)
		st := rs.Actions
		if len(st) == 1 && st[0].Cursor >= last && st[0].Delivered >= int64(len(acked)) {
			if st[0].Delivered != int64(len(acked)) {
				t.Fatalf("delivered counter %d, want %d (one delivery per uplink)", st[0].Delivered, len(acked))
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("cursor never passed %d: %+v", last, st)
		}
	}
	hook.mu.Lock()
	for _, id := range acked {
		if hook.got[id] != 1 {
			t.Errorf("log id %d delivered %d times in the normal case, want 1", id, hook.got[id])
		}
	}
	if len(hook.got) != len(acked) {
		t.Errorf("receiver got %d distinct entries, want %d", len(hook.got), len(acked))
	}
	hook.mu.Unlock()
	holder := c.waitHolder(fwdLease, "")
	// Three leases in the cluster (points, presence, the rule's action),
	// each held once.
	c.waitHolder("presence", "")
	held := 0.0
	for _, nd := range c.nodes {
		held += metricSum(t, nd, "coapgate_cluster_leases_held", "")
	}
	if held != 3 {
		t.Fatalf("nodes report %v leases held in all, want 3", held)
	}
	t.Logf("normal case: %d uplinks through 3 nodes, each delivered once; forwarding lease on %s, points lease on %s",
		len(acked), holder, c.holder("points"))

	// Downlink: a command created through n1 is announced (option 2100)
	// by n3 when the device's uplink reaches n3.
	n3 := c.nodes[2]
	downlinkUplink := func() *message.Message {
		mid++
		n++
		// n3 holds the device's session, so it pushes the command too:
		// refused here, to see it announced.
		r := exchangeRefusingPushes(t, conns[n3.name], message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: mid,
			Token: []byte{7, byte(mid)}, Options: topicOpts(tok, 2088, topic),
			Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, n, n)})
		if r.Code != codes.Changed {
			t.Fatalf("uplink through %s: %v", n3.name, r.Code)
		}
		v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
		id, _ := strconv.ParseInt(string(v), 10, 64)
		acked = append(acked, id)
		return r
	}
	if _, ok := coapx.Bytes(downlinkUplink().Options, coapx.OptionDownlink); ok {
		t.Fatal("option 2100 before any command exists")
	}
	var cmd struct{ ID, Topic string }
	c.call(n1, "POST", "/devices/"+prod.ProductKey+"/"+dev.DeviceKey+"/commands",
		map[string]any{"type": "setProperties", "params": map[string]any{"x": 1}}, &cmd)
	for end := time.Now().Add(30 * time.Second); ; {
		if v, ok := coapx.Bytes(downlinkUplink().Options, coapx.OptionDownlink); ok {
			if !strings.Contains(string(v), "thing/service/property/set") {
				t.Fatalf("option 2100 %q does not name the command's topic %s", v, cmd.Topic)
			}
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%s never announced the command created through %s", n3.name, n1.name)
		}
	}
	// Cancelled through n2: n3 stops announcing it.
	c.call(c.nodes[1], "DELETE", "/devices/"+prod.ProductKey+"/"+dev.DeviceKey+"/commands/"+cmd.ID, nil, nil)
	for end := time.Now().Add(30 * time.Second); ; {
		if _, ok := coapx.Bytes(downlinkUplink().Options, coapx.OptionDownlink); !ok {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("%s still announces a command cancelled through n2", n3.name)
		}
	}

	// Phase 2: a burst of CON uplinks through every node; the node holding
	// the forwarding lease is killed with SIGKILL in the middle of it.
	// Every uplink acknowledged (by any node) must be stored and delivered.
	var (
		burstMu sync.Mutex
		burst   []int64
		acks    atomic.Int64
		stop    = make(chan struct{})
		wg      sync.WaitGroup
	)
	for i, nd := range c.nodes {
		for j := range 2 {
			wg.Go(func() {
				conn, err := net.DialUDP("udp", nil, nd.coap)
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
					bmid := uint16(20000 + i*4000 + j*2000 + k)
					m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(bmid),
						Token: []byte{byte(i), byte(j), byte(k >> 8), byte(k)}, Options: topicOpts(tok, 2088, topic),
						Payload: fmt.Appendf(nil, `{"id":"b%d","params":{"b":%d}}`, bmid, k)}
					slices.SortStableFunc(m.Options, func(a, b message.Option) int { return int(a.ID) - int(b.ID) })
					sz, _ := coder.DefaultCoder.Size(m)
					b := make([]byte, sz)
					if _, err := coder.DefaultCoder.Encode(m, b); err != nil {
						t.Error(err)
						return
					}
					if _, err := conn.Write(b); err != nil {
						continue // the node is gone: ICMP unreachable
					}
					_ = conn.SetReadDeadline(time.Now().Add(time.Second))
					nr, err := conn.Read(buf)
					if err != nil {
						continue // no answer: not acknowledged
					}
					r := message.Message{Options: make(message.Options, 0, 8)}
					if _, err := coder.DefaultCoder.Decode(buf[:nr], &r); err != nil || r.MessageID != int32(bmid) || r.Code != codes.Changed {
						continue
					}
					v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
					id, err := strconv.ParseInt(string(v), 10, 64)
					if err != nil {
						t.Errorf("2.04 without a valid 2090: %q", v)
						return
					}
					burstMu.Lock()
					burst = append(burst, id)
					burstMu.Unlock()
					acks.Add(1)
				}
			})
		}
	}
	waitAcks := func(n int64) {
		for end := time.Now().Add(60 * time.Second); acks.Load() < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) {
				close(stop)
				wg.Wait()
				t.Fatalf("burst: only %d of %d uplinks acknowledged", acks.Load(), n)
			}
		}
	}
	waitAcks(150)
	c.kill(c.node(holder))
	killedAt := acks.Load()
	waitAcks(killedAt + 150) // the survivors go on
	close(stop)
	wg.Wait()
	acked = append(acked, burst...)
	next := c.waitHolder(fwdLease, holder)
	for range 10 {
		for _, nd := range c.nodes {
			if nd.name == holder {
				continue
			}
			mid++
			n++
			acked = append(acked, clusterUplink(t, conns[nd.name], mid, tok, topic, n))
		}
	}
	// Every acknowledged uplink is stored (once: ids are distinct)...
	c.requireStored(t, next0(c, holder), acked)
	// ...and delivered at least once.
	hook.waitAll(t, acked)
	// Phase 3: the point projector's holder is killed too (unless it was
	// the node killed above); the last node takes the lease and the latest
	// point follows the uplinks sent through it.
	pointsHolder := c.waitHolder("points", holder)
	dead := map[string]bool{holder: true}
	if pointsHolder != holder {
		c.kill(c.node(pointsHolder))
		dead[pointsHolder] = true
		pointsHolder = c.waitHolder("points", pointsHolder)
	}
	var alive *clusterNode
	for _, nd := range c.nodes {
		if !dead[nd.name] {
			alive = nd
			break
		}
	}
	for range 5 {
		mid++
		n++
		acked = append(acked, clusterUplink(t, conns[alive.name], mid, tok, topic, n))
	}
	for end := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		var pts struct {
			Items []struct {
				Name  string `json:"name"`
				Value any    `json:"value"`
			} `json:"items"`
		}
		c.call(alive, "GET", "/devices/"+url.PathEscape(prod.ProductKey)+"/"+dev.DeviceKey+"/measurepoints", nil, &pts)
		if slices.ContainsFunc(pts.Items, func(p struct {
			Name  string `json:"name"`
			Value any    `json:"value"`
		}) bool {
			return p.Name == "n" && fmt.Sprint(p.Value) == strconv.Itoa(n)
		}) {
			break
		}
		if time.Now().After(end) {
			t.Fatalf("latest point never reached n=%d: %+v", n, pts)
		}
	}
	hook.waitAll(t, acked)
	t.Logf("burst: %d uplinks acknowledged (%d before SIGKILL of %s); forwarding lease then on %s; all acknowledged uplinks stored and delivered; "+
		"points lease finally on %s, latest point current; %d uplinks in all delivered at least once",
		len(burst), killedAt, holder, next, pointsHolder, len(acked))
}

// requireStored fails unless every id in acked is in the message log, read
// through nd.
func (c *testCluster) requireStored(t *testing.T, nd *clusterNode, acked []int64) {
	t.Helper()
	stored := map[int64]bool{}
	for after := int64(0); ; {
		var page struct {
			Items []struct{ ID string } `json:"items"`
		}
		path := "/messages?order=asc&limit=1000"
		if after > 0 {
			path += fmt.Sprintf("&after=%d", after)
		}
		c.call(nd, "GET", path, nil, &page)
		if len(page.Items) == 0 {
			break
		}
		for _, it := range page.Items {
			id, _ := strconv.ParseInt(it.ID, 10, 64)
			stored[id] = true
			after = id
		}
	}
	for _, id := range acked {
		if !stored[id] {
			t.Fatalf("acknowledged uplink %d is not stored", id)
		}
	}
}
