package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAPIKeyCommand(t *testing.T) {
	for _, k := range []string{"COAPGATE_CONFIG", "COAPGATE_DATA_DIR", "COAPGATE_STORE_SQLITE_PATH"} {
		t.Setenv(k, "") // restored after the test
		os.Unsetenv(k)
	}
	run := func(args ...string) runResult {
		var out, errb bytes.Buffer
		code := cmdAPIKey(args, &out, &errb)
		return runResult{code, out.String(), errb.String()}
	}
	dir := t.TempDir()

	// --help shows the command's own flags, not every serve setting.
	r := run("create", "--help").want(t, 0)
	for _, want := range []string{"-name", "-data-dir", "-config", "Example:"} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("create --help lacks %q:\n%s", want, r.stdout)
		}
	}
	if strings.Contains(r.stdout, "coap.listen") || strings.Contains(r.stdout, "dtls.") {
		t.Errorf("create --help shows serve settings:\n%s", r.stdout)
	}
	if r := run("list", "--help").want(t, 0); strings.Contains(r.stdout, "-name") {
		t.Errorf("list --help shows --name:\n%s", r.stdout)
	}

	// Outside a data directory: a clear error, and no database is created.
	missing := filepath.Join(dir, "nowhere")
	for _, sub := range []string{"list", "create"} {
		r = run(sub, "--data-dir", missing).want(t, 1)
		if !strings.Contains(r.stderr, "no gateway database at "+filepath.Join(missing, "coapgate.db")) {
			t.Errorf("%s outside a data dir: %q", sub, r.stderr)
		}
	}
	if _, err := os.Stat(missing); err == nil {
		t.Error("a data directory was created")
	}
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	if r = run("list", "--data-dir", data).want(t, 1); !strings.Contains(r.stderr, "no gateway database") {
		t.Errorf("list in an empty dir: %q", r.stderr)
	}

	// create (provisions the database), list, delete, delete again.
	r = run("create", "--data-dir", data, "--name", "ops").want(t, 0)
	if !strings.HasPrefix(r.stdout, "cgk_") {
		t.Fatalf("create printed %q", r.stdout)
	}
	r = run("list", "--data_dir", data).want(t, 0) // the YAML spelling works too
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 2 || !strings.Contains(lines[1], "ops") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	id := strings.Fields(lines[1])[0]
	run("delete", "--data-dir", data, id).want(t, 0)
	if r = run("list", "--data-dir", data).want(t, 0); strings.Contains(r.stdout, id) {
		t.Fatalf("key %s still listed after delete:\n%s", id, r.stdout)
	}
	if r = run("delete", "--data-dir", data, id).want(t, 1); !strings.Contains(r.stderr, "no API key with id") {
		t.Errorf("second delete: %q", r.stderr)
	}
	run("delete", "--data-dir", data).want(t, 2)
	run("rotate").want(t, 2)
}
