// Package sqlitestore is the embedded persistence adapter: one SQLite file
// holding the device registry, the stored uplink messages and the API keys.
// It uses the pure-Go driver modernc.org/sqlite (no cgo).
//
// The database runs in WAL mode (https://www.sqlite.org/wal.html) with
// synchronous=FULL on the writer, so a committed transaction survives both a
// killed process and a power loss: an acknowledged message is on disk. All
// writes go through one writer connection (SQLite allows one writer at a
// time; serialising in Go avoids SQLITE_BUSY retries), reads through a small
// pool of read-only connections that WAL lets run beside the writer.
//
// The schema is created and upgraded by numbered SQL steps embedded in the
// binary (migrations/NNNN_name.sql), tracked with PRAGMA user_version.
package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"os"
	"path/filepath"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/secretbox"
)

// Compile-time guards: *Store implements every store interface.
var (
	_ registry.Store   = (*Store)(nil)
	_ message.Store    = (*Store)(nil)
	_ apikey.Store     = (*Store)(nil)
	_ message.Notifier = (*Store)(nil)
)

// Sentinel errors of this package.
var (
	// ErrBadPath means Open was given a path it cannot use: empty, in-memory,
	// a "file:" URI or one containing '?' (the driver's DSN separator).
	ErrBadPath = errors.New("sqlitestore: unusable database path")
	// ErrSchemaTooNew means the database was migrated by a newer binary.
	ErrSchemaTooNew = errors.New("sqlitestore: database schema is newer than this binary")
)

// DSN parameters (see the modernc.org/sqlite Driver.Open documentation).
// The driver runs busy_timeout first and the other _pragma values in
// lexical order on every new connection.
const (
	// writerParams: WAL so readers never block the writer nor it them;
	// synchronous=FULL so every commit syncs the WAL (power-loss durable);
	// _txlock=immediate so a write transaction takes the write lock at BEGIN
	// and never fails to upgrade a read lock under another process's writer.
	writerParams = "_pragma=busy_timeout(5000)" +
		"&_pragma=foreign_keys(ON)" +
		"&_pragma=journal_mode(WAL)" +
		"&_pragma=synchronous(FULL)" +
		"&_txlock=immediate"
	// readerParams: journal_mode is persistent in the file (set by the
	// writer, opened first); query_only makes an accidental write fail.
	readerParams = "_pragma=busy_timeout(5000)" +
		"&_pragma=foreign_keys(ON)" +
		"&_pragma=query_only(1)"
)

// readerConns is the size of the read pool.
const readerConns = 4

// Store is the SQLite adapter. It implements registry.Store, message.Store
// and apikey.Store and is safe for concurrent use.
type Store struct {
	writer *sql.DB // exactly one connection
	reader *sql.DB // read-only pool

	insertMessage *sql.Stmt // on writer
	touchDevice   *sql.Stmt // on writer
	upsertReplay  *sql.Stmt // on writer

	notify message.Broadcast // wakes log tailers after appends

	box *secretbox.Keyring // seals secrets at rest
}

// Option configures Open.
type Option func(*options)

type options struct {
	keys *secretbox.Keyring
}

// WithKeyring sets the keys that seal secrets at rest. Without it, Open
// uses the key file secret.key next to the database, creating it (0600)
// with a new key when missing.
func WithKeyring(k *secretbox.Keyring) Option {
	return func(o *options) { o.keys = k }
}

// DefaultKeyFile is the key file Open uses without WithKeyring.
func DefaultKeyFile(dbPath string) string {
	return filepath.Join(filepath.Dir(dbPath), "secret.key")
}

// Open opens (creating if needed) the database file at path, applies any
// pending schema migrations and returns the ready Store. The caller must
// Close it.
//
// The database file and its -wal and -shm files are created with mode 0600
// (they hold the message history), whatever the process umask.
func Open(ctx context.Context, path string, opts ...Option) (*Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, "file:") || strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("%w: %q", ErrBadPath, path)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	if o.keys == nil {
		k, _, err := secretbox.LoadFile(DefaultKeyFile(path), true)
		if err != nil {
			return nil, fmt.Errorf("sqlitestore: %w", err)
		}
		o.keys = k
	}
	if err := createPrivate(path); err != nil {
		return nil, err
	}

	writer, err := sql.Open("sqlite", path+"?"+writerParams)
	if err != nil {
		return nil, fmt.Errorf("sqlitestore: open writer %s: %w", path, err)
	}
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxLifetime(0)
	writer.SetConnMaxIdleTime(0)

	s := &Store{writer: writer, box: o.keys}
	if err := s.open(ctx, path); err != nil {
		return nil, errors.Join(err, s.Close())
	}
	return s, nil
}

