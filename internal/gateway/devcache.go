package gateway

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

// Registry is the part of the registry the gateway reads on the request path.
type Registry interface {
	GetProduct(ctx context.Context, productKey string) (registry.Product, error)
	GetDevice(ctx context.Context, productKey, deviceKey string) (registry.Device, error)
}

// identity is a device with its product, as the request path needs them.
type identity struct {
	dev  registry.Device
	prod registry.Product
}

type cacheEntry struct {
	id      identity
	err     error // registry.ErrNotFound cached briefly against floods
	expires time.Time
}

// devCache caches device+product lookups for ttl (not-found for at most a
// second), so auth and publish cost no database round trip. Writers through
// the management API call Invalidate; other nodes converge within ttl.
type devCache struct {
	reg Registry
	ttl time.Duration
	max int

	mu sync.Mutex
	m  map[[2]string]cacheEntry // guarded by mu
}

func newDevCache(reg Registry, ttl time.Duration, max int) *devCache {
	return &devCache{reg: reg, ttl: ttl, max: max, m: make(map[[2]string]cacheEntry)}
}

// get returns the device and its product; registry.ErrNotFound when either
// is missing.
func (c *devCache) get(ctx context.Context, pk, dk string, now time.Time) (identity, error) {
	k := [2]string{pk, dk}
	if c.ttl > 0 {
		c.mu.Lock()
		e, ok := c.m[k]
		c.mu.Unlock()
		if ok && now.Before(e.expires) {
			return e.id, e.err
		}
	}
	id, err := c.load(ctx, pk, dk)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return identity{}, err // store trouble: never cached
	}
	if c.ttl > 0 {
		ttl := c.ttl
		if err != nil {
			ttl = min(ttl, time.Second)
		}
		c.mu.Lock()
		if len(c.m) >= c.max {
			clear(c.m) // crude but bounded; a full cache refills within ttl
		}
		c.m[k] = cacheEntry{id: id, err: err, expires: now.Add(ttl)}
		c.mu.Unlock()
	}
	return id, err
}

func (c *devCache) load(ctx context.Context, pk, dk string) (identity, error) {
	prod, err := c.reg.GetProduct(ctx, pk)
	if err != nil {
		return identity{}, err
	}
	dev, err := c.reg.GetDevice(ctx, pk, dk)
	if err != nil {
		return identity{}, err
	}
	return identity{dev: dev, prod: prod}, nil
}

// Invalidate drops a device (dk != "") or every device of a product.
func (c *devCache) Invalidate(pk, dk string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if dk != "" {
		delete(c.m, [2]string{pk, dk})
		return
	}
	for k := range c.m {
		if k[0] == pk {
			delete(c.m, k)
		}
	}
}
