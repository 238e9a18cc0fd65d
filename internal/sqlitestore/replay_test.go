package sqlitestore

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/replay/replaytest"
)

// TestReplayStates runs the durable replay state conformance suite.
func TestReplayStates(t *testing.T) {
	replaytest.Run(t, func(t *testing.T) replaytest.Store {
		s, _ := openTemp(t)
		return s
	})
}

// TestPruneReplayStatesPerDevice: beyond MaxReplayStatesPerDevice sessions
// of one device, the ones expiring first go; other devices keep theirs.
func TestPruneReplayStatesPerDevice(t *testing.T) {
	ctx := context.Background()
	s, _ := openTemp(t)
	base := time.Unix(10_000, 0)
	var sts []replay.State
	for i := range MaxReplayStatesPerDevice + 4 {
		sts = append(sts, replay.State{Key: replay.Key{ProductKey: "p", DeviceKey: "busy", Random: [8]byte{byte(i)}},
			Size: 64, Seen: make([]uint64, 1), Expires: base.Add(time.Duration(i) * time.Minute)})
	}
	for i := range 3 {
		sts = append(sts, replay.State{Key: replay.Key{ProductKey: "p", DeviceKey: "calm", Random: [8]byte{byte(i)}},
			Size: 64, Seen: make([]uint64, 1), Expires: base})
	}
	if err := s.AppendWithState(ctx, nil, sts); err != nil {
		t.Fatal(err)
	}
	if n, err := s.PruneReplayStates(ctx, base.Add(-time.Hour)); err != nil || n != 4 {
		t.Fatalf("prune: %d, %v; want the 4 oldest of the busy device", n, err)
	}
	for i, st := range sts {
		_, ok, err := s.LoadReplayState(ctx, st.Key)
		if err != nil {
			t.Fatal(err)
		}
		if want := st.Key.DeviceKey == "calm" || i >= 4; ok != want {
			t.Fatalf("state %d of %s: present %v, want %v", i, st.Key.DeviceKey, ok, want)
		}
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
			cpu0 := cpuTime()
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
			// CPU time is steadier than wall time on a shared machine whose
			// fsyncs queue behind other writers.
			b.ReportMetric(float64(cpuTime()-cpu0)/float64(time.Microsecond)/float64(b.N*len(msgs)), "cpu-µs/uplink")
		})
	}
}

// cpuTime is the process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
