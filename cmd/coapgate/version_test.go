package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/buildinfo"
)

func TestVersionCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if want := buildinfo.Get().String("coapgate") + "\n"; out.String() != want {
		t.Fatalf("version printed %q, want %q", out.String(), want)
	}
	out.Reset()
	errb.Reset()
	if code := run([]string{"version", "--help"}, &out, &errb); code != 0 || !strings.Contains(errb.String(), "VCS revision") {
		t.Fatalf("version --help: exit %d, %q", code, errb.String())
	}
}
