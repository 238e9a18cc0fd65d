package sqlitestore

import (
	"context"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

const (
	benchPoints = 1_000_000
	benchStep   = 500 * time.Millisecond // one sample every 0.5 s: 1M span ~5.8 days
)

var benchBase = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

// openHistory1M opens (building on first use) a database holding 1,000,000
// samples of one point of one device. It is kept in the temp directory
// across runs and sub-benchmarks; delete it to rebuild.
func openHistory1M(b *testing.B) *Store {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(os.TempDir(), "coapgate-bench-history-1m-v1.db")
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	if cur, err := s.Cursor(ctx, "bench"); err == nil && cur == benchPoints {
		return s
	}
	start := time.Now()
	const batch = 100_000 // ten transactions
	samples := make([]point.Sample, 0, batch)
	for i := range benchPoints {
		samples = append(samples, point.Sample{ProductKey: "bench_pk", DeviceKey: "bench_dev", Kind: point.KindPoint, Name: "temp",
			Time: benchBase.Add(time.Duration(i) * benchStep), Value: 20 + 5*math.Sin(float64(i)/1000), MessageID: int64(i + 1)})
		if len(samples) == batch {
			if err := s.Project(ctx, "bench", int64(i+1), samples); err != nil {
				b.Fatal(err)
			}
			samples = samples[:0]
		}
	}
	b.Logf("loaded %d points in %v", benchPoints, time.Since(start))
	return s
}

// BenchmarkHistory1M measures the point queries on 1,000,000 samples of one
// point (go test ./internal/sqlitestore/ -run '^$' -bench History1M).
func BenchmarkHistory1M(b *testing.B) {
	s := openHistory1M(b)
	ctx := context.Background()
	span := time.Duration(benchPoints) * benchStep
	q := point.HistoryQuery{PK: "bench_pk", DK: "bench_dev", Name: "temp"}
	for _, limit := range []int{100, 1000} {
		b.Run("page-1h/limit="+strconv.Itoa(limit), func(b *testing.B) {
			i := 0
			for b.Loop() {
				// Walk the hours of the range so caches do not flatter.
				from := benchBase.Add(time.Duration(i%int(span/time.Hour)) * time.Hour)
				i += 37
				hq := q
				hq.From, hq.To, hq.Limit = from, from.Add(time.Hour), limit
				p, err := s.History(ctx, hq)
				if err != nil || len(p.Samples) != limit {
					b.Fatalf("page: %d samples, %v", len(p.Samples), err)
				}
			}
		})
	}
	b.Run("page-deep-cursor/limit=100", func(b *testing.B) {
		// A page 900,000 samples into the full range: keyset paging seeks.
		at := benchBase.Add(900_000 * benchStep)
		hq := q
		hq.Limit, hq.Cursor = 100, point.EncodeCursor(at.UnixNano(), 900_001)
		for b.Loop() {
			p, err := s.History(ctx, hq)
			if err != nil || len(p.Samples) != 100 {
				b.Fatalf("page: %d samples, %v", len(p.Samples), err)
			}
		}
	})
	b.Run("aggregate-full/1m", func(b *testing.B) {
		hq := q
		hq.From, hq.To, hq.Interval = benchBase, benchBase.Add(span), time.Minute
		want := int(span / time.Minute)
		for b.Loop() {
			bs, err := s.Aggregate(ctx, hq)
			if err != nil || len(bs) < want {
				b.Fatalf("aggregate: %d buckets, %v", len(bs), err)
			}
		}
	})
	b.Run("aggregate-full/1h", func(b *testing.B) {
		hq := q
		hq.From, hq.To, hq.Interval = benchBase, benchBase.Add(span), time.Hour
		want := int(span / time.Hour)
		for b.Loop() {
			bs, err := s.Aggregate(ctx, hq)
			if err != nil || len(bs) < want {
				b.Fatalf("aggregate: %d buckets, %v", len(bs), err)
			}
		}
	})
	b.Run("aggregate-full/90s-no-rollup", func(b *testing.B) {
		// Not a whole number of minutes: answered from the samples.
		hq := q
		hq.From, hq.To, hq.Interval = benchBase, benchBase.Add(span), 90*time.Second
		want := int(span / (90 * time.Second))
		for b.Loop() {
			bs, err := s.Aggregate(ctx, hq)
			if err != nil || len(bs) < want {
				b.Fatalf("aggregate: %d buckets, %v", len(bs), err)
			}
		}
	})
	b.Run("aggregate-1h/1m", func(b *testing.B) {
		hq := q
		hq.From, hq.To, hq.Interval = benchBase.Add(24*time.Hour), benchBase.Add(25*time.Hour), time.Minute
		for b.Loop() {
			bs, err := s.Aggregate(ctx, hq)
			if err != nil || len(bs) != 60 {
				b.Fatalf("aggregate: %d buckets, %v", len(bs), err)
			}
		}
	})
	b.Run("latest", func(b *testing.B) {
		for b.Loop() {
			l, err := s.Latest(ctx, "bench_pk", "bench_dev", point.KindPoint)
			if err != nil || len(l) != 1 {
				b.Fatalf("latest: %v, %v", l, err)
			}
		}
	})
}

// BenchmarkProject measures the projection write path: batches of 1,000
// samples over 100 points of 10 devices, one sample per point per second,
// as the projector writes them (samples, latest values, rollups and the
// cursor in one transaction).
func BenchmarkProject(b *testing.B) {
	ctx := context.Background()
	s, err := Open(ctx, filepath.Join(b.TempDir(), "coapgate.db"))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	const batch = 1000
	msg := int64(0)
	samples := make([]point.Sample, batch)
	for b.Loop() {
		for i := range samples {
			msg++
			samples[i] = point.Sample{ProductKey: "pk", DeviceKey: "d" + strconv.Itoa(i%10), Kind: point.KindPoint,
				Name: "p" + strconv.Itoa(i%100/10), Time: benchBase.Add(time.Duration(msg/100) * time.Second),
				Value: float64(msg % 1000), MessageID: msg}
		}
		if err := s.Project(ctx, "bench", msg, samples); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*batch)/b.Elapsed().Seconds(), "samples/s")
}

