package replay

import (
	"context"
	"encoding/binary"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWindow(t *testing.T) {
	type step struct {
		seq  uint64
		want error // nil: accepted
	}
	tests := []struct {
		name  string
		floor uint64
		size  int
		steps []step
	}{
		{"first at the offset", 5, 1024, []step{{5, nil}}},
		{"first above the offset", 5, 1024, []step{{900, nil}}},
		{"repeat", 1, 1024, []step{{1, nil}, {1, ErrRepeated}, {2, nil}, {2, ErrRepeated}, {1, ErrRepeated}}},
		{"below offset", 10, 1024, []step{{9, ErrBelowFloor}, {0, ErrBelowFloor}, {10, nil}, {9, ErrBelowFloor}}},
		{"out of order within the window", 1, 1024, []step{{10, nil}, {3, nil}, {7, nil}, {3, ErrRepeated}, {11, nil}, {7, ErrRepeated}}},
		{"far ahead slides the window", 1, 1024, []step{{1, nil}, {1 << 40, nil}, {2, ErrTooOld}, {1<<40 - 1023, nil}, {1<<40 - 1024, ErrTooOld}, {1 << 40, ErrRepeated}}},
		{"below window", 1, 64, []step{{100, nil}, {36, ErrTooOld}, {35, ErrTooOld}, {37, nil}, {37, ErrRepeated}}},
		{"window edge across words", 1, 130, []step{{200, nil}, {71, nil}, {70, ErrTooOld}, {264, nil}, {135, nil}, {71, ErrTooOld}, {200, ErrRepeated}, {135, ErrRepeated}}},
		{"slide keeps what stays inside", 1, 128, []step{{50, nil}, {60, nil}, {150, nil}, {50, ErrRepeated}, {60, ErrRepeated}, {55, nil}, {178, nil}, {50, ErrTooOld}, {60, ErrRepeated}}},
		{"size 1 is strictly increasing", 1, 1, []step{{1, nil}, {1, ErrRepeated}, {3, nil}, {2, ErrTooOld}, {4, nil}}},
		{"max uint64", 1, 1024, []step{{1<<64 - 1, nil}, {1<<64 - 1, ErrRepeated}, {1<<64 - 2, nil}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			w := NewWindow(tt.floor, tt.size)
			for i, s := range tt.steps {
				err := w.Check(s.seq)
				if !errors.Is(err, s.want) || (s.want == nil) != (err == nil) {
					t.Fatalf("step %d: Check(%d) = %v, want %v", i, s.seq, err, s.want)
				}
				if err == nil {
					w.Accept(s.seq)
				} else if !IsReplay(err) {
					t.Fatalf("step %d: %v is not IsReplay", i, err)
				}
			}
		})
	}
}

func TestWindowAcceptedBounded(t *testing.T) {
	w := NewWindow(1, 100)
	for s := uint64(1); s <= 1000; s++ {
		w.Accept(s)
	}
	if n := w.Accepted(); n != 100 {
		t.Fatalf("Accepted = %d, want the window size 100", n)
	}
}

func TestSessionUseConcurrent(t *testing.T) {
	s := NewSessions(Config{Started: time.Unix(1000, 0)})
	now := time.Unix(2000, 0)
	k := Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1}}
	var accepted [64]atomic.Int32
	var wg sync.WaitGroup
	for g := range 16 {
		wg.Go(func() {
			for seq := uint64(1); seq <= 64; seq++ {
				sess, err := s.Get(k, 1, time.Unix(1500, 0), now.Add(time.Hour), now)
				if err != nil {
					t.Error(err)
					return
				}
				err = sess.Use(seq, func() error {
					if g%4 == 0 && seq%2 == 0 {
						return errors.New("bad payload") // must not burn the number
					}
					return nil
				})
				if err == nil {
					accepted[seq-1].Add(1)
				}
			}
		})
	}
	wg.Wait()
	for i := range accepted {
		if n := accepted[i].Load(); n != 1 {
			t.Fatalf("seq %d accepted %d times, want exactly once", i+1, n)
		}
	}
}

