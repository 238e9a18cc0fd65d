package sqlitestore

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coapgate/coapgate/internal/forward"
)

var _ forward.Store = (*Store)(nil)

const ruleColumns = `id, name, enabled, topic_filter, product_key, device_key, condition,
	actions, max_attempts, created_at, updated_at`

// CreateRule implements forward.Store: the rule and its cursors in one
// transaction.
func (s *Store) CreateRule(ctx context.Context, r forward.Rule, cursor int64) (err error) {
	actions, err := json.Marshal(r.Actions)
	if err != nil {
		return fmt.Errorf("sqlitestore: create rule %s: %w", r.ID, err)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: create rule %s: begin: %w", r.ID, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if _, err := tx.ExecContext(ctx, `INSERT INTO rules (`+ruleColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.Name, boolInt(r.Enabled), r.TopicFilter, r.ProductKey, r.DeviceKey, r.Condition,
		s.box.Seal(actions, ruleActionsAAD(r.ID)), r.MaxAttempts, createdNanos(r.CreatedAt), createdNanos(r.UpdatedAt)); err != nil {
		return fmt.Errorf("sqlitestore: create rule %s: %w", r.ID, err)
	}
	for i := range r.Actions {
		if _, err := tx.ExecContext(ctx, `INSERT INTO rule_cursors (rule_id, action, cursor) VALUES (?, ?, ?)`, r.ID, i, cursor); err != nil {
			return fmt.Errorf("sqlitestore: create rule %s: cursor: %w", r.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: create rule %s: commit: %w", r.ID, err)
	}
	return nil
}

func (s *Store) scanRule(row rowScanner) (forward.Rule, error) {
	var (
		r                forward.Rule
		enabled          int64
		actions          string
		created, updated int64
	)
	if err := row.Scan(&r.ID, &r.Name, &enabled, &r.TopicFilter, &r.ProductKey, &r.DeviceKey, &r.Condition,
		&actions, &r.MaxAttempts, &created, &updated); err != nil {
		return forward.Rule{}, err
	}
	plain, err := s.box.Open(actions, ruleActionsAAD(r.ID))
	if err != nil {
		return forward.Rule{}, fmt.Errorf("rule %s actions: %w", r.ID, err)
	}
	if err := json.Unmarshal(plain, &r.Actions); err != nil {
		return forward.Rule{}, fmt.Errorf("rule %s actions: %w", r.ID, err)
	}
	r.Enabled = enabled != 0
	r.CreatedAt, r.UpdatedAt = fromNanos(created), fromNanos(updated)
	return r, nil
}

// GetRule implements forward.Store.
func (s *Store) GetRule(ctx context.Context, id string) (forward.Rule, error) {
	r, err := s.scanRule(s.reader.QueryRowContext(ctx, `SELECT `+ruleColumns+` FROM rules WHERE id = ?`, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return forward.Rule{}, fmt.Errorf("sqlitestore: get rule %s: %w", id, forward.ErrNotFound)
	case err != nil:
		return forward.Rule{}, fmt.Errorf("sqlitestore: get rule %s: %w", id, err)
	}
	return r, nil
}

// ListRules implements forward.Store.
func (s *Store) ListRules(ctx context.Context) ([]forward.Rule, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT `+ruleColumns+` FROM rules ORDER BY id`)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list rules: %w", err)
	}
	defer rows.Close()
	out := []forward.Rule{}
	for rows.Next() {
		r, err := s.scanRule(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list rules: %w", err)
	}
	return out, nil
}

// UpdateRule implements forward.Store.
func (s *Store) UpdateRule(ctx context.Context, r forward.Rule, cursor int64) (err error) {
	actions, err := json.Marshal(r.Actions)
	if err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: %w", r.ID, err)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: begin: %w", r.ID, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	res, err := tx.ExecContext(ctx, `UPDATE rules SET name = ?, enabled = ?, topic_filter = ?, product_key = ?,
		device_key = ?, condition = ?, actions = ?, max_attempts = ?, updated_at = ? WHERE id = ?`,
		r.Name, boolInt(r.Enabled), r.TopicFilter, r.ProductKey, r.DeviceKey, r.Condition, s.box.Seal(actions, ruleActionsAAD(r.ID)),
		r.MaxAttempts, createdNanos(r.UpdatedAt), r.ID)
	if err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: %w", r.ID, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlitestore: update rule %s: %w", r.ID, forward.ErrNotFound)
	}
	n := len(r.Actions)
	if _, err := tx.ExecContext(ctx, `DELETE FROM rule_cursors WHERE rule_id = ? AND action >= ?`, r.ID, n); err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: %w", r.ID, err)
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM dead_letters WHERE rule_id = ? AND action >= ?`, r.ID, n); err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: %w", r.ID, err)
	}
	for i := range n {
		if _, err := tx.ExecContext(ctx, `INSERT INTO rule_cursors (rule_id, action, cursor) VALUES (?, ?, ?)
			ON CONFLICT (rule_id, action) DO NOTHING`, r.ID, i, cursor); err != nil {
			return fmt.Errorf("sqlitestore: update rule %s: cursor: %w", r.ID, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: update rule %s: commit: %w", r.ID, err)
	}
	return nil
}

// DeleteRule implements forward.Store; cursors and dead letters go by
// ON DELETE CASCADE.
func (s *Store) DeleteRule(ctx context.Context, id string) error {
	res, err := s.writer.ExecContext(ctx, `DELETE FROM rules WHERE id = ?`, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: delete rule %s: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlitestore: delete rule %s: %w", id, forward.ErrNotFound)
	}
	return nil
}

// Cursors implements forward.Store.
func (s *Store) Cursors(ctx context.Context, ruleID string) ([]forward.CursorState, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT action, cursor, delivered, failures, dead_letters,
		last_error, last_error_at, retention_lost, retention_lost_to FROM rule_cursors WHERE rule_id = ? ORDER BY action`, ruleID)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: rule %s cursors: %w", ruleID, err)
	}
	defer rows.Close()
	var out []forward.CursorState
	for rows.Next() {
		var (
			c  forward.CursorState
			at int64
		)
		if err := rows.Scan(&c.Action, &c.Cursor, &c.Delivered, &c.Failures, &c.DeadLetters, &c.LastError, &at,
			&c.RetentionLost, &c.RetentionLostTo); err != nil {
			return nil, fmt.Errorf("sqlitestore: rule %s cursors: %w", ruleID, err)
		}
		c.LastErrorAt = fromNanos(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: rule %s cursors: %w", ruleID, err)
	}
	return out, nil
}

// SaveProgress implements forward.Store. The cursor never moves back.
func (s *Store) SaveProgress(ctx context.Context, ruleID string, action int, p forward.Progress) error {
	var err error
	if p.LastErrorAt.IsZero() {
		_, err = s.writer.ExecContext(ctx, `UPDATE rule_cursors SET cursor = max(cursor, ?),
			delivered = delivered + ?, failures = failures + ?, dead_letters = dead_letters + ?
			WHERE rule_id = ? AND action = ?`,
			p.Cursor, p.Delivered, p.Failures, p.DeadLetters, ruleID, action)
	} else {
		_, err = s.writer.ExecContext(ctx, `UPDATE rule_cursors SET cursor = max(cursor, ?),
			delivered = delivered + ?, failures = failures + ?, dead_letters = dead_letters + ?,
			last_error = ?, last_error_at = ? WHERE rule_id = ? AND action = ?`,
			p.Cursor, p.Delivered, p.Failures, p.DeadLetters, p.LastError, toNanos(p.LastErrorAt), ruleID, action)
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: save rule %s cursor: %w", ruleID, err)
	}
	return nil
}

// AddDeadLetter implements forward.Store.
func (s *Store) AddDeadLetter(ctx context.Context, dl *forward.DeadLetter) error {
	res, err := s.writer.ExecContext(ctx, `INSERT INTO dead_letters (rule_id, action, log_id, topic, envelope,
		last_error, attempts, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		dl.RuleID, dl.Action, dl.LogID, dl.Topic, []byte(dl.Envelope), dl.LastError, dl.Attempts,
		createdNanos(dl.CreatedAt), createdNanos(dl.UpdatedAt))
	switch {
	case isForeignKeyViolation(err):
		return fmt.Errorf("sqlitestore: add dead letter: rule %s: %w", dl.RuleID, forward.ErrNotFound)
	case err != nil:
		return fmt.Errorf("sqlitestore: add dead letter: %w", err)
	}
	if dl.ID, err = res.LastInsertId(); err != nil {
		return fmt.Errorf("sqlitestore: add dead letter: %w", err)
	}
	return nil
}

const deadLetterColumns = `id, rule_id, action, log_id, topic, envelope, last_error, attempts, created_at, updated_at`

func scanDeadLetter(row rowScanner) (forward.DeadLetter, error) {
	var (
		dl               forward.DeadLetter
		env              []byte
		created, updated int64
	)
	if err := row.Scan(&dl.ID, &dl.RuleID, &dl.Action, &dl.LogID, &dl.Topic, &env, &dl.LastError,
		&dl.Attempts, &created, &updated); err != nil {
		return forward.DeadLetter{}, err
	}
	dl.Envelope = env
	dl.CreatedAt, dl.UpdatedAt = fromNanos(created), fromNanos(updated)
	return dl, nil
}

// ListDeadLetters implements forward.Store.
func (s *Store) ListDeadLetters(ctx context.Context, ruleID string, after int64, limit int) ([]forward.DeadLetter, error) {
	rows, err := s.reader.QueryContext(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE rule_id = ? AND id > ? ORDER BY id LIMIT ?`, ruleID, after, messageLimit(limit))
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list dead letters: %w", err)
	}
	defer rows.Close()
	out := []forward.DeadLetter{}
	for rows.Next() {
		dl, err := scanDeadLetter(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list dead letters: %w", err)
		}
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list dead letters: %w", err)
	}
	return out, nil
}

// GetDeadLetter implements forward.Store.
func (s *Store) GetDeadLetter(ctx context.Context, ruleID string, id int64) (forward.DeadLetter, error) {
	dl, err := scanDeadLetter(s.reader.QueryRowContext(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE rule_id = ? AND id = ?`, ruleID, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return forward.DeadLetter{}, fmt.Errorf("sqlitestore: dead letter %d: %w", id, forward.ErrNotFound)
	case err != nil:
		return forward.DeadLetter{}, fmt.Errorf("sqlitestore: dead letter %d: %w", id, err)
	}
	return dl, nil
}

// FailDeadLetter implements forward.Store.
func (s *Store) FailDeadLetter(ctx context.Context, id int64, lastErr string, at time.Time) error {
	if _, err := s.writer.ExecContext(ctx, `UPDATE dead_letters SET attempts = attempts + 1, last_error = ?,
		updated_at = ? WHERE id = ?`, lastErr, createdNanos(at), id); err != nil {
		return fmt.Errorf("sqlitestore: dead letter %d: %w", id, err)
	}
	return nil
}

// DeleteDeadLetter implements forward.Store.
func (s *Store) DeleteDeadLetter(ctx context.Context, ruleID string, id int64) error {
	res, err := s.writer.ExecContext(ctx, `DELETE FROM dead_letters WHERE rule_id = ? AND id = ?`, ruleID, id)
	if err != nil {
		return fmt.Errorf("sqlitestore: delete dead letter %d: %w", id, err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return fmt.Errorf("sqlitestore: delete dead letter %d: %w", id, forward.ErrNotFound)
	}
	return nil
}