// openYear opens (building on first use, kept in the temp directory like
// History1M's) a database holding a year of one point sampled every
// minute: 525,600 samples.
func openYear(b *testing.B) *Store {
	b.Helper()
	ctx := context.Background()
	path := filepath.Join(os.TempDir(), "coapgate-bench-year-1min-v1.db")
	s, err := Open(ctx, path)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	const n = 365 * 24 * 60
	if cur, err := s.Cursor(ctx, "bench"); err == nil && cur == n {
		return s
	}
	start := time.Now()
	samples := make([]point.Sample, 0, 10_000)
	for i := range n {
		samples = append(samples, point.Sample{ProductKey: "bench_pk", DeviceKey: "bench_dev", Kind: point.KindPoint, Name: "temp",
			Time: benchBase.Add(time.Duration(i) * time.Minute), Value: 20 + 5*math.Sin(float64(i)/1440), MessageID: int64(i + 1)})
		if len(samples) == cap(samples) || i == n-1 {
			if err := s.Project(ctx, "bench", int64(i+1), samples); err != nil {
				b.Fatal(err)
			}
			samples = samples[:0]
		}
	}
	b.Logf("loaded %d samples in %v", n, time.Since(start))
	return s
}

// BenchmarkAggregateYear aggregates a year of one point (one sample a
// minute) per day and per hour from the 1-hour rollups, and for
// comparison in 61-minute buckets (from the 1-minute rollups) and
// 3601-second ones (from the samples)
// (go test ./internal/sqlitestore/ -run '^$' -bench AggregateYear).
func BenchmarkAggregateYear(b *testing.B) {
	s := openYear(b)
	ctx := context.Background()
	q := point.HistoryQuery{PK: "bench_pk", DK: "bench_dev", Name: "temp", From: benchBase, To: benchBase.Add(365 * 24 * time.Hour)}
	for _, tc := range []struct {
		name string
		iv   time.Duration
		want int
	}{
		{"rollups/1d", 24 * time.Hour, 365},
		{"rollups/1h", time.Hour, 365 * 24},
		// A whole number of minutes but not of hours: the 1-minute
		// rollups, as many rows as samples here.
		{"rollups-1m/61m", 61 * time.Minute, 365 * 24 * 60 / 61},
		// Not a whole number of minutes: the samples.
		{"samples/3601s", 3601 * time.Second, 365 * 24 * 3600 / 3601},
	} {
		b.Run(tc.name, func(b *testing.B) {
			hq := q
			hq.Interval = tc.iv
			for b.Loop() {
				bs, err := s.Aggregate(ctx, hq)
				if err != nil || len(bs) < tc.want {
					b.Fatalf("aggregate: %d buckets, %v", len(bs), err)
				}
			}
		})
	}
}