func TestUseFailureDoesNotBurn(t *testing.T) {
	s := NewSessions(Config{Started: time.Unix(1000, 0)})
	now := time.Unix(2000, 0)
	sess, _ := s.Get(Key{ProductKey: "p", DeviceKey: "d"}, 1, time.Unix(1500, 0), now.Add(time.Hour), now)
	bad := errors.New("bad padding")
	if err := sess.Use(1, func() error { return bad }); !errors.Is(err, bad) {
		t.Fatalf("Use = %v", err)
	}
	if err := sess.Use(1, nil); err != nil {
		t.Fatalf("retry after a failed accept: %v", err)
	}
	called := false
	if err := sess.Use(1, func() error { called = true; return nil }); !errors.Is(err, ErrRepeated) || called {
		t.Fatalf("replay: err %v, accept called %v", err, called)
	}
}

func TestSessionsRestartAndEviction(t *testing.T) {
	started := time.Unix(1000, 500_000_000)
	now := time.Unix(2000, 0)
	exp := now.Add(time.Hour)
	s := NewSessions(Config{Started: started, MaxSessions: 2})
	key := func(i byte) Key { return Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{i}} }

	t.Run("token from before the start second is refused", func(t *testing.T) {
		for _, iss := range []time.Time{time.Unix(999, 0), time.Unix(1000, 0)} {
			if _, err := s.Get(key(1), 1, iss, exp, now); !errors.Is(err, ErrUnknownSession) {
				t.Fatalf("issued %v: err %v", iss, err)
			}
		}
	})
	t.Run("a token this node issues in its start second has state", func(t *testing.T) {
		k := key(7)
		s2 := NewSessions(Config{Started: started, MaxSessions: 2})
		s2.Create(k, 1, time.Unix(1000, 0), exp, started)
		if _, err := s2.Get(k, 1, time.Unix(1000, 0), exp, now); err != nil {
			t.Fatal(err)
		}
	})
	a, err := s.Get(key(1), 1, time.Unix(1100, 0), exp, now)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Use(1, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(key(2), 1, time.Unix(1200, 0), exp, now); err != nil {
		t.Fatal(err)
	}
	// A third session evicts the least recently used (key 1, issued 1100):
	// its token must not come back with a fresh window.
	if _, err := s.Get(key(3), 1, time.Unix(1300, 0), exp, now); err != nil {
		t.Fatal(err)
	}
	if s.Len() != 2 || s.Evicted() != 1 {
		t.Fatalf("Len %d Evicted %d", s.Len(), s.Evicted())
	}
	if _, err := s.Get(key(1), 1, time.Unix(1100, 0), exp, now); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("evicted session's token: err %v, want ErrUnknownSession", err)
	}
	if _, err := s.Get(key(9), 1, time.Unix(1100, 0), exp, now); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("token as old as an evicted live session: err %v, want ErrUnknownSession", err)
	}
	// Sessions still held keep working; newer tokens get state.
	if _, err := s.Get(key(2), 1, time.Unix(1200, 0), exp, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(key(4), 1, time.Unix(1101, 0), exp, now); err != nil {
		t.Fatal(err)
	}
}

func TestSessionsExpiredEvictionKeepsFloor(t *testing.T) {
	now := time.Unix(2000, 0)
	s := NewSessions(Config{Started: time.Unix(1000, 0), MaxSessions: 1})
	key := func(i byte) Key { return Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{i}} }
	if _, err := s.Get(key(1), 1, time.Unix(1500, 0), now.Add(time.Second), now); err != nil {
		t.Fatal(err)
	}
	later := now.Add(time.Minute) // key 1's token has expired
	if _, err := s.Get(key(2), 1, time.Unix(1600, 0), later.Add(time.Hour), later); err != nil {
		t.Fatal(err)
	}
	if s.Evicted() != 0 {
		t.Fatal("an expired session counted as evicted")
	}
	if _, err := s.Get(key(3), 1, time.Unix(1400, 0), later.Add(time.Hour), later); err != nil {
		t.Fatalf("floor raised by an expired session: %v", err)
	}
}

