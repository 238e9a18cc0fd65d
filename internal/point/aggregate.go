package point

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"
)

// What the store adapters share to answer Aggregate and Export: the query
// checks, the rollup widths and how a range splits over them, the merge of
// partial aggregates and the buckets built from them. Only the SQL that
// reads samples and rollups is theirs.

// Rollup widths, in nanoseconds: every projected sample is rolled up into
// one bucket of each (stores keep count, numeric count, sum, min and max
// per bucket).
const (
	RollupMinute = int64(time.Minute)
	RollupHour   = int64(time.Hour)
)

// FloorTo rounds t down to a multiple of res, also below zero.
func FloorTo(t, res int64) int64 { return t - ((t%res)+res)%res }

// RollupLevels returns the rollup widths that can answer buckets of width
// iv, coarsest first (none: iv is not a whole number of minutes). Every
// rollup bucket then lies inside one interval bucket.
func RollupLevels(iv int64) []int64 {
	switch {
	case iv%RollupHour == 0:
		return []int64{RollupHour, RollupMinute}
	case iv%RollupMinute == 0:
		return []int64{RollupMinute}
	}
	return nil
}

// WantedAggs checks the aggregates a query names and returns them as a
// set; none named means all of AggNames.
func WantedAggs(aggs []string) (map[string]bool, error) {
	want := map[string]bool{}
	for _, a := range aggs {
		if !slices.Contains(AggNames, a) {
			return nil, fmt.Errorf("%w: unknown aggregate %q", ErrInvalid, a)
		}
		want[a] = true
	}
	if len(want) == 0 {
		for _, a := range AggNames {
			want[a] = true
		}
	}
	return want, nil
}

// SplitRollups covers [lo, hi) with the widths of levels, coarsest first:
// rolled reads the part aligned to a width from that width's rollups, the
// unaligned ends go to the next finer width, and what no width covers to
// raw (the samples). lo may be math.MinInt64 (no lower bound).
func SplitRollups(lo, hi int64, levels []int64, rolled func(res, lo, hi int64) error, raw func(lo, hi int64) error) error {
	if lo >= hi {
		return nil
	}
	if len(levels) == 0 {
		return raw(lo, hi)
	}
	res := levels[0]
	alo, ahi := lo, FloorTo(hi, res)
	if lo != math.MinInt64 {
		if f := FloorTo(lo, res); f != lo {
			if f > math.MaxInt64-res {
				alo = math.MaxInt64
			} else {
				alo = f + res
			}
		}
	}
	if alo >= ahi {
		return SplitRollups(lo, hi, levels[1:], rolled, raw)
	}
	if err := SplitRollups(lo, alo, levels[1:], rolled, raw); err != nil {
		return err
	}
	if err := rolled(res, alo, ahi); err != nil {
		return err
	}
	return SplitRollups(ahi, hi, levels[1:], rolled, raw)
}

// Partial is part of one bucket's aggregate: min and max are nil while no
// numeric value was seen.
type Partial struct {
	Start           int64 // bucket start, Unix nanoseconds
	Count, NumCount int64
	Sum             float64
	Min, Max        *float64
}

// Partials merges partial aggregates by bucket start.
type Partials map[int64]*Partial

// Merge adds one partial aggregate to its bucket.
func (ps Partials) Merge(start, count, numCount int64, sum float64, mn, mx *float64) {
	b := ps[start]
	if b == nil {
		b = &Partial{Start: start}
		ps[start] = b
	}
	b.Count += count
	b.NumCount += numCount
	b.Sum += sum
	if mn != nil && (b.Min == nil || *mn < *b.Min) {
		b.Min = mn
	}
	if mx != nil && (b.Max == nil || *mx > *b.Max) {
		b.Max = mx
	}
}

// Buckets returns the merged buckets, oldest first, with the aggregates in
// want (avg is the sum over the numeric count).
func (ps Partials) Buckets(want map[string]bool) []Bucket {
	starts := make([]int64, 0, len(ps))
	for s := range ps {
		starts = append(starts, s)
	}
	slices.Sort(starts)
	out := make([]Bucket, 0, len(starts))
	for _, s := range starts {
		b := ps[s]
		var avg, sum *float64
		if b.NumCount > 0 {
			a, t := b.Sum/float64(b.NumCount), b.Sum
			avg, sum = &a, &t
		}
		out = append(out, NewBucket(want, b.Start, b.Count, b.NumCount, avg, b.Min, b.Max, sum))
	}
	return out
}

// NewBucket builds one Aggregate bucket with the aggregates in want; the
// numeric ones only when the bucket had numeric values.
func NewBucket(want map[string]bool, start, count, numCount int64, avg, mn, mx, sum *float64) Bucket {
	bk := Bucket{Start: time.Unix(0, start).UTC()}
	if want["count"] {
		bk.Count = count
	}
	if numCount > 0 {
		opt := func(name string, v *float64) *float64 {
			if !want[name] || v == nil {
				return nil
			}
			f := *v
			return &f
		}
		bk.Avg, bk.Min, bk.Max, bk.Sum = opt("avg", avg), opt("min", mn), opt("max", mx), opt("sum", sum)
	}
	return bk
}

// pager is what Export reads through.
type pager interface {
	Latest(ctx context.Context, pk, dk, kind string) ([]Sample, error)
	History(ctx context.Context, q HistoryQuery) (Page, error)
}

// ExportPages implements Reader.Export on r: point by point (names from
// Latest unless given), each in History pages of chunk samples, so fn
// never runs inside a read transaction and memory stays bounded.
func ExportPages(ctx context.Context, r pager, q ExportQuery, chunk int, fn func(Sample) error) error {
	kind := q.Kind
	if kind == "" {
		kind = KindPoint
	}
	names := slices.Clone(q.Names)
	if len(names) == 0 {
		latest, err := r.Latest(ctx, q.PK, q.DK, kind)
		if err != nil {
			return err
		}
		for _, l := range latest {
			names = append(names, l.Name)
		}
	}
	slices.Sort(names)
	names = slices.Compact(names)
	for _, name := range names {
		hq := HistoryQuery{PK: q.PK, DK: q.DK, Kind: kind, Name: name, From: q.From, To: q.To, Limit: chunk}
		for {
			page, err := r.History(ctx, hq)
			if err != nil {
				return err
			}
			for _, sm := range page.Samples {
				if err := fn(sm); err != nil {
					return err
				}
			}
			if page.Next == "" {
				break
			}
			hq.Cursor = page.Next
		}
	}
	return nil
}
