package sqlitekv

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
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

// TestConcurrentWrites: writes from many goroutines (committed in groups)
// each get a revision of their own, and compare-and-set still holds
// between them: of writers racing on one revision, exactly one wins.
func TestConcurrentWrites(t *testing.T) {
	ctx := context.Background()
	s := open(t, filepath.Join(t.TempDir(), "s.db"), time.Hour)
	base, err := s.Put(ctx, "shared", []byte("0"))
	if err != nil {
		t.Fatal(err)
	}
	const writers = 32
	revs := make(chan uint64, writers*10)
	wins := make(chan int, writers)
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			for i := range 10 {
				r, err := s.Put(ctx, fmt.Sprintf("k%d.%d", w, i), []byte("v"))
				if err != nil {
					t.Error(err)
					return
				}
				revs <- r
			}
			if _, err := s.Update(ctx, "shared", []byte(fmt.Sprint(w)), base); err == nil {
				wins <- w
			} else if !errors.Is(err, native.ErrConflict) {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	close(revs)
	close(wins)
	seen := map[uint64]bool{base: true}
	for r := range revs {
		if seen[r] {
			t.Fatalf("revision %d given twice", r)
		}
		seen[r] = true
	}
	if len(seen) != writers*10+1 || len(wins) != 1 {
		t.Fatalf("%d distinct revisions, %d compare-and-set winners; want %d and 1", len(seen), len(wins), writers*10+1)
	}
}

// BenchmarkPutParallel: kept-session writes from many workers, as a
// reconnect storm makes them (each durable when it returns).
func BenchmarkPutParallel(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "s.db"), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	val := make([]byte, 300)
	var n atomic.Int64
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := s.Put(context.Background(), fmt.Sprint("c.", n.Add(1)), val); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

// BenchmarkPut: kept-session writes one by one (one disk sync each).
func BenchmarkPut(b *testing.B) {
	s, err := Open(context.Background(), filepath.Join(b.TempDir(), "s.db"), time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	val := make([]byte, 300)
	for i := 0; b.Loop(); i++ {
		if _, err := s.Put(context.Background(), fmt.Sprint("c.", i), val); err != nil {
			b.Fatal(err)
		}
	}
}
