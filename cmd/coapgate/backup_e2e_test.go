package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// copyFile copies src to dst with mode 0600.
func copyFile(t *testing.T, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// allMessageIDs lists every stored message ID of d through the API.
func (g *testGateway) allMessageIDs(d device) map[string]bool {
	g.t.Helper()
	ids := map[string]bool{}
	after := ""
	for {
		var page struct {
			Items      []apiMessage
			NextCursor string
		}
		path := "/api/v1/devices/" + d.pk + "/" + d.dk + "/messages?limit=1000"
		if after != "" {
			path += "&after=" + after
		}
		if code := g.api("GET", path, nil, &page); code != 200 {
			g.t.Fatalf("list messages: %d", code)
		}
		for _, m := range page.Items {
			ids[m.ID] = true
		}
		if page.NextCursor == "" || len(page.Items) == 0 {
			return ids
		}
		after = page.NextCursor
	}
}

// TestBackupRestoreWhileIngesting takes an online backup (the backup
// command) while devices keep publishing, restores it into a fresh data
// directory with the token key, and starts a node on it: every uplink
// acknowledged before the backup began is served by the restored node,
// the old admin key and device credentials work there, and ingest went on
// during the backup.
func TestBackupRestoreWhileIngesting(t *testing.T) {
	g := startTestGateway(t)
	if g.s.cfg.Store.Driver != "sqlite" {
		t.Skipf("coapgate backup copies the embedded SQLite database; store %s is backed up with its own tools", g.s.cfg.Store.Driver)
	}
	const devices = 4
	devs := make([]device, devices)
	pk := ""
	for i := range devs {
		devs[i] = g.newDevice(pk, fmt.Sprintf("dev_%d", i))
		pk = devs[i].pk
	}
	type ack struct {
		dev int
		id  string
	}
	var (
		mu    sync.Mutex
		acked []ack // guarded by mu
	)
	ackCh := make(chan struct{}, 1024)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	ctx := context.Background()
	for i, d := range devs {
		c := g.dial(d)
		if _, err := c.Auth(ctx); err != nil {
			t.Fatalf("auth: %v", err)
		}
		topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
		wg.Go(func() {
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := c.Publish(ctx, topic, fmt.Appendf(nil, `{"id":"%d","params":{"n":%d}}`, n, n))
				if err != nil || resp.Code != codes.Changed {
					continue // not acknowledged: makes no claim
				}
				mu.Lock()
				acked = append(acked, ack{dev: i, id: resp.MessageID})
				mu.Unlock()
				select {
				case ackCh <- struct{}{}:
				default:
				}
			}
		})
	}
	waitAcks := func(n int) {
		t.Helper()
		for {
			mu.Lock()
			got := len(acked)
			mu.Unlock()
			if got >= n {
				return
			}
			<-ackCh
		}
	}
	waitAcks(100)
	mu.Lock()
	before := append([]ack(nil), acked...) // acknowledged before the backup began
	mu.Unlock()

	out := filepath.Join(t.TempDir(), "backup.db")
	var stdout, stderr bytes.Buffer
	if code := run([]string{"backup", "--data-dir", g.dir, "--out", out}, &stdout, &stderr); code != 0 {
		t.Fatalf("backup exit %d: %s", code, stderr.String())
	}
	// Ingest goes on after the backup (it was never stopped).
	waitAcks(len(before) + 100)
	close(stop)
	wg.Wait()
	if fi, err := os.Stat(out); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("backup file: %v, %v; want mode 0600", fi, err)
	}
	if !strings.Contains(stdout.String(), "token.key") {
		t.Errorf("backup output does not name the token key to back up:\n%s", stdout.String())
	}
	if _, err := os.Stat(filepath.Join(g.dir, sessionFile)); err == nil && strings.Contains(stdout.String(), sessionFile) {
		t.Errorf("backup output asks for the kept DTLS sessions, which must never be restored:\n%s", stdout.String())
	}

	// Restore: the backup as the database, the token key and the key of
	// the secrets at rest (kept apart from the backup) beside it.
	dir := t.TempDir()
	copyFile(t, out, filepath.Join(dir, "coapgate.db"))
	copyFile(t, filepath.Join(g.dir, "token.key"), filepath.Join(dir, "token.key"))
	copyFile(t, filepath.Join(g.dir, "secret.key"), filepath.Join(dir, "secret.key"))
	cfg := config.Default()
	cfg.DataDir = dir
	cfg.CoAP.Listen, cfg.CoAP.SymmetricListen, cfg.DTLS.Listen, cfg.API.Listen = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0"
	s2, err := startServer(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatalf("start on the restored data: %v", err)
	}
	t.Cleanup(func() { s2.shutdown() })
	if s2.AdminKey != "" {
		t.Fatal("restored node created a new admin key: the API keys were not in the backup")
	}
	g2 := &testGateway{t: t, s: s2, key: g.key, dir: dir} // the old admin key
	for i, d := range devs {
		have := g2.allMessageIDs(d)
		missing := 0
		for _, a := range before {
			if a.dev == i && !have[a.id] {
				missing++
			}
		}
		if missing > 0 {
			t.Errorf("device %s: %d uplinks acknowledged before the backup are missing from the restored node", d.dk, missing)
		}
	}
	// The restored node serves devices with their stored credentials.
	c := g2.dial(devs[0])
	if _, err := c.Auth(ctx); err != nil {
		t.Fatalf("auth on the restored node: %v", err)
	}
	resp, err := c.Publish(ctx, fmt.Sprintf("/sys/%s/%s/thing/event/property/post", devs[0].pk, devs[0].dk), []byte(`{"id":"x","params":{"n":-1}}`))
	if err != nil || resp.Code != codes.Changed {
		t.Fatalf("publish on the restored node: %v", err)
	}
}

// TestBackupCommandRefusals: usage errors exit 2, an existing destination
// or a missing database exit 1 with the reason, and nothing is written.
func TestBackupCommandRefusals(t *testing.T) {
	dir := t.TempDir()
	exists := filepath.Join(dir, "exists.db")
	if err := os.WriteFile(exists, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"help", []string{"--help"}, 0, "Usage: coapgate backup"},
		{"no out", []string{"--data-dir", dir}, 2, "Usage: coapgate backup"},
		{"extra argument", []string{"--out", filepath.Join(dir, "x.db"), "extra"}, 2, "Usage: coapgate backup"},
		{"missing database", []string{"--data-dir", filepath.Join(dir, "nope"), "--out", filepath.Join(dir, "y.db")}, 1, "no such file"},
		{"destination exists", []string{"--db", exists, "--out", exists}, 1, "destination exists"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(append([]string{"backup"}, tc.args...), &stdout, &stderr)
			if code != tc.code || !strings.Contains(stderr.String(), tc.msg) {
				t.Fatalf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tc.code, tc.msg)
			}
		})
	}
	for _, n := range []string{"x.db", "y.db"} {
		if _, err := os.Stat(filepath.Join(dir, n)); !os.IsNotExist(err) {
			t.Errorf("%s was written: %v", n, err)
		}
	}
	if b, _ := os.ReadFile(exists); string(b) != "keep" {
		t.Errorf("existing destination overwritten: %q", b)
	}
}
