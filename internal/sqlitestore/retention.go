package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"strconv"

	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// productKeysSQL lists the distinct product keys of a table with a loose
// index scan (one seek per product) over an index led by product_key.
func productKeysSQL(table string) string {
	return `WITH RECURSIVE pk(k) AS (
		SELECT (SELECT min(product_key) FROM ` + table + `)
		UNION ALL
		SELECT (SELECT min(product_key) FROM ` + table + ` WHERE product_key > pk.k) FROM pk WHERE pk.k IS NOT NULL)
	SELECT k FROM pk WHERE k IS NOT NULL`
}

// The searches of Purge, run on the read pool (TestRetentionPlans checks
// that each is an index search, never a table scan). CROSS JOIN makes
// SQLite walk the point series (latest_points) and seek each one's
// expired range, instead of scanning all of a product's samples.
const (
	selectExpiredEvents   = `SELECT id FROM device_events WHERE product_key = ? AND at < ? ORDER BY at LIMIT ?`
	selectExpiredCommands = `SELECT id FROM commands WHERE product_key = ? AND created_at < ?
				AND state NOT IN ('pending', 'delivered') ORDER BY created_at LIMIT ?`
	selectExpiredDeadLetters = `SELECT id FROM dead_letters WHERE created_at < ? ORDER BY created_at LIMIT ?`
	selectExpiredMessages    = `SELECT id FROM messages WHERE product_key = ? AND received_at < ? AND id <= ?
		ORDER BY received_at LIMIT ?`
	selectExpiredPoints = `SELECT p.device_key, p.kind, p.name, p.ts, p.msg_id
		FROM latest_points l CROSS JOIN points p ON p.product_key = l.product_key AND p.device_key = l.device_key
			AND p.kind = l.kind AND p.name = l.name AND p.ts < ?2
		WHERE l.product_key = ?1 LIMIT ?3`
	selectExpiredRollups = `SELECT r.device_key, r.kind, r.name, r.bucket
		FROM latest_points l CROSS JOIN point_rollups r ON r.product_key = l.product_key AND r.device_key = l.device_key
			AND r.kind = l.kind AND r.name = l.name AND r.res = ?2 AND r.bucket <= ?3
		WHERE l.product_key = ?1 LIMIT ?4`
)

// RetentionProducts implements retention.Store.
func (s *Store) RetentionProducts(ctx context.Context, kind retention.Kind) ([]string, error) {
	var table string
	switch kind {
	case retention.Messages:
		table = "messages"
	case retention.Events:
		table = "device_events"
	case retention.Commands:
		table = "commands"
	case retention.Points, retention.Rollups1m, retention.Rollups1h:
		table = "latest_points" // one row per point series
	case retention.DeadLetters:
		return []string{""}, nil
	default:
		return nil, fmt.Errorf("sqlitestore: retention: unknown kind %q", kind)
	}
	rows, err := s.reader.QueryContext(ctx, productKeysSQL(table))
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: retention products of %s: %w", kind, err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return nil, fmt.Errorf("sqlitestore: retention products of %s: %w", kind, err)
		}
		out = append(out, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: retention products of %s: %w", kind, err)
	}
	return out, nil
}

// Purge implements retention.Store. The rows are chosen on a read
// connection (no write lock while searching), then deleted by key in one
// short write transaction.
func (s *Store) Purge(ctx context.Context, p retention.Purge) (retention.Result, error) {
	before := p.Before.UnixNano()
	var res retention.Result
	var err error
	switch p.Kind {
	case retention.Messages:
		res, err = s.purgeMessages(ctx, p.ProductKey, before, p.Limit)
	case retention.Events:
		res, err = s.purgeByID(ctx, "device_events", selectExpiredEvents, "", p.ProductKey, before, p.Limit)
	case retention.Commands:
		res, err = s.purgeByID(ctx, "commands", selectExpiredCommands, "state NOT IN ('pending', 'delivered')",
			p.ProductKey, before, p.Limit)
	case retention.DeadLetters:
		res, err = s.purgeByID(ctx, "dead_letters", selectExpiredDeadLetters, "", nil, before, p.Limit)
	case retention.Points:
		res, err = s.purgePoints(ctx, p.ProductKey, before, p.Limit)
	case retention.Rollups1m:
		res, err = s.purgeRollups(ctx, p.ProductKey, point.RollupMinute, before, p.Limit)
	case retention.Rollups1h:
		res, err = s.purgeRollups(ctx, p.ProductKey, point.RollupHour, before, p.Limit)
	default:
		err = fmt.Errorf("unknown kind %q", p.Kind)
	}
	if err != nil {
		return res, fmt.Errorf("sqlitestore: purge %s of %q: %w", p.Kind, p.ProductKey, err)
	}
	return res, nil
}

