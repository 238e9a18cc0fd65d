package sqlitestore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

func TestBackupCopiesCommittedData(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	src := filepath.Join(dir, "coapgate.db")
	s, err := Open(ctx, src)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 50 {
		if err := s.Append(ctx, []*message.Message{{ProductKey: "p", DeviceKey: "d", Topic: "/t", Payload: []byte{byte(i)},
			ContentFormat: 42, ReceivedAt: time.Unix(int64(i), 0), Peer: "192.0.2.1:1", Transport: message.TransportCoAP}}); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, "backup.db")
	if err := Backup(ctx, src, out); err != nil {
		t.Fatalf("backup: %v", err)
	}
	fi, err := os.Stat(out)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("backup mode %v, want 0600", fi.Mode().Perm())
	}
	// Nothing but the copy is left beside it.
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if n := e.Name(); n != "coapgate.db" && n != "secret.key" && n != "coapgate.db-wal" && n != "coapgate.db-shm" && n != "backup.db" {
			t.Errorf("unexpected file %s after backup", n)
		}
	}
	// A second backup to the same name is refused and leaves the first.
	if err := Backup(ctx, src, out); !errors.Is(err, ErrBackupExists) {
		t.Fatalf("backup over an existing file: %v, want ErrBackupExists", err)
	}
	if err := Backup(ctx, filepath.Join(dir, "missing.db"), filepath.Join(dir, "b2.db")); err == nil {
		t.Fatal("backup of a missing database succeeded")
	}
	if _, err := os.Stat(filepath.Join(dir, "b2.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("failed backup left a file: %v", err)
	}
	// The copy opens as a store holding every committed message.
	c, err := Open(ctx, out)
	if err != nil {
		t.Fatalf("open backup: %v", err)
	}
	defer c.Close()
	ms, err := c.List(ctx, message.Query{Limit: 1000})
	if err != nil || len(ms) != 50 {
		t.Fatalf("backup holds %d messages, %v; want 50", len(ms), err)
	}
}
