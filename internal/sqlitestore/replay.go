package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

var _ replay.Store = (*Store)(nil)

// upsertReplaySQL writes a session's state unless the stored one is newer
// (a higher version): states of one session committed out of order never
// move it back.
const upsertReplaySQL = `INSERT INTO replay_sessions (product_key, device_key, random, state,
	version, expires_at) VALUES (?, ?, ?, ?, ?, ?)
	ON CONFLICT (product_key, device_key, random) DO UPDATE SET state = excluded.state,
	version = excluded.version, expires_at = excluded.expires_at
	WHERE excluded.version > replay_sessions.version
	OR (excluded.version = replay_sessions.version AND excluded.expires_at > replay_sessions.expires_at)`

// AppendWithState implements ingest.StateAppender: msgs are appended and
// states saved in one transaction (one WAL sync), so a session's state is
// durable exactly when the uplink it accepted is.
func (s *Store) AppendWithState(ctx context.Context, msgs []*message.Message, states []replay.State) (err error) {
	if len(states) == 0 {
		return s.Append(ctx, msgs)
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: append %d messages, %d replay states: begin: %w", len(msgs), len(states), err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the first error is the one to report
			for _, m := range msgs {
				m.ID = 0
			}
		}
	}()
	if err := s.appendTx(ctx, tx, msgs); err != nil {
		return err
	}
	stmt := tx.StmtContext(ctx, s.upsertReplay)
	defer stmt.Close()
	var buf []byte
	for _, st := range states {
		buf = st.AppendBinary(buf[:0]) // the driver copies bound values
		if _, err := stmt.ExecContext(ctx, st.Key.ProductKey, st.Key.DeviceKey, st.Key.Random[:],
			buf, int64(st.Version), toNanos(st.Expires)); err != nil {
			return fmt.Errorf("sqlitestore: save replay state %s/%s: %w", st.Key.ProductKey, st.Key.DeviceKey, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: append %d messages, %d replay states: commit: %w", len(msgs), len(states), err)
	}
	if len(msgs) > 0 {
		s.notifyLog()
	}
	return nil
}

// LoadReplayState implements replay.Store.
func (s *Store) LoadReplayState(ctx context.Context, k replay.Key) (replay.State, bool, error) {
	var (
		version, expires int64
		state            []byte
	)
	err := s.reader.QueryRowContext(ctx, `SELECT state, version, expires_at
		FROM replay_sessions WHERE product_key = ? AND device_key = ? AND random = ?`,
		k.ProductKey, k.DeviceKey, k.Random[:]).Scan(&state, &version, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return replay.State{}, false, nil
	}
	if err != nil {
		return replay.State{}, false, fmt.Errorf("sqlitestore: load replay state %s/%s: %w", k.ProductKey, k.DeviceKey, err)
	}
	st := replay.State{Key: k, Version: uint64(version), Expires: fromNanos(expires)}
	if err := st.UnmarshalBinary(state); err != nil {
		return replay.State{}, false, fmt.Errorf("sqlitestore: load replay state %s/%s: %w", k.ProductKey, k.DeviceKey, err)
	}
	return st, true, nil
}

// MaxReplayStatesPerDevice bounds the stored sessions of one device:
// PruneReplayStates keeps the ones that expire last, so a device that
// authenticates again and again cannot grow the table without bound (an
// older session beyond the bound keeps working while this node holds it in
// memory, and after a restart its device authenticates again).
const MaxReplayStatesPerDevice = 16

// pruneBatch bounds one prune statement, so that the single writer (and the
// uplinks waiting for it) is never held long.
const pruneBatch = 1000

// PruneReplayStates deletes the states of sessions that expired before
// before (their tokens are refused anyway) and, per device, all but the
// MaxReplayStatesPerDevice that expire last; it returns how many went. It
// works in small statements: the devices over the bound are found on the
// read pool, each write deletes at most pruneBatch rows.
func (s *Store) PruneReplayStates(ctx context.Context, before time.Time) (int64, error) {
	var total int64
	for {
		res, err := s.writer.ExecContext(ctx, `DELETE FROM replay_sessions WHERE (product_key, device_key, random) IN (
			SELECT product_key, device_key, random FROM replay_sessions WHERE expires_at < ? LIMIT ?)`,
			before.UnixNano(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("sqlitestore: prune replay states: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < pruneBatch {
			break
		}
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT product_key, device_key FROM replay_sessions
		GROUP BY product_key, device_key HAVING count(*) > ?`, MaxReplayStatesPerDevice)
	if err != nil {
		return total, fmt.Errorf("sqlitestore: prune replay states: find devices: %w", err)
	}
	var over [][2]string
	for rows.Next() {
		var d [2]string
		if err := rows.Scan(&d[0], &d[1]); err != nil {
			rows.Close()
			return total, fmt.Errorf("sqlitestore: prune replay states: find devices: %w", err)
		}
		over = append(over, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return total, fmt.Errorf("sqlitestore: prune replay states: find devices: %w", err)
	}
	for _, d := range over {
		res, err := s.writer.ExecContext(ctx, `DELETE FROM replay_sessions WHERE product_key = ?1 AND device_key = ?2
			AND random IN (SELECT random FROM replay_sessions WHERE product_key = ?1 AND device_key = ?2
				ORDER BY expires_at DESC, random LIMIT -1 OFFSET ?3)`, d[0], d[1], MaxReplayStatesPerDevice)
		if err != nil {
			return total, fmt.Errorf("sqlitestore: prune replay states of %s/%s: %w", d[0], d[1], err)
		}
		n, _ := res.RowsAffected()
		total += n
	}
	return total, nil
}
