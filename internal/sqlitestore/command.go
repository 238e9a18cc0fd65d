package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/command"
)

var _ command.Store = (*Store)(nil)

const commandColumns = `id, product_key, device_key, topic, method, params, raw, state,
	created_at, expires_at, delivered_at, replied_at, attempts, delivered_via,
	reply_code, reply_data, reply_message`

func scanCommand(r rowScanner) (command.Command, error) {
	var (
		c                  command.Command
		id                 int64
		state              string
		created, expires   int64
		delivered, replied sql.NullInt64
		params, raw, rdata []byte
	)
	if err := r.Scan(&id, &c.ProductKey, &c.DeviceKey, &c.Topic, &c.Method, &params, &raw, &state,
		&created, &expires, &delivered, &replied, &c.Attempts, &c.DeliveredVia,
		&c.ReplyCode, &rdata, &c.ReplyMessage); err != nil {
		return command.Command{}, err
	}
	c.ID = strconv.FormatInt(id, 10)
	c.State = command.State(state)
	c.CreatedAt, c.ExpiresAt = fromNanos(created), fromNanos(expires)
	c.DeliveredAt, c.RepliedAt = fromNanos(delivered.Int64), fromNanos(replied.Int64)
	if len(params) > 0 {
		c.Params = params
	}
	if len(raw) > 0 {
		c.Raw = raw
	}
	if len(rdata) > 0 {
		c.ReplyData = rdata
	}
	return c, nil
}

