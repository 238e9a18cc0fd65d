// Command coapdev is a CoAP device simulator built on the public SDK
// (github.com/coapgate/coapgate/sdk): it authenticates like a device
// (docs/protocol.md §3.1) and publishes to topics (§3.2).
//
//	coapdev auth    --server 127.0.0.1:5683 --product PK --device DK --secret DS
//	coapdev publish --server 127.0.0.1:5683 --product PK --device DK --secret DS --topic /sys/PK/DK/... --data '{...}'
//	coapdev listen  --server 127.0.0.1:5683 --product PK --device DK --secret DS --reply-code 200 --reply-data '{}'
//	coapdev version
//
// --mode symmetric (port 5682 unless --server is given) uses the
// symmetric-encryption mode (§3.4): seq in /auth, encrypted payloads and
// sequence numbers.
//
// Credentials may come from COAPDEV_PRODUCT, COAPDEV_DEVICE and
// COAPDEV_SECRET instead of flags, so that secrets stay out of shell history.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1 // a request failed
	exitUsage = 2 // bad command line
)

// env is what a command may touch of the outside world; tests replace it.
type env struct {
	stdin  io.Reader
	stdout io.Writer
	stderr io.Writer
	getenv func(string) string
}

// command is one subcommand.
type command struct {
	summary string
	run     func(ctx context.Context, e *env, args []string) int
}

// commands is the subcommand dispatcher; a later "bench" registers here.
var commands = map[string]command{
	"auth":      {summary: "authenticate a device (POST /auth) and print its token", run: runAuth},
	"bench":     {summary: "load generator: req/s and latency of any mode, handshakes/s, idle sessions", run: runBench},
	"echo":      {summary: "trivial CoAP echo server (measures the load generator itself)", run: runEcho},
	"dtls-load": {summary: "DTLS-PSK load: handshakes/s, uplinks/s, idle sessions held open", run: runDTLSLoad},
	"listen":    {summary: "stay online, print downlink commands as they arrive and reply to them", run: runListen},
	"publish":   {summary: "publish messages to a topic (POST /topic/...)", run: runPublish},
	"version":   {summary: "print the version", run: runVersion},
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], &env{stdin: os.Stdin, stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv})
	stop()
	os.Exit(code)
}

// run dispatches args (without the program name) to a subcommand.
func run(ctx context.Context, args []string, e *env) int {
	if len(args) == 0 {
		topUsage(e.stderr)
		return exitUsage
	}
	name := args[0]
	switch name {
	case "-h", "-help", "--help", "help":
		if name == "help" && len(args) > 1 {
			if _, ok := commands[args[1]]; ok {
				return commands[args[1]].run(ctx, e, []string{"--help"})
			}
			fmt.Fprintf(e.stderr, "coapdev: unknown command %q\n", args[1])
			return exitUsage
		}
		topUsage(e.stdout)
		return exitOK
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(e.stderr, "coapdev: unknown command %q\n\n", name)
		topUsage(e.stderr)
		return exitUsage
	}
	return cmd.run(ctx, e, args[1:])
}

func topUsage(w io.Writer) {
	fmt.Fprint(w, `Usage: coapdev <command> [flags]

coapdev simulates a CoAP device of the coapgate gateway: it authenticates with
the device signature (POST /auth) and publishes to MQTT-style topics over CoAP
(POST /topic/...), printing what the gateway answers.

Commands:
`)
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-9s %s\n", n, commands[n].summary)
	}
	fmt.Fprint(w, `
Credentials may be given by COAPDEV_PRODUCT, COAPDEV_DEVICE and COAPDEV_SECRET
instead of --product, --device and --secret (keeps secrets out of shell history).

Run 'coapdev <command> --help' for the flags of a command.

Example:
  export COAPDEV_PRODUCT=a1MZxOdcBnO COAPDEV_DEVICE=test_01 COAPDEV_SECRET=...
  coapdev publish --server 127.0.0.1:5683 --data '{"id":"1","version":"1.0","params":{"temp":21.5}}'
`)
}

// newFlagSet returns a flag set whose usage prints usage, description, flags
// and example to stdout on --help and to stderr on a usage error.
func newFlagSet(e *env, name, usage, description, example string) *flag.FlagSet {
	fs := flag.NewFlagSet("coapdev "+name, flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed by parseFlags
	fs.Usage = func() {
		w := fs.Output()
		fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", strings.TrimSpace("coapdev "+name+" "+usage), strings.TrimSpace(description))
		printFlags(w, fs)
		fmt.Fprintf(w, "\nExample:\n%s\n", strings.Trim(example, "\n"))
	}
	return fs
}

// parseFlags parses args; ok false means return code (0 for --help).
func parseFlags(e *env, fs *flag.FlagSet, args []string) (code int, ok bool) {
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(e.stdout)
		fs.Usage()
		return exitOK, false
	case err != nil:
		fmt.Fprintf(e.stderr, "%s: %v\n\n", fs.Name(), err)
		fs.SetOutput(e.stderr)
		fs.Usage()
		return exitUsage, false
	case fs.NArg() > 0:
		fmt.Fprintf(e.stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return exitOK, true
}

// printFlags is flag.PrintDefaults with GNU-style "--" names.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	n := 0
	fs.VisitAll(func(*flag.Flag) { n++ })
	if n == 0 {
		fmt.Fprintln(w, "  (none)")
		return
	}
	fs.VisitAll(func(f *flag.Flag) {
		typ, usage := flag.UnquoteUsage(f)
		line := "  --" + f.Name
		if typ != "" {
			line += " " + typ
		}
		fmt.Fprintf(w, "%s\n    \t%s", line, strings.ReplaceAll(usage, "\n", "\n    \t"))
		if f.DefValue != "" && f.DefValue != "false" && f.DefValue != "0" && f.DefValue != "0s" {
			if typ == "string" {
				fmt.Fprintf(w, " (default %q)", f.DefValue)
			} else {
				fmt.Fprintf(w, " (default %s)", f.DefValue)
			}
		}
		fmt.Fprintln(w)
	})
}

func usageError(e *env, fs *flag.FlagSet, format string, a ...any) int {
	fmt.Fprintf(e.stderr, "%s: %s\n", fs.Name(), fmt.Sprintf(format, a...))
	fmt.Fprintf(e.stderr, "Run '%s --help' for usage.\n", fs.Name())
	return exitUsage
}
