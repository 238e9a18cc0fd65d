package sqlitestore

import (
	"context"
	"database/sql"
	"embed"
	"fmt"
	"io/fs"
	"path"
	"sort"
	"strconv"
	"strings"
)

// migrationFS holds the schema steps, named NNNN_description.sql. Step N
// takes the database from the previous step's user_version to N. Steps are append-only:
// never edit one that has shipped, add the next number instead.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// goSteps are parts of schema steps that SQL cannot express; each runs in
// the step's transaction right after the step's SQL.
var goSteps = map[int]func(ctx context.Context, tx *sql.Tx, s *Store) error{
	8: sealPlaintextSecrets,
}

// migration is one numbered schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded steps ordered by version, checking
// that they are numbered 1..n without gaps or duplicates.
func loadMigrations() ([]migration, error) {
	names, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, fmt.Errorf("list migrations: %w", err)
	}
	steps := make([]migration, 0, len(names))
	for _, name := range names {
		base := path.Base(name)
		num, _, ok := strings.Cut(base, "_")
		if !ok {
			return nil, fmt.Errorf("migration %s: name is not NNNN_description.sql", base)
		}
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: bad number: %w", base, err)
		}
		b, err := migrationFS.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("migration %s: %w", base, err)
		}
		steps = append(steps, migration{version: v, name: base, sql: string(b)})
	}
	sort.Slice(steps, func(i, j int) bool { return steps[i].version < steps[j].version })
	for i, st := range steps {
		// Numbers are reserved per feature, so a binary may lack one
		// (a gap); they must be unique and start at 1.
		if st.version < 1 || (i > 0 && st.version == steps[i-1].version) {
			return nil, fmt.Errorf("migration %s: duplicate or invalid version %d", st.name, st.version)
		}
	}
	return steps, nil
}

// migrate applies every step newer than the database's user_version, each
// in its own transaction together with the user_version bump, so a crash
// leaves the database at a step boundary. It is idempotent, and safe against
// another process migrating the same file at the same time: the version is
// read inside the write transaction (BEGIN IMMEDIATE on the writer).
func migrate(ctx context.Context, db *sql.DB, s *Store) error {
	steps, err := loadMigrations()
	if err != nil {
		return err
	}
	cur, err := userVersion(ctx, db)
	if err != nil {
		return err
	}
	if len(steps) > 0 && cur > steps[len(steps)-1].version {
		return fmt.Errorf("%w: user_version %d, known %d", ErrSchemaTooNew, cur, steps[len(steps)-1].version)
	}
	prev := 0
	for _, st := range steps {
		if st.version > cur {
			if err := applyStep(ctx, db, s, st, prev); err != nil {
				return fmt.Errorf("migration %s: %w", st.name, err)
			}
		}
		prev = st.version
	}
	return nil
}

// applyStep runs one step unless the database already has it; prev is the
// version of the step before it (0 for the first).
func applyStep(ctx context.Context, db *sql.DB, s *Store, st migration, prev int) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	defer func() {
		if err != nil {
			_ = tx.Rollback() // the step's error is the one to report
		}
	}()

	var cur int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&cur); err != nil {
		return fmt.Errorf("read user_version: %w", err)
	}
	switch {
	case cur >= st.version:
		return tx.Rollback() // applied meanwhile by another process
	case cur != prev:
		return fmt.Errorf("database at user_version %d, step needs %d", cur, prev)
	}
	if _, err := tx.ExecContext(ctx, st.sql); err != nil {
		return fmt.Errorf("apply: %w", err)
	}
	if fn := goSteps[st.version]; fn != nil {
		if err := fn(ctx, tx, s); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	// PRAGMA takes no bound parameters; version is an int from our own table.
	if _, err := tx.ExecContext(ctx, "PRAGMA user_version = "+strconv.Itoa(st.version)); err != nil {
		return fmt.Errorf("set user_version: %w", err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// userVersion reads PRAGMA user_version, the number of applied steps.
func userVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read user_version: %w", err)
	}
	return v, nil
}
