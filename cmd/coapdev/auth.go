package main

import (
	"context"
	"fmt"
	"strings"
)

func runAuth(ctx context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "auth", "[flags]", `
Authenticate as a device with POST /auth (signed with the device secret) and
print the token the gateway returns. Exit status 1 if the gateway refuses:
4.00 bad payload, 4.01 bad signature or unknown device, 4.03 disabled device.
With --mode symmetric the request carries seq (port 5682 by default) and a
second line prints the session: random=<hex> seqOffset=<n>.`, `
  COAPDEV_SECRET=t9GmMf2jb3LgWfXBaZD2r3aJrfVWBv56 \
    coapdev auth --server 127.0.0.1:5683 --product a1MZxOdcBnO --device test_01`)
	d := addDeviceFlags(fs)
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	d.applyEnv(e.getenv)
	if d.dtls {
		return usageError(e, fs, "--dtls needs no auth: the DTLS-PSK session is the device (use publish --dtls)")
	}
	if msg := d.resolve(fs); msg != "" {
		return usageError(e, fs, "%s", msg)
	}
	if m := d.missing(); len(m) > 0 {
		return usageError(e, fs, "missing %s", strings.Join(m, ", "))
	}
	c, err := d.dial(ctx, true)
	if err != nil {
		return dialError(e, "auth", err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	token, err := c.Auth(ctx)
	if err != nil {
		fmt.Fprintf(e.stderr, "coapdev auth: %v\n", err)
		return exitError
	}
	fmt.Fprintln(e.stdout, token)
	if ss, ok := c.SymmetricSession(); ok {
		fmt.Fprintf(e.stdout, "random=%s seqOffset=%d\n", ss.Random, ss.SeqOffset)
	}
	return exitOK
}
