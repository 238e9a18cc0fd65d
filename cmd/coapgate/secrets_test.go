package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/coapgate/coapgate/internal/pgstore"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/secretbox"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

func TestPrintConfigRedactsStoreSecrets(t *testing.T) {
	for _, k := range []string{"COAPGATE_STORE_POSTGRES_URL", "COAPGATE_STORE_SECRET_KEYS", "COAPGATE_STORE_DRIVER"} {
		t.Setenv(k, "")
	}
	t.Setenv("COAPGATE_STORE_DRIVER", "postgres")
	t.Setenv("COAPGATE_STORE_POSTGRES_URL", "postgres://u:hunter2pw@db:5432/x")
	t.Setenv("COAPGATE_STORE_SECRET_KEYS", secretbox.Line(make([]byte, 32)))
	var out, errb bytes.Buffer
	if code := run([]string{"serve", "--print-config"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d: %s", code, errb.String())
	}
	if strings.Contains(out.String(), "hunter2pw") || strings.Contains(out.String(), "AAAAAAAA") {
		t.Fatalf("--print-config shows a store secret:\n%s", out.String())
	}
	if !regexp.MustCompile(`postgres_url: .?\[REDACTED\]`).MatchString(out.String()) {
		t.Fatalf("--print-config does not show postgres_url redacted:\n%s", out.String())
	}
}

// TestSecretsRotateCommand: rotate adds a key and re-encrypts; the store
// then opens with the new key alone.
func TestSecretsRotateCommand(t *testing.T) {
	dir := t.TempDir()
	for _, k := range []string{"COAPGATE_STORE_SECRET_KEYS", "COAPGATE_STORE_DRIVER", "COAPGATE_STORE_SECRET_KEY_FILE", "COAPGATE_STORE_SQLITE_PATH", "COAPGATE_CONFIG"} {
		t.Setenv(k, "") // restored at the end
		os.Unsetenv(k)
	}
	ctx := context.Background()
	keyFile := filepath.Join(dir, "secret.key")
	keys, _, err := secretbox.LoadFile(keyFile, true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlitestore.Open(ctx, filepath.Join(dir, "coapgate.db"), sqlitestore.WithKeyring(keys))
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateProduct(ctx, registry.Product{ProductKey: "p", ProductSecret: "productsecret1", DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	if err := st.CreateDevice(ctx, registry.Device{ProductKey: "p", DeviceKey: "d", DeviceSecret: "devicesecret1"}); err != nil {
		t.Fatal(err)
	}
	st.Close()

	var out, errb bytes.Buffer
	if code := run([]string{"secrets", "rotate", "--data-dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "re-encrypted 2 stored secrets") {
		t.Fatalf("rotate output %q", out.String())
	}
	text, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	newest, err := secretbox.Parse([]byte(lines[len(lines)-1]))
	if err != nil || newest.ActiveID() == keys.ActiveID() {
		t.Fatalf("newest key %v, %v", newest, err)
	}
	st, err = sqlitestore.Open(ctx, filepath.Join(dir, "coapgate.db"), sqlitestore.WithKeyring(newest))
	if err != nil {
		t.Fatalf("open with the new key alone: %v", err)
	}
	defer st.Close()
	if d, err := st.GetDevice(ctx, "p", "d"); err != nil || d.DeviceSecret.Reveal() != "devicesecret1" {
		t.Fatalf("device after rotate %v, %v", d.DeviceSecret.Reveal(), err)
	}
	out.Reset()
	if code := run([]string{"secrets", "reseal", "--data-dir", dir}, &out, &errb); code != 0 || !strings.Contains(out.String(), "re-encrypted 0") {
		t.Fatalf("reseal after rotate: %d %q %s", code, out.String(), errb.String())
	}
}

// TestSecretsRotateCommandPostgres: the same on PostgreSQL, through the
// configuration (driver and URL from the environment).
func TestSecretsRotateCommandPostgres(t *testing.T) {
	pgURL := pgtest.Schema(t)
	dir := t.TempDir()
	for _, k := range []string{"COAPGATE_STORE_SECRET_KEYS", "COAPGATE_STORE_SECRET_KEY_FILE", "COAPGATE_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("COAPGATE_STORE_DRIVER", "postgres")
	t.Setenv("COAPGATE_STORE_POSTGRES_URL", pgURL)
	ctx := context.Background()
	keys, _, err := secretbox.LoadFile(filepath.Join(dir, "secret.key"), true)
	if err != nil {
		t.Fatal(err)
	}
	st, err := pgstore.Open(ctx, pgstore.Options{URL: pgURL, Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateProduct(ctx, registry.Product{ProductKey: "p", ProductSecret: "productsecret1", DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	var out, errb bytes.Buffer
	if code := run([]string{"secrets", "rotate", "--data-dir", dir}, &out, &errb); code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errb.String())
	}
	if !strings.Contains(out.String(), "re-encrypted 1 stored secrets") {
		t.Fatalf("rotate output %q", out.String())
	}
	if strings.Contains(out.String()+errb.String(), pgURL) {
		t.Fatal("the command printed the PostgreSQL URL")
	}
	// The old key alone no longer opens the store.
	if _, err := pgstore.Open(ctx, pgstore.Options{URL: pgURL, Keys: keys}); !errors.Is(err, pgstore.ErrWrongKey) {
		t.Fatalf("open with the old key after rotate: %v, want ErrWrongKey", err)
	}
}
