// Package pgstore is the PostgreSQL persistence adapter: every store the
// embedded adapter (internal/sqlitestore) implements — registry, API keys,
// the message log and its notifier, points, commands, forwarding rules with
// their cursors and dead letters, device events — on one PostgreSQL
// database through a pgx connection pool, so several gateway nodes can
// share it.
//
// The schema is created and upgraded by numbered SQL steps embedded in the
// binary (migrations/NNNN_name.sql), recorded in schema_migrations and
// applied under an advisory lock, so nodes starting together migrate once.
// The tables live in the connection's current schema (search_path).
//
// Secrets (product, device and rule-action secrets) are sealed with
// internal/secretbox exactly as in the embedded adapter.
//
// Message log order: the log's IDs are drawn only while the appending
// transaction holds a transaction-scoped advisory lock, which PostgreSQL
// releases after the commit is visible. So a reader that saw ID n never
// later sees a new ID below n: tailing consumers (forwarding, the point
// projection, the live stream) can resume from "id > last seen" without
// missing an entry that committed late. Appends cluster-wide are serialised
// on that lock; the ingest batcher's group commit keeps the lock's hold
// time per uplink small. Commits that append NOTIFY a channel of the
// schema, which every node LISTENs on to wake its tailers.
package pgstore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/secretbox"
)

// Compile-time guards: *Store implements every store interface.
var (
	_ registry.Store   = (*Store)(nil)
	_ message.Store    = (*Store)(nil)
	_ message.Notifier = (*Store)(nil)
	_ apikey.Store     = (*Store)(nil)
	_ event.Store      = (*Store)(nil)
	_ command.Store    = (*Store)(nil)
	_ forward.Store    = (*Store)(nil)
	_ point.Store      = (*Store)(nil)
)

// ErrSchemaTooNew means the database was migrated by a newer binary.
var ErrSchemaTooNew = errors.New("pgstore: database schema is newer than this binary")

// Advisory lock keys: SQL expressions hashing the current schema's name
// with a purpose, so deployments (or tests) in different schemas of one
// database do not contend for each other's locks.
const (
	lockMigrateKey = `hashtextextended(current_schema() || '/coapgate migrate', 0)`
	lockLogKey     = `hashtextextended(current_schema() || '/coapgate log', 0)`
)

// Options configures Open.
type Options struct {
	// URL is the PostgreSQL connection URL or keyword/value string
	// (https://www.postgresql.org/docs/current/libpq-connect.html).
	URL string
	// Keys seal secrets at rest; required.
	Keys *secretbox.Keyring
	// MaxConns bounds the pool (default: pgxpool's, max(4, CPUs)).
	MaxConns int32
	// Logger receives the notifier's connection problems (default
	// slog.Default()).
	Logger *slog.Logger
}

// Store is the PostgreSQL adapter; it is safe for concurrent use.
type Store struct {
	pool       *pgxpool.Pool
	box        *secretbox.Keyring
	log        *slog.Logger
	channel    string // NOTIFY channel of this schema's log
	devChannel string // NOTIFY channel of this schema's device changes
	changes    *changeFeed

	notify message.Broadcast
	// exchangeSweep spaces out deleting expired exchange keys.
	exchangeSweep sweeper
	stop          context.CancelFunc
	wg            sync.WaitGroup
}

// Open connects, applies pending migrations and starts the log listener.
// The caller must Close the Store. The URL is never part of an error.
func Open(ctx context.Context, o Options) (*Store, error) {
	if o.Keys == nil {
		return nil, errors.New("pgstore: no secret keys")
	}
	cfg, err := pgxpool.ParseConfig(o.URL)
	if err != nil {
		// pgx's parse errors can quote the URL; do not pass them on.
		return nil, errors.New("pgstore: cannot parse the PostgreSQL URL")
	}
	if o.MaxConns > 0 {
		cfg.MaxConns = o.MaxConns
	}
	// A dead server must fail a request quickly (the gateway answers 5.03)
	// rather than hang it until the client gives up.
	if cfg.ConnConfig.ConnectTimeout == 0 || cfg.ConnConfig.ConnectTimeout > 5*time.Second {
		cfg.ConnConfig.ConnectTimeout = 5 * time.Second
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, errorf("pgstore: connect: %w", err)
	}
	s := &Store{pool: pool, box: o.Keys, log: o.Logger}
	if s.log == nil {
		s.log = slog.Default()
	}
	if err := s.open(ctx); err != nil {
		pool.Close()
		return nil, err
	}
	return s, nil
}

func (s *Store) open(ctx context.Context) error {
	var schema string
	if err := s.pool.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil {
		return errorf("pgstore: connect: %w", err)
	}
	if schema == "" {
		return errors.New("pgstore: no current schema (check search_path)")
	}
	s.channel = "coapgate_log." + schema
	s.devChannel = "coapgate_devices." + schema
	s.changes = newChangeFeed(s)
	if err := migrate(ctx, s.pool); err != nil {
		return errorf("pgstore: migrate: %w", err)
	}
	if err := s.checkKeys(ctx); err != nil {
		return err
	}
	lctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	ready := make(chan struct{})
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.listen(lctx, ready)
	}()
	select { // the first LISTEN is in place before Open returns
	case <-ready:
	case <-ctx.Done():
	}
	return nil
}

// Close stops the listener and closes the pool.
func (s *Store) Close() error {
	if s.stop != nil {
		s.stop()
	}
	s.wg.Wait()
	s.pool.Close()
	return nil
}

// Ping checks that the database answers, for health checks.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.pool.Ping(ctx); err != nil {
		return errorf("pgstore: ping: %w", err)
	}
	return nil
}

// pgCode returns the SQLSTATE of err, or "".
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

func isUniqueViolation(err error) bool     { return pgCode(err) == "23505" }
func isForeignKeyViolation(err error) bool { return pgCode(err) == "23503" }

// inTx runs fn in a transaction, committing when it returns nil.
func (s *Store) inTx(ctx context.Context, fn func(tx pgx.Tx) error) (err error) {
	tx, err := s.pool.Begin(ctx)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback(context.WithoutCancel(ctx)) // the first error is the one to report
		}
	}()
	if err := fn(tx); err != nil {
		return err
	}
	if err := tx.Commit(ctx); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
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

// Limits of listings (as in the embedded adapter).
const (
	defaultLimit    = 100
	maxMessageLimit = 1000
)

func registryLimit(limit int) int {
	if limit <= 0 {
		return defaultLimit
	}
	return limit
}

func messageLimit(limit int) int {
	switch {
	case limit <= 0:
		return defaultLimit
	case limit > maxMessageLimit:
		return maxMessageLimit
	}
	return limit
}
