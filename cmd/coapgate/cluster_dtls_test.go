package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/pion/dtls/v3"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/dtlstest"
	"github.com/coapgate/coapgate/internal/natstest"
	"github.com/coapgate/coapgate/sdk"
)

// replDevice is a PSK device on a pion client with a connection ID,
// behind its relay.
type replDevice struct {
	name, pk, dk string
	relay        *dtlstest.Relay
	conn         *dtls.Conn
	in           chan []byte
	closed       chan struct{} // the session ended (close_notify or error)
	mid          uint16
	acked        []int64
}

func dialReplDevice(t *testing.T, r *dtlstest.Relay, pk, dk, secret string, cid bool) *replDevice {
	t.Helper()
	id := dtlspsk.Identity{ProductKey: pk, DeviceKey: dk, SecureMode: dtlspsk.ModeDevice, Lifetime: time.Hour}.String()
	c, err := dtlstest.DialPSK(t, r, id, dtlspsk.Key(secret), cid, 16, 60*time.Second)
	if err != nil {
		t.Fatalf("handshake of %s: %v", dk, err)
	}
	return &replDevice{name: dk, pk: pk, dk: dk, relay: r, conn: c.Conn, in: c.In, closed: c.Closed, mid: 100}
}

// uplink returns the next CON uplink, encoded.
func (d *replDevice) uplink() ([]byte, error) {
	d.mid++
	opts := message.Options{{ID: message.URIPath, Value: []byte("topic")}}
	for _, s := range []string{"sys", d.pk, d.dk, "thing", "event", "property", "post"} {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	opts = append(opts, message.Option{ID: message.ContentFormat, Value: coapx.EncodeUint(50)})
	m := message.Message{Type: message.Confirmable, Code: codes.POST, MessageID: int32(d.mid), Token: []byte{byte(d.mid >> 8), byte(d.mid)},
		Options: opts, Payload: fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, d.mid, d.mid)}
	b := make([]byte, 512)
	n, err := coder.DefaultCoder.Encode(m, b)
	return b[:n], err
}

// publish sends one CON uplink, retransmitting (with a generous bound)
// until its 2.04, and notes the stored message's ID.
func (d *replDevice) publish(t *testing.T) error {
	b, err := d.uplink()
	if err != nil {
		return err
	}
	for try := range 16 {
		if _, err := d.conn.Write(b); err != nil {
			return err
		}
		timer := time.NewTimer(time.Duration(min(try+1, 6)) * time.Second)
	wait:
		for {
			select {
			case <-d.closed:
				timer.Stop()
				return errDTLSClosed
			case <-timer.C:
				break wait
			case p := <-d.in:
				r := message.Message{Options: make(message.Options, 0, 32)}
				if _, err := coder.DefaultCoder.Decode(p, &r); err != nil || r.MessageID != int32(d.mid) {
					continue
				}
				timer.Stop()
				if r.Code != codes.Changed {
					return fmt.Errorf("uplink of %s: %v", d.dk, r.Code)
				}
				v, _ := coapx.Bytes(r.Options, coapx.OptionMessageID)
				id, err := strconv.ParseInt(string(v), 10, 64)
				if err != nil {
					return fmt.Errorf("message ID %q", v)
				}
				d.acked = append(d.acked, id)
				return nil
			}
		}
	}
	return fmt.Errorf("uplink of %s: no answer", d.dk)
}

// errDTLSClosed: the gateway ended the device's session.
var errDTLSClosed = errors.New("the DTLS session ended")

