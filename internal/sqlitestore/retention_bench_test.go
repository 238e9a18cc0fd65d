package sqlitestore

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/ingest"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/retention"
)

const (
	benchOldRows = 100_000 // expired messages, and as many expired samples
	benchIngest  = 50_000  // uplinks appended without retention
	benchClients = 256     // concurrent uplinks (devices waiting for their ACK)
)

// seedExpired builds a store holding benchOldRows messages and samples
// received 40 days ago, all projected.
func seedExpired(b *testing.B, old time.Time) *Store {
	b.Helper()
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "coapgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const chunk = 5000
	for i := 0; i < benchOldRows; i += chunk {
		msgs := make([]*message.Message, chunk)
		samples := make([]point.Sample, chunk)
		for j := range msgs {
			at := old.Add(time.Duration(i+j) * time.Millisecond)
			msgs[j] = &message.Message{ProductKey: "pk", DeviceKey: fmt.Sprintf("d%d", j%100), Topic: "/t",
				Payload: make([]byte, 120), ContentFormat: 50, ReceivedAt: at, Peer: "192.0.2.1:1", Transport: message.TransportCoAP}
		}
		if err := s.Append(ctx, msgs); err != nil {
			b.Fatal(err)
		}
		for j := range samples {
			samples[j] = point.Sample{ProductKey: "pk", DeviceKey: fmt.Sprintf("d%d", j%100), Kind: point.KindPoint, Name: "t",
				Time: msgs[j].ReceivedAt, Value: float64(j), MessageID: msgs[j].ID}
		}
		if err := s.Project(ctx, "points", msgs[chunk-1].ID, samples); err != nil {
			b.Fatal(err)
		}
	}
	return s
}

// benchIngestUplinks appends uplinks through the group-commit batcher from
// benchClients concurrent clients, each waiting for its commit as a
// device's request does, until until is closed (or, when until is nil,
// benchIngest uplinks are stored). It returns the uplinks stored and the
// time taken.
func benchIngestUplinks(b *testing.B, s *Store, until <-chan struct{}) (int64, time.Duration) {
	b.Helper()
	ctx := context.Background()
	bt := ingest.NewBatcher(s, 512, nil, slog.New(slog.DiscardHandler))
	defer bt.Close()
	var (
		wg   sync.WaitGroup
		done atomic.Int64
		fail atomic.Value
	)
	start := time.Now()
	for c := range benchClients {
		wg.Go(func() {
			for {
				if until == nil {
					if done.Load() >= benchIngest {
						return
					}
				} else {
					select {
					case <-until:
						return
					default:
					}
				}
				m := &message.Message{ProductKey: "pk", DeviceKey: fmt.Sprintf("n%d", c), Topic: "/t",
					Payload: make([]byte, 120), ContentFormat: 50, ReceivedAt: time.Now(), Peer: "192.0.2.1:1", Transport: message.TransportCoAP}
				if err := bt.Append(ctx, m); err != nil {
					fail.Store(err)
					return
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	if err, ok := fail.Load().(error); ok {
		b.Fatal(err)
	}
	return done.Load(), time.Since(start)
}

// BenchmarkRetentionDuringIngest measures ingest (256 concurrent uplinks
// through the group-commit batcher, each waiting for its commit) alone, and
// while the retention worker deletes 100,000 expired messages and 100,000
// expired samples (ingest runs until retention is done), and the rate
// retention deletes at meanwhile
// (go test ./internal/sqlitestore/ -run '^$' -bench RetentionDuringIngest -benchtime 1x).
func BenchmarkRetentionDuringIngest(b *testing.B) {
	now := time.Now()
	old := now.Add(-40 * 24 * time.Hour)
	for _, name := range []string{"ingest-only", "retention-only", "ingest+retention"} {
		withRetention := name != "ingest-only"
		b.Run(name, func(b *testing.B) {
			var ingestRate, deleteRate float64
			for b.Loop() {
				b.StopTimer()
				s := seedExpired(b, old)
				w := retention.New(retention.Options{Store: s, Products: s,
					Periods: retention.Periods{Messages: 30 * 24 * time.Hour, Points: 30 * 24 * time.Hour}})
				b.StartTimer()
				if name == "retention-only" {
					t0 := time.Now()
					st, err := w.RunOnce(context.Background())
					if err != nil {
						b.Fatal(err)
					}
					deleteRate = float64(st.Deleted[retention.Messages]+st.Deleted[retention.Points]) / time.Since(t0).Seconds()
					continue
				}
				var (
					wg      sync.WaitGroup
					st      retention.Stats
					runErr  error
					retTook time.Duration
					until   chan struct{} // closed when retention is done
				)
				if withRetention {
					until = make(chan struct{})
					wg.Go(func() {
						defer close(until)
						t0 := time.Now()
						st, runErr = w.RunOnce(context.Background())
						retTook = time.Since(t0)
					})
				}
				n, took := benchIngestUplinks(b, s, until)
				wg.Wait()
				if runErr != nil {
					b.Fatal(runErr)
				}
				ingestRate = float64(n) / took.Seconds()
				if withRetention {
					n := st.Deleted[retention.Messages] + st.Deleted[retention.Points]
					if n != 2*benchOldRows {
						b.Fatalf("retention deleted %d rows, want %d", n, 2*benchOldRows)
					}
					deleteRate = float64(n) / retTook.Seconds()
				}
			}
			if name != "retention-only" {
				b.ReportMetric(ingestRate, "uplinks/s")
			}
			if withRetention {
				b.ReportMetric(deleteRate, "deleted-rows/s")
			}
		})
	}
}