func TestSessionsSharded(t *testing.T) {
	now := time.Unix(2000, 0)
	s := NewSessions(Config{Started: time.Unix(1000, 0), MaxSessions: 5000})
	if len(s.shards) < 2 {
		t.Fatal("large table not sharded")
	}
	for i := range 6000 {
		var r [8]byte
		binary.BigEndian.PutUint64(r[:], uint64(i))
		if _, err := s.Get(Key{ProductKey: "p", DeviceKey: "d", Random: r}, 1, time.Unix(1001+int64(i), 0), now.Add(time.Hour), now); err != nil {
			t.Fatal(err)
		}
	}
	if n := s.Len(); n > 5000+len(s.shards) {
		t.Fatalf("Len %d exceeds the bound", n)
	}
}

// FuzzWindow checks the Window against a model (a set of every accepted
// number): a number is never accepted twice, never below the floor, and a
// number is refused only when the model says it was used or it lies outside
// the window.
func FuzzWindow(f *testing.F) {
	f.Add(uint64(1), uint16(64), []byte{0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add(uint64(5), uint16(1), []byte{0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0, 10})
	f.Add(uint64(0), uint16(130), []byte{0, 0, 0, 0, 0, 0, 0, 200, 0, 0, 0, 0, 0, 0, 0, 71, 0, 0, 0, 0, 0, 0, 1, 8})
	f.Fuzz(func(t *testing.T, floor uint64, size uint16, seqs []byte) {
		w := NewWindow(floor, int(size))
		used := map[uint64]bool{}
		var high uint64
		started := false
		for len(seqs) >= 8 {
			seq := binary.BigEndian.Uint64(seqs)
			seqs = seqs[8:]
			err := w.Check(seq)
			switch {
			case seq < floor:
				if !errors.Is(err, ErrBelowFloor) {
					t.Fatalf("seq %d below floor %d: %v", seq, floor, err)
				}
				continue
			case used[seq]:
				if err == nil {
					t.Fatalf("seq %d accepted twice", seq)
				}
				continue
			case !started || seq > high || high-seq < w.size:
				if err != nil {
					t.Fatalf("fresh seq %d (high %d, size %d) refused: %v", seq, high, w.size, err)
				}
			default:
				if !errors.Is(err, ErrTooOld) {
					t.Fatalf("seq %d outside the window: %v", seq, err)
				}
				continue
			}
			w.Accept(seq)
			used[seq] = true
			if !started || seq > high {
				high, started = seq, true
			}
		}
	})
}

// memStore is a replay.Store in memory that keeps the newest version.
type memStore struct {
	mu sync.Mutex
	m  map[Key]State
}

func (s *memStore) LoadReplayState(_ context.Context, k Key) (State, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.m[k]
	return st, ok, nil
}

func (s *memStore) save(st State) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[Key]State{}
	}
	if cur, ok := s.m[st.Key]; !ok || st.Version > cur.Version {
		s.m[st.Key] = st
	}
}

