package pgstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/forward"
)

const ruleColumns = `id, name, enabled, topic_filter, product_key, device_key, condition,
	actions, max_attempts, created_at, updated_at`

// CreateRule implements forward.Store: the rule and its cursors in one
// transaction. The actions (which carry credentials) are stored sealed.
func (s *Store) CreateRule(ctx context.Context, r forward.Rule, cursor int64) error {
	actions, err := json.Marshal(r.Actions)
	if err != nil {
		return errorf("pgstore: create rule %s: %w", r.ID, err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		if _, err := tx.Exec(ctx, `INSERT INTO rules (`+ruleColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)`,
			r.ID, r.Name, r.Enabled, r.TopicFilter, r.ProductKey, r.DeviceKey, r.Condition,
			s.box.Seal(actions, ruleActionsAAD(r.ID)), r.MaxAttempts, createdNanos(r.CreatedAt), createdNanos(r.UpdatedAt)); err != nil {
			return err
		}
		for i := range r.Actions {
			if _, err := tx.Exec(ctx, `INSERT INTO rule_cursors (rule_id, action, cursor) VALUES ($1, $2, $3)`, r.ID, i, cursor); err != nil {
				return fmt.Errorf("cursor: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return errorf("pgstore: create rule %s: %w", r.ID, err)
	}
	return nil
}

func (s *Store) scanRule(row pgx.Row) (forward.Rule, error) {
	var (
		r                forward.Rule
		actions          string
		maxAttempts      int32
		created, updated int64
	)
	if err := row.Scan(&r.ID, &r.Name, &r.Enabled, &r.TopicFilter, &r.ProductKey, &r.DeviceKey, &r.Condition,
		&actions, &maxAttempts, &created, &updated); err != nil {
		return forward.Rule{}, err
	}
	plain, err := s.box.Open(actions, ruleActionsAAD(r.ID))
	if err != nil {
		return forward.Rule{}, fmt.Errorf("rule %s actions: %w", r.ID, err)
	}
	if err := json.Unmarshal(plain, &r.Actions); err != nil {
		return forward.Rule{}, fmt.Errorf("rule %s actions: %w", r.ID, err)
	}
	r.MaxAttempts = int(maxAttempts)
	r.CreatedAt, r.UpdatedAt = fromNanos(created), fromNanos(updated)
	return r, nil
}

// GetRule implements forward.Store.
func (s *Store) GetRule(ctx context.Context, id string) (forward.Rule, error) {
	r, err := s.scanRule(s.pool.QueryRow(ctx, `SELECT `+ruleColumns+` FROM rules WHERE id = $1`, id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return forward.Rule{}, errorf("pgstore: get rule %s: %w", id, forward.ErrNotFound)
	case err != nil:
		return forward.Rule{}, errorf("pgstore: get rule %s: %w", id, err)
	}
	return r, nil
}

// ListRules implements forward.Store.
func (s *Store) ListRules(ctx context.Context) ([]forward.Rule, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+ruleColumns+` FROM rules ORDER BY id`)
	if err != nil {
		return nil, errorf("pgstore: list rules: %w", err)
	}
	defer rows.Close()
	out := []forward.Rule{}
	for rows.Next() {
		r, err := s.scanRule(rows)
		if err != nil {
			return nil, errorf("pgstore: list rules: %w", err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list rules: %w", err)
	}
	return out, nil
}

// UpdateRule implements forward.Store.
func (s *Store) UpdateRule(ctx context.Context, r forward.Rule, cursor int64) error {
	actions, err := json.Marshal(r.Actions)
	if err != nil {
		return errorf("pgstore: update rule %s: %w", r.ID, err)
	}
	err = s.inTx(ctx, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `UPDATE rules SET name = $1, enabled = $2, topic_filter = $3, product_key = $4,
			device_key = $5, condition = $6, actions = $7, max_attempts = $8, updated_at = $9 WHERE id = $10`,
			r.Name, r.Enabled, r.TopicFilter, r.ProductKey, r.DeviceKey, r.Condition,
			s.box.Seal(actions, ruleActionsAAD(r.ID)), r.MaxAttempts, createdNanos(r.UpdatedAt), r.ID)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return forward.ErrNotFound
		}
		n := len(r.Actions)
		if _, err := tx.Exec(ctx, `DELETE FROM rule_cursors WHERE rule_id = $1 AND action >= $2`, r.ID, n); err != nil {
			return err
		}
		if _, err := tx.Exec(ctx, `DELETE FROM dead_letters WHERE rule_id = $1 AND action >= $2`, r.ID, n); err != nil {
			return err
		}
		for i := range n {
			if _, err := tx.Exec(ctx, `INSERT INTO rule_cursors (rule_id, action, cursor) VALUES ($1, $2, $3)
				ON CONFLICT (rule_id, action) DO NOTHING`, r.ID, i, cursor); err != nil {
				return fmt.Errorf("cursor: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		return errorf("pgstore: update rule %s: %w", r.ID, err)
	}
	return nil
}

// DeleteRule implements forward.Store; cursors and dead letters go by
// ON DELETE CASCADE.
func (s *Store) DeleteRule(ctx context.Context, id string) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM rules WHERE id = $1`, id)
	if err != nil {
		return errorf("pgstore: delete rule %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return errorf("pgstore: delete rule %s: %w", id, forward.ErrNotFound)
	}
	return nil
}

// Cursors implements forward.Store.
func (s *Store) Cursors(ctx context.Context, ruleID string) ([]forward.CursorState, error) {
	rows, err := s.pool.Query(ctx, `SELECT action, cursor, delivered, failures, dead_letters,
		last_error, last_error_at, retention_lost, retention_lost_to FROM rule_cursors WHERE rule_id = $1 ORDER BY action`, ruleID)
	if err != nil {
		return nil, errorf("pgstore: rule %s cursors: %w", ruleID, err)
	}
	defer rows.Close()
	var out []forward.CursorState
	for rows.Next() {
		var (
			c      forward.CursorState
			action int32
			at     int64
		)
		if err := rows.Scan(&action, &c.Cursor, &c.Delivered, &c.Failures, &c.DeadLetters, &c.LastError, &at,
			&c.RetentionLost, &c.RetentionLostTo); err != nil {
			return nil, errorf("pgstore: rule %s cursors: %w", ruleID, err)
		}
		c.Action = int(action)
		c.LastErrorAt = fromNanos(at)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: rule %s cursors: %w", ruleID, err)
	}
	return out, nil
}

// SaveProgress implements forward.Store. The cursor never moves back.
func (s *Store) SaveProgress(ctx context.Context, ruleID string, action int, p forward.Progress) error {
	var err error
	if p.LastErrorAt.IsZero() {
		_, err = s.pool.Exec(ctx, `UPDATE rule_cursors SET cursor = greatest(cursor, $1),
			delivered = delivered + $2, failures = failures + $3, dead_letters = dead_letters + $4
			WHERE rule_id = $5 AND action = $6`,
			p.Cursor, p.Delivered, p.Failures, p.DeadLetters, ruleID, action)
	} else {
		_, err = s.pool.Exec(ctx, `UPDATE rule_cursors SET cursor = greatest(cursor, $1),
			delivered = delivered + $2, failures = failures + $3, dead_letters = dead_letters + $4,
			last_error = $5, last_error_at = $6 WHERE rule_id = $7 AND action = $8`,
			p.Cursor, p.Delivered, p.Failures, p.DeadLetters, p.LastError, toNanos(p.LastErrorAt), ruleID, action)
	}
	if err != nil {
		return errorf("pgstore: save rule %s cursor: %w", ruleID, err)
	}
	return nil
}

// AddDeadLetter implements forward.Store.
func (s *Store) AddDeadLetter(ctx context.Context, dl *forward.DeadLetter) error {
	env := []byte(dl.Envelope)
	if env == nil {
		env = []byte{}
	}
	err := s.pool.QueryRow(ctx, `INSERT INTO dead_letters (rule_id, action, log_id, topic, envelope,
		last_error, attempts, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`,
		dl.RuleID, dl.Action, dl.LogID, dl.Topic, env, dl.LastError, dl.Attempts,
		createdNanos(dl.CreatedAt), createdNanos(dl.UpdatedAt)).Scan(&dl.ID)
	switch {
	case isForeignKeyViolation(err):
		return errorf("pgstore: add dead letter: rule %s: %w", dl.RuleID, forward.ErrNotFound)
	case err != nil:
		return errorf("pgstore: add dead letter: %w", err)
	}
	return nil
}

const deadLetterColumns = `id, rule_id, action, log_id, topic, envelope, last_error, attempts, created_at, updated_at`

func scanDeadLetter(row pgx.Row) (forward.DeadLetter, error) {
	var (
		dl               forward.DeadLetter
		env              []byte
		action, attempts int32
		created, updated int64
	)
	if err := row.Scan(&dl.ID, &dl.RuleID, &action, &dl.LogID, &dl.Topic, &env, &dl.LastError,
		&attempts, &created, &updated); err != nil {
		return forward.DeadLetter{}, err
	}
	dl.Envelope = env
	dl.Action, dl.Attempts = int(action), int(attempts)
	dl.CreatedAt, dl.UpdatedAt = fromNanos(created), fromNanos(updated)
	return dl, nil
}

// ListDeadLetters implements forward.Store.
func (s *Store) ListDeadLetters(ctx context.Context, ruleID string, after int64, limit int) ([]forward.DeadLetter, error) {
	rows, err := s.pool.Query(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE rule_id = $1 AND id > $2 ORDER BY id LIMIT $3`, ruleID, after, messageLimit(limit))
	if err != nil {
		return nil, errorf("pgstore: list dead letters: %w", err)
	}
	defer rows.Close()
	out := []forward.DeadLetter{}
	for rows.Next() {
		dl, err := scanDeadLetter(rows)
		if err != nil {
			return nil, errorf("pgstore: list dead letters: %w", err)
		}
		out = append(out, dl)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list dead letters: %w", err)
	}
	return out, nil
}

// GetDeadLetter implements forward.Store.
func (s *Store) GetDeadLetter(ctx context.Context, ruleID string, id int64) (forward.DeadLetter, error) {
	dl, err := scanDeadLetter(s.pool.QueryRow(ctx, `SELECT `+deadLetterColumns+` FROM dead_letters
		WHERE rule_id = $1 AND id = $2`, ruleID, id))
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		return forward.DeadLetter{}, errorf("pgstore: dead letter %d: %w", id, forward.ErrNotFound)
	case err != nil:
		return forward.DeadLetter{}, errorf("pgstore: dead letter %d: %w", id, err)
	}
	return dl, nil
}

// FailDeadLetter implements forward.Store.
func (s *Store) FailDeadLetter(ctx context.Context, id int64, lastErr string, at time.Time) error {
	if _, err := s.pool.Exec(ctx, `UPDATE dead_letters SET attempts = attempts + 1, last_error = $1,
		updated_at = $2 WHERE id = $3`, lastErr, createdNanos(at), id); err != nil {
		return errorf("pgstore: dead letter %d: %w", id, err)
	}
	return nil
}

// DeleteDeadLetter implements forward.Store.
func (s *Store) DeleteDeadLetter(ctx context.Context, ruleID string, id int64) error {
	tag, err := s.pool.Exec(ctx, `DELETE FROM dead_letters WHERE rule_id = $1 AND id = $2`, ruleID, id)
	if err != nil {
		return errorf("pgstore: delete dead letter %d: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return errorf("pgstore: delete dead letter %d: %w", id, forward.ErrNotFound)
	}
	return nil
}
