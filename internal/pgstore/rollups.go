package pgstore

import (
	"context"
	"math"
	"slices"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/point"
)

// Rollup resolutions of point_rollups, in nanoseconds (as in the embedded
// adapter).
const (
	rollupMinute = int64(time.Minute)
	rollupHour   = int64(time.Hour)
)

var rollupResolutions = [...]int64{rollupMinute, rollupHour}

// upsertRollupSQL adds a partial rollup to its bucket (least and greatest
// ignore NULLs).
const upsertRollupSQL = `INSERT INTO point_rollups AS r (product_key, device_key, kind, name, res, bucket,
		count, num_count, sum, min, max) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
	ON CONFLICT (product_key, device_key, kind, name, res, bucket) DO UPDATE SET
		count = r.count + excluded.count, num_count = r.num_count + excluded.num_count,
		sum = r.sum + excluded.sum, min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)`

func floorTo(t, res int64) int64 { return t - ((t%res)+res)%res }

type rollupKey struct {
	pk, dk, kind, name string
	res, bucket        int64
}

// rollupAcc is a partial rollup; min and max are nil while no numeric value
// was added.
type rollupAcc struct {
	count, numCount int64
	sum             float64
	min, max        *float64
}

func (a *rollupAcc) add(sv storedValue) {
	a.count++
	var f float64
	switch {
	case sv.vt == vtFloat && sv.f != nil:
		f = *sv.f
	case sv.vt == vtInt && sv.i != nil:
		f = float64(*sv.i)
	default:
		return
	}
	a.numCount++
	a.sum += f
	if a.min == nil || f < *a.min {
		a.min = &f
	}
	if a.max == nil || f > *a.max {
		v := f
		a.max = &v
	}
}

// rollupBatch collects the rollups of the samples one Project call
// inserts, so a batch touches each bucket once.
type rollupBatch struct {
	accs  map[rollupKey]*rollupAcc
	order []rollupKey
}

func (b *rollupBatch) add(pk, dk, kind, name string, ts int64, sv storedValue) {
	if b.accs == nil {
		b.accs = make(map[rollupKey]*rollupAcc)
	}
	for _, res := range rollupResolutions {
		k := rollupKey{pk: pk, dk: dk, kind: kind, name: name, res: res, bucket: floorTo(ts, res)}
		a := b.accs[k]
		if a == nil {
			a = &rollupAcc{}
			b.accs[k] = a
			b.order = append(b.order, k)
		}
		a.add(sv)
	}
}

// queue adds the batch's upserts to qb.
func (b *rollupBatch) queue(qb *pgx.Batch) {
	for _, k := range b.order {
		a := b.accs[k]
		qb.Queue(upsertRollupSQL, k.pk, k.dk, k.kind, k.name, k.res, k.bucket, a.count, a.numCount, a.sum, a.min, a.max)
	}
}

// bucketAcc merges partial aggregates of one Aggregate bucket.
type bucketAcc struct {
	start           int64
	count, numCount int64
	sum             float64
	min, max        *float64
}

func (b *bucketAcc) merge(count, numCount int64, sum float64, mn, mx *float64) {
	b.count += count
	b.numCount += numCount
	b.sum += sum
	if mn != nil && (b.min == nil || *mn < *b.min) {
		b.min = mn
	}
	if mx != nil && (b.max == nil || *mx > *b.max) {
		b.max = mx
	}
}

// rollupResolution returns the rollup width that can answer buckets of
// width iv (0: none).
func rollupResolution(iv int64) int64 {
	switch {
	case iv%rollupHour == 0:
		return rollupHour
	case iv%rollupMinute == 0:
		return rollupMinute
	}
	return 0
}

// aggregatePartials answers Aggregate over [lo, hi): each part aligned to
// a rollup width from point_rollups (they outlive the samples under
// retention), coarsest first, the unaligned rest from finer rollups and at
// last the samples; res 0 reads the samples only.
func (s *Store) aggregatePartials(ctx context.Context, q point.HistoryQuery, kind string, lo, hi, iv, res int64) ([]*bucketAcc, error) {
	var levels []int64
	switch res {
	case rollupHour:
		levels = []int64{rollupHour, rollupMinute}
	case rollupMinute:
		levels = []int64{rollupMinute}
	}
	buckets := map[int64]*bucketAcc{}
	if err := s.aggregatePart(ctx, q, kind, lo, hi, iv, levels, buckets); err != nil {
		return nil, err
	}
	return sortedBuckets(buckets), nil
}