// TestSessionsRebuiltFromStore: after a restart (a new table whose start
// is after the token was issued) a session is rebuilt from its durable
// state: numbers accepted before are refused, new ones accepted, and the
// sliding lifetime is kept. Without a stored state the old rule applies.
func TestSessionsRebuiltFromStore(t *testing.T) {
	store := &memStore{}
	t0 := time.Unix(10_000, 0)
	k := Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{7}}
	before := NewSessions(Config{Started: t0.Add(-time.Hour), Window: 64, Lifetime: time.Hour, Store: store})
	sess := before.Create(k, 5, t0, t0.Add(time.Hour), t0)
	store.save(sess.State())
	for _, seq := range []uint64{5, 6, 9, 200} {
		st, err := sess.UseAt(seq, t0.Add(30*time.Minute), nil)
		if err != nil {
			t.Fatal(err)
		}
		store.save(st)
	}
	// The restart: a new table started after the token was issued.
	now := t0.Add(80 * time.Minute) // past the token's own expiry, within the slid lifetime
	after := NewSessions(Config{Started: now.Add(-time.Minute), Window: 64, Lifetime: time.Hour, Store: store})
	got, err := after.Lookup(context.Background(), k, 5, t0, t0.Add(time.Hour), now)
	if err != nil {
		t.Fatalf("Lookup after restart: %v", err)
	}
	for _, c := range []struct {
		seq  uint64
		want error
	}{{200, ErrRepeated}, {9, ErrTooOld}, {136, ErrTooOld}, {137, nil}, {150, nil}, {201, nil}, {150, ErrRepeated}} {
		if _, err := got.UseAt(c.seq, now, nil); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Fatalf("seq %d after restart: %v, want %v", c.seq, err, c.want)
		}
	}
	// Past the sliding lifetime the stored session is over.
	late := NewSessions(Config{Started: now, Window: 64, Lifetime: time.Hour, Store: store})
	if _, err := late.Lookup(context.Background(), k, 5, t0, t0.Add(time.Hour), t0.Add(31*time.Minute+time.Hour)); !errors.Is(err, ErrExpired) {
		t.Fatalf("Lookup past the sliding lifetime: %v, want ErrExpired", err)
	}
	// No stored state: a token issued before the start is refused, one
	// issued after it gets a fresh window, an expired one neither.
	other := Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{8}}
	if _, err := after.Lookup(context.Background(), other, 1, t0, now.Add(time.Hour), now); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("old token without state: %v, want ErrUnknownSession", err)
	}
	if _, err := after.Lookup(context.Background(), other, 1, now, now.Add(time.Hour), now); err != nil {
		t.Fatalf("young token without state: %v", err)
	}
	third := Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{9}}
	if _, err := after.Lookup(context.Background(), third, 1, now, now, now); !errors.Is(err, ErrExpired) {
		t.Fatalf("expired token without state: %v, want ErrExpired", err)
	}
}

// TestRestoreWindowResized: a state saved with a smaller window restored
// into a larger one refuses what the saved window no longer covered; into
// a smaller one it keeps what fits.
func TestRestoreWindowResized(t *testing.T) {
	w := NewWindow(1, 8)
	for _, s := range []uint64{100, 98} {
		w.Accept(s)
	}
	st := w.snapshot()
	big := restoreWindow(st, 64)
	for _, c := range []struct {
		seq  uint64
		want error
	}{{100, ErrRepeated}, {98, ErrRepeated}, {99, nil}, {92, ErrRepeated}, {60, ErrRepeated}, {101, nil}} {
		if err := big.Check(c.seq); !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Fatalf("larger window, seq %d: %v, want %v", c.seq, err, c.want)
		}
	}
	small := restoreWindow(st, 2)
	if err := small.Check(98); !errors.Is(err, ErrTooOld) {
		t.Fatalf("smaller window, seq 98: %v, want ErrTooOld", err)
	}
	if err := small.Check(99); err != nil {
		t.Fatalf("smaller window, seq 99: %v", err)
	}
}

// TestEvictionSparesUncommitted: a session with an accepted number whose
// state is not yet committed is not evicted (rebuilding it from the store
// would forget that number); once released it is.
func TestEvictionSparesUncommitted(t *testing.T) {
	now := time.Unix(10_000, 0)
	s := NewSessions(Config{Started: now.Add(-time.Hour), MaxSessions: 16})
	key := func(i int) Key { return Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{byte(i)}} }
	busy := s.Create(key(0), 1, now, now.Add(time.Hour), now)
	if _, err := busy.UseAt(1, now, nil); err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 16; i++ {
		s.Create(key(i), 1, now, now.Add(time.Hour), now)
	}
	if got, err := s.Get(key(0), 1, now, now.Add(time.Hour), now); err != nil || got != busy {
		t.Fatalf("uncommitted session evicted: %v", err)
	}
	busy.Release()
	for i := 17; i <= 40; i++ {
		s.Create(key(i), 1, now, now.Add(time.Hour), now)
	}
	if _, err := s.Get(key(0), 1, now, now.Add(time.Hour), now); !errors.Is(err, ErrUnknownSession) {
		t.Fatalf("released session still held: %v", err)
	}
}