// open finishes Open once the writer handle exists.
func (s *Store) open(ctx context.Context, path string) error {
	// The first connection sets WAL mode; migrate before readers exist.
	if err := migrate(ctx, s.writer, s); err != nil {
		return fmt.Errorf("sqlitestore: migrate %s: %w", path, err)
	}
	// SQLite creates -wal and -shm with the database file's mode, which
	// createPrivate set; tighten them anyway in case an older binary made
	// them.
	for _, suffix := range []string{"-wal", "-shm"} {
		if err := os.Chmod(path+suffix, 0o600); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("sqlitestore: chmod %s%s: %w", path, suffix, err)
		}
	}
	if err := s.checkKeys(ctx); err != nil {
		return err
	}

	reader, err := sql.Open("sqlite", path+"?"+readerParams)
	if err != nil {
		return fmt.Errorf("sqlitestore: open reader %s: %w", path, err)
	}
	reader.SetMaxOpenConns(readerConns)
	reader.SetMaxIdleConns(readerConns)
	s.reader = reader
	if err := reader.PingContext(ctx); err != nil {
		return fmt.Errorf("sqlitestore: open reader %s: %w", path, err)
	}

	if s.insertMessage, err = s.writer.PrepareContext(ctx, insertMessageSQL); err != nil {
		return fmt.Errorf("sqlitestore: prepare insert message: %w", err)
	}
	if s.touchDevice, err = s.writer.PrepareContext(ctx, touchDeviceSQL); err != nil {
		return fmt.Errorf("sqlitestore: prepare touch device: %w", err)
	}
	if s.upsertReplay, err = s.writer.PrepareContext(ctx, upsertReplaySQL); err != nil {
		return fmt.Errorf("sqlitestore: prepare upsert replay state: %w", err)
	}
	return nil
}

// createPrivate creates the database file with mode 0600 when it does not
// exist (SQLite would use 0644 less the umask) and tightens an existing
// one to 0600.
func createPrivate(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("sqlitestore: create %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sqlitestore: create %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		return fmt.Errorf("sqlitestore: chmod %s: %w", path, err)
	}
	return nil
}

// Close closes both handles. In-flight calls finish first. It runs PRAGMA
// optimize (which refreshes the planner's statistics where they are stale,
// https://www.sqlite.org/lang_analyze.html#pragma_optimize); SQLite
// checkpoints the WAL when the last connection closes.
func (s *Store) Close() error {
	var errs []error
	if s.reader != nil { // Open got past migrations: the schema exists
		if _, err := s.writer.ExecContext(context.Background(), "PRAGMA optimize"); err != nil {
			errs = append(errs, fmt.Errorf("optimize: %w", err))
		}
	}
	for _, st := range []*sql.Stmt{s.insertMessage, s.touchDevice, s.upsertReplay} {
		if st != nil {
			errs = append(errs, st.Close())
		}
	}
	if s.reader != nil {
		errs = append(errs, s.reader.Close())
	}
	errs = append(errs, s.writer.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("sqlitestore: close: %w", err)
	}
	return nil
}

// Ping checks that the database file can be read, for health checks. It
// uses the read pool, so it does not queue behind a long write.
func (s *Store) Ping(ctx context.Context) error {
	var v int64
	if err := s.reader.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&v); err != nil {
		return fmt.Errorf("sqlitestore: ping: %w", err)
	}
	return nil
}

// sqliteCode returns the (extended) SQLite result code of err, or 0.
func sqliteCode(err error) int {
	var se *sqlite.Error
	if errors.As(err, &se) {
		return se.Code()
	}
	return 0
}

// isUniqueViolation reports whether err is a PRIMARY KEY or UNIQUE violation.
func isUniqueViolation(err error) bool {
	c := sqliteCode(err)
	return c == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY || c == sqlite3.SQLITE_CONSTRAINT_UNIQUE
}

// isForeignKeyViolation reports whether err is a FOREIGN KEY violation.
func isForeignKeyViolation(err error) bool {
	return sqliteCode(err) == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY
}

// toNanos converts t to stored unix nanoseconds; the zero time is 0.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

// fromNanos converts stored unix nanoseconds to a UTC time; 0 is the zero
// time.
func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// createdNanos is toNanos for a creation time, stamping now when t is zero.
func createdNanos(t time.Time) int64 {
	if t.IsZero() {
		return time.Now().UnixNano()
	}
	return t.UnixNano()
}

// boolInt converts b to the stored 0/1.
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// Limits of listings.
const (
	defaultLimit    = 100  // when the caller asks for <= 0 rows
	maxMessageLimit = 1000 // message.Query cap
)

// registryLimit returns the row limit for a registry page. It is not capped:
// registry.Page documents no cap, and a caller may take a short page as the
// last one.
func registryLimit(limit int) int {
	if limit <= 0 {
		return defaultLimit
	}
	return limit
}

// messageLimit returns the row limit for a message query: <= 0 means
// defaultLimit, and it is capped at maxMessageLimit.
func messageLimit(limit int) int {
	switch {
	case limit <= 0:
		return defaultLimit
	case limit > maxMessageLimit:
		return maxMessageLimit
	}
	return limit
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}