// dtlsAddr reads a node's DTLS listener from its start line.
func replDTLSAddr(t *testing.T, c *testCluster, nd *clusterNode) *net.UDPAddr {
	t.Helper()
	f, err := os.Open(filepath.Join(c.dir, nd.name+".log"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rec map[string]any
		if json.Unmarshal(sc.Bytes(), &rec) == nil && rec["msg"] == "coapgate started" {
			a, err := net.ResolveUDPAddr("udp", fmt.Sprint(rec["dtls"]))
			if err != nil {
				t.Fatal(err)
			}
			return a
		}
	}
	t.Fatalf("no start line in %s's log", nd.name)
	return nil
}

// TestClusterSessionFailover: three nodes (native DTLS engine, sessions
// shared through NATS) behind nginx. Devices with connection IDs publish
// CON uplinks in bursts through relays standing for their NATs; their
// addresses change (nginx sends some to another node) and then the node
// holding the most sessions is SIGKILLed: every device continues through
// the others without a new handshake (the relays see no ClientHello after
// the first exchange, the nodes count no handshake), every uplink that
// got a 2.04 is stored, and no session's gateway records repeat an
// (epoch, sequence number). A device without a connection ID whose
// records reach another node from the same address (what an
// address-preserving balancer does on re-hash) continues too.
func TestClusterSessionFailover(t *testing.T) {
	natsURL := natstest.URL(t)
	c := startCluster(t, 0)
	bucket := fmt.Sprintf("coapgate_test_dtls_%d", time.Now().UnixNano())
	t.Cleanup(func() {
		if nc, err := nats.Connect(natsURL); err == nil {
			if js, err := jetstream.New(nc); err == nil {
				_ = js.DeleteKeyValue(context.Background(), bucket)
			}
			nc.Close()
		}
	})
	// Behind nginx only connection-ID sessions can move; the address
	// sessions are on for the one device that talks to the nodes
	// directly (an address-preserving balancer), which nginx's devices,
	// all with connection IDs, never use.
	c.env = append(c.env, "COAPGATE_DTLS_LISTEN=127.0.0.1:0",
		"COAPGATE_DTLS_CONNECTION_ID=true", "COAPGATE_CLUSTER_NATS_URL="+natsURL,
		"COAPGATE_CLUSTER_DTLS_BUCKET="+bucket, "COAPGATE_CLUSTER_DTLS_SEQ_RESERVE=8",
		"COAPGATE_CLUSTER_DTLS_ADDRESS_SESSIONS=true")
	dtlsOf := map[*clusterNode]*net.UDPAddr{}
	lbView := &testCluster{}
	for i := range 3 {
		nd := c.start(fmt.Sprintf("n%d", i+1))
		c.nodes = append(c.nodes, nd)
		dtlsOf[nd] = replDTLSAddr(t, c, nd)
		lbView.nodes = append(lbView.nodes, &clusterNode{coap: dtlsOf[nd]})
	}
	lb := startNginxUDP(t, lbView)
	n1 := c.nodes[0]
	var prod struct{ ProductKey string }
	c.call(n1, "POST", "/products", map[string]any{"name": "dtls-repl"}, &prod)
	newDev := func(dk string) string {
		var dev struct{ DeviceKey, DeviceSecret string }
		c.call(n1, "POST", "/devices", map[string]any{"productKey": prod.ProductKey, "deviceKey": dk}, &dev)
		return dev.DeviceSecret
	}

	const devices, burst = 6, 4
	var devs []*replDevice
	for i := range devices {
		dk := fmt.Sprintf("cid%02d", i)
		r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, byte(20+i)), lb)
		devs = append(devs, dialReplDevice(t, r, prod.ProductKey, dk, newDev(dk), true))
	}
	// The device without a connection ID talks to n1 directly; n1 is
	// the node killed below.
	ra := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 60), dtlsOf[n1])
	addrDev := dialReplDevice(t, ra, prod.ProductKey, "addr00", newDev("addr00"), false)
	// Another one, disabled while its node is dead: its session must not
	// come back on another node.
	rg := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 61), dtlsOf[n1])
	goneDev := dialReplDevice(t, rg, prod.ProductKey, "gone00", newDev("gone00"), false)

	sum := func(prefix, label string) float64 {
		total := 0.0
		for _, nd := range c.nodes {
			select {
			case <-nd.done:
				continue // killed
			default:
			}
			total += metricSum(t, nd, prefix, label)
		}
		return total
	}
	event := func(ev string) float64 {
		return sum("coapgate_dtls_replication_total{", `event="`+ev+`"`)
	}
	var acks atomic.Int64 // uplinks answered 2.04
	// startBurst has every device of ds publish burst CON uplinks, each
	// device one after the other; wait fails the test on any error.
	startBurst := func(phase string, ds []*replDevice) (wait func()) {
		var wg sync.WaitGroup
		errs := make(chan error, len(ds)*burst)
		for _, d := range ds {
			wg.Go(func() {
				for range burst {
					if err := d.publish(t); err != nil {
						errs <- fmt.Errorf("%s: %w", phase, err)
						return
					}
					acks.Add(1)
				}
			})
		}
		return func() {
			t.Helper()
			wg.Wait()
			close(errs)
			for err := range errs {
				dumpDTLSMetrics(t, c)
				t.Fatal(err)
			}
		}
	}
	burstAll := func(phase string, ds []*replDevice) {
		t.Helper()
		startBurst(phase, ds)()
	}
	all := append(append([]*replDevice(nil), devs...), addrDev)
	burstAll("first burst", append(all, goneDev))
	handshakes := sum("coapgate_dtls_handshakes_total{", "")
	if handshakes != devices+2 {
		t.Fatalf("%v handshakes counted, want %d", handshakes, devices+2)
	}
	// Wait until every session is stored (the write happens after the
	// handshake, asynchronously).
	for end := time.Now().Add(60 * time.Second); event("exported") < devices+2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("%v sessions stored, want %d", event("exported"), devices+2)
		}
	}

	// Each node's count of handshakes, which must not move from here on.
	hsOf := map[*clusterNode]float64{}
	for _, nd := range c.nodes {
		hsOf[nd] = metricSum(t, nd, "coapgate_dtls_handshakes_total{", "")
	}
	noNewHandshakes := func(phase string) {
		t.Helper()
		for _, nd := range c.nodes {
			select {
			case <-nd.done:
				continue
			default:
			}
			if got := metricSum(t, nd, "coapgate_dtls_handshakes_total{", ""); got != hsOf[nd] {
				t.Fatalf("%s counted %v handshakes after %s, had %v", nd.name, got, phase, hsOf[nd])
			}
		}
	}

	// NAT rebinding: every device's source address changes; nginx hashes
	// some of them to another node.
	for i, d := range devs {
		d.relay.Rebind(net.IPv4(127, 0, 0, byte(40+i)))
	}
	burstAll("after rebinding", devs)
	moved := event("imported")
	if moved == 0 {
		t.Fatal("no session moved to another node after the rebinding")
	}
	noNewHandshakes("the rebinding")

	// The node holding the most sessions dies.
	victim := c.nodes[0]
	for _, nd := range c.nodes {
		if metricSum(t, nd, "coapgate_dtls_sessions ", "") > metricSum(t, victim, "coapgate_dtls_sessions ", "") {
			victim = nd
		}
	}
	held := metricSum(t, victim, "coapgate_dtls_sessions ", "")
	// It dies in the middle of a burst: once every device has had one
	// more uplink answered, with others in flight.
	from := acks.Load()
	wait := startBurst("across the node's death", all)
	for end := time.Now().Add(120 * time.Second); acks.Load() < from+int64(len(all)); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) {
			wait()
			t.Fatal("the burst did not start")
		}
	}
	c.kill(victim)
	// The address-preserving balancer re-hashes the device's address to
	// another node; the source address stays.
	var survivor *clusterNode
	for _, nd := range c.nodes {
		if nd != victim && nd != n1 {
			survivor = nd
			break
		}
	}
	ra.Retarget(dtlsOf[survivor])
	if victim != n1 {
		// n1 is alive: kill it too, so that the direct devices' node is
		// gone as well.
		c.kill(n1)
	}
	wait()
	noNewHandshakes("the failover")
	// gone00 is disabled while its node is dead; its next record reaches
	// the survivor, which verifies it and then finds the device disabled:
	// the session is not taken over and its record is deleted.
	deletedBefore := event("deleted")
	c.call(survivor, "PATCH", "/devices/"+prod.ProductKey+"/gone00", map[string]any{"enabled": false}, nil)
	rg.Retarget(dtlsOf[survivor])
	up, err := goneDev.uplink()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := goneDev.conn.Write(up); err != nil {
		t.Fatal(err)
	}
	for end := time.Now().Add(60 * time.Second); event("stale") < 1 || event("deleted") <= deletedBefore; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(end) {
			t.Fatalf("the disabled device's session: stale %v, deleted %v (before %v)", event("stale"), event("deleted"), deletedBefore)
		}
	}
	burstAll("after the node died", all)
	noNewHandshakes("the failover")
	for _, r := range append([]*dtlstest.Relay{ra}, replRelays(devs)...) {
		if _, hellos := r.Check(t, "device"); hellos != 2 {
			t.Fatalf("a device sent %d ClientHellos, want 2 (one cookie exchange, no new handshake)", hellos)
		}
	}

	// Every acknowledged uplink is stored.
	var alive *clusterNode
	for _, nd := range c.nodes {
		select {
		case <-nd.done:
		default:
			alive = nd
		}
	}
	var page struct {
		Items []struct{ ID, DeviceKey string } `json:"items"`
	}
	c.call(alive, "GET", "/messages?limit=1000", nil, &page)
	stored := map[string]bool{}
	gone := 0
	for _, it := range page.Items {
		stored[it.ID] = true
		if it.DeviceKey == "gone00" {
			gone++
		}
	}
	if gone != len(goneDev.acked) {
		t.Fatalf("%d uplinks of the disabled device stored, %d acknowledged before", gone, len(goneDev.acked))
	}
	acked := 0
	for _, d := range append(all, goneDev) {
		for _, id := range d.acked {
			acked++
			if !stored[strconv.FormatInt(id, 10)] {
				t.Fatalf("uplink %d of %s acknowledged but not stored", id, d.dk)
			}
		}
	}
	records := 0
	for _, d := range all {
		n, _ := d.relay.Check(t, d.dk)
		records += n
	}
	t.Logf("%d devices, %d uplinks acknowledged and stored; %v sessions moved on rebinding, the killed node held %v; imported %v, taken over %v, reservations %v; %d gateway records, no (epoch, sequence number) twice",
		len(all)+1, acked, moved, held, event("imported"), event("taken_over"), event("extended"), records)
}