// FuzzStateBinary: any bytes either fail to decode or decode to a state
// that encodes back to the same bytes and restores to a window within the
// size bounds.
func FuzzStateBinary(f *testing.F) {
	w := NewWindow(5, 130)
	for _, s := range []uint64{5, 9, 200} {
		w.Accept(s)
	}
	f.Add(w.snapshot().AppendBinary(nil))
	f.Add(NewWindow(1, 1).snapshot().AppendBinary(nil))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var st State
		if err := st.UnmarshalBinary(b); err != nil {
			if !errors.Is(err, ErrBadState) {
				t.Fatalf("error %v is not ErrBadState", err)
			}
			return
		}
		if again := st.AppendBinary(nil); string(again) != string(b) {
			t.Fatalf("round trip: %x -> %x", b, again)
		}
		w := restoreWindow(st, 1024)
		if w.Accepted() > 1024 {
			t.Fatalf("restored window marks %d numbers", w.Accepted())
		}
	})
}

// countingStore counts the loads that reach it.
type countingStore struct {
	memStore
	loads atomic.Int64
}

func (s *countingStore) LoadReplayState(ctx context.Context, k Key) (State, bool, error) {
	s.loads.Add(1)
	return s.memStore.LoadReplayState(ctx, k)
}

// TestUnknownSessionNotReloaded: a token refused for having no state (too
// old for a fresh window) is refused again without another store read.
func TestUnknownSessionNotReloaded(t *testing.T) {
	store := &countingStore{}
	now := time.Unix(10_000, 0)
	s := NewSessions(Config{Started: now, Store: store})
	k := Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{3}}
	for range 5 {
		if _, err := s.Lookup(context.Background(), k, 1, now.Add(-time.Minute), now.Add(time.Hour), now); !errors.Is(err, ErrUnknownSession) {
			t.Fatalf("Lookup = %v, want ErrUnknownSession", err)
		}
	}
	if n := store.loads.Load(); n != 1 {
		t.Fatalf("%d store reads for one unknown token, want 1", n)
	}
}

// TestAdmit: the stored window decides, not the node's; a refused number
// leaves the stored state as it was; versions grow by one per admission.
func TestAdmit(t *testing.T) {
	k := Key{ProductKey: "p", DeviceKey: "d"}
	exp := time.Unix(100, 0)
	fresh := State{Key: k, Floor: 3, Size: 8, Version: 1, Expires: exp}
	cur, err := Admit(State{}, false, fresh)
	if err != nil || cur.Version != 1 || cur.Started {
		t.Fatalf("new session: %+v %v", cur, err)
	}
	for _, tc := range []struct {
		seq  uint64
		want error
	}{{5, nil}, {5, ErrRepeated}, {2, ErrBelowFloor}, {20, nil}, {12, ErrTooOld}, {13, nil}, {13, ErrRepeated}} {
		// The node's own state claims every number is fine: only cur counts.
		next := State{Key: k, Floor: 3, Size: 8, Version: 99, Expires: exp.Add(time.Duration(tc.seq) * time.Second), Accepted: tc.seq}
		before := cur.Version
		got, err := Admit(cur, true, next)
		if !errors.Is(err, tc.want) {
			t.Fatalf("Admit %d: %v, want %v", tc.seq, err, tc.want)
		}
		if err != nil {
			continue
		}
		wantExp := cur.Expires
		if next.Expires.After(wantExp) {
			wantExp = next.Expires
		}
		if got.Version != before+1 || !got.Expires.Equal(wantExp) || got.High < tc.seq || got.Accepted != 0 {
			t.Fatalf("Admit %d: %+v", tc.seq, got)
		}
		cur = got
	}
}
