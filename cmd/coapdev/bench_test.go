package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 1000; i++ {
		h.add(time.Duration(i) * time.Millisecond)
	}
	var c histCounts
	h.snapshot(&c)
	if c.total() != 1000 {
		t.Fatalf("total %d, want 1000", c.total())
	}
	for _, tc := range []struct {
		q    float64
		want time.Duration
	}{{0.5, 500 * time.Millisecond}, {0.99, 990 * time.Millisecond}} {
		got := c.quantile(tc.q)
		// Buckets are 1/64 wide: the reported upper bound is within 1.6 %.
		if got < tc.want || got > tc.want+tc.want/60 {
			t.Errorf("q%.2f = %v, want %v (+1.6 %%)", tc.q, got, tc.want)
		}
	}
	if m := c.max(); m < time.Second || m > time.Second+time.Second/60 {
		t.Errorf("max = %v, want ~1s", m)
	}
	for us := uint64(0); us < 1<<30; us = us*3/2 + 1 {
		if i := bucketOf(us); bucketHigh(i) < us {
			t.Fatalf("bucket %d of %d µs ends at %d", i, us, bucketHigh(i))
		}
	}
}

func TestReadDevicesCSV(t *testing.T) {
	devs, err := readDevicesCSV(strings.NewReader("# pk,dk,secret\npk1,d1,s1\n\npk1,d2,s2\n"))
	if err != nil || len(devs) != 2 || devs[1].dk != "d2" || devs[1].secret != "s2" {
		t.Fatalf("got %v, %v", devs, err)
	}
	for _, bad := range []string{"", "pk,dk\n", "pk,,s\n"} {
		if _, err := readDevicesCSV(strings.NewReader(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

func TestTemplatePatchesMID(t *testing.T) {
	tpl, err := newTemplate([]string{"a", "b"}, nil, []byte("xy"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := tpl.build(make([]byte, maxDatagram), 0xbeef)
	if b[2] != 0xbe || b[3] != 0xef || b[0]&0x0f != 2 || b[4] != 0xbe || b[5] != 0xef {
		t.Fatalf("header % x", b[:6])
	}
}

// TestBenchPlainAgainstEcho runs the generator against coapdev echo: every
// request must be answered, none lost or failed.
func TestBenchPlainAgainstEcho(t *testing.T) {
	// The echo server binds port 0 and names its address on stderr: the
	// generator starts once it is listening, on the port it really got.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	listening := &announceWriter{prefix: "coapdev echo: listening on ", addr: make(chan string, 1)}
	done := make(chan int)
	go func() {
		done <- runEcho(ctx, &env{stdout: &bytes.Buffer{}, stderr: listening}, []string{"--listen", "127.0.0.1:0"})
	}()
	var addr string
	select {
	case addr = <-listening.addr:
	case c := <-done:
		t.Fatalf("echo exited with %d before listening", c)
	}
	for _, extra := range [][]string{nil, {"--src-ips", "127.0.0.2-127.0.0.3"}} {
		var out, errOut bytes.Buffer
		args := append([]string{"--mode", "plain", "--server", addr, "--duration", "500ms", "--warmup", "100ms", "--sockets", "4", "--outstanding", "16", "--json", "--quiet"}, extra...)
		code := runBench(context.Background(), &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}, args)
		if code != exitOK {
			t.Fatalf("%v: exit %d: %s%s", extra, code, out.String(), errOut.String())
		}
		var r benchReport
		if err := json.Unmarshal(out.Bytes(), &r); err != nil {
			t.Fatalf("report: %v: %s", err, out.String())
		}
		if r.OK == 0 || r.OK != r.Sent || len(r.Errors) != 0 || r.Timeouts != 0 || r.LatencyMS.P99 <= 0 {
			t.Fatalf("%v: report %+v", extra, r)
		}
	}
	cancel()
	if c := <-done; c != exitOK {
		t.Fatalf("echo exit %d", c)
	}
}

func TestSrcAddrs(t *testing.T) {
	a, err := srcAddrs("127.0.0.254-127.0.1.1")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"}
	if len(a) != len(want) {
		t.Fatalf("%v, want %v", a, want)
	}
	for i := range want {
		if a[i].String() != want[i] {
			t.Fatalf("%v, want %v", a, want)
		}
	}
	f := &benchFlags{laddrs: a}
	for i, w := range []string{"127.0.0.254:0", "127.0.0.255:0", "127.0.1.0:0", "127.0.1.1:0", "127.0.0.254:0"} {
		if got := f.laddr(i).String(); got != w {
			t.Errorf("socket %d binds %s, want %s", i, got, w)
		}
	}
	if (&benchFlags{}).laddr(3) != nil {
		t.Error("without --src-ips a socket must bind any address")
	}
	if one, err := srcAddrs("10.1.2.3"); err != nil || len(one) != 1 || one[0].String() != "10.1.2.3" {
		t.Errorf("one address: %v %v", one, err)
	}
	if _, err := srcAddrs("10.0.0.0-10.255.255.255"); err == nil {
		t.Error("a range of 16M addresses was accepted")
	}
}

func TestBenchUsage(t *testing.T) {
	for _, args := range [][]string{
		{"--mode", "nope"},
		{"--mode", "token"},                 // no devices
		{"--mode", "plain", "--handshakes"}, // handshakes need DTLS
		{"--mode", "dtls-plain", "--psk-identity", "x", "--psk-key", "zz"},
		{"--mode", "plain", "--src-ips", "127.0.0.3-127.0.0.2"},
		{"--mode", "plain", "--src-ips", "::1"},
	} {
		var out, errOut bytes.Buffer
		if code := runBench(context.Background(), &env{stdout: &out, stderr: &errOut, getenv: func(string) string { return "" }}, args); code != exitUsage {
			t.Errorf("%v: exit %d, want %d (%s)", args, code, exitUsage, errOut.String())
		}
	}
}

// announceWriter passes on the rest of the first line written to it that
// starts with prefix (a server announcing its address).
type announceWriter struct {
	prefix string
	addr   chan string
	mu     sync.Mutex
	buf    []byte
	sent   bool
}

func (w *announceWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for !w.sent {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		line := string(w.buf[:i])
		w.buf = w.buf[i+1:]
		if rest, ok := strings.CutPrefix(line, w.prefix); ok {
			w.addr <- rest
			w.sent = true
		}
	}
	return len(p), nil
}
