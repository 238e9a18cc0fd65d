package pgstore

import (
	"context"
	"fmt"
	"slices"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/retention"
)

var _ retention.Store = (*Store)(nil)

// productKeysSQL lists the distinct product keys of a table with a loose
// index scan (one index seek per product) over an index led by
// product_key.
func productKeysSQL(table string) string {
	return `WITH RECURSIVE pk(k) AS (
		SELECT (SELECT min(product_key) FROM ` + table + `)
		UNION ALL
		SELECT (SELECT min(product_key) FROM ` + table + ` WHERE product_key > pk.k) FROM pk WHERE pk.k IS NOT NULL)
	SELECT k FROM pk WHERE k IS NOT NULL`
}

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
		return nil, fmt.Errorf("pgstore: retention: unknown kind %q", kind)
	}
	rows, err := s.pool.Query(ctx, productKeysSQL(table))
	if err != nil {
		return nil, errorf("pgstore: retention products of %s: %w", kind, err)
	}
	out, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, errorf("pgstore: retention products of %s: %w", kind, err)
	}
	return out, nil
}

// Purge implements retention.Store: one statement (or transaction) per
// batch, deleting at most p.Limit rows, oldest first.
func (s *Store) Purge(ctx context.Context, p retention.Purge) (retention.Result, error) {
	before := p.Before.UnixNano()
	var (
		res retention.Result
		err error
	)
	switch p.Kind {
	case retention.Messages:
		res, err = s.purgeMessages(ctx, p.ProductKey, before, p.Limit)
	case retention.Events:
		res, err = s.purgeExec(ctx, `DELETE FROM device_events WHERE id IN (SELECT id FROM device_events
			WHERE product_key = $1 AND at < $2 ORDER BY at LIMIT $3)`, p.Limit, p.ProductKey, before, p.Limit)
	case retention.Commands:
		res, err = s.purgeExec(ctx, `DELETE FROM commands WHERE id IN (SELECT id FROM commands
			WHERE product_key = $1 AND created_at < $2 AND state NOT IN ('pending', 'delivered')
			ORDER BY created_at LIMIT $3) AND state NOT IN ('pending', 'delivered')`, p.Limit, p.ProductKey, before, p.Limit)
	case retention.DeadLetters:
		res, err = s.purgeExec(ctx, `DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters
			WHERE created_at < $1 ORDER BY created_at LIMIT $2)`, p.Limit, before, p.Limit)
	case retention.Points:
		res, err = s.purgeExec(ctx, `DELETE FROM points WHERE (product_key, device_key, kind, name, ts, msg_id) IN
			(SELECT product_key, device_key, kind, name, ts, msg_id FROM points
			WHERE product_key = $1 AND ts < $2 LIMIT $3)`, p.Limit, p.ProductKey, before, p.Limit)
	case retention.Rollups1m, retention.Rollups1h:
		r := point.RollupMinute
		if p.Kind == retention.Rollups1h {
			r = point.RollupHour
		}
		// A bucket goes once it ends at or before the cut-off.
		res, err = s.purgeExec(ctx, `DELETE FROM point_rollups WHERE (product_key, device_key, kind, name, res, bucket) IN
			(SELECT product_key, device_key, kind, name, res, bucket FROM point_rollups
			WHERE product_key = $1 AND res = $2 AND bucket <= $3 LIMIT $4)`, p.Limit, p.ProductKey, r, before-r, p.Limit)
	default:
		err = fmt.Errorf("unknown kind %q", p.Kind)
	}
	if err != nil {
		return res, errorf("pgstore: purge %s of %q: %w", p.Kind, p.ProductKey, err)
	}
	return res, nil
}

// purgeExec runs one DELETE of at most limit rows.
func (s *Store) purgeExec(ctx context.Context, del string, limit int, args ...any) (retention.Result, error) {
	tag, err := s.pool.Exec(ctx, del, args...)
	if err != nil {
		return retention.Result{}, err
	}
	return retention.Result{Deleted: int(tag.RowsAffected())}, nil
}

// purgeMessages deletes expired log entries that every projector has
// projected, and books the deleted entries above a forwarding action's
// saved cursor on that action (rule status and metric), in one
// transaction; the cursors it books on are locked, so a worker saving
// progress meanwhile waits.
func (s *Store) purgeMessages(ctx context.Context, pk string, before int64, limit int) (retention.Result, error) {
	var res retention.Result
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		var floor int64
		if err := tx.QueryRow(ctx, `SELECT coalesce(min(last_id), 0) FROM projector_cursors`).Scan(&floor); err != nil {
			return fmt.Errorf("projector cursors: %w", err)
		}
		rows, err := tx.Query(ctx, `DELETE FROM messages WHERE id IN (SELECT id FROM messages
			WHERE product_key = $1 AND received_at < $2 AND id <= $3 ORDER BY received_at LIMIT $4) RETURNING id`,
			pk, before, floor, limit)
		if err != nil {
			return err
		}
		ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
		if err != nil {
			return err
		}
		res.Deleted = len(ids)
		if len(ids) > 0 {
			slices.Sort(ids)
			if res.Lost, err = bookLost(ctx, tx, ids); err != nil {
				return err
			}
		}
		if res.Deleted < limit {
			if err := tx.QueryRow(ctx, `SELECT count(*) FROM messages
				WHERE product_key = $1 AND received_at < $2 AND id > $3`, pk, before, floor).Scan(&res.HeldBack); err != nil {
				return fmt.Errorf("held back: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return retention.Result{}, err
	}
	return res, nil
}

// bookLost adds, to every forwarding cursor below some of the deleted
// (sorted) ids, how many of them it had not handled.
func bookLost(ctx context.Context, tx pgx.Tx, ids []int64) ([]retention.Lost, error) {
	top := ids[len(ids)-1]
	rows, err := tx.Query(ctx, `SELECT rule_id, action, cursor FROM rule_cursors WHERE cursor < $1 FOR UPDATE`, top)
	if err != nil {
		return nil, fmt.Errorf("rule cursors: %w", err)
	}
	var lost []retention.Lost
	for rows.Next() {
		var (
			l      retention.Lost
			action int32
			cursor int64
		)
		if err := rows.Scan(&l.RuleID, &action, &cursor); err != nil {
			rows.Close()
			return nil, fmt.Errorf("rule cursors: %w", err)
		}
		l.Action = int(action)
		i, _ := slices.BinarySearch(ids, cursor+1)
		l.Entries = int64(len(ids) - i)
		lost = append(lost, l)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("rule cursors: %w", err)
	}
	for _, l := range lost {
		if _, err := tx.Exec(ctx, `UPDATE rule_cursors SET retention_lost = retention_lost + $1,
			retention_lost_to = greatest(retention_lost_to, $2) WHERE rule_id = $3 AND action = $4`,
			l.Entries, top, l.RuleID, l.Action); err != nil {
			return nil, fmt.Errorf("rule %s cursor: %w", l.RuleID, err)
		}
	}
	return lost, nil
}
