// Package apikeytest is the conformance suite every apikey.Store adapter
// must pass: call Run from the adapter's tests with a constructor that
// returns a fresh, empty store.
package apikeytest

import (
	"bytes"
	"context"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
)

// Run runs the conformance suite. newStore must return a new empty store
// for each call and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) apikey.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s apikey.Store)
	}{
		{"CreateFind", testCreateFind},
		{"NotFound", testNotFound},
		{"List", testList},
		{"Delete", testDelete},
		{"Duplicate", testDuplicate},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// base is a fixed, millisecond-precise instant in a non-UTC zone.
var base = time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.FixedZone("UTC+9", 9*3600))

func newKey(t *testing.T, name string, at time.Time) (string, apikey.Key) {
	t.Helper()
	secret, k, err := apikey.New(name, at)
	if err != nil {
		t.Fatalf("apikey.New: %v", err)
	}
	return secret, k
}

func mustCreate(t *testing.T, s apikey.Store, k apikey.Key) {
	t.Helper()
	if err := s.CreateAPIKey(context.Background(), k); err != nil {
		t.Fatalf("CreateAPIKey(%s): %v", k.ID, err)
	}
}

func checkKey(t *testing.T, got, want apikey.Key) {
	t.Helper()
	if got.ID != want.ID || got.Name != want.Name || !bytes.Equal(got.Hash, want.Hash) {
		t.Errorf("key = %+v, want %+v", got, want)
	}
	if got.CreatedAt.Location() != time.UTC ||
		!got.CreatedAt.Truncate(time.Millisecond).Equal(want.CreatedAt.Truncate(time.Millisecond)) {
		t.Errorf("key %s CreatedAt = %v, want %v in UTC", want.ID, got.CreatedAt, want.CreatedAt)
	}
}

func testCreateFind(t *testing.T, s apikey.Store) {
	ctx := context.Background()
	tests := []struct {
		name    string
		keyName string
		at      time.Time
	}{
		{"plain", "ci", base},
		{"unicode name", "Zoë's laptop 🔑", base.Add(time.Hour)},
		{"empty name", "", base.Add(2 * time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			secret, k := newKey(t, tt.keyName, tt.at)
			k.CreatedAt = tt.at // keep the non-UTC zone: stores keep the instant
			mustCreate(t, s, k)
			got, err := s.FindAPIKey(ctx, apikey.Hash(secret))
			if err != nil {
				t.Fatalf("FindAPIKey: %v", err)
			}
			checkKey(t, got, k)
		})
	}
}

func testNotFound(t *testing.T, s apikey.Store) {
	ctx := context.Background()
	secret, k := newKey(t, "a", base)
	mustCreate(t, s, k)
	tests := []struct {
		name string
		call func() error
	}{
		{"find unknown hash", func() error { _, err := s.FindAPIKey(ctx, apikey.Hash(secret+"x")); return err }},
		{"find empty hash", func() error { _, err := s.FindAPIKey(ctx, nil); return err }},
		{"find by truncated hash", func() error { _, err := s.FindAPIKey(ctx, k.Hash[:16]); return err }},
		{"delete unknown id", func() error { return s.DeleteAPIKey(ctx, "nope") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, apikey.ErrNotFound) {
				t.Fatalf("err = %v, want ErrNotFound", err)
			}
		})
	}
}

func testList(t *testing.T, s apikey.Store) {
	ctx := context.Background()
	got, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys on empty store: %v", err)
	}
	if len(got) != 0 {
		t.Fatalf("ListAPIKeys on empty store = %d keys", len(got))
	}
	want := map[string]apikey.Key{}
	for i, name := range []string{"a", "b", "c"} {
		_, k := newKey(t, name, base.Add(time.Duration(i)*time.Minute))
		mustCreate(t, s, k)
		want[k.ID] = k
	}
	got, err = s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("ListAPIKeys = %d keys, want %d", len(got), len(want))
	}
	sort.Slice(got, func(i, j int) bool { return got[i].ID < got[j].ID })
	for _, k := range got {
		w, ok := want[k.ID]
		if !ok {
			t.Fatalf("ListAPIKeys returned unknown key %s", k.ID)
		}
		checkKey(t, k, w)
	}
}

func testDelete(t *testing.T, s apikey.Store) {
	ctx := context.Background()
	secret1, k1 := newKey(t, "one", base)
	secret2, k2 := newKey(t, "two", base)
	mustCreate(t, s, k1)
	mustCreate(t, s, k2)
	if err := s.DeleteAPIKey(ctx, k1.ID); err != nil {
		t.Fatalf("DeleteAPIKey: %v", err)
	}
	if _, err := s.FindAPIKey(ctx, apikey.Hash(secret1)); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("FindAPIKey after delete = %v, want ErrNotFound", err)
	}
	if err := s.DeleteAPIKey(ctx, k1.ID); !errors.Is(err, apikey.ErrNotFound) {
		t.Fatalf("second DeleteAPIKey = %v, want ErrNotFound", err)
	}
	if _, err := s.FindAPIKey(ctx, apikey.Hash(secret2)); err != nil {
		t.Fatalf("FindAPIKey of the other key: %v", err)
	}
	keys, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatalf("ListAPIKeys: %v", err)
	}
	if len(keys) != 1 || keys[0].ID != k2.ID {
		t.Fatalf("ListAPIKeys after delete = %+v, want only %s", keys, k2.ID)
	}
}

// testDuplicate checks that a second key with the same ID or the same hash
// is refused (apikey defines no sentinel for it) and the first is kept.
func testDuplicate(t *testing.T, s apikey.Store) {
	ctx := context.Background()
	secret, k := newKey(t, "orig", base)
	mustCreate(t, s, k)
	_, other := newKey(t, "other", base)
	tests := []struct {
		name string
		k    apikey.Key
	}{
		{"same id", apikey.Key{ID: k.ID, Name: "dup", Hash: other.Hash, CreatedAt: base}},
		{"same hash", apikey.Key{ID: other.ID, Name: "dup", Hash: k.Hash, CreatedAt: base}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := s.CreateAPIKey(ctx, tt.k); err == nil {
				t.Fatal("duplicate CreateAPIKey succeeded")
			}
			got, err := s.FindAPIKey(ctx, apikey.Hash(secret))
			if err != nil {
				t.Fatalf("FindAPIKey: %v", err)
			}
			checkKey(t, got, k)
		})
	}
}
