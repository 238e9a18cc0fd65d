package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"math"

	"github.com/coapgate/coapgate/internal/point"
)

// rollupResolutions are the widths (point.RollupMinute, point.RollupHour)
// every projected sample is rolled up into (point_rollups, migration 0010).
var rollupResolutions = [...]int64{point.RollupMinute, point.RollupHour}

// upsertRollupSQL adds a partial rollup to its bucket.
const upsertRollupSQL = `INSERT INTO point_rollups (product_key, device_key, kind, name, res, bucket,
		count, num_count, sum, min, max) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (product_key, device_key, kind, name, res, bucket) DO UPDATE SET
		count = point_rollups.count + excluded.count,
		num_count = point_rollups.num_count + excluded.num_count,
		sum = point_rollups.sum + excluded.sum,
		min = CASE WHEN excluded.min IS NULL THEN point_rollups.min
			WHEN point_rollups.min IS NULL OR excluded.min < point_rollups.min THEN excluded.min
			ELSE point_rollups.min END,
		max = CASE WHEN excluded.max IS NULL THEN point_rollups.max
			WHEN point_rollups.max IS NULL OR excluded.max > point_rollups.max THEN excluded.max
			ELSE point_rollups.max END`

// rollupKey names one bucket of one point at one resolution.
type rollupKey struct {
	pk, dk, kind, name string
	res, bucket        int64
}

// rollupAcc is a partial rollup. min and max hold int64 or float64 (nil
// while no numeric value was added).
type rollupAcc struct {
	count, numCount int64
	sum             float64
	min, max        any
}

// numLess compares two numeric values (int64 or float64) by value.
func numLess(a, b any) bool {
	ai, aInt := a.(int64)
	bi, bInt := b.(int64)
	if aInt && bInt {
		return ai < bi
	}
	return toFloat(a) < toFloat(b)
}

func toFloat(v any) float64 {
	switch x := v.(type) {
	case int64:
		return float64(x)
	case float64:
		return x
	}
	return math.NaN()
}

// add folds one stored value (type tag vt) into the partial rollup.
func (a *rollupAcc) add(vt int64, v any) {
	a.count++
	if vt != vtFloat && vt != vtInt {
		return
	}
	a.numCount++
	a.sum += toFloat(v)
	if a.min == nil || numLess(v, a.min) {
		a.min = v
	}
	if a.max == nil || numLess(a.max, v) {
		a.max = v
	}
}

// rollupBatch collects the rollups of the samples one Project call
// inserts, so that a batch touches each bucket once.
type rollupBatch struct {
	accs  map[rollupKey]*rollupAcc
	order []rollupKey
}

func (b *rollupBatch) add(pk, dk, kind, name string, ts, vt int64, v any) {
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
		a.add(vt, v)
	}
}

// write adds the batch's partial rollups to point_rollups inside tx.
func (b *rollupBatch) write(ctx context.Context, tx *sql.Tx) error {
	if len(b.order) == 0 {
		return nil
	}
	st, err := tx.PrepareContext(ctx, upsertRollupSQL)
	if err != nil {
		return fmt.Errorf("prepare rollup: %w", err)
	}
	defer st.Close()
	for _, k := range b.order {
		a := b.accs[k]
		if _, err := st.ExecContext(ctx, k.pk, k.dk, k.kind, k.name, k.res, k.bucket,
			a.count, a.numCount, a.sum, a.min, a.max); err != nil {
			return fmt.Errorf("rollup %s: %w", k.name, err)
		}
	}
	return nil
}

// aggregateRollups answers Aggregate for an interval that is a whole
// number of minutes (point.SplitRollups): the part of [lo, hi) aligned to
// the coarsest rollup width from those rollups, the unaligned ends from
// the next finer width, and what no width covers (sub-minute ends) from
// the samples. Every rollup bucket lies inside one interval bucket (the
// width divides the interval), so the answer equals the one over the
// samples; sums of non-integer floats may differ in the last bits
// (addition order).
func (s *Store) aggregateRollups(ctx context.Context, q point.HistoryQuery, kind string, lo, hi, iv int64, levels []int64) (point.Partials, error) {
	ps := point.Partials{}
	rolled := func(res, lo, hi int64) error {
		query := `SELECT bucket - ((bucket % ?1) + ?1) % ?1 AS b,
			sum(count), sum(num_count), total(sum), min(min), max(max)
		FROM point_rollups
		WHERE product_key = ?2 AND device_key = ?3 AND kind = ?4 AND name = ?5 AND res = ?6
			AND bucket >= ?7 AND bucket < ?8
		GROUP BY b`
		if iv == res {
			// One rollup row per bucket, in key order: no grouping (?1
			// stays referenced so that both forms take the same arguments).
			query = `SELECT bucket + 0 * ?1, count, num_count, sum, min, max
		FROM point_rollups
		WHERE product_key = ?2 AND device_key = ?3 AND kind = ?4 AND name = ?5 AND res = ?6
			AND bucket >= ?7 AND bucket < ?8`
		}
		rows, err := s.reader.QueryContext(ctx, query, iv, q.PK, q.DK, kind, q.Name, res, lo, hi)
		if err != nil {
			return err
		}
		return scanPartials(rows, ps)
	}
	raw := func(lo, hi int64) error {
		rows, err := s.reader.QueryContext(ctx, `SELECT b, count(*), count(num), total(num), min(num), max(num)
		FROM (SELECT ts - ((ts % ?1) + ?1) % ?1 AS b,
			CASE WHEN value_type IN (1, 2) THEN value END AS num
			FROM points
			WHERE product_key = ?2 AND device_key = ?3 AND kind = ?4 AND name = ?5 AND ts >= ?6 AND ts < ?7)
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
func scanPartials(rows *sql.Rows, ps point.Partials) error {
	defer rows.Close()
	for rows.Next() {
		var (
			start, count, numCount int64
			sum                    float64
			mn, mx                 sql.NullFloat64
		)
		if err := rows.Scan(&start, &count, &numCount, &sum, &mn, &mx); err != nil {
			return err
		}
		ps.Merge(start, count, numCount, sum, nullFloat(mn), nullFloat(mx))
	}
	return rows.Err()
}

// nullFloat returns v's value, nil when it is NULL.
func nullFloat(v sql.NullFloat64) *float64 {
	if !v.Valid {
		return nil
	}
	return &v.Float64
}