// commandRowID parses a command id; anything but a positive decimal is
// not found.
func commandRowID(id string) (int64, bool) {
	n, err := strconv.ParseInt(id, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == id
}

// appendCommandEventTx appends c's current state to the message log in tx.
func (s *Store) appendCommandEventTx(ctx context.Context, tx *sql.Tx, c *command.Command, at time.Time) error {
	m, err := command.LogMessage(c, at)
	if err != nil {
		return err
	}
	return s.appendLogTx(ctx, tx, m)
}

// commandTx runs fn in a write transaction and signals log tailers after
// the commit (every command write appends an event).
func (s *Store) commandTx(ctx context.Context, what string, fn func(tx *sql.Tx) error) (err error) {
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: %s: begin: %w", what, err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	if err := fn(tx); err != nil {
		if errors.Is(err, command.ErrNotFound) || errors.Is(err, command.ErrState) {
			return err
		}
		return fmt.Errorf("sqlitestore: %s: %w", what, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: %s: commit: %w", what, err)
	}
	s.notifyLog()
	return nil
}

// CreateCommand implements command.Store.
func (s *Store) CreateCommand(ctx context.Context, c *command.Command) error {
	return s.commandTx(ctx, "create command", func(tx *sql.Tx) error {
		c.State = command.StatePending
		res, err := tx.ExecContext(ctx, `INSERT INTO commands (product_key, device_key, topic, method, params, raw, state, created_at, expires_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)`, c.ProductKey, c.DeviceKey, c.Topic, c.Method,
			nullBytes(c.Params), nullBytes(c.Raw), string(c.State), toNanos(c.CreatedAt), toNanos(c.ExpiresAt))
		if err != nil {
			return err
		}
		id, err := res.LastInsertId()
		if err != nil {
			return err
		}
		c.ID = strconv.FormatInt(id, 10)
		return s.appendCommandEventTx(ctx, tx, c, c.CreatedAt)
	})
}

func nullBytes(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return b
}

// GetCommand implements command.Store.
func (s *Store) GetCommand(ctx context.Context, pk, dk, id string) (command.Command, error) {
	n, ok := commandRowID(id)
	if !ok {
		return command.Command{}, command.ErrNotFound
	}
	c, err := scanCommand(s.reader.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM commands
		WHERE id = ? AND product_key = ? AND device_key = ?`, n, pk, dk))
	if errors.Is(err, sql.ErrNoRows) {
		return command.Command{}, command.ErrNotFound
	}
	if err != nil {
		return command.Command{}, fmt.Errorf("sqlitestore: get command %s: %w", id, err)
	}
	return c, nil
}

// ListCommands implements command.Store (newest first).
func (s *Store) ListCommands(ctx context.Context, q command.ListQuery) ([]command.Command, error) {
	var b strings.Builder
	b.WriteString(`SELECT ` + commandColumns + ` FROM commands WHERE product_key = ? AND device_key = ?`)
	args := []any{q.ProductKey, q.DeviceKey}
	if q.State != "" {
		b.WriteString(` AND state = ?`)
		args = append(args, string(q.State))
	}
	if q.Before > 0 {
		b.WriteString(` AND id < ?`)
		args = append(args, q.Before)
	}
	b.WriteString(` ORDER BY id DESC LIMIT ?`)
	args = append(args, messageLimit(q.Limit))
	rows, err := s.reader.QueryContext(ctx, b.String(), args...)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list commands: %w", err)
	}
	defer rows.Close()
	var out []command.Command
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: list commands: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list commands: %w", err)
	}
	return out, nil
}

// NextPendingCommand implements command.Store.
func (s *Store) NextPendingCommand(ctx context.Context, pk, dk, topic string, now time.Time) (command.Command, error) {
	q := `SELECT ` + commandColumns + ` FROM commands WHERE product_key = ? AND device_key = ?
		AND state = 'pending' AND expires_at > ?`
	args := []any{pk, dk, toNanos(now)}
	if topic != "" {
		q += ` AND topic = ?`
		args = append(args, topic)
	}
	c, err := scanCommand(s.reader.QueryRowContext(ctx, q+` ORDER BY id LIMIT 1`, args...))
	if errors.Is(err, sql.ErrNoRows) {
		return command.Command{}, command.ErrNotFound
	}
	if err != nil {
		return command.Command{}, fmt.Errorf("sqlitestore: next command of %s/%s: %w", pk, dk, err)
	}
	return c, nil
}

// getCommandTx reads a command inside tx.
func getCommandTx(ctx context.Context, tx *sql.Tx, id int64) (command.Command, error) {
	c, err := scanCommand(tx.QueryRowContext(ctx, `SELECT `+commandColumns+` FROM commands WHERE id = ?`, id))
	if errors.Is(err, sql.ErrNoRows) {
		return command.Command{}, command.ErrNotFound
	}
	return c, err
}

// MarkCommandDelivered implements command.Store.
func (s *Store) MarkCommandDelivered(ctx context.Context, id, via string, now time.Time) (c command.Command, err error) {
	n, ok := commandRowID(id)
	if !ok {
		return command.Command{}, command.ErrNotFound
	}
	err = s.commandTx(ctx, "deliver command", func(tx *sql.Tx) error {
		if c, err = getCommandTx(ctx, tx, n); err != nil {
			return err
		}
		if c.State != command.StatePending || !c.ExpiresAt.After(now) {
			return fmt.Errorf("%w: command %s is %s", command.ErrState, id, c.State)
		}
		c.State, c.DeliveredAt, c.DeliveredVia = command.StateDelivered, now.UTC(), via
		c.Attempts++
		if _, err := tx.ExecContext(ctx, `UPDATE commands SET state = ?, delivered_at = ?, delivered_via = ?, attempts = ? WHERE id = ?`,
			string(c.State), toNanos(now), via, c.Attempts, n); err != nil {
			return err
		}
		return s.appendCommandEventTx(ctx, tx, &c, now)
	})
	return c, err
}

// CompleteCommand implements command.Store.
func (s *Store) CompleteCommand(ctx context.Context, pk, dk string, r command.Reply, now time.Time) (t command.Transition, err error) {
	n, ok := commandRowID(r.ID)
	if !ok {
		return t, command.ErrNotFound
	}
	err = s.commandTx(ctx, "complete command", func(tx *sql.Tx) error {
		c, err := getCommandTx(ctx, tx, n)
		if err != nil {
			return err
		}
		if c.ProductKey != pk || c.DeviceKey != dk {
			return command.ErrNotFound // another device's command
		}
		if c.State != command.StatePending && c.State != command.StateDelivered {
			return fmt.Errorf("%w: command %s is %s", command.ErrState, r.ID, c.State)
		}
		t.From = c.State
		c.State = command.StateFailed
		if r.Code == 200 {
			c.State = command.StateReplied
		}
		if c.DeliveredAt.IsZero() {
			c.DeliveredAt = now.UTC()
		}
		c.RepliedAt, c.ReplyCode, c.ReplyData, c.ReplyMessage = now.UTC(), r.Code, r.Data, r.Message
		if _, err := tx.ExecContext(ctx, `UPDATE commands SET state = ?, delivered_at = ?, replied_at = ?,
			reply_code = ?, reply_data = ?, reply_message = ? WHERE id = ?`,
			string(c.State), toNanos(c.DeliveredAt), toNanos(now), r.Code, nullBytes(r.Data), r.Message, n); err != nil {
			return err
		}
		t.Command = c
		return s.appendCommandEventTx(ctx, tx, &c, now)
	})
	return t, err
}

// ExpireCommands implements command.Store.
func (s *Store) ExpireCommands(ctx context.Context, now time.Time, limit int) (out []command.Transition, err error) {
	err = s.commandTx(ctx, "expire commands", func(tx *sql.Tx) error {
		rows, err := tx.QueryContext(ctx, `SELECT `+commandColumns+` FROM commands
			WHERE state IN ('pending', 'delivered') AND expires_at <= ? ORDER BY expires_at LIMIT ?`, toNanos(now), limit)
		if err != nil {
			return err
		}
		for rows.Next() {
			c, err := scanCommand(rows)
			if err != nil {
				rows.Close()
				return err
			}
			out = append(out, command.Transition{Command: c, From: c.State})
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for i := range out {
			c := &out[i].Command
			c.State = command.StateExpired
			n, _ := commandRowID(c.ID)
			if _, err := tx.ExecContext(ctx, `UPDATE commands SET state = 'expired' WHERE id = ?`, n); err != nil {
				return err
			}
			if err := s.appendCommandEventTx(ctx, tx, c, now); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// CancelCommand implements command.Store.
func (s *Store) CancelCommand(ctx context.Context, pk, dk, id string, now time.Time) (c command.Command, err error) {
	n, ok := commandRowID(id)
	if !ok {
		return command.Command{}, command.ErrNotFound
	}
	err = s.commandTx(ctx, "cancel command", func(tx *sql.Tx) error {
		if c, err = getCommandTx(ctx, tx, n); err != nil {
			return err
		}
		if c.ProductKey != pk || c.DeviceKey != dk {
			return command.ErrNotFound
		}
		if c.State != command.StatePending {
			return fmt.Errorf("%w: command %s is %s", command.ErrState, id, c.State)
		}
		c.State = command.StateCancelled
		if _, err := tx.ExecContext(ctx, `UPDATE commands SET state = 'cancelled' WHERE id = ?`, n); err != nil {
			return err
		}
		return s.appendCommandEventTx(ctx, tx, &c, now)
	})
	return c, err
}

// PendingCommandCounts implements command.Store.
func (s *Store) PendingCommandCounts(ctx context.Context, now time.Time) (map[command.DeviceKey]int, error) {
	// The redundant IN lets SQLite use the partial index of open commands.
	rows, err := s.reader.QueryContext(ctx, `SELECT product_key, device_key, count(*) FROM commands
		WHERE state IN ('pending', 'delivered') AND state = 'pending' AND expires_at > ? GROUP BY product_key, device_key`, toNanos(now))
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: pending commands: %w", err)
	}
	defer rows.Close()
	out := map[command.DeviceKey]int{}
	for rows.Next() {
		var k command.DeviceKey
		var n int
		if err := rows.Scan(&k.ProductKey, &k.DeviceKey, &n); err != nil {
			return nil, fmt.Errorf("sqlitestore: pending commands: %w", err)
		}
		out[k] = n
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: pending commands: %w", err)
	}
	return out, nil
}
