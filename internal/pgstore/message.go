package pgstore

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/coapgate/coapgate/internal/message"
)

const messageColumns = `id, product_key, device_key, topic, payload, content_format,
	received_at, peer, transport`

// lockLogTx takes the log's advisory lock in tx (held until commit or
// rollback). Every transaction that appends to messages takes it before
// drawing an ID, so IDs become visible in increasing order (see the package
// documentation).
func lockLogTx(ctx context.Context, tx pgx.Tx) error {
	if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(`+lockLogKey+`)`); err != nil {
		return fmt.Errorf("lock log: %w", err)
	}
	return nil
}

// appendLogTx appends msgs to the log inside tx, which must hold the log
// lock, and sets their IDs. It queues the commit's notification.
//
// Uplinks with an Exchange key already stored and unexpired (or repeated
// within msgs) are not appended: they get the first entry's ID. The lookup
// is one query for the batch before the INSERTs and the new keys one
// upsert after them; the log lock keeps other nodes' appends out between.
func (s *Store) appendLogTx(ctx context.Context, tx pgx.Tx, msgs ...*message.Message) error {
	now := time.Now()
	var keys []string
	for _, m := range msgs {
		if m.Exchange != "" {
			keys = append(keys, m.Exchange)
		}
	}
	if len(keys) < smallExchangeBatch {
		return s.appendLogRowsTx(ctx, tx, msgs...)
	}
	known := map[string]int64{}
	if len(keys) > 0 {
		rows, err := tx.Query(ctx, `SELECT key, log_id FROM exchanges WHERE key = ANY($1) AND expires_at > $2`, keys, toNanos(now))
		if err != nil {
			return fmt.Errorf("look up exchanges: %w", err)
		}
		for rows.Next() {
			var k string
			var id int64
			if err := rows.Scan(&k, &id); err != nil {
				rows.Close()
				return fmt.Errorf("look up exchanges: %w", err)
			}
			known[k] = id
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return fmt.Errorf("look up exchanges: %w", err)
		}
	}
	var b pgx.Batch
	inserted := make([]*message.Message, 0, len(msgs))
	firstOf := map[string]*message.Message{} // new exchange key -> its entry
	var repeats []*message.Message           // same new key twice in msgs
	for _, m := range msgs {
		if m.Exchange != "" {
			if id, ok := known[m.Exchange]; ok {
				m.ID = id
				continue
			}
			if _, ok := firstOf[m.Exchange]; ok {
				repeats = append(repeats, m)
				continue
			}
			firstOf[m.Exchange] = m
		}
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		b.Queue(`INSERT INTO messages (product_key, device_key, topic, payload, content_format,
			received_at, peer, transport) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
			m.ProductKey, m.DeviceKey, m.Topic, payload, int32(m.ContentFormat), toNanos(m.ReceivedAt),
			m.Peer, m.Transport)
		inserted = append(inserted, m)
	}
	if len(keys) > 0 && s.exchangeSweep.due(now) {
		b.Queue(`DELETE FROM exchanges WHERE expires_at <= $1`, toNanos(now))
	}
	b.Queue(`SELECT pg_notify($1, '')`, s.channel)
	br := tx.SendBatch(ctx, &b)
	for _, m := range inserted {
		if err := br.QueryRow().Scan(&m.ID); err != nil {
			br.Close()
			return fmt.Errorf("append log entry %s/%s %s: %w", m.ProductKey, m.DeviceKey, m.Topic, err)
		}
	}
	if err := br.Close(); err != nil {
		return err
	}
	if len(firstOf) == 0 {
		return nil
	}
	for _, m := range repeats {
		m.ID = firstOf[m.Exchange].ID
	}
	ks := make([]string, 0, len(firstOf))
	ids := make([]int64, 0, len(firstOf))
	for k, m := range firstOf {
		ks = append(ks, k)
		ids = append(ids, m.ID)
	}
	if _, err := tx.Exec(ctx, `INSERT INTO exchanges (key, log_id, expires_at)
		SELECT k, id, $3 FROM unnest($1::text[], $2::bigint[]) AS e(k, id)
		ON CONFLICT (key) DO UPDATE SET log_id = EXCLUDED.log_id, expires_at = EXCLUDED.expires_at`,
		ks, ids, toNanos(now.Add(message.ExchangeLifetime))); err != nil {
		return fmt.Errorf("record exchanges: %w", err)
	}
	return nil
}

// smallExchangeBatch: below this many exchange keys in a batch, each
// uplink is checked and appended by one statement (appendExchangeSQL) in
// the batch's single round trip; from it, one lookup for the batch and one
// upsert of the new keys cost two round trips but less per uplink.
const smallExchangeBatch = 16

