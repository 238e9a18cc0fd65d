package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/point"
)

// rollupResolutions are the widths (point.RollupMinute, point.RollupHour)
// every projected sample is rolled up into.
var rollupResolutions = [...]int64{point.RollupMinute, point.RollupHour}

// upsertRollupSQL adds a partial rollup to its bucket (least and greatest
// ignore NULLs).
const upsertRollupSQL = `INSERT INTO point_rollups AS r (product_key, device_key, kind, name, res, bucket,
		count, num_count, sum, min, max) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
	ON CONFLICT (product_key, device_key, kind, name, res, bucket) DO UPDATE SET
		count = r.count + excluded.count, num_count = r.num_count + excluded.num_count,
		sum = r.sum + excluded.sum, min = least(r.min, excluded.min), max = greatest(r.max, excluded.max)`

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
		k := rollupKey{pk: pk, dk: dk, kind: kind, name: name, res: res, bucket: point.FloorTo(ts, res)}
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

// aggregatePartials answers Aggregate over [lo, hi) (point.SplitRollups):
// each part aligned to a rollup width of levels from point_rollups (they
// outlive the samples under retention), the rest from the samples.
func (s *Store) aggregatePartials(ctx context.Context, q point.HistoryQuery, kind string, lo, hi, iv int64, levels []int64) (point.Partials, error) {
	ps := point.Partials{}
	rolled := func(res, lo, hi int64) error {
		rows, err := s.pool.Query(ctx, `SELECT bucket - ((bucket % $1) + $1) % $1 AS b,
			sum(count)::bigint, sum(num_count)::bigint, coalesce(sum(sum), 0), min(min), max(max)
		FROM point_rollups
		WHERE product_key = $2 AND device_key = $3 AND kind = $4 AND name = $5 AND res = $6
			AND bucket >= $7 AND bucket < $8
		GROUP BY b`, iv, q.PK, q.DK, kind, q.Name, res, lo, hi)
		if err != nil {
			return err
		}
		return scanPartials(rows, ps)
	}
	raw := func(lo, hi int64) error {
		rows, err := s.pool.Query(ctx, `SELECT b, count(*), count(num), coalesce(sum(num), 0), min(num), max(num)
		FROM (SELECT ts - ((ts % $1) + $1) % $1 AS b,
			CASE value_type WHEN 1 THEN float_value WHEN 2 THEN int_value::double precision END AS num
			FROM points
			WHERE product_key = $2 AND device_key = $3 AND kind = $4 AND name = $5 AND ts >= $6 AND ts < $7) t
		GROUP BY b`, iv, q.PK, q.DK, kind, q.Name, lo, hi)
		if err != nil {
			return err
		}
		return scanPartials(rows, ps)
	}
	if err := point.SplitRollups(lo, hi, levels, rolled, raw); err != nil {
		return nil, err
	}
	return ps, nil
}

// scanPartials merges rows of (bucket, count, numeric count, sum, min,
// max) into ps and closes rows.
func scanPartials(rows pgx.Rows, ps point.Partials) error {
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
		ps.Merge(start, count, numCount, sum, mn, mx)
	}
	return rows.Err()
}
