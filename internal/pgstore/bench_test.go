package pgstore

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
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
