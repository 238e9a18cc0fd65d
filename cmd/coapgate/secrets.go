package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/secretbox"
)

const secretsUsage = `Usage: coapgate secrets rotate|reseal [flags]

Device secrets, product secrets and the credentials in forwarding rules are
stored encrypted (AES-256-GCM) under the newest key of the key file
(store.secret_key_file, default data_dir/secret.key). Older keys in the file
still decrypt what they encrypted.

  rotate   append a new random key to the key file, then re-encrypt every
           stored secret under it
  reseal   re-encrypt every stored secret under the newest key (after a
           key was added by hand, or to finish an interrupted rotate)

Stop the gateway first (on PostgreSQL: every node), and afterwards give every
node the new key file before starting it: a node with the old file cannot
decrypt the re-encrypted secrets. Once rotated, older keys may be removed
from the file.

Example:
  coapgate secrets rotate --data-dir /var/lib/coapgate
`

func cmdSecrets(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "rotate" && args[0] != "reseal") {
		fmt.Fprint(stderr, secretsUsage)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("coapgate secrets "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv("COAPGATE_CONFIG"), "YAML configuration file (env COAPGATE_CONFIG)")
	ov := config.RegisterFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return flagExit(err)
	}
	cfg, err := config.Load(*configPath, os.LookupEnv, ov)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate secrets:", err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	ctx := context.Background()
	if sub == "rotate" {
		if cfg.Store.SecretKeys != "" {
			fmt.Fprintln(stderr, "coapgate secrets: store.secret_keys is set: add a key to it yourself (a line \"<id> <base64 of 32 random bytes>\"), then run coapgate secrets reseal")
			return 2
		}
		path := secretKeyFile(cfg)
		// The store must open with the current keys first: that proves the
		// file matches the database before it changes.
		st, err := openStore(ctx, cfg, log)
		if err != nil {
			fmt.Fprintln(stderr, "coapgate secrets:", err)
			return 1
		}
		st.Close()
		k, err := secretbox.AddKey(path)
		if err != nil {
			fmt.Fprintln(stderr, "coapgate secrets:", err)
			return 1
		}
		fmt.Fprintf(stdout, "added key %s to %s\n", k.ActiveID(), path)
	}
	st, err := openStore(ctx, cfg, log)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate secrets:", err)
		return 1
	}
	defer st.Close()
	n, err := st.Reseal(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate secrets:", err)
		return 1
	}
	fmt.Fprintf(stdout, "re-encrypted %d stored secrets under the newest key\n", n)
	return 0
}
