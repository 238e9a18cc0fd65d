package sqlitestore

import (
	"context"
	"database/sql"
	"fmt"
	"strings"

	"github.com/coapgate/coapgate/internal/message"
)

const insertMessageSQL = `INSERT INTO messages (product_key, device_key, topic, payload,
	content_format, received_at, peer, transport) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`

const messageColumns = `id, product_key, device_key, topic, payload, content_format,
	received_at, peer, transport`

// emptyPayload is bound for a nil payload: the driver binds a nil []byte as
// NULL, and the column is NOT NULL.
var emptyPayload = []byte{}

// Append implements message.Store: one transaction on the writer, the
// prepared INSERT reused for every row, each new ID written into msgs[i].ID.
// It returns nil only after the commit (and its WAL sync) has succeeded; on
// error nothing is stored and every msgs[i].ID is reset to 0. A zero
// ReceivedAt is stored as 0 and read back as the zero time.
func (s *Store) Append(ctx context.Context, msgs []*message.Message) (err error) {
	if len(msgs) == 0 {
		return nil
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitestore: append %d messages: begin: %w", len(msgs), err)
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
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitestore: append %d messages: commit: %w", len(msgs), err)
	}
	s.notifyLog()
	return nil
}

// appendTx inserts msgs inside tx and sets each ID.
func (s *Store) appendTx(ctx context.Context, tx *sql.Tx, msgs []*message.Message) error {
	// The statement is already prepared on the writer's only connection,
	// so this binds it to the transaction without preparing again.
	stmt := tx.StmtContext(ctx, s.insertMessage)
	defer stmt.Close()
	// One argument array for the batch; a value equal to the previous
	// row's keeps its boxed interface (product key, transport and often
	// topic and time repeat within a batch), saving an allocation each.
	// The driver copies bound values, so reuse is safe.
	var args [8]any
	for _, m := range msgs {
		payload := m.Payload
		if payload == nil {
			payload = emptyPayload
		}
		setString(&args[0], m.ProductKey)
		setString(&args[1], m.DeviceKey)
		setString(&args[2], m.Topic)
		args[3] = payload
		setInt(&args[4], int64(m.ContentFormat))
		setInt(&args[5], toNanos(m.ReceivedAt))
		setString(&args[6], m.Peer)
		setString(&args[7], m.Transport)
		res, err := stmt.ExecContext(ctx, args[:]...)
		if err != nil {
			return fmt.Errorf("sqlitestore: append message %s/%s: %w", m.ProductKey, m.DeviceKey, err)
		}
		if m.ID, err = res.LastInsertId(); err != nil {
			return fmt.Errorf("sqlitestore: append message %s/%s: id: %w", m.ProductKey, m.DeviceKey, err)
		}
	}
	return nil
}

// appendLogTx appends m to the message log inside tx (for writes that must
// commit together with a log entry, such as lifecycle events) and sets
// m.ID. The caller commits and then calls s.notifyLog.
func (s *Store) appendLogTx(ctx context.Context, tx *sql.Tx, m *message.Message) error {
	payload := m.Payload
	if payload == nil {
		payload = emptyPayload
	}
	res, err := tx.StmtContext(ctx, s.insertMessage).ExecContext(ctx, m.ProductKey, m.DeviceKey, m.Topic,
		payload, int64(m.ContentFormat), toNanos(m.ReceivedAt), m.Peer, m.Transport)
	if err != nil {
		return fmt.Errorf("append log entry %s: %w", m.Topic, err)
	}
	if m.ID, err = res.LastInsertId(); err != nil {
		return fmt.Errorf("append log entry %s: id: %w", m.Topic, err)
	}
	return nil
}

// setString stores v in *a unless *a already holds an equal string.
func setString(a *any, v string) {
	if cur, ok := (*a).(string); ok && cur == v {
		return
	}
	*a = v
}

// setInt stores v in *a unless *a already holds it.
func setInt(a *any, v int64) {
	if cur, ok := (*a).(int64); ok && cur == v {
		return
	}
	*a = v
}

// List implements message.Store. The (product_key, device_key, id) index
// serves device queries in ID order; the received_at index serves time
// ranges across devices (ordered by a bounded top-N sort).
func (s *Store) List(ctx context.Context, q message.Query) ([]message.Message, error) {
	query, args, limit := listQuery(q)
	rows, err := s.reader.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: list messages: %w", err)
	}
	defer rows.Close()
	out := make([]message.Message, 0, min(limit, 64))
	for rows.Next() {
		var (
			m        message.Message
			cf, recv int64
		)
		if err := rows.Scan(&m.ID, &m.ProductKey, &m.DeviceKey, &m.Topic, &m.Payload,
			&cf, &recv, &m.Peer, &m.Transport); err != nil {
			return nil, fmt.Errorf("sqlitestore: list messages: %w", err)
		}
		m.ContentFormat = uint16(cf)
		m.ReceivedAt = fromNanos(recv)
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("sqlitestore: list messages: %w", err)
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
		b.WriteString(cond)
		args = append(args, arg)
	}
	if q.ProductKey != "" {
		where("product_key = ?", q.ProductKey)
	}
	if q.DeviceKey != "" {
		where("device_key = ?", q.DeviceKey)
	}
	if !q.IncludeEvents {
		where("substr(topic, 1, 1) <> ?", "$")
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
	if q.Descending {
		b.WriteString(" ORDER BY id DESC LIMIT ?")
	} else {
		b.WriteString(" ORDER BY id LIMIT ?")
	}
	limit = messageLimit(q.Limit)
	return b.String(), append(args, limit), limit
}
