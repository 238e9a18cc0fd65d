package sqlitestore

import (
	"context"
	"path/filepath"
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
