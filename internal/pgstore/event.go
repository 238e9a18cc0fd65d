package pgstore

import (
	"context"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
)

// AppendEvents implements event.Store: the events and their log entries in
// one transaction.
func (s *Store) AppendEvents(ctx context.Context, evs []event.Event) error {
	if len(evs) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLogTx(ctx, tx); err != nil {
			return err
		}
		return s.appendEventsTx(ctx, tx, evs)
	})
	if err != nil {
		return errorf("pgstore: append events: %w", err)
	}
	return nil
}

// appendEventsTx inserts evs and their log entries in tx, which holds the
// log lock, and sets their IDs.
func (s *Store) appendEventsTx(ctx context.Context, tx pgx.Tx, evs []event.Event) error {
	logs := make([]*message.Message, len(evs))
	for i := range evs {
		e := &evs[i]
		if err := tx.QueryRow(ctx, `INSERT INTO device_events (product_key, device_key, type, at, transport, peer)
			VALUES ($1, $2, $3, $4, $5, $6) RETURNING id`,
			e.ProductKey, e.DeviceKey, string(e.Type), toNanos(e.At), e.Transport, e.Peer).Scan(&e.ID); err != nil {
			return err
		}
		logs[i] = event.LogMessage(e)
	}
	return s.appendLogTx(ctx, tx, logs...)
}

// ListEvents implements event.Store.
func (s *Store) ListEvents(ctx context.Context, pk, dk string, after int64, limit int) ([]event.Event, error) {
	if limit <= 0 {
		limit = 100
	}
	rows, err := s.pool.Query(ctx, `SELECT id, type, at, transport, peer FROM device_events
		WHERE product_key = $1 AND device_key = $2 AND id > $3 ORDER BY id LIMIT $4`, pk, dk, after, limit)
	if err != nil {
		return nil, errorf("pgstore: list events: %w", err)
	}
	defer rows.Close()
	var out []event.Event
	for rows.Next() {
		e := event.Event{ProductKey: pk, DeviceKey: dk}
		var (
			typ string
			at  int64
		)
		if err := rows.Scan(&e.ID, &typ, &at, &e.Transport, &e.Peer); err != nil {
			return nil, errorf("pgstore: list events: %w", err)
		}
		e.Type, e.At = event.Type(typ), fromNanos(at)
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list events: %w", err)
	}
	return out, nil
}
