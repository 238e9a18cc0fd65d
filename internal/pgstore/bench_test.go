package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

// BenchmarkAppend mirrors sqlitestore's: group-commit batches of uplinks.
// exchange=true tags every uplink with a CON exchange key, as the gateway
// does (one exchanges row per uplink, fresh Message IDs each round).
func BenchmarkAppend(b *testing.B) {
	for _, tc := range []struct {
		n        int
		exchange bool
	}{{1, false}, {64, false}, {512, false}, {1, true}, {64, true}, {512, true}} {
		n := tc.n
		name := fmt.Sprintf("batch=%d", n)
		if tc.exchange {
			name += "/exchange"
		}
		b.Run(name, func(b *testing.B) {
			s, _ := openTest(b)
			ctx := context.Background()
			payload := []byte(`{"id":"123","version":"1.0","params":{"temperature":21.5,"humidity":40}}`)
			msgs := make([]*message.Message, n)
			for i := range msgs {
				dk := fmt.Sprintf("dev%04d", i)
				msgs[i] = &message.Message{
					ProductKey: "a1MZxOdcBnO", DeviceKey: dk,
					Topic:   "/sys/a1MZxOdcBnO/" + dk + "/thing/event/property/post",
					Payload: payload, ContentFormat: 50,
					ReceivedAt: time.Now().Add(time.Duration(i) * time.Microsecond),
					Peer:       fmt.Sprintf("192.0.2.%d:%d", i%250+1, 40000+i), Transport: message.TransportDTLS,
				}
			}
			b.ReportAllocs()
			mid := uint16(0)
			for b.Loop() {
				if tc.exchange {
					for _, m := range msgs {
						mid++
						m.Exchange = message.ExchangeKey(m.ProductKey, m.DeviceKey, mid, nil, m.Payload)
					}
				}
				if err := s.Append(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkAppendSessionUplinks: group commits of session-mode uplinks
// (one session each) through the per-node state write (AppendWithState)
// and through the cluster-wide admission the gateway uses on PostgreSQL
// (AppendClaims: session locks, a read of the stored windows, Admit).
func BenchmarkAppendSessionUplinks(b *testing.B) {
	for _, n := range []int{1, 64} {
		for _, mode := range []string{"state", "admit"} {
			b.Run(fmt.Sprintf("batch=%d/%s", n, mode), func(b *testing.B) {
				s, _ := openTest(b)
				ctx := context.Background()
				payload := []byte(`{"id":"123","version":"1.0","params":{"temperature":21.5,"humidity":40}}`)
				exp := time.Now().Add(time.Hour)
				msgs := make([]*message.Message, n)
				states := make([]replay.State, n)
				for i := range msgs {
					dk := fmt.Sprintf("dev%04d", i)
					msgs[i] = &message.Message{ProductKey: "a1MZxOdcBnO", DeviceKey: dk,
						Topic: "/sys/a1MZxOdcBnO/" + dk + "/thing/event/property/post", Payload: payload, ContentFormat: 50,
						ReceivedAt: time.Now(), Peer: "192.0.2.1:40000", Transport: message.TransportSymmetric}
					states[i] = replay.State{Key: replay.Key{ProductKey: "a1MZxOdcBnO", DeviceKey: dk, Random: [8]byte{byte(i)}},
						Floor: 1, Size: 1024, Seen: make([]uint64, 16), Expires: exp}
				}
				b.ReportAllocs()
				seq := uint64(0)
				for b.Loop() {
					seq++
					for i := range states {
						states[i].Accepted, states[i].Version, states[i].High, states[i].Started = seq, seq, seq, true
						states[i].Seen[0] = 1
					}
					if mode == "state" {
						if err := s.AppendWithState(ctx, msgs, states); err != nil {
							b.Fatal(err)
						}
						continue
					}
					refused, err := s.AppendClaims(ctx, msgs, states)
					if err != nil {
						b.Fatal(err)
					}
					for _, r := range refused {
						if r != nil {
							b.Fatal(r)
						}
					}
				}
				b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
			})
		}
	}
}
