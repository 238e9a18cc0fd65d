package buildinfo

import (
	"runtime/debug"
	"strings"
	"testing"
)

func TestFromBuildInfo(t *testing.T) {
	bi := &debug.BuildInfo{
		GoVersion: "go1.99.1",
		Main:      debug.Module{Path: "github.com/coapgate/coapgate", Version: "v0.3.0"},
		Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "0123456789abcdef"},
			{Key: "vcs.time", Value: "2026-12-01T10:00:00Z"},
			{Key: "vcs.modified", Value: "true"},
		},
	}
	for _, tt := range []struct {
		name, stamped string
		bi            *debug.BuildInfo
		want          string
	}{
		{"stamped wins", "v1.2.3", bi, "x v1.2.3 (revision 0123456789abcdef+modified, 2026-12-01T10:00:00Z; go1.99.1 "},
		{"module version", "", bi, "x v0.3.0 (revision 0123456789abcdef+modified"},
		{"devel without build info", "", nil, "x devel (revision unknown; go"},
		{"devel module", "", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}}, "x devel (revision unknown; "},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := fromBuildInfo(tt.stamped, tt.bi).String("x"); !strings.HasPrefix(got, tt.want) {
				t.Errorf("got %q, want prefix %q", got, tt.want)
			}
		})
	}
}
