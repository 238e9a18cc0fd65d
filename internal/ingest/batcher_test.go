package ingest

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

// failing is an Appender whose outcome the test controls, to check that a
// failed commit reaches every caller of its batch.
type failing struct {
	err   error
	calls atomic.Int64
}

func (f *failing) Append(_ context.Context, msgs []*message.Message) error {
	f.calls.Add(1)
	return f.err
}

func TestBatcherGroupsAndStoresEverything(t *testing.T) {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := NewBatcher(st, 64, nil, slog.New(slog.DiscardHandler))
	const n = 500
	var wg sync.WaitGroup
	ids := make([]int64, n)
	for i := range n {
		wg.Go(func() {
			m := &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/x", Payload: []byte{byte(i)}}
			if err := b.Append(context.Background(), m); err != nil {
				t.Error(err)
			}
			ids[i] = m.ID
		})
	}
	wg.Wait()
	b.Close()
	seen := map[int64]bool{}
	for _, id := range ids {
		if id <= 0 || seen[id] {
			t.Fatalf("bad or duplicate id %d", id)
		}
		seen[id] = true
	}
	got, err := st.List(context.Background(), message.Query{ProductKey: "p", Limit: 1000})
	if err != nil || len(got) != n {
		t.Fatalf("stored %d (%v), want %d", len(got), err, n)
	}
	if err := b.Append(context.Background(), &message.Message{}); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestBatcherReportsCommitFailure(t *testing.T) {
	f := &failing{err: errors.New("disk gone")}
	b := NewBatcher(f, 8, nil, slog.New(slog.DiscardHandler))
	defer b.Close()
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 20 {
		wg.Go(func() {
			if err := b.Append(context.Background(), &message.Message{}); err != nil {
				failed.Add(1)
			}
		})
	}
	wg.Wait()
	if failed.Load() != 20 {
		t.Fatalf("%d of 20 callers saw the failure", failed.Load())
	}
	if f.calls.Load() > 20 || f.calls.Load() < 3 {
		t.Fatalf("%d commits for 20 messages with batches of 8", f.calls.Load())
	}
}

// TestBatcherStates: replay states ride in the transaction of their
// uplinks (alone too), the newest version of a session wins whatever the
// order its uplinks reached the batcher, and a store that keeps no states
// takes messages as before.
func TestBatcherStates(t *testing.T) {
	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	b := NewBatcher(st, 64, nil, slog.New(slog.DiscardHandler))
	if !b.KeepsStates() {
		t.Fatal("the SQLite store keeps states")
	}
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1}}
	var wg sync.WaitGroup
	for v := 1; v <= 100; v++ {
		wg.Go(func() {
			s := replay.State{Key: k, Floor: 1, Size: 64, High: uint64(v), Started: true, Seen: []uint64{1}, Version: uint64(v), Expires: time.Unix(1<<31, 0)}
			var m *message.Message
			if v%2 == 0 {
				m = &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/x"}
			}
			if err := b.AppendState(context.Background(), m, &s); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	b.Close()
	got, ok, err := st.LoadReplayState(context.Background(), k)
	if err != nil || !ok || got.Version != 100 || got.High != 100 {
		t.Fatalf("stored state %+v ok=%v err=%v, want version 100", got, ok, err)
	}
	msgs, err := st.List(context.Background(), message.Query{ProductKey: "p", Limit: 1000})
	if err != nil || len(msgs) != 50 {
		t.Fatalf("stored %d messages (%v), want 50", len(msgs), err)
	}

	f := &failing{}
	plain := NewBatcher(f, 8, nil, slog.New(slog.DiscardHandler))
	defer plain.Close()
	if plain.KeepsStates() {
		t.Fatal("a plain Appender keeps no states")
	}
	s := replay.State{Key: k}
	if err := plain.AppendState(context.Background(), nil, &s); err != nil || f.calls.Load() != 0 {
		t.Fatalf("state alone without a state store: %v, %d commits", err, f.calls.Load())
	}
	if err := plain.AppendState(context.Background(), &message.Message{}, &s); err != nil || f.calls.Load() != 1 {
		t.Fatalf("message with a state, plain store: %v, %d commits", err, f.calls.Load())
	}
}
