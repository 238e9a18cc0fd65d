package main

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/coapgate/coapgate/internal/config"
)

// TestDTLSSocketReadBuffer: the DTLS listener asks for coap.read_buffer
// as its socket receive buffer, like the plain listener. With the
// system's default (about 200 KB) a burst of DTLS records queued while the
// read loop is busy overflows it: the kernel drops datagrams
// (RcvbufErrors), the clients retransmit, and requests are still
// unanswered when a benchmark ends (seen on the CBC suite, whose records
// cost more to open).
func TestDTLSSocketReadBuffer(t *testing.T) {
	sysctl := func(name string) int {
		b, err := os.ReadFile("/proc/sys/net/core/" + name)
		if err != nil {
			t.Skipf("no %s: %v", name, err)
		}
		n, err := strconv.Atoi(strings.TrimSpace(string(b)))
		if err != nil {
			t.Skipf("%s: %v", name, err)
		}
		return n
	}
	rmemMax, rmemDefault := sysctl("rmem_max"), sysctl("rmem_default")
	const want = 4 << 20
	if min(want, rmemMax) <= rmemDefault {
		t.Skipf("net.core.rmem_max %d does not allow a buffer above the default %d", rmemMax, rmemDefault)
	}
	g := startTestGateway(t, func(c *config.Config) { c.CoAP.ReadBuffer = want })
	rcvbuf := func() int {
		rc, err := g.s.dtlsConn.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		var n int
		var serr error
		if err := rc.Control(func(fd uintptr) { n, serr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF) }); err != nil || serr != nil {
			t.Fatal(err, serr)
		}
		return n
	}
	// Linux reports twice the size granted (bookkeeping overhead).
	waitUntil(t, func() bool { return rcvbuf() >= min(want, rmemMax) }, "the DTLS socket's receive buffer raised to coap.read_buffer")
}
