// Package apikey issues and checks bearer keys for the management API.
// Only a SHA-256 hash of each key is stored; the key itself is shown once.
package apikey

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"time"
)

// ErrNotFound means no key has that hash or ID.
var ErrNotFound = errors.New("apikey: not found")

// Prefix starts every key, so leaked keys are easy to grep for.
const Prefix = "cgk_"

// Key is a stored API key (without its secret).
type Key struct {
	ID        string
	Name      string
	Hash      []byte // SHA-256 of the full key string
	CreatedAt time.Time
}

// Store persists API keys. Safe for concurrent use.
type Store interface {
	CreateAPIKey(ctx context.Context, k Key) error
	// FindAPIKey returns the key with that hash or ErrNotFound.
	FindAPIKey(ctx context.Context, hash []byte) (Key, error)
	ListAPIKeys(ctx context.Context) ([]Key, error)
	DeleteAPIKey(ctx context.Context, id string) error
}

// New generates a key: the returned secret is shown to the user once; the
// returned Key (with hash) is what gets stored.
func New(name string, now time.Time) (secret string, k Key, err error) {
	var idb [6]byte
	var sb [24]byte
	if _, err := rand.Read(idb[:]); err != nil {
		return "", Key{}, err
	}
	if _, err := rand.Read(sb[:]); err != nil {
		return "", Key{}, err
	}
	id := hex.EncodeToString(idb[:])
	secret = Prefix + id + "_" + base64.RawURLEncoding.EncodeToString(sb[:])
	return secret, Key{ID: id, Name: name, Hash: Hash(secret), CreatedAt: now.UTC()}, nil
}

// Hash returns the stored form of a key.
func Hash(secret string) []byte {
	h := sha256.Sum256([]byte(secret))
	return h[:]
}
