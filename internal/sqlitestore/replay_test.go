package sqlitestore

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

// TestReplayStates: a state is saved with the messages of its transaction,
// read back as written, never replaced by an older version, and pruned
// after it expires.
func TestReplayStates(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1, 2, 3}}
	if _, ok, err := s.LoadReplayState(ctx, k); ok || err != nil {
		t.Fatalf("empty store: ok=%v err=%v", ok, err)
	}
	exp := time.Unix(5000, 0).UTC()
	st := replay.State{Key: k, Floor: 7, Size: 128, High: 1<<64 - 2, Started: true, Seen: []uint64{0b101, 1 << 63}, Version: 2, Expires: exp}
	msg := &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/x", Payload: []byte("x")}
	if err := s.AppendWithState(ctx, []*message.Message{msg}, []replay.State{st}); err != nil || msg.ID == 0 {
		t.Fatalf("AppendWithState: %v (id %d)", err, msg.ID)
	}
	got, ok, err := s.LoadReplayState(ctx, k)
	if err != nil || !ok {
		t.Fatalf("load: ok=%v err=%v", ok, err)
	}
	if got.Floor != 7 || got.Size != 128 || got.High != st.High || !got.Started || len(got.Seen) != 2 ||
		got.Seen[0] != 0b101 || got.Seen[1] != 1<<63 || got.Version != 2 || !got.Expires.Equal(exp) {
		t.Fatalf("loaded %+v, want %+v", got, st)
	}
	// An older version committed later (a slower uplink of the same
	// session) does not move the session back.
	old := st
	old.High, old.Version = 5, 1
	if err := s.AppendWithState(ctx, nil, []replay.State{old}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.LoadReplayState(ctx, k); got.High != st.High || got.Version != 2 {
		t.Fatalf("older version overwrote: %+v", got)
	}
	newer := st
	newer.High, newer.Version = st.High+1, 3
	if err := s.AppendWithState(ctx, nil, []replay.State{newer}); err != nil {
		t.Fatal(err)
	}
	if got, _, _ := s.LoadReplayState(ctx, k); got.High != newer.High || got.Version != 3 {
		t.Fatalf("newer version not saved: %+v", got)
	}
	if n, err := s.PruneReplayStates(ctx, exp); err != nil || n != 0 {
		t.Fatalf("prune at expiry: %d, %v; want 0 (not yet before)", n, err)
	}
	if n, err := s.PruneReplayStates(ctx, exp.Add(time.Second)); err != nil || n != 1 {
		t.Fatalf("prune after expiry: %d, %v; want 1", n, err)
	}
	if _, ok, _ := s.LoadReplayState(ctx, k); ok {
		t.Fatal("pruned state still loads")
	}
}

// BenchmarkAppendWithState measures a group commit of 64 uplinks alone and
// with the replay states of their 32 sessions (what a symmetric-mode batch
// writes): the difference is the cost of durable replay state.
func BenchmarkAppendWithState(b *testing.B) {
	for _, withStates := range []bool{false, true} {
		name := "messages"
		if withStates {
			name = "messages+states"
		}
		b.Run(name, func(b *testing.B) {
			ctx := context.Background()
			s, err := Open(ctx, filepath.Join(b.TempDir(), "db"))
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			msgs := make([]*message.Message, 64)
			states := make([]replay.State, 32)
			for i := range states {
				states[i] = replay.State{Key: replay.Key{ProductKey: "bench", DeviceKey: "d" + string(rune('A'+i)), Random: [8]byte{byte(i)}},
					Floor: 1, Size: 1024, Started: true, Seen: make([]uint64, 16), Expires: time.Now().Add(time.Hour)}
			}
			b.ResetTimer()
			for n := range b.N {
				for i := range msgs {
					msgs[i] = &message.Message{ProductKey: "bench", DeviceKey: "d", Topic: "/bench/d/user/data", Payload: make([]byte, 64), Transport: "coap-sym"}
				}
				if withStates {
					for i := range states {
						states[i].High, states[i].Version = uint64(n+1), uint64(n+1)
					}
					err = s.AppendWithState(ctx, msgs, states)
				} else {
					err = s.Append(ctx, msgs)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(msgs))/b.Elapsed().Seconds(), "uplinks/s")
		})
	}
}
