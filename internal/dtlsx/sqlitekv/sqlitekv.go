// Package sqlitekv keeps a single node's DTLS sessions (native.SessionStore)
// in a SQLite file of their own, so that established sessions survive a
// restart of the node — an upgrade, a crash, kill -9 — and devices go on
// without a new handshake.
//
// The file is separate from the node's database: a session write never
// waits behind the message log's writer, nor the log behind it. A write
// survives the process's crash when it returns (WAL: it is in the
// operating system's hands); with synchronous=NORMAL the last ones may be
// lost with the machine's power. That costs no nonce: a session taken
// back from an older record starts its sequence numbers beyond what it
// could have sent since (engine.RollbackMargin), and a missing record
// only means a new handshake. Keys expire a TTL after their last write,
// like a NATS key-value bucket's.
package sqlitekv

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/dtlsx/native"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Store is a native.SessionStore in one SQLite file, for one process.
//
// Writes are committed in groups: every write waiting when the writer
// goroutine is free goes into one transaction (one disk sync) of
// prepared statements, so the store keeps up with the handshakes of a
// reconnect storm, not one sync per session.
type Store struct {
	db  *sql.DB
	ttl time.Duration
	now func() time.Time

	stmt  statements
	ops   chan *op
	stop  chan struct{}
	done  chan struct{}
	close sync.Once
	err   error // of Close
}

// op is a write waiting for the writer.
type op struct {
	kind    byte
	key     string
	val     []byte
	rev     uint64 // the revision an update or delete expects
	out     uint64 // the revision written; 0: not written
	missing bool   // not written because the key has no live value
	err     error
	done    chan struct{}
}

// Kinds of op.
const (
	opPut = iota
	opUpdate
	opDelete
)

// statements prepared once (SQLite parses each only once).
type statements struct {
	put, update, delete, live, rev, setRev *sql.Stmt
}

// maxGroup bounds the writes of one transaction.
const maxGroup = 256

var _ native.SessionStore = (*Store)(nil)

const schema = `CREATE TABLE IF NOT EXISTS sessions (
	key TEXT PRIMARY KEY,
	val BLOB NOT NULL,
	rev INTEGER NOT NULL,
	expires INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS revision (id INTEGER PRIMARY KEY CHECK (id = 1), rev INTEGER NOT NULL);
INSERT OR IGNORE INTO revision (id, rev) VALUES (1, 0);`

// Open opens (creating, mode 0600) the session file at path, whose keys
// expire ttl after their last write, and removes those already expired.
func Open(ctx context.Context, path string, ttl time.Duration) (*Store, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlitekv: %w", err)
	}
	_ = f.Close()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(5000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=wal_autocheckpoint(8192)&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("sqlitekv: open %s: %w", path, err)
	}
	db.SetMaxOpenConns(2) // the writer and a reader (lookups of unknown sessions)
	s := &Store{db: db, ttl: ttl, now: time.Now, ops: make(chan *op), stop: make(chan struct{}), done: make(chan struct{})}
	if _, err := db.ExecContext(ctx, schema); err != nil {
		db.Close()
		return nil, fmt.Errorf("sqlitekv: %s: schema: %w", path, err)
	}
	if _, err := s.Expire(ctx); err != nil {
		db.Close()
		return nil, err
	}
	for _, p := range []struct {
		to  **sql.Stmt
		sql string
	}{
		{&s.stmt.put, `INSERT INTO sessions (key, val, rev, expires) VALUES (?, ?, ?, ?)
			ON CONFLICT (key) DO UPDATE SET val = excluded.val, rev = excluded.rev, expires = excluded.expires`},
		{&s.stmt.update, `UPDATE sessions SET val = ?, rev = ?, expires = ? WHERE key = ? AND rev = ? AND expires > ?`},
		{&s.stmt.delete, `DELETE FROM sessions WHERE key = ? AND rev = ?`},
		{&s.stmt.live, `SELECT 1 FROM sessions WHERE key = ? AND expires > ?`},
		{&s.stmt.rev, `SELECT rev FROM revision WHERE id = 1`},
		{&s.stmt.setRev, `UPDATE revision SET rev = ? WHERE id = 1`},
	} {
		if *p.to, err = db.PrepareContext(ctx, p.sql); err != nil {
			db.Close()
			return nil, fmt.Errorf("sqlitekv: %s: prepare: %w", path, err)
		}
	}
	go s.writer()
	return s, nil
}

// Close stops the writer (writes waiting fail) and closes the file.
func (s *Store) Close() error {
	s.close.Do(func() {
		close(s.stop)
		<-s.done
		s.err = s.db.Close()
	})
	return s.err
}

var errClosed = errors.New("sqlitekv: store closed")

// Expire removes the keys whose TTL has passed and returns how many.
func (s *Store) Expire(ctx context.Context) (int64, error) {
	r, err := s.db.ExecContext(ctx, `DELETE FROM sessions WHERE expires <= ?`, s.now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("sqlitekv: expire: %w", err)
	}
	n, _ := r.RowsAffected()
	return n, nil
}