// appendLogRowsTx is appendLogTx in one round trip: each uplink with an
// exchange key is checked and appended by appendExchangeSQL.
func (s *Store) appendLogRowsTx(ctx context.Context, tx pgx.Tx, msgs ...*message.Message) error {
	var b pgx.Batch
	now := time.Now()
	exchanges := false
	for _, m := range msgs {
		payload := m.Payload
		if payload == nil {
			payload = []byte{}
		}
		if m.Exchange != "" {
			exchanges = true
			b.Queue(appendExchangeSQL,
				m.ProductKey, m.DeviceKey, m.Topic, payload, int32(m.ContentFormat), toNanos(m.ReceivedAt),
				m.Peer, m.Transport, m.Exchange, toNanos(now), toNanos(now.Add(message.ExchangeLifetime)))
			continue
		}
		b.Queue(`INSERT INTO messages (product_key, device_key, topic, payload, content_format,
			received_at, peer, transport) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id`,
			m.ProductKey, m.DeviceKey, m.Topic, payload, int32(m.ContentFormat), toNanos(m.ReceivedAt),
			m.Peer, m.Transport)
	}
	if exchanges && s.exchangeSweep.due(now) {
		b.Queue(`DELETE FROM exchanges WHERE expires_at <= $1`, toNanos(now))
	}
	b.Queue(`SELECT pg_notify($1, '')`, s.channel)
	br := tx.SendBatch(ctx, &b)
	for _, m := range msgs {
		if err := br.QueryRow().Scan(&m.ID); err != nil {
			br.Close()
			return fmt.Errorf("append log entry %s/%s %s: %w", m.ProductKey, m.DeviceKey, m.Topic, err)
		}
	}
	return br.Close()
}

// appendExchangeSQL appends an uplink unless its exchange ($9) is known
// and unexpired at $10: then it returns the first entry's id and stores
// nothing. Appends hold the log lock, so no two nodes run it at once.
const appendExchangeSQL = `WITH prev AS (
		SELECT log_id FROM exchanges WHERE key = $9 AND expires_at > $10
	), ins AS (
		INSERT INTO messages (product_key, device_key, topic, payload, content_format,
			received_at, peer, transport)
		SELECT $1, $2, $3, $4, $5, $6, $7, $8 WHERE NOT EXISTS (SELECT 1 FROM prev)
		RETURNING id
	), ex AS (
		INSERT INTO exchanges (key, log_id, expires_at) SELECT $9, id, $11 FROM ins
		ON CONFLICT (key) DO UPDATE SET log_id = EXCLUDED.log_id, expires_at = EXCLUDED.expires_at
	)
	SELECT id FROM ins UNION ALL SELECT log_id FROM prev`

// sweeper spaces out the deletion of expired exchanges.
type sweeper struct {
	mu   sync.Mutex
	next time.Time
}

// due reports whether a sweep should run now (at most every 10 s).
func (w *sweeper) due(now time.Time) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if now.Before(w.next) {
		return false
	}
	w.next = now.Add(10 * time.Second)
	return true
}

// Append implements message.Store: one transaction, durable when it
// returns nil (PostgreSQL's synchronous_commit decides what durable means:
// on by default, the WAL flushed, and with synchronous standbys, on them).
// On error nothing is stored and every msgs[i].ID is 0.
func (s *Store) Append(ctx context.Context, msgs []*message.Message) error {
	if len(msgs) == 0 {
		return nil
	}
	err := s.inTx(ctx, func(tx pgx.Tx) error {
		if err := lockLogTx(ctx, tx); err != nil {
			return err
		}
		return s.appendLogTx(ctx, tx, msgs...)
	})
	if err != nil {
		for _, m := range msgs {
			m.ID = 0
		}
		return errorf("pgstore: append %d messages: %w", len(msgs), err)
	}
	return nil
}

// List implements message.Store.
func (s *Store) List(ctx context.Context, q message.Query) ([]message.Message, error) {
	query, args, limit := listQuery(q)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return nil, errorf("pgstore: list messages: %w", err)
	}
	defer rows.Close()
	out := make([]message.Message, 0, min(limit, 64))
	for rows.Next() {
		var (
			m    message.Message
			cf   int32
			recv int64
		)
		if err := rows.Scan(&m.ID, &m.ProductKey, &m.DeviceKey, &m.Topic, &m.Payload,
			&cf, &recv, &m.Peer, &m.Transport); err != nil {
			return nil, errorf("pgstore: list messages: %w", err)
		}
		m.ContentFormat = uint16(cf)
		m.ReceivedAt = fromNanos(recv)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, errorf("pgstore: list messages: %w", err)
	}
	return out, nil
}

// listQuery builds the SELECT for q, its arguments and the effective limit.
func listQuery(q message.Query) (query string, args []any, limit int) {
	var b strings.Builder
	args = make([]any, 0, 6)
	b.WriteString(`SELECT ` + messageColumns + ` FROM messages`)
	where := func(cond string, arg any) {
		if len(args) == 0 {
			b.WriteString(" WHERE ")
		} else {
			b.WriteString(" AND ")
		}
		args = append(args, arg)
		b.WriteString(strings.ReplaceAll(cond, "?", "$"+strconv.Itoa(len(args))))
	}
	if q.ProductKey != "" {
		where("product_key = ?", q.ProductKey)
	}
	if q.DeviceKey != "" {
		where("device_key = ?", q.DeviceKey)
	}
	if !q.IncludeEvents {
		where("left(topic, 1) <> ?", "$")
	}
	if !q.From.IsZero() {
		where("received_at >= ?", q.From.UnixNano())
	}
	if !q.To.IsZero() {
		where("received_at < ?", q.To.UnixNano())
	}
	switch {
	case q.Descending && q.AfterID > 0:
		where("id < ?", q.AfterID)
	case !q.Descending && q.AfterID > 0:
		where("id > ?", q.AfterID)
	}
	limit = messageLimit(q.Limit)
	args = append(args, limit)
	if q.Descending {
		b.WriteString(" ORDER BY id DESC LIMIT $" + strconv.Itoa(len(args)))
	} else {
		b.WriteString(" ORDER BY id LIMIT $" + strconv.Itoa(len(args)))
	}
	return b.String(), args, limit
}
