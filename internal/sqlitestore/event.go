package sqlitestore

import (
	"context"
	"fmt"

	"github.com/coapgate/coapgate/internal/event"
)

var _ event.Store = (*Store)(nil)

// AppendEvents implements event.Store in one transaction.
func (s *Store) AppendEvents(ctx context.Context, evs []event.Event) (err error) {
	if len(evs) == 0 {
		return nil
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: append events: begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback()
		}
	}()
	stmt, err := tx.PrepareContext(ctx, `INSERT INTO device_events (product_key, device_key, type, at, transport, peer) VALUES (?, ?, ?, ?, ?, ?)`)
	if err != nil {
		return fmt.Errorf("sqlitestore: append events: %w", err)
	}
	defer stmt.Close()
	for i := range evs {
		e := &evs[i]
		res, err := stmt.ExecContext(ctx, e.ProductKey, e.DeviceKey, string(e.Type), toNanos(e.At), e.Transport, e.Peer)
		if err != nil {
			return fmt.Errorf("sqlitestore: append event: %w", err)
		}
		if e.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("sqlitestore: append event: %w", err)
		}
		if err := s.appendLogTx(ctx, tx, event.LogMessage(e)); err != nil {
			return fmt.Errorf("sqlitestore: append event: %w", err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: append events: commit: %w", err)
	}
	s.notifyLog()
	return nil
}

// ListEvents implements event.Store.
func (s *Store) ListEvents(ctx context.Context, pk, dk string, after int64, limit int) ([]event.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.reader.QueryContext(ctx, `SELECT id, type, at, transport, peer FROM device_events
		WHERE product_key = ? AND device_key = ? AND id > ? ORDER BY id LIMIT ?`, pk, dk, after, limit)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list events: %w", err)
	}
	defer rows.Close()
	var out []event.Event
	for rows.Next() {
		e := event.Event{ProductKey: pk, DeviceKey: dk}
		var typ string
		var at int64
		if err := rows.Scan(&e.ID, &typ, &at, &e.Transport, &e.Peer); err != nil {
			return nil, fmt.Errorf("sqlitestore: list events: %w", err)
		}
		e.Type, e.At = event.Type(typ), fromNanos(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list events: %w", err)
	}
	return out, nil
}
