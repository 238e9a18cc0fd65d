package sqlitekv

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlsx/dtlstest"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
)

func open(t *testing.T, path string, ttl time.Duration) *Store {
	t.Helper()
	s, err := Open(context.Background(), path, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestConformance: the compare-and-set semantics every SessionStore has.
func TestConformance(t *testing.T) {
	dtlstest.SessionStoreConformance(t, open(t, filepath.Join(t.TempDir(), "s.db"), time.Hour))
}

// TestReopenAndExpiry: values and revisions outlive the process that
// wrote them (a reopened file continues, never reusing a revision); keys
// expire their TTL after their last write, are then "not found" to a
// read or an update, and are removed at the next open. The file is
// private to the user.
func TestReopenAndExpiry(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "s.db")
	now := time.Unix(1_800_000_000, 0)
	s := open(t, path, time.Minute)
	s.now = func() time.Time { return now }
	r1, err := s.Put(ctx, "old", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(50 * time.Second)
	r2, err := s.Put(ctx, "young", []byte("b"))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("session file mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}

	s = open(t, path, time.Minute)
	s.now = func() time.Time { return now }
	if v, rev, err := s.Get(ctx, "old"); err != nil || string(v) != "a" || rev != r1 {
		t.Fatalf("after reopening: %q %d %v", v, rev, err)
	}
	r3, err := s.Put(ctx, "other", []byte("c"))
	if err != nil || r3 <= r2 {
		t.Fatalf("revision after reopening %d (%v), want above %d", r3, err, r2)
	}
	now = now.Add(20 * time.Second) // "old" written 70 s ago, "young" 20 s
	if _, _, err := s.Get(ctx, "old"); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("get of an expired key: %v", err)
	}
	if _, err := s.Update(ctx, "old", []byte("x"), r1); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("update of an expired key: %v", err)
	}
	if n, err := s.Expire(ctx); err != nil || n != 1 {
		t.Fatalf("expire: %d %v, want 1", n, err)
	}
	if n, err := s.Len(ctx); err != nil || n != 2 {
		t.Fatalf("live keys %d (%v), want 2", n, err)
	}
	// An update extends a key's life.
	if _, err := s.Update(ctx, "young", []byte("b2"), r2); err != nil {
		t.Fatal(err)
	}
	now = now.Add(50 * time.Second)
	if v, _, err := s.Get(ctx, "young"); err != nil || string(v) != "b2" {
		t.Fatalf("a key updated 50 s ago: %q %v", v, err)
	}
}
