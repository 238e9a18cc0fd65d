package main

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlsx/dtlstest"
)

// metricValue reads one sample of the server's /metrics (0 if absent).
func (p *procServer) metricValue(t *testing.T, sample string) float64 {
	t.Helper()
	return scrapeSum(t, p.apiURL+"/metrics", sample+" ", "")
}

// keepFleet is a server process with DTLS, reservations of 8 sequence
// numbers, and PSK devices behind relays (their NATs), for the tests of
// sessions kept across restarts.
type keepFleet struct {
	t    *testing.T
	p    *procServer
	devs []*replDevice
}

// newKeepFleet starts the server and one device per entry of cids (with
// a connection ID or not), each with a handshake done.
func newKeepFleet(t *testing.T, product string, cids ...bool) *keepFleet {
	p := newProcServer(t, "COAPGATE_DTLS_LISTEN=127.0.0.1:0", "COAPGATE_CLUSTER_DTLS_SEQ_RESERVE=8")
	p.start()
	f := &keepFleet{t: t, p: p}
	var prod struct{ ProductKey string }
	p.call("POST", "/products", nil, map[string]any{"name": product}, &prod)
	for i, cid := range cids {
		var d struct{ DeviceKey, DeviceSecret string }
		p.call("POST", "/devices", nil, map[string]any{"productKey": prod.ProductKey, "deviceKey": fmt.Sprintf("d%d_cid_%v", i, cid)}, &d)
		r := dtlstest.NewRelay(t, net.IPv4(127, 0, 0, 1), f.dtlsAddr())
		f.devs = append(f.devs, dialReplDevice(t, r, prod.ProductKey, d.DeviceKey, d.DeviceSecret, cid))
	}
	return f
}

// dtlsAddr is the DTLS listener of the server's current start.
func (f *keepFleet) dtlsAddr() *net.UDPAddr {
	a, err := net.ResolveUDPAddr("udp", f.p.dtlsAddr)
	if err != nil {
		f.t.Fatal(err)
	}
	return a
}

// retarget sends every device's traffic to the current start.
func (f *keepFleet) retarget() {
	for _, d := range f.devs {
		d.relay.Retarget(f.dtlsAddr())
	}
}

// publish has each of ds acknowledge n uplinks.
func (f *keepFleet) publish(when string, ds []*replDevice, n int) {
	f.t.Helper()
	for _, d := range ds {
		for range n {
			if err := d.publish(f.t); err != nil {
				f.t.Fatalf("%s: %s: %v", when, d.name, err)
			}
		}
	}
}

// waitKept waits until n sessions have been written to the session file.
func (f *keepFleet) waitKept(n float64) {
	f.t.Helper()
	const exported = `coapgate_dtls_replication_total{event="exported"}`
	for deadline := time.Now().Add(60 * time.Second); f.p.metricValue(f.t, exported) < n; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			f.t.Fatalf("sessions not kept: %s %v, want %v", exported, f.p.metricValue(f.t, exported), n)
		}
	}
}

