// Conformance test of point.Aggregate against a brute-force fold; adapters
// that answer from rollups must give the same buckets.

package pointtest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

// bruteAggregate is the reference: every stored sample of the point folded
// into its epoch-aligned bucket in Go.
func bruteAggregate(samples []point.Sample, from, to time.Time, iv time.Duration) []point.Bucket {
	type acc struct {
		count, num    int64
		sum, min, max float64
	}
	accs := map[int64]*acc{}
	for _, sm := range samples {
		if (!from.IsZero() && sm.Time.Before(from)) || (!to.IsZero() && !sm.Time.Before(to)) {
			continue
		}
		ts := sm.Time.UnixNano()
		b := ts - ((ts%int64(iv))+int64(iv))%int64(iv) // rounded down, also before 1970
		a := accs[b]
		if a == nil {
			a = &acc{}
			accs[b] = a
		}
		a.count++
		var f float64
		switch v := sm.Value.(type) {
		case int64:
			f = float64(v)
		case float64:
			f = v
		default:
			continue
		}
		if a.num == 0 || f < a.min {
			a.min = f
		}
		if a.num == 0 || f > a.max {
			a.max = f
		}
		a.num++
		a.sum += f
	}
	starts := make([]int64, 0, len(accs))
	for b := range accs {
		starts = append(starts, b)
	}
	slices.Sort(starts)
	out := make([]point.Bucket, 0, len(starts))
	for _, b := range starts {
		a := accs[b]
		bk := point.Bucket{Start: time.Unix(0, b).UTC(), Count: a.count}
		if a.num > 0 {
			avg, mn, mx, sum := a.sum/float64(a.num), a.min, a.max, a.sum
			bk.Avg, bk.Min, bk.Max, bk.Sum = &avg, &mn, &mx, &sum
		}
		out = append(out, bk)
	}
	return out
}

// BucketString formats aggregation buckets with their values, for
// comparisons and failure messages.
func BucketString(bs []point.Bucket) string {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	s := ""
	for _, b := range bs {
		s += fmt.Sprintf("[%s n=%d avg=%s min=%s max=%s sum=%s] ", b.Start.Format(time.RFC3339Nano), b.Count, f(b.Avg), f(b.Min), f(b.Max), f(b.Sum))
	}
	return s
}

// RunAggregateBruteForce checks that Aggregate gives exactly the buckets a
// brute-force fold over the samples gives — for intervals of whole minutes
// (which adapters may answer from rollups) and others, aligned and
// unaligned ranges, retried batches, late samples, non-numeric values and
// times before 1970. Values are multiples of 0.5 so that float sums are
// exact in any order.
func RunAggregateBruteForce(t *testing.T, newStore func(t *testing.T) point.Store) {
	s := newStore(t)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(1, 2))
	base := time.Date(1969, 12, 31, 22, 0, 0, 0, time.UTC) // spans the epoch
	const perBatch = 120
	var stored []point.Sample
	msg := int64(0)
	for batch := range 12 {
		var in []point.Sample
		for range perBatch {
			msg++
			var v any
			switch rng.IntN(6) {
			case 0:
				v = int64(rng.IntN(2000) - 1000)
			case 1:
				v = "text"
			case 2:
				v = rng.IntN(2) == 0
			default:
				v = float64(rng.IntN(4000)-2000) / 2
			}
			at := base.Add(time.Duration(rng.Int64N(int64(6 * time.Hour))))
			sm := point.Sample{ProductKey: "p1", DeviceKey: "d1", Kind: point.KindPoint, Name: "x", Time: at, Value: v, MessageID: msg}
			in = append(in, sm)
			stored = append(stored, sm)
		}
		if batch%4 == 3 {
			// A retried batch: already projected samples are not rolled
			// up twice.
			if err := s.Project(ctx, "t", msg-perBatch, in); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Project(ctx, "t", msg, in); err != nil {
			t.Fatal(err)
		}
		// Another point of the same device is kept apart.
		if err := s.Project(ctx, "t", msg, []point.Sample{{ProductKey: "p1", DeviceKey: "d1", Kind: point.KindPoint,
			Name: "y", Time: base, Value: 1e6, MessageID: msg}}); err != nil {
			t.Fatal(err)
		}
	}
	// Stored values come back typed as the store keeps them (bools are
	// not numeric).
	intervals := []time.Duration{time.Minute, 2 * time.Minute, 5 * time.Minute, 7 * time.Minute, 15 * time.Minute,
		time.Hour, 2 * time.Hour, 24 * time.Hour, 90 * time.Second}
	ranges := []struct{ from, to time.Time }{
		{},
		{base, base.Add(6 * time.Hour)},
		{base.Add(time.Hour), base.Add(3 * time.Hour)},
		{base.Add(17*time.Minute + 13*time.Second), base.Add(4*time.Hour + 7*time.Minute + 59*time.Second)},
		{base.Add(90 * time.Minute), time.Time{}},
		{time.Time{}, base.Add(2*time.Hour + 30*time.Second)},
		{base.Add(10*time.Minute + time.Second), base.Add(10*time.Minute + 50*time.Second)},
	}
	for _, iv := range intervals {
		for i, r := range ranges {
			t.Run(fmt.Sprintf("%v/range%d", iv, i), func(t *testing.T) {
				got, err := s.Aggregate(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", From: r.from, To: r.to, Interval: iv})
				if err != nil {
					t.Fatal(err)
				}
				want := bruteAggregate(stored, r.from, r.to, iv)
				if g, w := BucketString(got), BucketString(want); g != w {
					t.Fatalf("aggregate:\n got %s\nwant %s", g, w)
				}
			})
		}
	}
}
