package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

var _ point.Store = (*Store)(nil)

// Value type tags of the points tables (see migration 0003).
const (
	vtFloat  = 1
	vtInt    = 2
	vtString = 3
	vtBool   = 4
	vtJSON   = 5
)

// exportChunk is the number of rows Export reads per query.
const exportChunk = 1000

const insertPointSQL = `INSERT INTO points (product_key, device_key, kind, name, ts, msg_id, value_type, value)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING`

// upsertLatestSQL replaces a latest value only with a newer one: a later
// sample time, or the same time from a later message.
const upsertLatestSQL = `INSERT INTO latest_points (product_key, device_key, kind, name, ts, msg_id, value_type, value)
	VALUES (?, ?, ?, ?, ?, ?, ?, ?)
	ON CONFLICT (product_key, device_key, kind, name) DO UPDATE SET
		ts = excluded.ts, msg_id = excluded.msg_id, value_type = excluded.value_type, value = excluded.value
	WHERE (excluded.ts, excluded.msg_id) > (latest_points.ts, latest_points.msg_id)`

// Project implements point.Writer: samples, their 1-minute and 1-hour
// rollups and the cursor commit in one transaction on the writer. Samples at or below the stored cursor are
// dropped (they were projected by an earlier commit), and a sample that
// repeats a stored (device, kind, name, time, message) is ignored, so a
// retried batch stores every sample once.
func (s *Store) Project(ctx context.Context, name string, upto int64, samples []point.Sample) (err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: project %s: begin: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
		}
	}()
	cur, err := cursorTx(ctx, tx, name)
	if err != nil {
		return fmt.Errorf("sqlitestore: project %s: %w", name, err)
	}
	if len(samples) > 0 {
		ins, err := tx.PrepareContext(ctx, insertPointSQL)
		if err != nil {
			return fmt.Errorf("sqlitestore: project %s: prepare: %w", name, err)
		}
		defer ins.Close()
		up, err := tx.PrepareContext(ctx, upsertLatestSQL)
		if err != nil {
			return fmt.Errorf("sqlitestore: project %s: prepare: %w", name, err)
		}
		defer up.Close()
		var (
			args    [8]any
			rollups rollupBatch
		)
		for i := range samples {
			sm := &samples[i]
			if sm.MessageID <= cur {
				continue
			}
			vt, v, err := encodePointValue(sm.Value)
			if err != nil {
				return fmt.Errorf("sqlitestore: project %s: point %s of %s/%s: %w", name, sm.Name, sm.ProductKey, sm.DeviceKey, err)
			}
			kind := sm.Kind
			if kind == "" {
				kind = point.KindPoint
			}
			setString(&args[0], sm.ProductKey)
			setString(&args[1], sm.DeviceKey)
			setString(&args[2], kind)
			setString(&args[3], sm.Name)
			setInt(&args[4], sm.Time.UnixNano())
			setInt(&args[5], sm.MessageID)
			setInt(&args[6], vt)
			args[7] = v
			res, err := ins.ExecContext(ctx, args[:]...)
			if err != nil {
				return fmt.Errorf("sqlitestore: project %s: insert point %s: %w", name, sm.Name, err)
			}
			if n, err := res.RowsAffected(); err != nil {
				return fmt.Errorf("sqlitestore: project %s: insert point %s: %w", name, sm.Name, err)
			} else if n == 1 { // not a repeat: roll it up
				rollups.add(sm.ProductKey, sm.DeviceKey, kind, sm.Name, sm.Time.UnixNano(), vt, v)
			}
			if _, err := up.ExecContext(ctx, args[:]...); err != nil {
				return fmt.Errorf("sqlitestore: project %s: latest point %s: %w", name, sm.Name, err)
			}
		}
		if err := rollups.write(ctx, tx); err != nil {
			return fmt.Errorf("sqlitestore: project %s: %w", name, err)
		}
	}
	if upto > cur {
		if _, err := tx.ExecContext(ctx, `INSERT INTO projector_cursors (name, last_id) VALUES (?, ?)
			ON CONFLICT (name) DO UPDATE SET last_id = excluded.last_id`, name, upto); err != nil {
			return fmt.Errorf("sqlitestore: project %s: set cursor: %w", name, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: project %s: commit: %w", name, err)
	}
	return nil
}

// cursorTx reads a projector cursor inside tx (0 if unset).
func cursorTx(ctx context.Context, tx *sql.Tx, name string) (int64, error) {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT last_id FROM projector_cursors WHERE name = ?`, name).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read cursor: %w", err)
	}
	return cur, nil
}

// Cursor implements point.Writer.
func (s *Store) Cursor(ctx context.Context, name string) (int64, error) {
	var cur int64
	err := s.reader.QueryRowContext(ctx, `SELECT last_id FROM projector_cursors WHERE name = ?`, name).Scan(&cur)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("sqlitestore: read cursor %s: %w", name, err)
	}
	return cur, nil
}

// Latest implements point.Reader.
func (s *Store) Latest(ctx context.Context, pk, dk, kind string) ([]point.Sample, error) {
	if kind == "" {
		kind = point.KindPoint
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT name, ts, msg_id, value_type, value FROM latest_points
		WHERE product_key = ? AND device_key = ? AND kind = ? ORDER BY name`, pk, dk, kind)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: latest points of %s/%s: %w", pk, dk, err)
	}
	defer rows.Close()
	out := []point.Sample{}
	for rows.Next() {
		sm := point.Sample{ProductKey: pk, DeviceKey: dk, Kind: kind}
		if err := scanSample(rows, &sm, true); err != nil {
			return nil, fmt.Errorf("sqlitestore: latest points of %s/%s: %w", pk, dk, err)
		}
		out = append(out, sm)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: latest points of %s/%s: %w", pk, dk, err)
	}
	return out, nil
}

