package gateway

import (
	"container/list"
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
	key     [2]string
	id      identity
	err     error // registry.ErrNotFound cached briefly against floods
	expires time.Time
}

// Device cache bounds (entries).
const (
	defaultCacheKnown    = 1 << 18
	defaultCacheNegative = 4096
	// negativeTTL bounds how long a "no such device" answer is cached.
	negativeTTL = time.Second
)

// devCache caches device+product lookups for ttl (not-found for at most
// negativeTTL), so auth and publish cost no database round trip. Writers
// through the management API call Invalidate; other nodes converge within
// ttl.
//
// It has two segments, each a bounded LRU list: known devices (up to
// maxKnown) and unknown names (up to maxNeg, expiring after negativeTTL).
// A lookup of an unknown name can only push out another unknown name, so
// a flood of made-up device names never evicts a known device, and nothing
// is ever dropped wholesale.
type devCache struct {
	reg      Registry
	ttl      time.Duration
	maxKnown int
	maxNeg   int

	mu    sync.Mutex
	m     map[[2]string]*list.Element // guarded by mu; Value is *cacheEntry
	known *list.List                  // guarded by mu; front = most recently used
	neg   *list.List                  // guarded by mu; front = newest
}

func newDevCache(reg Registry, ttl time.Duration, maxKnown, maxNeg int) *devCache {
	if maxKnown <= 0 {
		maxKnown = defaultCacheKnown
	}
	if maxNeg <= 0 {
		maxNeg = defaultCacheNegative
	}
	return &devCache{reg: reg, ttl: ttl, maxKnown: maxKnown, maxNeg: maxNeg,
		m: make(map[[2]string]*list.Element), known: list.New(), neg: list.New()}
}

// get returns the device and its product; registry.ErrNotFound when either
// is missing.
func (c *devCache) get(ctx context.Context, pk, dk string, now time.Time) (identity, error) {
	k := [2]string{pk, dk}
	if c.ttl > 0 {
		c.mu.Lock()
		if el, ok := c.m[k]; ok {
			e := el.Value.(*cacheEntry)
			if now.Before(e.expires) {
				if e.err == nil {
					c.known.MoveToFront(el)
				}
				c.mu.Unlock()
				return e.id, e.err
			}
			c.removeLocked(el)
		}
		c.mu.Unlock()
	}
	id, err := c.load(ctx, pk, dk)
	if err != nil && !errors.Is(err, registry.ErrNotFound) {
		return identity{}, err // store trouble: never cached
	}
	if c.ttl > 0 {
		c.put(&cacheEntry{key: k, id: id, err: err}, now)
	}
	return id, err
}

// put inserts e into its segment, evicting that segment's least recently
// used entry when it is full.
func (c *devCache) put(e *cacheEntry, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[e.key]; ok {
		c.removeLocked(el) // a concurrent load got there first
	}
	seg, limit := c.known, c.maxKnown
	e.expires = now.Add(c.ttl)
	if e.err != nil {
		seg, limit = c.neg, c.maxNeg
		e.expires = now.Add(min(c.ttl, negativeTTL))
		// Expired unknown names sit at the back (one lifetime for all).
		for b := c.neg.Back(); b != nil && !now.Before(b.Value.(*cacheEntry).expires); b = c.neg.Back() {
			c.removeLocked(b)
		}
	}
	for seg.Len() >= limit {
		c.removeLocked(seg.Back())
	}
	c.m[e.key] = seg.PushFront(e)
}

// removeLocked drops el from the map and its segment.
func (c *devCache) removeLocked(el *list.Element) {
	e := el.Value.(*cacheEntry)
	delete(c.m, e.key)
	if e.err != nil {
		c.neg.Remove(el)
	} else {
		c.known.Remove(el)
	}
}

// sizes returns the entries of each segment.
func (c *devCache) sizes() (known, negative int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.known.Len(), c.neg.Len()
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
		if el, ok := c.m[[2]string{pk, dk}]; ok {
			c.removeLocked(el)
		}
		return
	}
	for k, el := range c.m {
		if k[0] == pk {
			c.removeLocked(el)
		}
	}
}
