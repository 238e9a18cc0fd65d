package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

// cmdBackup writes an online backup of the embedded database.
func cmdBackup(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgate backup", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "file to write the backup to (must not exist; created with mode 0600)")
	configPath := fs.String("config", os.Getenv("COAPGATE_CONFIG"), "YAML configuration file (env COAPGATE_CONFIG)")
	dataDir := fs.String("data-dir", "", "data directory (default: data_dir of the configuration)")
	dbPath := fs.String("db", "", "SQLite database file (default: store.sqlite_path, or data_dir/coapgate.db)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: coapgate backup --out FILE [flags]

Writes a consistent copy of the gateway's SQLite database to FILE while the
gateway keeps running (SQLite VACUUM INTO: one snapshot, every transaction
committed before the backup began, writers are not blocked). FILE is created
with mode 0600: the database holds the message history (secrets encrypted).

The database is not the whole state: back up the data directory's key files
(token.key, secret.key, and the generated DTLS certificate and key) as well; this command
lists them. Restore: docs/deployment.md, "Backup and restore".

Flags:
`)
		fs.PrintDefaults()
		_, _ = io.WriteString(stderr, "\nExample:\n  coapgate backup --data-dir /var/lib/coapgate --out /backup/coapgate-$(date +%F).db\n")
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if *out == "" || fs.NArg() > 0 {
		fs.Usage()
		return 2
	}
	cfg, err := config.Load(*configPath, os.LookupEnv, nil)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate backup:", err)
		return 2
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	src := *dbPath
	if src == "" {
		src = cfg.Store.SQLitePath
	}
	if src == "" {
		src = filepath.Join(cfg.DataDir, "coapgate.db")
	}
	if err := sqlitestore.Backup(context.Background(), src, *out); err != nil {
		fmt.Fprintln(stderr, "coapgate backup:", err)
		return 1
	}
	fi, err := os.Stat(*out)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate backup:", err)
		return 1
	}
	fmt.Fprintf(stdout, "backup of %s written to %s (%d bytes)\n", src, *out, fi.Size())
	if keys := dataDirKeyFiles(cfg.DataDir, src, *out); len(keys) > 0 {
		fmt.Fprintln(stdout, "also back up these files of the data directory (not in the database):")
		for _, k := range keys {
			fmt.Fprintln(stdout, "  "+k)
		}
	}
	return 0
}

// dataDirKeyFiles lists the files of dir other than the database db, its
// WAL and shared-memory files and the backup out: the token key,
// generated certificates. The kept DTLS sessions are not listed: a
// restored node does without them (its devices make one handshake); an
// older copy would cost no nonce but bring back older replay windows.
func dataDirKeyFiles(dir, db, out string) []string {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	base := filepath.Base(db)
	var files []string
	for _, e := range ents {
		n := e.Name()
		p := filepath.Join(dir, n)
		if e.IsDir() || (filepath.Dir(db) == filepath.Clean(dir) && strings.HasPrefix(n, base)) || sameFile(p, out) ||
			strings.HasPrefix(n, sessionFile) {
			continue
		}
		files = append(files, p)
	}
	return files
}

// sameFile reports whether a and b name the same existing file.
func sameFile(a, b string) bool {
	fa, err := os.Stat(a)
	if err != nil {
		return false
	}
	fb, err := os.Stat(b)
	return err == nil && os.SameFile(fa, fb)
}
