package sqlitestore

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/secretbox"
)

const (
	plainProductSecret = "PRODUCTSECRETplain0001"
	plainDeviceSecret  = "DEVICESECRETplain00002"
	plainHookSecret    = "HOOKSECRETplain0000003"
	plainBrokerPass    = "BROKERPASSplain0000004"
)

var plainSecrets = []string{plainProductSecret, plainDeviceSecret, plainHookSecret, plainBrokerPass}

// seedSecrets writes one product, device and rule holding every plain
// secret, through the store.
func seedSecrets(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	if err := s.CreateProduct(ctx, registry.Product{ProductKey: "p1", ProductSecret: plainProductSecret, DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, registry.Device{ProductKey: "p1", DeviceKey: "d1", DeviceSecret: plainDeviceSecret, Enabled: true}); err != nil {
		t.Fatal(err)
	}
	r := forward.Rule{ID: "r1", Name: "r", Enabled: true, TopicFilter: "#", MaxAttempts: 3, Actions: []forward.Action{
		{Type: "webhook", URL: "http://127.0.0.1:1/hook", Secret: plainHookSecret},
		{Type: "mqtt", URL: "tcp://u:" + plainBrokerPass + "@127.0.0.1:1883", Topic: "t", Password: plainBrokerPass},
	}}
	if err := s.CreateRule(ctx, r, 0); err != nil {
		t.Fatal(err)
	}
}

// checkSecretsReadBack asserts the store returns the plain secrets.
func checkSecretsReadBack(t *testing.T, s *Store) {
	t.Helper()
	ctx := context.Background()
	p, err := s.GetProduct(ctx, "p1")
	if err != nil || p.ProductSecret.Reveal() != plainProductSecret {
		t.Fatalf("GetProduct = %v, %v; want the plain secret back", p.ProductSecret.Reveal(), err)
	}
	d, err := s.GetDevice(ctx, "p1", "d1")
	if err != nil || d.DeviceSecret.Reveal() != plainDeviceSecret {
		t.Fatalf("GetDevice = %v, %v; want the plain secret back", d.DeviceSecret.Reveal(), err)
	}
	r, err := s.GetRule(ctx, "r1")
	if err != nil || r.Actions[0].Secret != plainHookSecret || r.Actions[1].Password != plainBrokerPass {
		t.Fatalf("GetRule = %+v, %v; want the plain secrets back", r.Actions, err)
	}
}

// checkNoPlaintext asserts that no file of the database (main, -wal, -shm)
// contains any plain secret.
func checkNoPlaintext(t *testing.T, path string) {
	t.Helper()
	n := 0
	for _, suffix := range []string{"", "-wal", "-shm"} {
		b, err := os.ReadFile(path + suffix)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		n += len(b)
		for _, sec := range plainSecrets {
			if bytes.Contains(b, []byte(sec)) {
				t.Errorf("%s%s contains the plain secret %q", filepath.Base(path), suffix, sec)
			}
		}
	}
	if n == 0 {
		t.Fatal("no database bytes read")
	}
}

func TestSecretsSealedOnDisk(t *testing.T) {
	s, path := openTemp(t)
	seedSecrets(t, s)
	checkSecretsReadBack(t, s)
	checkNoPlaintext(t, path)
	// The rule's topic filter and the device's asset id are not secret and
	// stay readable; the sealed values carry the format prefix.
	var v string
	if err := s.reader.QueryRow(`SELECT device_secret FROM devices`).Scan(&v); err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(v, secretbox.Prefix+s.box.ActiveID()+":") {
		t.Fatalf("stored device secret %q is not sealed with the active key", v)
	}
}

func TestSecretsBoundToRow(t *testing.T) {
	s, _ := openTemp(t)
	seedSecrets(t, s)
	ctx := context.Background()
	if err := s.CreateDevice(ctx, registry.Device{ProductKey: "p1", DeviceKey: "d2", DeviceSecret: "othersecret", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	// Copy d1's sealed secret into d2's row: it must not open there.
	if _, err := s.writer.Exec(`UPDATE devices SET device_secret = (SELECT device_secret FROM devices WHERE device_key = 'd1') WHERE device_key = 'd2'`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetDevice(ctx, "p1", "d2"); !errors.Is(err, secretbox.ErrOpen) {
		t.Fatalf("GetDevice with a secret moved from another row = %v, want ErrOpen", err)
	}
}

func TestFilePermissions(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	dir := t.TempDir()
	path := filepath.Join(dir, "coapgate.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	seedSecrets(t, s) // the WAL exists and has content
	for _, name := range []string{"coapgate.db", "coapgate.db-wal", "coapgate.db-shm", "secret.key"} {
		st, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Errorf("%s has mode %04o, want 0600", name, st.Mode().Perm())
		}
	}
}

func TestFilePermissionsTightened(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "coapgate.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err = Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if st, _ := os.Stat(path); st.Mode().Perm() != 0o600 {
		t.Fatalf("reopened database has mode %04o, want 0600", st.Mode().Perm())
	}
}

// TestMigrationSealsPlaintext: plaintext secrets as versions before
// migration 0008 stored them are sealed by the step's Go part.
func TestMigrationSealsPlaintext(t *testing.T) {
	ctx := context.Background()
	if goSteps[8] == nil {
		t.Fatal("migration 0008 has no Go part")
	}
	s, path := openTemp(t)
	seedSecrets(t, s)
	// Put the plaintext back, as an older version stored it.
	actions := `[{"type":"webhook","url":"http://127.0.0.1:1/hook","secret":"` + plainHookSecret + `"},` +
		`{"type":"mqtt","url":"tcp://u:` + plainBrokerPass + `@127.0.0.1:1883","topic":"t","password":"` + plainBrokerPass + `"}]`
	for _, q := range []struct {
		sql string
		arg string
	}{
		{`UPDATE products SET product_secret = ?`, plainProductSecret},
		{`UPDATE devices SET device_secret = ?`, plainDeviceSecret},
		{`UPDATE rules SET actions = ?`, actions},
	} {
		if _, err := s.writer.ExecContext(ctx, q.sql, q.arg); err != nil {
			t.Fatal(err)
		}
	}
	tx, err := s.writer.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := goSteps[8](ctx, tx, s); err != nil {
		tx.Rollback()
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	checkSecretsReadBack(t, s)
	// Force the WAL into the main file and rewrite it, so the check covers
	// what stays on disk (the plaintext pages must be gone).
	if _, err := s.writer.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.Exec(`VACUUM`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.writer.Exec(`PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	checkNoPlaintext(t, path)
}

func TestRotation(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "coapgate.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	seedSecrets(t, s)
	oldID := s.box.ActiveID()
	s.Close()

	keys, err := secretbox.AddKey(DefaultKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	if keys.ActiveID() == oldID || len(keys.IDs()) != 2 {
		t.Fatalf("after AddKey: ids %v, active %s", keys.IDs(), keys.ActiveID())
	}
	s, err = Open(ctx, path, WithKeyring(keys))
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// Old values still open before the reseal.
	checkSecretsReadBack(t, s)
	n, err := s.Reseal(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 {
		t.Fatalf("Reseal rewrote %d values, want 3", n)
	}
	if n, err := s.Reseal(ctx); err != nil || n != 0 {
		t.Fatalf("second Reseal = %d, %v; want 0", n, err)
	}
	checkSecretsReadBack(t, s)
	for _, c := range sealedColumns {
		var v string
		if err := s.reader.QueryRow(`SELECT ` + c.column + ` FROM ` + c.table).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if secretbox.SealedWith(v) != keys.ActiveID() {
			t.Errorf("%s.%s sealed with %q after Reseal, want %s", c.table, c.column, secretbox.SealedWith(v), keys.ActiveID())
		}
	}
	s.Close()
	// The new key alone (the old one dropped from the file) now opens
	// everything.
	text, err := os.ReadFile(DefaultKeyFile(path))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(string(text)), "\n")
	only, err := secretbox.Parse([]byte(lines[len(lines)-1]))
	if err != nil {
		t.Fatal(err)
	}
	s, err = Open(ctx, path, WithKeyring(only))
	if err != nil {
		t.Fatalf("Open with only the new key: %v", err)
	}
	checkSecretsReadBack(t, s)
}

func TestWrongKeyRefused(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	seedSecrets(t, s)
	other, err := secretbox.New(secretbox.GenerateKey())
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Open(ctx, path, WithKeyring(other))
	if !errors.Is(err, ErrWrongKey) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open with another key = %v, want ErrWrongKey", err)
	}
}
