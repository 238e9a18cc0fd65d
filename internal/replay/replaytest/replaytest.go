// Package replaytest is the conformance suite of a durable replay state
// store (replay.Store plus the transactional write the uplink path uses):
// call Run from the adapter's tests with a constructor that returns a
// fresh, empty store.
package replaytest

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

// Store is what the suite exercises: loading states, writing them in the
// transaction of an uplink batch (ingest.StateAppender), and pruning.
type Store interface {
	replay.Store
	AppendWithState(ctx context.Context, msgs []*message.Message, states []replay.State) error
	PruneReplayStates(ctx context.Context, before time.Time) (int64, error)
}

// Run runs the suite. newStore must return a new empty store for each call
// and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"NewestVersionWins", testNewestVersion},
		{"StatesAlone", testStatesAlone},
		{"Prune", testPrune},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var exp = time.Unix(5000, 0).UTC()

func state(k replay.Key, high, version uint64) replay.State {
	return replay.State{Key: k, Floor: 7, Size: 128, High: high, Started: true,
		Seen: []uint64{0b101, 1 << 63}, Version: version, Expires: exp}
}

func load(t *testing.T, s Store, k replay.Key) (replay.State, bool) {
	t.Helper()
	st, ok, err := s.LoadReplayState(context.Background(), k)
	if err != nil {
		t.Fatalf("LoadReplayState: %v", err)
	}
	return st, ok
}

// testRoundTrip: a state written with a message reads back field for field
// (uint64 values beyond int64 included); the message is stored too.
func testRoundTrip(t *testing.T, s Store) {
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1, 2, 3}}
	if _, ok := load(t, s, k); ok {
		t.Fatal("empty store has a state")
	}
	st := state(k, 1<<64-2, 1<<63+5)
	msg := &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/x", Payload: []byte("x")}
	if err := s.AppendWithState(context.Background(), []*message.Message{msg}, []replay.State{st}); err != nil || msg.ID == 0 {
		t.Fatalf("AppendWithState: %v (id %d)", err, msg.ID)
	}
	got, ok := load(t, s, k)
	if !ok || got.Key != k || got.Floor != 7 || got.Size != 128 || got.High != st.High || !got.Started ||
		len(got.Seen) != 2 || got.Seen[0] != 0b101 || got.Seen[1] != 1<<63 || got.Version != st.Version || !got.Expires.Equal(exp) {
		t.Fatalf("loaded %+v, want %+v", got, st)
	}
	other := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1, 2, 4}}
	if _, ok := load(t, s, other); ok {
		t.Fatal("another random of the same device has the state")
	}
}

// testNewestVersion: a state with a lower version written later (an older
// uplink of the session committing after a newer one) does not move the
// session back; a higher one replaces it.
func testNewestVersion(t *testing.T, s Store) {
	ctx := context.Background()
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{9}}
	if err := s.AppendWithState(ctx, nil, []replay.State{state(k, 100, 2)}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendWithState(ctx, nil, []replay.State{state(k, 50, 1)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := load(t, s, k); got.High != 100 || got.Version != 2 {
		t.Fatalf("an older version overwrote the state: %+v", got)
	}
	if err := s.AppendWithState(ctx, nil, []replay.State{state(k, 101, 3)}); err != nil {
		t.Fatal(err)
	}
	if got, _ := load(t, s, k); got.High != 101 || got.Version != 3 {
		t.Fatalf("a newer version was not saved: %+v", got)
	}
}

// testStatesAlone: states of several sessions without messages in one call.
func testStatesAlone(t *testing.T, s Store) {
	var sts []replay.State
	for i := range 10 {
		sts = append(sts, state(replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{byte(i)}}, uint64(i+1), 1))
	}
	if err := s.AppendWithState(context.Background(), nil, sts); err != nil {
		t.Fatal(err)
	}
	for _, st := range sts {
		if got, ok := load(t, s, st.Key); !ok || got.High != st.High {
			t.Fatalf("state %v: %+v ok=%v", st.Key, got, ok)
		}
	}
}

// testPrune: states expiring before the given time go, others stay.
func testPrune(t *testing.T, s Store) {
	ctx := context.Background()
	k1 := replay.Key{ProductKey: "p", DeviceKey: "d1"}
	k2 := replay.Key{ProductKey: "p", DeviceKey: "d2"}
	later := state(k2, 1, 1)
	later.Expires = exp.Add(time.Hour)
	if err := s.AppendWithState(ctx, nil, []replay.State{state(k1, 1, 1), later}); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneReplayStates(ctx, exp); err != nil || n != 0 {
		t.Fatalf("prune at the expiry: %d, %v; want 0", n, err)
	}
	if n, err := s.PruneReplayStates(ctx, exp.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("prune after the expiry: %d, %v; want 1", n, err)
	}
	if _, ok := load(t, s, k1); ok {
		t.Fatal("pruned state still loads")
	}
	if _, ok := load(t, s, k2); !ok {
		t.Fatal("unexpired state pruned")
	}
}
