package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
)

// buildCoapdev builds cmd/coapdev into a directory removed after t.
func buildCoapdev(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "coapdev")
	if out, err := exec.Command("go", "build", "-o", bin, "../coapdev").CombinedOutput(); err != nil {
		t.Fatalf("build coapdev: %v\n%s", err, out)
	}
	return bin
}

// listener is a running "coapdev listen" whose stdout lines arrive on lines.
type listener struct {
	lines chan string
	all   []string
}

func startListen(t *testing.T, bin string, g *testGateway, d device, args ...string) *listener {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, append([]string{"listen", "--server", g.s.CoAPAddr().String()}, args...)...)
	cmd.Env = append(os.Environ(), "COAPDEV_PRODUCT="+d.pk, "COAPDEV_DEVICE="+d.dk, "COAPDEV_SECRET="+d.secret)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	l := &listener{lines: make(chan string, 64)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			l.lines <- sc.Text()
		}
		close(l.lines)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("coapdev stderr:\n%s", stderr.String())
		}
	})
	return l
}

// expect returns the next line that starts with prefix.
func (l *listener) expect(t *testing.T, prefix string) string {
	t.Helper()
	timeout := time.After(30 * time.Second) // a bound on failure only
	for {
		select {
		case s, ok := <-l.lines:
			if !ok {
				t.Fatalf("coapdev exited before %q; output:\n%s", prefix, strings.Join(l.all, "\n"))
			}
			l.all = append(l.all, s)
			if strings.HasPrefix(s, prefix) {
				return s
			}
		case <-timeout:
			t.Fatalf("no %q line from coapdev; output:\n%s", prefix, strings.Join(l.all, "\n"))
		}
	}
}

// TestCoapdevListen runs "coapdev listen" against a gateway: a pushed
// command and one announced by option 2100 are printed and answered with
// the configured code and data.
func TestCoapdevListen(t *testing.T) {
	if testing.Short() {
		t.Skip("builds coapdev")
	}
	bin := buildCoapdev(t)
	t.Run("push", func(t *testing.T) {
		g := startTestGateway(t)
		d := g.newDevice("", "meter_1")
		l := startListen(t, bin, g, d, "--interval", "0", "--reply-data", `{"applied": 1}`)
		l.expect(t, "listening product="+d.pk+" device=meter_1 ")
		l.expect(t, "uplink seq=1 code=2.04 message-id=")
		c := g.sendCommand(d, map[string]any{"type": "setProperties", "params": map[string]any{"switch": 1}})
		got := l.expect(t, "command id="+c.ID+" ")
		want := "command id=" + c.ID + " topic=/sys/" + d.pk + "/meter_1/thing/service/property/set method=thing.service.property.set params={\"switch\":1}"
		if got != want {
			t.Fatalf("got  %q\nwant %q", got, want)
		}
		if got := l.expect(t, "reply id="+c.ID); got != "reply id="+c.ID+" code=200 data={\"applied\":1}" {
			t.Fatalf("reply line %q", got)
		}
		r := g.waitCommand(d, c.ID, "replied")
		if r.DeliveredVia != "push" || r.Reply == nil || r.Reply.Code != 200 || string(r.Reply.Data) != `{"applied":1}` {
			t.Fatalf("command = %+v reply %+v", r, r.Reply)
		}
	})
	t.Run("option2100", func(t *testing.T) {
		g := startTestGateway(t, func(c *config.Config) { c.Commands.Push = false })
		d := g.newDevice("", "meter_2")
		c := g.sendCommand(d, map[string]any{"type": "invokeService", "service": "reboot", "params": map[string]any{}})
		l := startListen(t, bin, g, d, "--interval", "0", "--reply-code", "460", "--reply-data", `"busy"`)
		if got := l.expect(t, "command id="+c.ID+" "); !strings.Contains(got, "method=thing.service.reboot") {
			t.Fatalf("command line %q", got)
		}
		r := g.waitCommand(d, c.ID, "failed")
		if r.DeliveredVia != "get" || r.Reply == nil || r.Reply.Code != 460 || string(r.Reply.Data) != `"busy"` {
			t.Fatalf("command = %+v reply %+v", r, r.Reply)
		}
	})
}