// TestRestartKeepsDTLSSessions: DTLS devices go on without a new handshake
// across restarts of a real server process on the same data directory —
// SIGKILL, then a graceful stop: devices with a connection ID and one
// without (found again by its address), busy ones and one that sent a
// single record. The server takes each session
// back on the device's next record (counted as imported, no handshake
// counted), the devices send no ClientHello after their first handshake,
// the server never sends two records with one (epoch, sequence number),
// and every acknowledged uplink is stored once.
func TestRestartKeepsDTLSSessions(t *testing.T) {
	if testing.Short() {
		t.Skip("restart test: builds the server and kills a subprocess (skipped with -short)")
	}
	f := newKeepFleet(t, "dtls-keep", true, false, true)
	p, devs := f.p, f.devs
	// The first two send more records than one reservation (8), so their
	// kept sessions have moved their stored reservation on before the
	// kill; the third sends one and is kept once its session has lasted
	// 5 s.
	f.publish("before any restart", devs[:2], 10)
	f.publish("before any restart", devs[2:], 1)
	f.waitKept(3)
	if fi, err := os.Stat(filepath.Join(p.data, sessionFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file: %v %v, want mode 0600", fi, err)
	}

	for _, restart := range []struct {
		name string
		do   func()
	}{{"SIGKILL", p.kill}, {"graceful stop", p.stop}} {
		restart.do()
		p.start()
		f.retarget()
		f.publish("after "+restart.name, devs, 10)
		if v := p.metricValue(t, `coapgate_dtls_replication_total{event="imported"}`); v != 3 {
			t.Fatalf("after %s: %v sessions taken back, want 3", restart.name, v)
		}
		for _, suite := range []string{"psk_aes_128_ccm_8", "psk_aes_128_cbc_sha256"} {
			if v := p.metricValue(t, `coapgate_dtls_handshakes_total{suite="`+suite+`"}`); v != 0 {
				t.Fatalf("after %s: %v handshakes (%s), want none", restart.name, v, suite)
			}
		}
	}
	for _, d := range devs {
		records, hellos := d.relay.Check(t, d.name)
		if hellos != 2 {
			t.Fatalf("%s sent %d ClientHellos, want 2 (one cookie exchange, no new handshake)", d.name, hellos)
		}
		var page struct{ Items []struct{ ID string } }
		p.call("GET", "/devices/"+d.pk+"/"+d.dk+"/messages", url.Values{"limit": {"1000"}}, nil, &page)
		stored := map[string]bool{}
		for _, it := range page.Items {
			stored[it.ID] = true
		}
		for _, id := range d.acked {
			if !stored[strconv.FormatInt(id, 10)] {
				t.Fatalf("%s: acknowledged message %d not stored", d.name, id)
			}
		}
		if len(page.Items) != len(d.acked) {
			t.Fatalf("%s: %d messages stored, %d acknowledged", d.name, len(page.Items), len(d.acked))
		}
		t.Logf("%s: %d uplinks acknowledged and stored across SIGKILL and a graceful restart, one handshake, %d server records, none with a repeated sequence number", d.name, len(d.acked), records)
	}
}

// TestRolledBackSessionFile: the kept sessions are put back as they were
// earlier (a machine snapshot or a backup restored, a disk that lost its
// last writes) after the node sent records under later reservations. The
// restarted node takes the sessions back from the old records and still
// never sends a sequence number it sent before: it starts beyond what it
// could have sent since the old records were written.
func TestRolledBackSessionFile(t *testing.T) {
	if testing.Short() {
		t.Skip("restart test: builds the server and kills a subprocess (skipped with -short)")
	}
	f := newKeepFleet(t, "dtls-rollback", true, false)
	p, devs := f.p, f.devs
	f.publish("first run", devs, 6)
	f.waitKept(2)
	p.stop() // the file is complete on disk (WAL checkpointed at close)
	file := filepath.Join(p.data, sessionFile)
	old, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}

	p.start()
	f.retarget()
	f.publish("second run", devs, 30) // several reservations of 8 beyond the saved ones
	if v := p.metricValue(t, `coapgate_dtls_replication_total{event="extended"}`); v < 4 {
		t.Fatalf("%v new reservations in the second run, want several", v)
	}
	p.kill()
	for _, sfx := range []string{"-wal", "-shm"} {
		_ = os.Remove(file + sfx)
	}
	if err := os.WriteFile(file, old, 0o600); err != nil { // rolled back
		t.Fatal(err)
	}

	p.start()
	f.retarget()
	f.publish("after the rollback", devs, 10)
	if v := p.metricValue(t, `coapgate_dtls_replication_total{event="imported"}`); v != 2 {
		t.Fatalf("%v sessions taken back from the old records, want 2", v)
	}
	for _, d := range devs {
		records, hellos := d.relay.Check(t, d.name) // fails the test on a sequence number sent twice
		if hellos != 2 {
			t.Fatalf("%s sent %d ClientHellos, want 2 (no new handshake)", d.name, hellos)
		}
		t.Logf("%s: %d server records over three runs, the last from rolled-back session records, none repeated", d.name, records)
	}
}

// TestUnreadableSessionFile: a kept-sessions file that is not a database
// (a disk error, a stray copy) does not stop the node: it is set aside
// and the node starts with no kept sessions.
func TestUnreadableSessionFile(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the server and runs it as a subprocess (skipped with -short)")
	}
	p := newProcServer(t, "COAPGATE_DTLS_LISTEN=127.0.0.1:0")
	file := filepath.Join(p.data, sessionFile)
	if err := os.WriteFile(file, []byte("this is not an SQLite database, it is garbage written by a failing disk"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.start() // fails the test if the server does not come up
	aside, _ := filepath.Glob(file + ".unreadable-*")
	if len(aside) != 1 {
		t.Fatalf("the unreadable file was not set aside: %v", aside)
	}
	if fi, err := os.Stat(file); err != nil || fi.Size() == 0 {
		t.Fatalf("no new session file: %v", err)
	}
}
