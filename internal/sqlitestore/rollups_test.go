package sqlitestore

import (
	"context"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/point/pointtest"
)

func TestPointsAggregateMatchesBruteForce(t *testing.T) {
	pointtest.RunAggregateBruteForce(t, func(t *testing.T) point.Store {
		s, _ := openTemp(t)
		return s
	})
}

// TestRollupMigrationBackfill: migration 0010 rolls up the samples stored
// before it, with the same result as Project does.
func TestRollupMigrationBackfill(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	base := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	var in []point.Sample
	for i := range 2000 {
		var v any = float64(rng.IntN(1000)) / 4
		if i%7 == 0 {
			v = "off"
		}
		in = append(in, point.Sample{ProductKey: "p1", DeviceKey: "d1", Kind: point.KindPoint, Name: "x",
			Time: base.Add(time.Duration(rng.Int64N(int64(5 * time.Hour)))), Value: v, MessageID: int64(i + 1)})
	}
	if err := s.Project(ctx, "t", 2000, in); err != nil {
		t.Fatal(err)
	}
	b, err := migrationFS.ReadFile("migrations/0010_point_rollups.sql")
	if err != nil {
		t.Fatal(err)
	}
	_, backfill, ok := strings.Cut(string(b), "\nINSERT INTO point_rollups")
	if !ok {
		t.Fatal("migration 0010 has no backfill step")
	}
	backfill = "INSERT INTO point_rollups" + backfill
	q := point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", Interval: 15 * time.Minute}
	want, err := s.Aggregate(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	wantHour, err := s.Aggregate(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", Interval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.ExecContext(ctx, `DELETE FROM point_rollups`); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Aggregate(ctx, q); len(got) != 0 {
		t.Fatalf("aggregate without rollups = %d buckets, want none", len(got))
	}
	if _, err := s.writer.ExecContext(ctx, backfill); err != nil {
		t.Fatalf("backfill: %v", err)
	}
	got, err := s.Aggregate(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := pointtest.BucketString(got), pointtest.BucketString(want); g != w || len(got) != 20 {
		t.Fatalf("after backfill:\n got %s\nwant %s", g, w)
	}
	// The 1-hour rollups too (an hourly interval reads only them).
	q.Interval = time.Hour
	got, err = s.Aggregate(ctx, q)
	if err != nil {
		t.Fatal(err)
	}
	if g, w := pointtest.BucketString(got), pointtest.BucketString(wantHour); g != w || len(got) != 5 {
		t.Fatalf("hourly after backfill:\n got %s\nwant %s", g, w)
	}
}