// aggregatePart adds [lo, hi) to buckets from the first of levels (or the
// samples when none is left).
func (s *Store) aggregatePart(ctx context.Context, q point.HistoryQuery, kind string, lo, hi, iv int64, levels []int64, buckets map[int64]*bucketAcc) error {
	if lo >= hi {
		return nil
	}
	if len(levels) == 0 {
		return s.aggregateRaw(ctx, q, kind, lo, hi, iv, buckets)
	}
	res := levels[0]
	alo, ahi := lo, floorTo(hi, res)
	if lo != math.MinInt64 {
		if f := floorTo(lo, res); f != lo {
			if f > math.MaxInt64-res {
				alo = math.MaxInt64
			} else {
				alo = f + res
			}
		}
	}
	if alo >= ahi {
		return s.aggregatePart(ctx, q, kind, lo, hi, iv, levels[1:], buckets)
	}
	if err := s.aggregatePart(ctx, q, kind, lo, alo, iv, levels[1:], buckets); err != nil {
		return err
	}
	rows, err := s.pool.Query(ctx, `SELECT bucket - ((bucket % $1) + $1) % $1 AS b,
			sum(count)::bigint, sum(num_count)::bigint, coalesce(sum(sum), 0), min(min), max(max)
		FROM point_rollups
		WHERE product_key = $2 AND device_key = $3 AND kind = $4 AND name = $5 AND res = $6
			AND bucket >= $7 AND bucket < $8
		GROUP BY b`, iv, q.PK, q.DK, kind, q.Name, res, alo, ahi)
	if err != nil {
		return err
	}
	if err := scanPartials(rows, buckets); err != nil {
		return err
	}
	return s.aggregatePart(ctx, q, kind, ahi, hi, iv, levels[1:], buckets)
}

func sortedBuckets(m map[int64]*bucketAcc) []*bucketAcc {
	out := make([]*bucketAcc, 0, len(m))
	for _, b := range m {
		out = append(out, b)
	}
	slices.SortFunc(out, func(a, b *bucketAcc) int {
		switch {
		case a.start < b.start:
			return -1
		case a.start > b.start:
			return 1
		}
		return 0
	})
	return out
}

// aggregateRaw adds the samples' partial aggregates over [lo, hi) to
// buckets.
func (s *Store) aggregateRaw(ctx context.Context, q point.HistoryQuery, kind string, lo, hi, iv int64, buckets map[int64]*bucketAcc) error {
	rows, err := s.pool.Query(ctx, `SELECT b, count(*), count(num), coalesce(sum(num), 0), min(num), max(num)
		FROM (SELECT ts - ((ts % $1) + $1) % $1 AS b,
			CASE value_type WHEN 1 THEN float_value WHEN 2 THEN int_value::double precision END AS num
			FROM points
			WHERE product_key = $2 AND device_key = $3 AND kind = $4 AND name = $5 AND ts >= $6 AND ts < $7) t
		GROUP BY b`, iv, q.PK, q.DK, kind, q.Name, lo, hi)
	if err != nil {
		return err
	}
	return scanPartials(rows, buckets)
}

// scanPartials merges rows of (bucket, count, numeric count, sum, min,
// max) into buckets and closes rows.
func scanPartials(rows pgx.Rows, buckets map[int64]*bucketAcc) error {
	defer rows.Close()
	for rows.Next() {
		var (
			start, count, numCount int64
			sum                    float64
			mn, mx                 *float64
		)
		if err := rows.Scan(&start, &count, &numCount, &sum, &mn, &mx); err != nil {
			return err
		}
		b := buckets[start]
		if b == nil {
			b = &bucketAcc{start: start}
			buckets[start] = b
		}
		b.merge(count, numCount, sum, mn, mx)
	}
	return rows.Err()
}
