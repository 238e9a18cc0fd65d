package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/point"
)

// Value type tags (as in the embedded adapter).
const (
	vtFloat  = 1
	vtInt    = 2
	vtString = 3
	vtBool   = 4
	vtJSON   = 5
)

const exportChunk = 1000

// storedValue is a sample value in the points tables' columns.
type storedValue struct {
	vt int16
	f  *float64
	i  *int64
	s  *string
}

func floatValue(f float64) storedValue {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		s := strconv.FormatFloat(f, 'g', -1, 64)
		return storedValue{vt: vtString, s: &s}
	}
	return storedValue{vt: vtFloat, f: &f}
}

func intValue(i int64) storedValue { return storedValue{vt: vtInt, i: &i} }

// encodePointValue maps v to its stored form, with the embedded adapter's
// typing rules.
func encodePointValue(v any) (storedValue, error) {
	switch x := v.(type) {
	case float64:
		return floatValue(x), nil
	case float32:
		return floatValue(float64(x)), nil
	case int64:
		return intValue(x), nil
	case int:
		return intValue(int64(x)), nil
	case int32:
		return intValue(int64(x)), nil
	case int16:
		return intValue(int64(x)), nil
	case int8:
		return intValue(int64(x)), nil
	case uint64:
		if x > math.MaxInt64 {
			return floatValue(float64(x)), nil
		}
		return intValue(int64(x)), nil
	case uint:
		return encodePointValue(uint64(x))
	case uint32:
		return intValue(int64(x)), nil
	case uint16:
		return intValue(int64(x)), nil
	case uint8:
		return intValue(int64(x)), nil
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return intValue(i), nil
		}
		f, err := x.Float64()
		if err != nil {
			return storedValue{}, fmt.Errorf("number %q: %w", x, err)
		}
		return floatValue(f), nil
	case string:
		return storedValue{vt: vtString, s: &x}, nil
	case bool:
		var i int64
		if x {
			i = 1
		}
		return storedValue{vt: vtBool, i: &i}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return storedValue{}, fmt.Errorf("value of type %T: %w", v, err)
	}
	s := string(b)
	return storedValue{vt: vtJSON, s: &s}, nil
}