func replRelays(ds []*replDevice) []*dtlstest.Relay {
	var rs []*dtlstest.Relay
	for _, d := range ds {
		rs = append(rs, d.relay)
	}
	return rs
}

// dumpDTLSMetrics logs the DTLS lines of the live nodes' metrics.
func dumpDTLSMetrics(t *testing.T, c *testCluster) {
	for _, nd := range c.nodes {
		select {
		case <-nd.done:
			continue
		default:
		}
		resp, err := http.Get(nd.api + "/metrics")
		if err != nil {
			continue
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var lines []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(l, "coapgate_dtls") || strings.HasPrefix(l, "coapgate_publish") {
				lines = append(lines, l)
			}
		}
		t.Logf("%s metrics:\n%s", nd.name, strings.Join(lines, "\n"))
	}
}

// TestSharedSessionsWithoutJetStream: a NATS server without JetStream
// still carries device changes; the node starts and serves DTLS, its
// sessions staying on the node.
func TestSharedSessionsWithoutJetStream(t *testing.T) {
	bin := "/usr/sbin/nats-server"
	if _, err := os.Stat(bin); err != nil {
		t.Skip("nats-server not installed")
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	srv := exec.Command(bin, "-a", "127.0.0.1", "-p", strconv.Itoa(port)) // no -js
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
	url := fmt.Sprintf("nats://127.0.0.1:%d", port)
	for end := time.Now().Add(30 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		nc, err := nats.Connect(url)
		if err == nil {
			nc.Close()
			break
		}
		if time.Now().After(end) {
			t.Fatalf("private NATS server: %v", err)
		}
	}
	g := startTestGateway(t, func(c *config.Config) {
		c.DTLS.Listen = "127.0.0.1:0"
		c.Cluster.NATSURL = config.Secret(url)
	})
	d := g.newDevice("", "nojs_1")
	cl, err := g.dialDTLS(sdk.DTLSPSK{ProductKey: d.pk, DeviceName: d.dk, Secret: d.secret})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	resp, err := cl.Publish(context.Background(), "/sys/"+d.pk+"/"+d.dk+"/thing/event/property/post", []byte(`{"id":"1","params":{"t":1}}`))
	if err != nil || resp.Code != codes.Changed {
		t.Fatalf("publish: %v", err)
	}
	if strings.Contains(g.metricsText(), "coapgate_dtls_replication_total") {
		t.Fatal("replication metrics registered without a bucket")
	}
}
