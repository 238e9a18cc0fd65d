package sqlitestore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ErrBackupExists means Backup's destination already exists.
var ErrBackupExists = errors.New("sqlitestore: backup destination exists")

// Backup writes a consistent copy of the database file at dbPath to out
// with VACUUM INTO, while the gateway (in this or another process) goes on
// reading and writing it: the copy is one read transaction's snapshot, so
// it holds every transaction committed before Backup began and none that
// is half done. Writers are not blocked (WAL). out is created with mode
// 0600 (the database holds device secrets) and must not exist; it is
// synced and checked (PRAGMA quick_check) before Backup returns. On error
// no file is left at out.
func Backup(ctx context.Context, dbPath, out string) (err error) {
	for _, p := range []string{dbPath, out} {
		if p == "" || p == ":memory:" || strings.HasPrefix(p, "file:") || strings.ContainsRune(p, '?') {
			return fmt.Errorf("%w: %q", ErrBadPath, p)
		}
	}
	if _, err := os.Stat(dbPath); err != nil {
		return fmt.Errorf("sqlitestore: backup: database: %w", err)
	}
	// An empty file made here (exclusively, 0600) is what VACUUM INTO
	// fills: it accepts an existing empty destination.
	f, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%w: %s", ErrBackupExists, out)
	}
	if err != nil {
		return fmt.Errorf("sqlitestore: backup: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("sqlitestore: backup: %w", err)
	}
	defer func() {
		if err != nil {
			_ = os.Remove(out) // the backup's error is the one to report
		}
	}()
	db, err := sql.Open("sqlite", dbPath+"?_pragma=busy_timeout(5000)")
	if err != nil {
		return fmt.Errorf("sqlitestore: backup: open %s: %w", dbPath, err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.ExecContext(ctx, `VACUUM INTO ?`, out); err != nil {
		return fmt.Errorf("sqlitestore: backup %s into %s: %w", dbPath, out, err)
	}
	if err := syncFile(out); err != nil {
		return fmt.Errorf("sqlitestore: backup: sync: %w", err)
	}
	if err := syncFile(filepath.Dir(out)); err != nil {
		return fmt.Errorf("sqlitestore: backup: sync directory: %w", err)
	}
	if err := quickCheck(ctx, out); err != nil {
		return fmt.Errorf("sqlitestore: backup: check %s: %w", out, err)
	}
	return nil
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// quickCheck runs PRAGMA quick_check on a database file, read-only.
func quickCheck(ctx context.Context, path string) error {
	db, err := sql.Open("sqlite", path+"?_pragma=query_only(1)")
	if err != nil {
		return err
	}
	defer db.Close()
	var res string
	if err := db.QueryRowContext(ctx, `PRAGMA quick_check`).Scan(&res); err != nil {
		return err
	}
	if res != "ok" {
		return fmt.Errorf("quick_check: %s", res)
	}
	return nil
}
