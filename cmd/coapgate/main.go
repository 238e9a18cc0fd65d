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
	"os"
	"os/signal"
	"syscall"
	"text/tabwriter"

	"github.com/coapgate/coapgate/internal/buildinfo"
	"github.com/coapgate/coapgate/internal/config"
)

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
		{"points", "latest values, history, aggregation and export of measure points through the HTTP API", cmdPoints},
		{"command", "send and track downlink commands through the HTTP API", cmdCommand},
		{"rule", "manage forwarding rules through the HTTP API", cmdRule},
		{"apikey", "create, list or delete management API keys (works on the data directory)", cmdAPIKey},
		{"secrets", "rotate the key that encrypts stored secrets (works on the store)", cmdSecrets},
		{"backup", "write an online backup of the database (works on the data directory)", cmdBackup},
		{"cert", "create a development CA and DTLS server certificate (cert dev)", cmdCert},
		{"health", "check a running gateway's health endpoint (exit 0 when healthy)", cmdHealth},
		{"version", "print the build information (version, VCS revision, Go version)", cmdVersion},
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
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: coapgate version

Prints the build information: version (stamped by the release build, else
the Go module version, else "devel"), VCS revision and commit time, Go
version and platform. coapdev version prints the same for its build.
`)
	}
	if err := fs.Parse(args); err != nil {
		return flagExit(err)
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "coapgate version: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	fmt.Fprintln(stdout, buildinfo.Get().String("coapgate"))
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
variables < flags. Every setting has all three forms, e.g. coap.max_body is
'coap: {max_body: 65536}' in YAML, COAPGATE_COAP_MAX_BODY, and --coap.max-body
(flags accept the YAML spelling too: --coap.max_body). Unknown COAPGATE_*
variables are reported as a warning at start.

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
	if err := fs.Parse(config.NormalizeFlagArgs(args)); err != nil {
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
	for _, w := range cfg.Warnings {
		log.Warn("configuration: " + w)
	}
	for _, name := range config.UnknownEnv(os.Environ()) {
		log.Warn("unknown environment variable ignored: no setting has this name", "env", name)
	}
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
