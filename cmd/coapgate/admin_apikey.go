package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/config"
)

// cmdAPIKey manages API keys directly in the data directory (no running
// server or API key needed), for recovering a lost admin key.
func cmdAPIKey(args []string, stdout, stderr io.Writer) int {
	subs := map[string]struct{ args, summary, example string }{
		"create": {"", "Creates a management API key and prints it once (only its hash is stored).", "coapgate apikey create --name ci --data-dir /var/lib/coapgate"},
		"list":   {"", "Lists the API keys: id, name, creation time (never the keys themselves).", "coapgate apikey list --data-dir /var/lib/coapgate"},
		"delete": {"KEY_ID", "Deletes an API key by its id (as apikey list shows it); requests with it get 401 from then on.", "coapgate apikey delete --data-dir /var/lib/coapgate k_0123abcd"},
	}
	if len(args) == 0 || args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
		w := stderr
		if len(args) > 0 {
			w = stdout
		}
		fmt.Fprint(w, `Usage: coapgate apikey create|list|delete [flags]

Creates, lists or deletes management API keys directly in the data directory,
so an operator with access to the machine can recover from a lost admin key.
It works on the database file itself: run it on the gateway's machine, with
the same --data-dir (or --config, or COAPGATE_DATA_DIR) as coapgate serve.

Run 'coapgate apikey <command> --help' for the flags of a command.
`)
		if len(args) > 0 {
			return 0
		}
		return 2
	}
	sub, ok := subs[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "coapgate apikey: unknown command %q (want create, list or delete)\n", args[0])
		return 2
	}
	name := args[0]
	fset := flag.NewFlagSet("coapgate apikey "+name, flag.ContinueOnError)
	fset.SetOutput(stderr)
	configPath := fset.String("config", os.Getenv("COAPGATE_CONFIG"), "YAML configuration `file` of the gateway (env COAPGATE_CONFIG)")
	dataDir := fset.String("data-dir", "", "the gateway's data `directory` (default: from --config or COAPGATE_DATA_DIR, else ./data)")
	keyName := new(string)
	if name == "create" {
		keyName = fset.String("name", "admin", "a `name` to recognise the key by")
	}
	fset.Usage = func() {
		w := fset.Output()
		fmt.Fprintf(w, "Usage: coapgate apikey %s [flags] %s\n\n%s\n\nFlags:\n", name, sub.args, sub.summary)
		fset.PrintDefaults()
		fmt.Fprintf(w, "\nExample:\n  %s\n", sub.example)
	}
	for _, a := range args[1:] {
		if a == "-h" || a == "-help" || a == "--help" {
			fset.SetOutput(stdout)
			fset.Usage()
			return 0
		}
	}
	if err := fset.Parse(config.NormalizeFlagArgs(args[1:])); err != nil {
		return 2
	}
	want := 0
	if name == "delete" {
		want = 1
	}
	if fset.NArg() != want {
		fmt.Fprintf(stderr, "coapgate apikey %s: want %d argument(s), got %d\n", name, want, fset.NArg())
		fset.Usage()
		return 2
	}
	cfg, err := config.Load(*configPath, os.LookupEnv, nil)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate apikey:", err)
		return 2
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	ctx := context.Background()
	if cfg.Store.Driver == "sqlite" {
		path := cfg.Store.SQLitePath
		if path == "" || *dataDir != "" {
			path = filepath.Join(cfg.DataDir, "coapgate.db")
		}
		// Opening would create an empty database: list and delete refuse
		// where there is none; create (which may provision a key before
		// the first start) needs at least the directory.
		check := path
		if name == "create" {
			check = filepath.Dir(path)
		}
		if _, err := os.Stat(check); err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				fmt.Fprintf(stderr, "coapgate apikey: no gateway database at %s: run it with the data directory of coapgate serve (--data-dir, --config or COAPGATE_DATA_DIR)\n", path)
			} else {
				fmt.Fprintf(stderr, "coapgate apikey: %v\n", err)
			}
			return 1
		}
		cfg.Store.SQLitePath = path
	}
	// The same store serve uses (SQLite file or PostgreSQL, secrets keyring).
	st, err := openStore(ctx, cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintln(stderr, "coapgate apikey:", err)
		return 1
	}
	defer st.Close()
	switch name {
	case "list":
		keys, err := st.ListAPIKeys(ctx)
		if err != nil {
			fmt.Fprintln(stderr, "coapgate apikey:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tCREATED")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\n", k.ID, k.Name, k.CreatedAt.Format(time.RFC3339))
		}
		tw.Flush()
	case "delete":
		id := fset.Arg(0)
		if err := st.DeleteAPIKey(ctx, id); err != nil {
			if errors.Is(err, apikey.ErrNotFound) {
				fmt.Fprintf(stderr, "coapgate apikey: no API key with id %q (see coapgate apikey list)\n", id)
			} else {
				fmt.Fprintln(stderr, "coapgate apikey:", err)
			}
			return 1
		}
		fmt.Fprintf(stdout, "deleted API key %s\n", id)
	case "create":
		secret, k, err := apikey.New(*keyName, time.Now())
		if err == nil {
			err = st.CreateAPIKey(ctx, k)
		}
		if err != nil {
			fmt.Fprintln(stderr, "coapgate apikey:", err)
			return 1
		}
		fmt.Fprintln(stdout, secret)
	}
	return 0
}