// scanSample reads [name,] ts, msg_id, value_type, value into sm.
func scanSample(rs rowScanner, sm *point.Sample, withName bool) error {
	var (
		ts, vt int64
		v      any
	)
	dest := []any{&ts, &sm.MessageID, &vt, &v}
	if withName {
		dest = append([]any{&sm.Name}, dest...)
	}
	if err := rs.Scan(dest...); err != nil {
		return err
	}
	sm.Time = time.Unix(0, ts).UTC()
	var err error
	sm.Value, err = decodePointValue(vt, v)
	return err
}

// timeBounds returns q's range as unix nanoseconds, unbounded ends as the
// extreme int64 values.
func timeBounds(from, to time.Time) (int64, int64) {
	lo, hi := int64(math.MinInt64), int64(math.MaxInt64)
	if !from.IsZero() {
		lo = from.UnixNano()
	}
	if !to.IsZero() {
		hi = to.UnixNano()
	}
	return lo, hi
}

// History implements point.Reader: a keyset page over the primary key
// (product_key, device_key, kind, name, ts, msg_id), so every page is one
// index seek and LIMIT rows, however deep.
func (s *Store) History(ctx context.Context, q point.HistoryQuery) (point.Page, error) {
	kind := q.Kind
	if kind == "" {
		kind = point.KindPoint
	}
	limit := q.Limit
	switch {
	case limit <= 0:
		limit = defaultLimit
	case limit > point.MaxLimit:
		limit = point.MaxLimit
	}
	lo, hi := timeBounds(q.From, q.To)
	// The cursor narrows the time bound itself (and a filter drops the
	// rows at the cursor's own time up to its message): SQLite does not
	// seek on a row-value comparison next to a plain bound on ts, so
	// "(ts, msg_id) > (?, ?)" would scan from the range start on every page.
	var cts, cid int64
	hasCursor := q.Cursor != ""
	if hasCursor {
		var err error
		if cts, cid, err = point.DecodeCursor(q.Cursor); err != nil {
			return point.Page{}, err
		}
		if q.Descending {
			if cts < math.MaxInt64 {
				hi = min(hi, cts+1)
			}
		} else {
			lo = max(lo, cts)
		}
	}
	var b strings.Builder
	b.WriteString(`SELECT ts, msg_id, value_type, value FROM points
		WHERE product_key = ? AND device_key = ? AND kind = ? AND name = ? AND ts >= ? AND ts < ?`)
	args := []any{q.PK, q.DK, kind, q.Name, lo, hi}
	if hasCursor {
		if q.Descending {
			b.WriteString(` AND (ts <> ? OR msg_id < ?)`)
		} else {
			b.WriteString(` AND (ts <> ? OR msg_id > ?)`)
		}
		args = append(args, cts, cid)
	}
	if q.Descending {
		b.WriteString(` ORDER BY ts DESC, msg_id DESC LIMIT ?`)
	} else {
		b.WriteString(` ORDER BY ts, msg_id LIMIT ?`)
	}
	// One row more than the page tells whether another page follows.
	args = append(args, limit+1)
	rows, err := s.reader.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return point.Page{}, fmt.Errorf("sqlitestore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	defer rows.Close()
	p := point.Page{Samples: make([]point.Sample, 0, min(limit, 256))}
	for rows.Next() {
		if len(p.Samples) == limit {
			last := p.Samples[limit-1]
			p.Next = point.EncodeCursor(last.Time.UnixNano(), last.MessageID)
			break
		}
		sm := point.Sample{ProductKey: q.PK, DeviceKey: q.DK, Kind: kind, Name: q.Name}
		if err := scanSample(rows, &sm, false); err != nil {
			return point.Page{}, fmt.Errorf("sqlitestore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
		}
		p.Samples = append(p.Samples, sm)
	}
	if err := rows.Err(); err != nil {
		return point.Page{}, fmt.Errorf("sqlitestore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	return p, nil
}

// Aggregate implements point.Reader. An interval of whole minutes is
// answered from the rollups (aggregateRollups); any other in one SQL
// statement: the range scan of History grouped by epoch-aligned bucket.
// avg, min, max and sum see numeric values only (floats and integers; sum
// is a float, so it cannot overflow); count counts every value.
func (s *Store) Aggregate(ctx context.Context, q point.HistoryQuery) ([]point.Bucket, error) {
	if q.Interval <= 0 {
		return nil, fmt.Errorf("%w: interval must be positive", point.ErrInvalid)
	}
	want, err := point.WantedAggs(q.Aggs)
	if err != nil {
		return nil, err
	}
	kind := q.Kind
	if kind == "" {
		kind = point.KindPoint
	}
	lo, hi := timeBounds(q.From, q.To)
	iv := int64(q.Interval)
	if levels := point.RollupLevels(iv); levels != nil {
		ps, err := s.aggregateRollups(ctx, q, kind, lo, hi, iv, levels)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: aggregate %s/%s %s: %w", q.PK, q.DK, q.Name, err)
		}
		return ps.Buckets(want), nil
	}
	// ts - ((ts % iv) + iv) % iv is ts rounded down to a multiple of iv,
	// also for times before 1970 (% truncates towards zero).
	rows, err := s.reader.QueryContext(ctx, `SELECT b, count(*), count(num), avg(num), min(num), max(num), total(num)
		FROM (SELECT ts - ((ts % ?1) + ?1) % ?1 AS b,
			CASE WHEN value_type IN (1, 2) THEN value END AS num
			FROM points
			WHERE product_key = ?2 AND device_key = ?3 AND kind = ?4 AND name = ?5 AND ts >= ?6 AND ts < ?7)
		GROUP BY b ORDER BY b`, iv, q.PK, q.DK, kind, q.Name, lo, hi)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: aggregate %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	defer rows.Close()
	out := []point.Bucket{}
	for rows.Next() {
		var (
			start, count, numCount int64
			avg, mn, mx, sum       sql.NullFloat64
		)
		if err := rows.Scan(&start, &count, &numCount, &avg, &mn, &mx, &sum); err != nil {
			return nil, fmt.Errorf("sqlitestore: aggregate %s/%s %s: %w", q.PK, q.DK, q.Name, err)
		}
		out = append(out, point.NewBucket(want, start, count, numCount, nullFloat(avg), nullFloat(mn), nullFloat(mx), nullFloat(sum)))
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: aggregate %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	return out, nil
}

// Export implements point.Reader: point by point (names from latest_points
// unless given), each in keyset chunks of exportChunk rows, so fn never
// runs inside a read transaction and memory stays bounded.
func (s *Store) Export(ctx context.Context, q point.ExportQuery, fn func(point.Sample) error) error {
	return point.ExportPages(ctx, s, q, exportChunk, fn)
}

// encodePointValue returns the type tag and stored form of v.
func encodePointValue(v any) (int64, any, error) {
	switch x := v.(type) {
	case float64:
		return floatValue(x)
	case float32:
		return floatValue(float64(x))
	case int64:
		return vtInt, x, nil
	case int:
		return vtInt, int64(x), nil
	case int32:
		return vtInt, int64(x), nil
	case int16:
		return vtInt, int64(x), nil
	case int8:
		return vtInt, int64(x), nil
	case uint64:
		if x > math.MaxInt64 {
			return vtFloat, float64(x), nil
		}
		return vtInt, int64(x), nil
	case uint:
		return encodePointValue(uint64(x))
	case uint32:
		return vtInt, int64(x), nil
	case uint16:
		return vtInt, int64(x), nil
	case uint8:
		return vtInt, int64(x), nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return vtInt, i, nil
		}
		f, err := x.Float64()
		if err != nil {
			return 0, nil, fmt.Errorf("number %q: %w", x, err)
		}
		return floatValue(f)
	case string:
		return vtString, x, nil
	case bool:
		return vtBool, boolInt(x), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return 0, nil, fmt.Errorf("value of type %T: %w", v, err)
	}
	return vtJSON, string(b), nil
}

// floatValue stores finite floats as REAL; NaN and the infinities (which
// neither JSON nor an SQLite REAL can carry faithfully) become the strings
// "NaN", "+Inf" and "-Inf".
func floatValue(f float64) (int64, any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return vtString, strconv.FormatFloat(f, 'g', -1, 64), nil
	}
	return vtFloat, f, nil
}

// decodePointValue turns a stored value back into its Go form.
func decodePointValue(vt int64, v any) (any, error) {
	switch vt {
	case vtFloat:
		switch x := v.(type) {
		case float64:
			return x, nil
		case int64:
			return float64(x), nil
		}
	case vtInt:
		if x, ok := v.(int64); ok {
			return x, nil
		}
	case vtString:
		switch x := v.(type) {
		case string:
			return x, nil
		case []byte:
			return string(x), nil
		}
	case vtBool:
		if x, ok := v.(int64); ok {
			return x != 0, nil
		}
	case vtJSON:
		var s []byte
		switch x := v.(type) {
		case string:
			s = []byte(x)
		case []byte:
			s = x
		default:
			return nil, fmt.Errorf("json value stored as %T", v)
		}
		var out any
		if err := json.Unmarshal(s, &out); err != nil {
			return nil, fmt.Errorf("stored json value: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("stored value type %d holds %T", vt, v)
}
