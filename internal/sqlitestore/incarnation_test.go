package sqlitestore

import (
	"context"
	"database/sql"
	"path/filepath"
	"testing"
)

// TestMigrationGivesIncarnations: devices created before migration 0006
// get a non-zero incarnation each, different from one another.
func TestMigrationGivesIncarnations(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "coapgate.db")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	steps, err := loadMigrations()
	if err != nil {
		t.Fatal(err)
	}
	prev := 0
	for _, st := range steps {
		if st.version >= 6 {
			break
		}
		err := applyStep(ctx, db, nil, st, prev)
		prev = st.version
		if err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
	}
	for _, q := range []string{
		`INSERT INTO products VALUES ('p1', 'ps', 'n', 0, 'json', 0, 0)`,
		`INSERT INTO devices (product_key, device_key, device_secret, asset_id, enabled, generation, created_at) VALUES ('p1', 'd1', 's', '', 1, 0, 0)`,
		`INSERT INTO devices (product_key, device_key, device_secret, asset_id, enabled, generation, created_at) VALUES ('p1', 'd2', 's', '', 1, 0, 0)`,
	} {
		if _, err := db.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	db.Close()
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d1, err := s.GetDevice(ctx, "p1", "d1")
	if err != nil {
		t.Fatal(err)
	}
	d2, err := s.GetDevice(ctx, "p1", "d2")
	if err != nil {
		t.Fatal(err)
	}
	if d1.Incarnation == 0 || d2.Incarnation == 0 || d1.Incarnation == d2.Incarnation {
		t.Fatalf("incarnations after migration: %#x, %#x", d1.Incarnation, d2.Incarnation)
	}
}
