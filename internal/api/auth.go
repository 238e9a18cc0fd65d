package api

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
)

// Positive lookups of API keys are cached so that a busy client does not
// cost a store query per request. A deleted key stays valid on other nodes
// for at most authCacheTTL; this node forgets it at once.
const (
	authCacheTTL  = 30 * time.Second
	authCacheSize = 1024
)

type keyIDCtx struct{}

// authenticate checks the request's bearer key (RFC 6750 §2.1) and returns
// the key's ID. The key itself is never logged.
func (s *server) authenticate(r *http.Request) (string, error) {
	h := r.Header.Get("Authorization")
	scheme, key, ok := strings.Cut(h, " ")
	if h == "" {
		return "", fmt.Errorf("%w: missing Authorization: Bearer header", errUnauthorized)
	}
	key = strings.TrimSpace(key)
	if !ok || !strings.EqualFold(scheme, "Bearer") || key == "" {
		return "", fmt.Errorf("%w: Authorization header must be \"Bearer <api key>\"", errUnauthorized)
	}
	hash := apikey.Hash(key)
	now := s.o.Now()
	if id, ok := s.auth.get(hash, now); ok {
		return id, nil
	}
	k, err := s.o.Keys.FindAPIKey(r.Context(), hash)
	if errors.Is(err, apikey.ErrNotFound) {
		return "", fmt.Errorf("%w: unknown API key", errUnauthorized)
	}
	if err != nil {
		return "", fmt.Errorf("find api key: %w", err)
	}
	s.auth.put(hash, k.ID, now)
	return k.ID, nil
}

// requestKeyID returns the ID of the API key that authenticated ctx's request.
func requestKeyID(ctx context.Context) string {
	id, _ := ctx.Value(keyIDCtx{}).(string)
	return id
}

// authCache is a small bounded map from key hash to key ID. Safe for
// concurrent use.
type authCache struct {
	ttl time.Duration
	max int

	mu      sync.Mutex
	entries map[[sha256.Size]byte]authEntry // guarded by mu
}

type authEntry struct {
	id      string
	expires time.Time
}

func newAuthCache(max int, ttl time.Duration) *authCache {
	return &authCache{ttl: ttl, max: max, entries: make(map[[sha256.Size]byte]authEntry)}
}

func (c *authCache) get(hash []byte, now time.Time) (string, bool) {
	k := [sha256.Size]byte(hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[k]
	if !ok {
		return "", false
	}
	if !now.Before(e.expires) {
		delete(c.entries, k)
		return "", false
	}
	return e.id, true
}

func (c *authCache) put(hash []byte, id string, now time.Time) {
	k := [sha256.Size]byte(hash)
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.entries) >= c.max {
		for h, e := range c.entries {
			if !now.Before(e.expires) {
				delete(c.entries, h)
			}
		}
		if len(c.entries) >= c.max {
			// Still full of live entries: start over rather than track
			// recency; the cost is one store query per key.
			clear(c.entries)
		}
	}
	c.entries[k] = authEntry{id: id, expires: now.Add(c.ttl)}
}

// forget drops every cached entry for the key ID (after it was deleted).
func (c *authCache) forget(id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for h, e := range c.entries {
		if e.id == id {
			delete(c.entries, h)
		}
	}
}