// selectIDs runs a query returning one integer column.
func (s *Store) selectIDs(ctx context.Context, query string, args ...any) ([]int64, error) {
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		ids = append(ids, id)
	}
	return ids, rows.Err()
}

// deleteIDs deletes the rows of table with the given ids (and, if cond
// is not empty, matching cond) in one statement inside tx.
func deleteIDs(ctx context.Context, tx *sql.Tx, table, cond string, ids []int64) (int, error) {
	b := make([]byte, 0, 8*len(ids)+2)
	b = append(b, '[')
	for i, id := range ids {
		if i > 0 {
			b = append(b, ',')
		}
		b = strconv.AppendInt(b, id, 10)
	}
	b = append(b, ']')
	q := `DELETE FROM ` + table + ` WHERE id IN (SELECT value FROM json_each(?))`
	if cond != "" {
		q += ` AND ` + cond
	}
	r, err := tx.ExecContext(ctx, q, string(b))
	if err != nil {
		return 0, err
	}
	n, err := r.RowsAffected()
	return int(n), err
}

// deleteEach runs del once per key set inside tx and returns the rows
// deleted.
func deleteEach(ctx context.Context, tx *sql.Tx, del string, keys [][]any) (int, error) {
	st, err := tx.PrepareContext(ctx, del)
	if err != nil {
		return 0, err
	}
	defer st.Close()
	n := 0
	for _, k := range keys {
		r, err := st.ExecContext(ctx, k...)
		if err != nil {
			return n, err
		}
		c, err := r.RowsAffected()
		if err != nil {
			return n, err
		}
		n += int(c)
	}
	return n, nil
}

