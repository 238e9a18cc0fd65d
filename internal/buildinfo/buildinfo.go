// Package buildinfo describes the running binary: the version stamped at
// release build time (or the module version the Go toolchain recorded), the
// VCS revision and the Go version. coapgate and coapdev print the same
// information through it.
package buildinfo

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
)

// version is stamped by the release build:
//
//	go build -ldflags "-X github.com/coapgate/coapgate/internal/buildinfo.version=v1.2.3"
//
// and revision likewise (…buildinfo.revision=<commit>) where the toolchain
// cannot read the VCS itself (builds with -buildvcs=false, git worktrees,
// source archives).
var version, revision string

// Info is what a binary knows about its own build.
type Info struct {
	Version   string // stamped version, else the module version, else "devel"
	Revision  string // VCS revision (commit), "" when not built from a checkout
	Time      string // VCS commit time (RFC 3339), "" when unknown
	Modified  bool   // built from a working tree with uncommitted changes
	GoVersion string // toolchain that built the binary
	Platform  string // GOOS/GOARCH
}

// Get reads the build information of the running binary.
func Get() Info {
	in := fromBuildInfo(version, readBuildInfo())
	if in.Revision == "" {
		in.Revision = revision
	}
	return in
}

func readBuildInfo() *debug.BuildInfo {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return nil
	}
	return bi
}

func fromBuildInfo(stamped string, bi *debug.BuildInfo) Info {
	in := Info{Version: stamped, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
	if bi == nil {
		if in.Version == "" {
			in.Version = "devel"
		}
		return in
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	if in.Version == "" && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		in.Version = bi.Main.Version
	}
	if in.Version == "" {
		in.Version = "devel"
	}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Revision = s.Value
		case "vcs.time":
			in.Time = s.Value
		case "vcs.modified":
			in.Modified = s.Value == "true"
		}
	}
	return in
}

// Version is the version alone (for logs and the API).
func Version() string { return Get().Version }

// String renders the information on one line, prefixed with program:
//
//	coapgate v1.2.3 (revision 0123abcd…, 2026-12-01T10:00:00Z; go1.26.8 linux/amd64)
func (in Info) String(program string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s (", program, in.Version)
	if in.Revision != "" {
		fmt.Fprintf(&b, "revision %s", in.Revision)
		if in.Modified {
			b.WriteString("+modified")
		}
		if in.Time != "" {
			fmt.Fprintf(&b, ", %s", in.Time)
		}
		b.WriteString("; ")
	} else {
		b.WriteString("revision unknown; ")
	}
	fmt.Fprintf(&b, "%s %s)", in.GoVersion, in.Platform)
	return b.String()
}