func decodePointValue(sv storedValue) (any, error) {
	switch {
	case sv.vt == vtFloat && sv.f != nil:
		return *sv.f, nil
	case sv.vt == vtInt && sv.i != nil:
		return *sv.i, nil
	case sv.vt == vtString && sv.s != nil:
		return *sv.s, nil
	case sv.vt == vtBool && sv.i != nil:
		return *sv.i != 0, nil
	case sv.vt == vtJSON && sv.s != nil:
		var out any
		if err := json.Unmarshal([]byte(*sv.s), &out); err != nil {
			return nil, fmt.Errorf("stored json value: %w", err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("stored value type %d without its value", sv.vt)
}

// Project implements point.Writer: samples, their 1-minute and 1-hour
// rollups and the cursor in one transaction. The cursor row is locked
// first, so two nodes projecting the same log serialise and the second
// drops what the first stored; a sample that repeats a stored one is
// ignored (and not rolled up twice).
func (s *Store) Project(ctx context.Context, name string, upto int64, samples []point.Sample) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO projector_cursors (name, last_id) VALUES ($1, 0)
			ON CONFLICT (name) DO NOTHING`, name); err != nil {
			return fmt.Errorf("cursor: %w", err)
		}
		var cur int64
		if err := tx.QueryRow(ctx, `SELECT last_id FROM projector_cursors WHERE name = $1 FOR UPDATE`, name).Scan(&cur); err != nil {
			return fmt.Errorf("read cursor: %w", err)
		}
		type queued struct {
			sm   *point.Sample
			kind string
			v    storedValue
		}
		var (
			b    pgx.Batch
			todo []queued
		)
		for i := range samples {
			sm := &samples[i]
			if sm.MessageID <= cur {
				continue
			}
			v, err := encodePointValue(sm.Value)
			if err != nil {
				return fmt.Errorf("point %s of %s/%s: %w", sm.Name, sm.ProductKey, sm.DeviceKey, err)
			}
			kind := sm.Kind
			if kind == "" {
				kind = point.KindPoint
			}
			args := []any{sm.ProductKey, sm.DeviceKey, kind, sm.Name, sm.Time.UnixNano(), sm.MessageID, v.vt, v.f, v.i, v.s}
			b.Queue(`INSERT INTO points (product_key, device_key, kind, name, ts, msg_id, value_type,
				float_value, int_value, text_value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
				ON CONFLICT DO NOTHING`, args...)
			b.Queue(`INSERT INTO latest_points AS l (product_key, device_key, kind, name, ts, msg_id, value_type,
				float_value, int_value, text_value) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
				ON CONFLICT (product_key, device_key, kind, name) DO UPDATE SET
					ts = excluded.ts, msg_id = excluded.msg_id, value_type = excluded.value_type,
					float_value = excluded.float_value, int_value = excluded.int_value, text_value = excluded.text_value
				WHERE (excluded.ts, excluded.msg_id) > (l.ts, l.msg_id)`, args...)
			todo = append(todo, queued{sm: sm, kind: kind, v: v})
		}
		var rollups rollupBatch
		if b.Len() > 0 {
			br := tx.SendBatch(ctx, &b)
			for _, q := range todo {
				tag, err := br.Exec()
				if err != nil {
					br.Close()
					return fmt.Errorf("insert point %s: %w", q.sm.Name, err)
				}
				if tag.RowsAffected() == 1 { // not a repeat: roll it up
					rollups.add(q.sm.ProductKey, q.sm.DeviceKey, q.kind, q.sm.Name, q.sm.Time.UnixNano(), q.v)
				}
				if _, err := br.Exec(); err != nil {
					br.Close()
					return fmt.Errorf("latest point %s: %w", q.sm.Name, err)
				}
			}
			if err := br.Close(); err != nil {
				return err
			}
		}
		var b2 pgx.Batch
		rollups.queue(&b2)
		if upto > cur {
			b2.Queue(`UPDATE projector_cursors SET last_id = $2 WHERE name = $1`, name, upto)
		}
		if b2.Len() == 0 {
			return nil
		}
		return tx.SendBatch(ctx, &b2).Close()
	})
	if err != nil {
		return errorf("pgstore: project %s: %w", name, err)
	}
	return nil
}

// Cursor implements point.Writer.
func (s *Store) Cursor(ctx context.Context, name string) (int64, error) {
	var cur int64
	err := s.pool.QueryRow(ctx, `SELECT last_id FROM projector_cursors WHERE name = $1`, name).Scan(&cur)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, errorf("pgstore: read cursor %s: %w", name, err)
	}
	return cur, nil
}

// Latest implements point.Reader.
func (s *Store) Latest(ctx context.Context, pk, dk, kind string) ([]point.Sample, error) {
	if kind == "" {
		kind = point.KindPoint
	}
	rows, err := s.pool.Query(ctx, `SELECT name, ts, msg_id, value_type, float_value, int_value, text_value
		FROM latest_points WHERE product_key = $1 AND device_key = $2 AND kind = $3 ORDER BY name`, pk, dk, kind)
	if err != nil {
		return nil, errorf("pgstore: latest points of %s/%s: %w", pk, dk, err)
	}
	defer rows.Close()
	out := []point.Sample{}
	for rows.Next() {
		sm := point.Sample{ProductKey: pk, DeviceKey: dk, Kind: kind}
		if err := scanSample(rows, &sm, true); err != nil {
			return nil, errorf("pgstore: latest points of %s/%s: %w", pk, dk, err)
		}
		out = append(out, sm)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: latest points of %s/%s: %w", pk, dk, err)
	}
	return out, nil
}

func scanSample(rs pgx.Row, sm *point.Sample, withName bool) error {
	var (
		ts int64
		sv storedValue
	)
	dest := []any{&ts, &sm.MessageID, &sv.vt, &sv.f, &sv.i, &sv.s}
	if withName {
		dest = append([]any{&sm.Name}, dest...)
	}
	if err := rs.Scan(dest...); err != nil {
		return err
	}
	sm.Time = time.Unix(0, ts).UTC()
	var err error
	sm.Value, err = decodePointValue(sv)
	return err
}

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

// History implements point.Reader: a keyset page over the primary key.
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
	var b strings.Builder
	b.WriteString(`SELECT ts, msg_id, value_type, float_value, int_value, text_value FROM points
		WHERE product_key = $1 AND device_key = $2 AND kind = $3 AND name = $4 AND ts >= $5 AND ts < $6`)
	args := []any{q.PK, q.DK, kind, q.Name, lo, hi}
	if q.Cursor != "" {
		cts, cid, err := point.DecodeCursor(q.Cursor)
		if err != nil {
			return point.Page{}, err
		}
		if q.Descending {
			b.WriteString(` AND (ts, msg_id) < ($7, $8)`)
		} else {
			b.WriteString(` AND (ts, msg_id) > ($7, $8)`)
		}
		args = append(args, cts, cid)
	}
	args = append(args, limit+1) // one more row tells whether a page follows
	if q.Descending {
		b.WriteString(` ORDER BY ts DESC, msg_id DESC LIMIT $` + strconv.Itoa(len(args)))
	} else {
		b.WriteString(` ORDER BY ts, msg_id LIMIT $` + strconv.Itoa(len(args)))
	}
	rows, err := s.pool.Query(ctx, b.String(), args...)
	if err != nil {
		return point.Page{}, errorf("pgstore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
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
			return point.Page{}, errorf("pgstore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
		}
		p.Samples = append(p.Samples, sm)
	}
	if err := rows.Err(); err != nil {
		return point.Page{}, errorf("pgstore: history of %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	return p, nil
}

// Aggregate implements point.Reader with the embedded adapter's semantics:
// avg, min, max and sum over numeric values (floats and integers), count
// over every value, epoch-aligned buckets. An interval of whole minutes is
// answered from the rollups for its aligned part (they outlive the samples
// under retention), the rest from the samples.
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
	ps, err := s.aggregatePartials(ctx, q, kind, lo, hi, iv, point.RollupLevels(iv))
	if err != nil {
		return nil, errorf("pgstore: aggregate %s/%s %s: %w", q.PK, q.DK, q.Name, err)
	}
	return ps.Buckets(want), nil
}

// Export implements point.Reader, point by point in keyset chunks.
func (s *Store) Export(ctx context.Context, q point.ExportQuery, fn func(point.Sample) error) error {
	return point.ExportPages(ctx, s, q, exportChunk, fn)
}
