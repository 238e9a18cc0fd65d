package main

import (
	"context"
	"fmt"

	"github.com/coapgate/coapgate/internal/buildinfo"
)

func runVersion(_ context.Context, e *env, args []string) int {
	fs := newFlagSet(e, "version", "", "Print the build information of coapdev: version, VCS revision, Go version and platform\n(the same as `coapgate version` prints for a build of the same tree).", "  coapdev version")
	if code, ok := parseFlags(e, fs, args); !ok {
		return code
	}
	fmt.Fprintln(e.stdout, buildinfo.Get().String("coapdev"))
	return exitOK
}