// Len returns the number of live keys.
func (s *Store) Len(ctx context.Context) (int, error) {
	var n int
	err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sessions WHERE expires > ?`, s.now().UnixNano()).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("sqlitekv: count: %w", err)
	}
	return n, nil
}

// Get implements native.SessionStore.
func (s *Store) Get(ctx context.Context, key string) ([]byte, uint64, error) {
	var (
		val []byte
		rev uint64
	)
	err := s.db.QueryRowContext(ctx, `SELECT val, rev FROM sessions WHERE key = ? AND expires > ?`,
		key, s.now().UnixNano()).Scan(&val, &rev)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, 0, native.ErrNotFound
	}
	if err != nil {
		return nil, 0, fmt.Errorf("sqlitekv: get: %w", err)
	}
	return val, rev, nil
}

// Put implements native.SessionStore.
func (s *Store) Put(ctx context.Context, key string, val []byte) (uint64, error) {
	o, err := s.write(ctx, &op{kind: opPut, key: key, val: val})
	if err != nil {
		return 0, err
	}
	return o.out, nil
}

// Update implements native.SessionStore.
func (s *Store) Update(ctx context.Context, key string, val []byte, rev uint64) (uint64, error) {
	o, err := s.write(ctx, &op{kind: opUpdate, key: key, val: val, rev: rev})
	switch {
	case err != nil:
		return 0, err
	case o.out != 0:
		return o.out, nil
	case o.missing:
		return 0, native.ErrNotFound
	}
	return 0, native.ErrConflict
}

// Delete implements native.SessionStore.
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	o, err := s.write(ctx, &op{kind: opDelete, key: key, rev: rev})
	switch {
	case err != nil:
		return err
	case o.out != 0:
		return nil
	case o.missing:
		return native.ErrNotFound
	}
	return native.ErrConflict
}

// Watch implements native.SessionStore: no other node writes this file,
// so there is nothing to watch; it returns when ctx ends.
func (s *Store) Watch(ctx context.Context, _ func(key string, val []byte, rev uint64)) error {
	<-ctx.Done()
	return nil
}

func (s *Store) expires() int64 { return s.now().Add(s.ttl).UnixNano() }

// write hands o to the writer and waits for its group's commit.
func (s *Store) write(ctx context.Context, o *op) (*op, error) {
	o.done = make(chan struct{})
	select {
	case s.ops <- o:
	case <-s.stop:
		return nil, errClosed
	case <-ctx.Done():
		return nil, fmt.Errorf("sqlitekv: %w", ctx.Err())
	}
	<-o.done // the writer always answers an op it took
	return o, o.err
}

// writer commits the waiting writes in groups until Close.
func (s *Store) writer() {
	defer close(s.done)
	for {
		var group []*op
		select {
		case <-s.stop:
			return
		case o := <-s.ops:
			group = append(group, o)
		}
	more:
		for len(group) < maxGroup {
			select {
			case o := <-s.ops:
				group = append(group, o)
			default:
				break more
			}
		}
		err := s.commit(group)
		for _, o := range group {
			if err != nil {
				o.out, o.err = 0, err
			}
			close(o.done)
		}
	}
}

// commit runs a group's writes in one transaction, each write with a
// revision of its own (a revision is never reused, even for a key deleted
// and written again). Any SQL error fails the whole group (the store's
// own statements fail only when the disk does).
func (s *Store) commit(group []*op) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("sqlitekv: begin: %w", err)
	}
	defer func() { _ = tx.Rollback() }()
	var rev uint64
	if err := tx.StmtContext(ctx, s.stmt.rev).QueryRowContext(ctx).Scan(&rev); err != nil {
		return fmt.Errorf("sqlitekv: revision: %w", err)
	}
	now := s.now().UnixNano()
	exp := s.expires()
	put, upd, del, live := tx.StmtContext(ctx, s.stmt.put), tx.StmtContext(ctx, s.stmt.update), tx.StmtContext(ctx, s.stmt.delete), tx.StmtContext(ctx, s.stmt.live)
	for _, o := range group {
		var r sql.Result
		switch o.kind {
		case opPut:
			r, err = put.ExecContext(ctx, o.key, o.val, rev+1, exp)
		case opUpdate:
			r, err = upd.ExecContext(ctx, o.val, rev+1, exp, o.key, o.rev, now)
		case opDelete:
			r, err = del.ExecContext(ctx, o.key, o.rev)
		}
		if err != nil {
			return fmt.Errorf("sqlitekv: write: %w", err)
		}
		if n, _ := r.RowsAffected(); n == 1 {
			rev++
			o.out = rev
			continue
		}
		var one int
		switch err := live.QueryRowContext(ctx, o.key, now).Scan(&one); {
		case errors.Is(err, sql.ErrNoRows):
			o.missing = true
		case err != nil:
			return fmt.Errorf("sqlitekv: write: %w", err)
		}
	}
	if _, err := tx.StmtContext(ctx, s.stmt.setRev).ExecContext(ctx, rev); err != nil {
		return fmt.Errorf("sqlitekv: revision: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("sqlitekv: commit: %w", err)
	}
	return nil
}
