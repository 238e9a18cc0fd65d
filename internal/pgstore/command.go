package pgstore

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/command"
)

const commandColumns = `id, product_key, device_key, topic, method, params, raw, state,
	created_at, expires_at, delivered_at, replied_at, attempts, delivered_via,
	reply_code, reply_data, reply_message`

func scanCommand(r pgx.Row) (command.Command, error) {
	var (
		c                  command.Command
		id                 int64
		state              string
		created, expires   int64
		delivered, replied *int64
		params, raw, rdata []byte
		attempts, code     int32
	)
	if err := r.Scan(&id, &c.ProductKey, &c.DeviceKey, &c.Topic, &c.Method, &params, &raw, &state,
		&created, &expires, &delivered, &replied, &attempts, &c.DeliveredVia,
		&code, &rdata, &c.ReplyMessage); err != nil {
		return command.Command{}, err
	}
	c.ID = strconv.FormatInt(id, 10)
	c.State = command.State(state)
	c.Attempts, c.ReplyCode = int(attempts), int(code)
	c.CreatedAt, c.ExpiresAt = fromNanos(created), fromNanos(expires)
	if delivered != nil {
		c.DeliveredAt = fromNanos(*delivered)
	}
	if replied != nil {
		c.RepliedAt = fromNanos(*replied)
	}
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

// commandRowID parses a command id; anything but a positive decimal is not
// found.
func commandRowID(id string) (int64, bool) {
	n, err := strconv.ParseInt(id, 10, 64)
	return n, err == nil && n > 0 && strconv.FormatInt(n, 10) == id
}

func nullBytes(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return b
}

// commandTx runs fn in a transaction holding the log lock (every command
// write appends its state change to the log).
func (s *Store) commandTx(ctx context.Context, what string, fn func(tx pgx.Tx) error) error {
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLogTx(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
	if err != nil {
		if errors.Is(err, command.ErrNotFound) || errors.Is(err, command.ErrState) {
			return err
		}
		return errorf("pgstore: %s: %w", what, err)
	}
	return nil
}

// appendCommandEventTx appends c's state change to the log in tx.
func (s *Store) appendCommandEventTx(ctx context.Context, tx pgx.Tx, c *command.Command, at time.Time) error {
	m, err := command.LogMessage(c, at)
	if err != nil {
		return err
	}
	return s.appendLogTx(ctx, tx, m)
}

// CreateCommand implements command.Store.
func (s *Store) CreateCommand(ctx context.Context, c *command.Command) error {
	return s.commandTx(ctx, "create command", func(tx pgx.Tx) error {
		c.State = command.StatePending
		var id int64
		if err := tx.QueryRow(ctx, `INSERT INTO commands (product_key, device_key, topic, method, params, raw, state, created_at, expires_at)
			VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id`, c.ProductKey, c.DeviceKey, c.Topic, c.Method,
			nullBytes(c.Params), nullBytes(c.Raw), string(c.State), toNanos(c.CreatedAt), toNanos(c.ExpiresAt)).Scan(&id); err != nil {
			return err
		}
		c.ID = strconv.FormatInt(id, 10)
		return s.appendCommandEventTx(ctx, tx, c, c.CreatedAt)
	})
}

// GetCommand implements command.Store.
func (s *Store) GetCommand(ctx context.Context, pk, dk, id string) (command.Command, error) {
	n, ok := commandRowID(id)
	if !ok {
		return command.Command{}, command.ErrNotFound
	}
	c, err := scanCommand(s.pool.QueryRow(ctx, `SELECT `+commandColumns+` FROM commands
		WHERE id = $1 AND product_key = $2 AND device_key = $3`, n, pk, dk))
	if errors.Is(err, pgx.ErrNoRows) {
		return command.Command{}, command.ErrNotFound
	}
	if err != nil {
		return command.Command{}, errorf("pgstore: get command %s: %w", id, err)
	}
	return c, nil
}

// ListCommands implements command.Store (newest first).
func (s *Store) ListCommands(ctx context.Context, q command.ListQuery) ([]command.Command, error) {
	var b strings.Builder
	b.WriteString(`SELECT ` + commandColumns + ` FROM commands WHERE product_key = $1 AND device_key = $2`)
	args := []any{q.ProductKey, q.DeviceKey}
	if q.State != "" {
		args = append(args, string(q.State))
		b.WriteString(` AND state = $` + strconv.Itoa(len(args)))
	}
	if q.Before > 0 {
		args = append(args, q.Before)
		b.WriteString(` AND id < $` + strconv.Itoa(len(args)))
	}
	args = append(args, messageLimit(q.Limit))
	b.WriteString(` ORDER BY id DESC LIMIT $` + strconv.Itoa(len(args)))
	rows, err := s.pool.Query(ctx, b.String(), args...)
	if err != nil {
		return nil, errorf("pgstore: list commands: %w", err)
	}
	defer rows.Close()
	var out []command.Command
	for rows.Next() {
		c, err := scanCommand(rows)
		if err != nil {
			return nil, errorf("pgstore: list commands: %w", err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list commands: %w", err)
	}
	return out, nil
}

// NextPendingCommand implements command.Store.
func (s *Store) NextPendingCommand(ctx context.Context, pk, dk, topic string, now time.Time) (command.Command, error) {
	c, err := scanCommand(s.pool.QueryRow(ctx, `SELECT `+commandColumns+` FROM commands
		WHERE product_key = $1 AND device_key = $2 AND state = 'pending' AND expires_at > $3
		AND ($4::text = '' OR topic = $4) ORDER BY id LIMIT 1`, pk, dk, toNanos(now), topic))
	if errors.Is(err, pgx.ErrNoRows) {
		return command.Command{}, command.ErrNotFound
	}
	if err != nil {
		return command.Command{}, errorf("pgstore: next command of %s/%s: %w", pk, dk, err)
	}
	return c, nil
}

// getCommandTx reads and locks a command inside tx.
func getCommandTx(ctx context.Context, tx pgx.Tx, id int64) (command.Command, error) {
	c, err := scanCommand(tx.QueryRow(ctx, `SELECT `+commandColumns+` FROM commands WHERE id = $1 FOR UPDATE`, id))
	if errors.Is(err, pgx.ErrNoRows) {
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
	err = s.commandTx(ctx, "deliver command", func(tx pgx.Tx) error {
		if c, err = getCommandTx(ctx, tx, n); err != nil {
			return err
		}
		if c.State != command.StatePending || !c.ExpiresAt.After(now) {
			return fmt.Errorf("%w: command %s is %s", command.ErrState, id, c.State)
		}
		c.State, c.DeliveredAt, c.DeliveredVia = command.StateDelivered, now.UTC(), via
		c.Attempts++
		if _, err := tx.Exec(ctx, `UPDATE commands SET state = $1, delivered_at = $2, delivered_via = $3, attempts = $4 WHERE id = $5`,
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
	err = s.commandTx(ctx, "complete command", func(tx pgx.Tx) error {
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
		if _, err := tx.Exec(ctx, `UPDATE commands SET state = $1, delivered_at = $2, replied_at = $3,
			reply_code = $4, reply_data = $5, reply_message = $6 WHERE id = $7`,
			string(c.State), toNanos(c.DeliveredAt), toNanos(now), r.Code, nullBytes(r.Data), r.Message, n); err != nil {
			return err
		}
		t.Command = c
		return s.appendCommandEventTx(ctx, tx, &c, now)
	})
	return t, err
}

// ExpireCommands implements command.Store. SKIP LOCKED lets nodes expire
// concurrently without waiting on each other's rows.
func (s *Store) ExpireCommands(ctx context.Context, now time.Time, limit int) (out []command.Transition, err error) {
	err = s.commandTx(ctx, "expire commands", func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `SELECT `+commandColumns+` FROM commands
			WHERE state IN ('pending', 'delivered') AND expires_at <= $1 ORDER BY expires_at LIMIT $2
			FOR UPDATE SKIP LOCKED`, toNanos(now), limit)
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
			if _, err := tx.Exec(ctx, `UPDATE commands SET state = 'expired' WHERE id = $1`, n); err != nil {
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
	err = s.commandTx(ctx, "cancel command", func(tx pgx.Tx) error {
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
		if _, err := tx.Exec(ctx, `UPDATE commands SET state = 'cancelled' WHERE id = $1`, n); err != nil {
			return err
		}
		return s.appendCommandEventTx(ctx, tx, &c, now)
	})
	return c, err
}

// PendingCommandCounts implements command.Store.
func (s *Store) PendingCommandCounts(ctx context.Context, now time.Time) (map[command.DeviceKey]int, error) {
	rows, err := s.pool.Query(ctx, `SELECT product_key, device_key, count(*) FROM commands
		WHERE state IN ('pending', 'delivered') AND state = 'pending' AND expires_at > $1
		GROUP BY product_key, device_key`, toNanos(now))
	if err != nil {
		return nil, errorf("pgstore: pending commands: %w", err)
	}
	defer rows.Close()
	out := map[command.DeviceKey]int{}
	for rows.Next() {
		var (
			k command.DeviceKey
			n int64
		)
		if err := rows.Scan(&k.ProductKey, &k.DeviceKey, &n); err != nil {
			return nil, errorf("pgstore: pending commands: %w", err)
		}
		out[k] = int(n)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: pending commands: %w", err)
	}
	return out, nil
}
