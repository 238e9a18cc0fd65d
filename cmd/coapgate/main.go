// Command coapgate is the CoAP/DTLS device-access gateway: `coapgate serve`
// runs it; the other subcommands administer a running gateway through its
// HTTP API.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/config"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

type command struct {
	name    string
	summary string
	run     func(args []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run the gateway (CoAP on :5683, HTTP API on :8080 by default)", cmdServe},
		{"product", "manage products through the HTTP API", cmdProduct},
		{"device", "manage devices through the HTTP API", cmdDevice},
		{"messages", "list stored uplink messages through the HTTP API", cmdMessages},
		{"command", "send and track downlink commands through the HTTP API", cmdCommand},
		{"rule", "manage forwarding rules through the HTTP API", cmdRule},
		{"apikey", "create or list management API keys (works on the data directory)", cmdAPIKey},
		{"secrets", "rotate the key that encrypts stored secrets (works on the store)", cmdSecrets},
		{"version", "print the version", cmdVersion},
	}
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name == args[0] {
			return c.run(args[1:], stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "coapgate: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprint(w, `coapgate - self-hostable CoAP/DTLS access gateway for IoT devices

Usage:
  coapgate <command> [flags]

Commands:
`)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, c := range commands() {
		fmt.Fprintf(tw, "  %s\t%s\n", c.name, c.summary)
	}
	tw.Flush()
	fmt.Fprint(w, `
Run 'coapgate <command> --help' for the flags of a command.

Quick start:
  coapgate serve                       # embedded defaults, data in ./data
  export COAPGATE_API_KEY=<printed admin key>
  coapgate product create --name demo
  coapgate device create <productKey> [deviceKey]
`)
}

func cmdVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("coapgate version", flag.ContinueOnError)
	fs.SetOutput(stderr)
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	fmt.Fprintf(stdout, "coapgate %s (%s %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return 0
}

func flagExit(err error) int {
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	return 2
}

// serveFlags parses the serve flags into a configuration.
func serveFlags(name string, args []string, stderr io.Writer) (cfg config.Config, printConfig bool, code int) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", os.Getenv("COAPGATE_CONFIG"), "YAML configuration file (env COAPGATE_CONFIG)")
	pc := fs.Bool("print-config", false, "print the effective configuration (secrets redacted) and exit")
	ov := config.RegisterFlags(fs)
	fs.Usage = func() {
		fmt.Fprintf(stderr, `Usage: %s [flags]

Runs the gateway. Configuration comes from, in increasing precedence:
embedded defaults < the YAML file given by --config < COAPGATE_* environment
variables < flags. Every setting has all three forms, e.g. coap.listen is
'coap: {listen: ":5683"}' in YAML, COAPGATE_COAP_LISTEN, and --coap.listen.

On first start an admin API key is created and printed once. The web console
is served at / of api.listen (e.g. http://127.0.0.1:8080/): sign in with an
API key.

Flags:
`, name)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, `
Example:
  %s --data-dir /var/lib/coapgate --coap.listen :5683 --api.listen 127.0.0.1:8080
`, name)
	}
	if err := fs.Parse(args); err != nil {
		return cfg, false, flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", name, fs.Arg(0))
		return cfg, false, 2
	}
	cfg, err := config.Load(*configPath, os.LookupEnv, ov)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return cfg, false, 2
	}
	return cfg, *pc, -1
}

func cmdServe(args []string, stdout, stderr io.Writer) int {
	cfg, printConfig, code := serveFlags("coapgate serve", args, stderr)
	if code >= 0 {
		return code
	}
	if printConfig {
		b, err := cfg.YAML()
		if err != nil {
			fmt.Fprintln(stderr, "coapgate serve:", err)
			return 1
		}
		stdout.Write(b)
		return 0
	}
	log := newLogger(cfg.Log, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	s, err := startServer(ctx, cfg, log)
	if err != nil {
		log.Error("start failed", "err", err)
		return 1
	}
	if s.AdminKey != "" {
		fmt.Fprintf(stderr, "\n  Admin API key (shown once, store it now):\n\n    %s\n\n  export COAPGATE_API_KEY=%s\n\n", s.AdminKey, s.AdminKey)
		fmt.Fprintf(stderr, "  Web console: %s (sign in with this key)\n\n", consoleURL(s.APIAddr()))
	}
	select {
	case <-ctx.Done():
	case <-s.doneCh():
	}
	log.Info("shutting down")
	if err := s.shutdown(); err != nil {
		log.Error("stopped with error", "err", err)
		return 1
	}
	log.Info("stopped")
	return 0
}

func cmdAPIKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || (args[0] != "create" && args[0] != "list") {
		fmt.Fprint(stderr, `Usage: coapgate apikey create|list [flags]

Creates or lists management API keys directly in the data directory, so an
operator with access to the machine can recover from a lost admin key. The
key is printed once; only its hash is stored.

Example:
  coapgate apikey create --name ci --data-dir /var/lib/coapgate
`)
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			return 0
		}
		return 2
	}
	sub := args[0]
	fs := flag.NewFlagSet("coapgate apikey "+sub, flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "admin", "a name to recognise the key by")
	configPath := fs.String("config", os.Getenv("COAPGATE_CONFIG"), "YAML configuration file (env COAPGATE_CONFIG)")
	ov := config.RegisterFlags(fs)
	if err := fs.Parse(args[1:]); err != nil {
		return flagExit(err)
	}
	cfg, err := config.Load(*configPath, os.LookupEnv, ov)
	if err != nil {
		fmt.Fprintln(stderr, "coapgate apikey:", err)
		return 2
	}
	ctx := context.Background()
	st, err := openStore(ctx, cfg, slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: slog.LevelWarn})))
	if err != nil {
		fmt.Fprintln(stderr, "coapgate apikey:", err)
		return 1
	}
	defer st.Close()
	if sub == "list" {
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
		return 0
	}
	secret, k, err := apikey.New(*name, time.Now())
	if err == nil {
		err = st.CreateAPIKey(ctx, k)
	}
	if err != nil {
		fmt.Fprintln(stderr, "coapgate apikey:", err)
		return 1
	}
	fmt.Fprintln(stdout, secret)
	return 0
}
