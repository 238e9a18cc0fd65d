package dtlstest

import (
	"context"
	"errors"
	"testing"

	"github.com/coapgate/coapgate/internal/dtlsx/native"
)

// SessionStoreConformance checks what the session replication relies on
// of a native.SessionStore, on an empty store: one writer wins a
// revision; a stale revision conflicts; a deleted key is "not found" to
// an update, not a conflict; revisions are not reused after a delete.
func SessionStoreConformance(t *testing.T, s native.SessionStore) {
	t.Helper()
	ctx := context.Background()
	if _, _, err := s.Get(ctx, "c.01"); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("get of a key never written: %v, want ErrNotFound", err)
	}
	if _, err := s.Update(ctx, "c.01", []byte("x"), 1); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("update of a key never written: %v, want ErrNotFound", err)
	}
	r1, err := s.Put(ctx, "c.01", []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	r2, err := s.Update(ctx, "c.01", []byte("b"), r1)
	if err != nil {
		t.Fatal(err)
	}
	if r2 == r1 {
		t.Fatalf("an update kept revision %d", r1)
	}
	if _, err := s.Update(ctx, "c.01", []byte("c"), r1); !errors.Is(err, native.ErrConflict) {
		t.Fatalf("update at a stale revision: %v", err)
	}
	if v, rev, err := s.Get(ctx, "c.01"); err != nil || string(v) != "b" || rev != r2 {
		t.Fatalf("get: %q %d %v, want b at %d", v, rev, err, r2)
	}
	if err := s.Delete(ctx, "c.01", r1); !errors.Is(err, native.ErrConflict) {
		t.Fatalf("delete at a stale revision: %v", err)
	}
	if err := s.Delete(ctx, "c.01", r2); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.Get(ctx, "c.01"); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("get after delete: %v", err)
	}
	if _, err := s.Update(ctx, "c.01", []byte("d"), r2); !errors.Is(err, native.ErrNotFound) {
		t.Fatalf("update after delete: %v", err)
	}
	r3, err := s.Put(ctx, "c.01", []byte("e"))
	if err != nil {
		t.Fatal(err)
	}
	if r3 == r1 || r3 == r2 {
		t.Fatalf("a key written again after its delete reused revision %d", r3)
	}
	if _, err := s.Update(ctx, "c.01", []byte("f"), r1); !errors.Is(err, native.ErrConflict) {
		t.Fatalf("update at a revision from before the delete: %v", err)
	}
	// Keys are independent.
	o1, err := s.Put(ctx, "a.02", []byte("g"))
	if err != nil {
		t.Fatal(err)
	}
	if v, rev, err := s.Get(ctx, "c.01"); err != nil || string(v) != "e" || rev != r3 {
		t.Fatalf("get c.01 after a write of a.02: %q %d %v", v, rev, err)
	}
	if v, rev, err := s.Get(ctx, "a.02"); err != nil || string(v) != "g" || rev != o1 {
		t.Fatalf("get a.02: %q %d %v", v, rev, err)
	}
}
