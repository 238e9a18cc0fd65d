package pgstore

import (
	"context"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
)

// Changed implements message.Notifier. It fires after appends by any node
// sharing the database (through LISTEN/NOTIFY), and after the listener
// reconnects (a notification may have been missed meanwhile).
func (s *Store) Changed() <-chan struct{} { return s.notify.Changed() }

// wake wakes everyone waiting on Changed.
func (s *Store) wake() { s.notify.Wake() }

// notifyTx queues the log notification in tx; PostgreSQL delivers it at
// commit, to every listening node.
func (s *Store) notifyTx(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, `SELECT pg_notify($1, '')`, s.channel)
	return err
}

// Listener reconnect backoff.
const (
	listenBackoffMin = 100 * time.Millisecond
	listenBackoffMax = 5 * time.Second
)

// listen holds one pool connection in LISTEN and wakes tailers on every
// notification until ctx ends; it reconnects with backoff when the
// connection fails. ready is closed after the first LISTEN (or the first
// failure, so Open does not wait for a database that went away).
func (s *Store) listen(ctx context.Context, ready chan struct{}) {
	var once sync.Once
	signal := func() { once.Do(func() { close(ready) }) }
	defer signal()
	backoff := listenBackoffMin
	for ctx.Err() == nil {
		err := s.listenOnce(ctx, signal)
		if ctx.Err() != nil {
			return
		}
		signal()
		s.log.Warn("pgstore: log listener lost its connection; reconnecting", "err", err, "retry_in", backoff)
		t := time.NewTimer(backoff)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
		backoff = min(2*backoff, listenBackoffMax)
		// Wake tailers: entries may have been appended while nobody
		// listened. They re-read from their cursors.
		s.wake()
	}
}

// listenOnce runs one LISTEN session.
func (s *Store) listenOnce(ctx context.Context, started func()) error {
	pc, err := s.pool.Acquire(ctx)
	if err != nil {
		return err
	}
	// The connection ends up in an unknown state when ctx ends mid-wait;
	// take it out of the pool and close it at the end.
	conn := pc.Hijack()
	defer conn.Close(context.Background())
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.channel}.Sanitize()); err != nil {
		return err
	}
	if _, err := conn.Exec(ctx, `LISTEN `+pgx.Identifier{s.devChannel}.Sanitize()); err != nil {
		return err
	}
	started()
	s.wake() // anything appended before LISTEN took effect
	for {
		n, err := conn.WaitForNotification(ctx)
		if err != nil {
			return err
		}
		if n.Channel == s.devChannel {
			s.changes.received(n.Payload)
			continue
		}
		s.wake()
	}
}