// inTx runs fn in one write transaction.
func (s *Store) inTx(ctx context.Context, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // fn's error is the one to report
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// purgeByID deletes the rows sel (on the read pool) finds, by integer ID,
// those still matching cond. pk nil: the table has no product column.
func (s *Store) purgeByID(ctx context.Context, table, sel, cond string, pk any, before int64, limit int) (retention.Result, error) {
	args := []any{before, limit}
	if pk != nil {
		args = append([]any{pk}, args...)
	}
	ids, err := s.selectIDs(ctx, sel, args...)
	if err != nil || len(ids) == 0 {
		return retention.Result{}, err
	}
	var res retention.Result
	err = s.inTx(ctx, func(tx *sql.Tx) error {
		res.Deleted, err = deleteIDs(ctx, tx, table, cond, ids)
		return err
	})
	// Rows deleted meanwhile by someone else still count as a full batch,
	// so the worker goes on.
	if err == nil && len(ids) == limit {
		res.Deleted = max(res.Deleted, limit)
	}
	return res, err
}

// purgeMessages deletes expired log entries that every projector has
// projected, and books the deleted entries above a forwarding action's
// saved cursor on that action (rule status and metric).
func (s *Store) purgeMessages(ctx context.Context, pk string, before int64, limit int) (retention.Result, error) {
	var floor sql.NullInt64
	if err := s.reader.QueryRowContext(ctx, `SELECT min(last_id) FROM projector_cursors`).Scan(&floor); err != nil {
		return retention.Result{}, fmt.Errorf("projector cursors: %w", err)
	}
	ids, err := s.selectIDs(ctx, selectExpiredMessages, pk, before, floor.Int64, limit)
	if err != nil {
		return retention.Result{}, err
	}
	var res retention.Result
	if len(ids) > 0 {
		slices.Sort(ids)
		err = s.inTx(ctx, func(tx *sql.Tx) error {
			var err error
			if res.Deleted, err = deleteIDs(ctx, tx, "messages", "", ids); err != nil {
				return err
			}
			res.Lost, err = bookLost(ctx, tx, ids)
			return err
		})
		if err != nil {
			return retention.Result{}, err
		}
		if len(ids) == limit {
			res.Deleted = max(res.Deleted, limit)
		}
	}
	if res.Deleted < limit {
		if err := s.reader.QueryRowContext(ctx, `SELECT count(*) FROM messages
			WHERE product_key = ? AND received_at < ? AND id > ?`, pk, before, floor.Int64).Scan(&res.HeldBack); err != nil {
			return res, fmt.Errorf("held back: %w", err)
		}
	}
	return res, nil
}

// bookLost adds, to every forwarding cursor below some of the deleted
// (sorted) ids, how many of them it had not handled.
func bookLost(ctx context.Context, tx *sql.Tx, ids []int64) ([]retention.Lost, error) {
	top := ids[len(ids)-1]
	rows, err := tx.QueryContext(ctx, `SELECT rule_id, action, cursor FROM rule_cursors WHERE cursor < ?`, top)
	if err != nil {
		return nil, fmt.Errorf("rule cursors: %w", err)
	}
	var lost []retention.Lost
	for rows.Next() {
		var (
			l      retention.Lost
			cursor int64
		)
		if err := rows.Scan(&l.RuleID, &l.Action, &cursor); err != nil {
			rows.Close()
			return nil, fmt.Errorf("rule cursors: %w", err)
		}
		i, _ := slices.BinarySearch(ids, cursor+1)
		l.Entries = int64(len(ids) - i)
		lost = append(lost, l)
	}
	if err := rows.Close(); err != nil {
		return nil, fmt.Errorf("rule cursors: %w", err)
	}
	for _, l := range lost {
		if _, err := tx.ExecContext(ctx, `UPDATE rule_cursors SET retention_lost = retention_lost + ?,
			retention_lost_to = max(retention_lost_to, ?) WHERE rule_id = ? AND action = ?`,
			l.Entries, top, l.RuleID, l.Action); err != nil {
			return nil, fmt.Errorf("rule %s cursor: %w", l.RuleID, err)
		}
	}
	return lost, nil
}

// purgePoints deletes expired samples of the product's point series (the
// latest values stay).
func (s *Store) purgePoints(ctx context.Context, pk string, before int64, limit int) (retention.Result, error) {
	rows, err := s.reader.QueryContext(ctx, selectExpiredPoints, pk, before, limit)
	if err != nil {
		return retention.Result{}, err
	}
	keys, err := scanKeys(rows, pk, 5)
	if err != nil || len(keys) == 0 {
		return retention.Result{}, err
	}
	return s.deleteKeys(ctx, `DELETE FROM points WHERE product_key = ? AND device_key = ? AND kind = ?
		AND name = ? AND ts = ? AND msg_id = ?`, keys, limit)
}

// purgeRollups deletes the product's rollup buckets of width res that
// end at or before before.
func (s *Store) purgeRollups(ctx context.Context, pk string, res, before int64, limit int) (retention.Result, error) {
	rows, err := s.reader.QueryContext(ctx, selectExpiredRollups, pk, res, before-res, limit)
	if err != nil {
		return retention.Result{}, err
	}
	keys, err := scanKeys(rows, pk, 4)
	if err != nil || len(keys) == 0 {
		return retention.Result{}, err
	}
	for i, k := range keys {
		keys[i] = []any{k[0], k[1], k[2], k[3], res, k[4]}
	}
	return s.deleteKeys(ctx, `DELETE FROM point_rollups WHERE product_key = ? AND device_key = ? AND kind = ?
		AND name = ? AND res = ? AND bucket = ?`, keys, limit)
}

// scanKeys reads rows of n columns into key sets led by pk, closing rows.
func scanKeys(rows *sql.Rows, pk string, n int) ([][]any, error) {
	defer rows.Close()
	var keys [][]any
	for rows.Next() {
		k := make([]any, n)
		ptrs := make([]any, n)
		for i := range k {
			ptrs[i] = &k[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		keys = append(keys, append([]any{pk}, k...))
	}
	return keys, rows.Err()
}

// deleteKeys deletes the keys in one transaction.
func (s *Store) deleteKeys(ctx context.Context, del string, keys [][]any, limit int) (retention.Result, error) {
	var res retention.Result
	err := s.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		res.Deleted, err = deleteEach(ctx, tx, del, keys)
		return err
	})
	if err == nil && len(keys) == limit {
		res.Deleted = max(res.Deleted, limit)
	}
	return res, err
}
