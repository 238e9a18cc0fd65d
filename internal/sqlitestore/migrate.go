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
// takes the database from user_version N-1 to N. Steps are append-only:
// never edit one that has shipped, add the next number instead.
//
//go:embed migrations/*.sql
var migrationFS embed.FS

// migration is one numbered schema step.
type migration struct {
	version int
	name    string
	sql     string
}

// loadMigrations returns the embedded steps ordered by version, checking
// that the numbers are positive and unique. A gap in the numbering is
// allowed (numbers are reserved for steps developed side by side); a
// database records the highest step applied, so a step is never added
// below a number that has shipped.
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
		if st.version < 1 || (i > 0 && st.version == steps[i-1].version) {
			return nil, fmt.Errorf("migration %s: duplicate or non-positive version %d", st.name, st.version)
		}
	}
	return steps, nil
}

// migrate applies every step newer than the database's user_version, each
// in its own transaction together with the user_version bump, so a crash
// leaves the database at a step boundary. It is idempotent, and safe against
// another process migrating the same file at the same time: the version is
// read inside the write transaction (BEGIN IMMEDIATE on the writer).
func migrate(ctx context.Context, db *sql.DB) error {
	steps, err := loadMigrations()
	if err != nil {
		return err
	}
	cur, err := userVersion(ctx, db)
	if err != nil {
		return err
	}
	if last := latestVersion(steps); cur > last {
		return fmt.Errorf("%w: user_version %d, known %d", ErrSchemaTooNew, cur, last)
	}
	for _, st := range steps {
		if st.version <= cur {
			continue
		}
		if err := applyStep(ctx, db, st); err != nil {
			return fmt.Errorf("migration %s: %w", st.name, err)
		}
	}
	return nil
}

// applyStep runs one step unless the database already has it.
func applyStep(ctx context.Context, db *sql.DB, st migration) (err error) {
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
	if cur >= st.version {
		return tx.Rollback() // applied meanwhile by another process
	}
	if _, err := tx.ExecContext(ctx, st.sql); err != nil {
		return fmt.Errorf("apply: %w", err)
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

// latestVersion is the number of the newest step (0 without steps).
func latestVersion(steps []migration) int {
	if len(steps) == 0 {
		return 0
	}
	return steps[len(steps)-1].version
}

// userVersion reads PRAGMA user_version, the newest step applied.
func userVersion(ctx context.Context, db *sql.DB) (int, error) {
	var v int
	if err := db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read user_version: %w", err)
	}
	return v, nil
}
