// Package pgout is the forwarding target that inserts entries into a
// PostgreSQL table with github.com/jackc/pgx/v5:
//
//	(log_id bigint primary key, topic text, product_key text,
//	 device_key text, received_at timestamptz, payload jsonb)
//
// Inserts use ON CONFLICT (log_id) DO NOTHING, so a re-delivery (which
// at-least-once allows) changes nothing. payload is the decoded payload,
// or {"payloadBase64": "..."} for a payload that is not JSON or CBOR.
package pgout

import (
	"context"
	"fmt"
	"strings"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coapgate/coapgate/internal/forward"
)

// Factory returns the TargetFactory of "postgres" actions. The pool
// connects on the first delivery.
func Factory() forward.TargetFactory {
	return func(a forward.Action) (forward.Target, error) {
		if a.Type != forward.ActionPostgres {
			return nil, fmt.Errorf("%w: not a postgres action", forward.ErrInvalid)
		}
		if err := forward.ValidateTable(a.Table); err != nil {
			return nil, err
		}
		cfg, err := pgxpool.ParseConfig(a.URL)
		if err != nil {
			// The parse error may quote the URL, password included.
			return nil, fmt.Errorf("%w: postgres url does not parse", forward.ErrInvalid)
		}
		cfg.MaxConns = 4
		cfg.ConnConfig.ConnectTimeout = a.TimeoutOrDefault()
		table := pgx.Identifier(strings.Split(a.Table, ".")).Sanitize()
		return &target{a: a, cfg: cfg, table: table,
			insert: `INSERT INTO ` + table + ` (log_id, topic, product_key, device_key, received_at, payload)
				VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (log_id) DO NOTHING`}, nil
	}
}

type target struct {
	a      forward.Action
	cfg    *pgxpool.Config
	table  string // quoted
	insert string

	mu      sync.Mutex
	pool    *pgxpool.Pool // guarded by mu
	created bool          // guarded by mu; table checked/created
}

func (t *target) conn(ctx context.Context) (*pgxpool.Pool, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pool == nil {
		p, err := pgxpool.NewWithConfig(ctx, t.cfg)
		if err != nil {
			return nil, fmt.Errorf("postgres: pool: %w", err)
		}
		t.pool = p
	}
	if t.a.CreateTable && !t.created {
		if _, err := t.pool.Exec(ctx, `CREATE TABLE IF NOT EXISTS `+t.table+` (
			log_id bigint PRIMARY KEY, topic text NOT NULL, product_key text NOT NULL,
			device_key text NOT NULL, received_at timestamptz NOT NULL, payload jsonb)`); err != nil {
			return nil, fmt.Errorf("postgres: create table: %w", err)
		}
		t.created = true
	}
	return t.pool, nil
}

// Deliver inserts the entry's row.
func (t *target) Deliver(ctx context.Context, d *forward.Delivery) error {
	p, err := t.conn(ctx)
	if err != nil {
		return err
	}
	e := &d.Envelope
	if _, err := p.Exec(ctx, t.insert, e.ID, e.Topic, e.ProductKey, e.DeviceKey, e.ReceivedAt, string(d.PayloadJSON())); err != nil {
		return fmt.Errorf("postgres: insert: %w", err)
	}
	return nil
}

// Close closes the pool.
func (t *target) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.pool != nil {
		t.pool.Close()
		t.pool = nil
	}
	return nil
}
