package coapx

import (
	"hash/maphash"
	"net/netip"
	"sync"
	"time"
)

// fifoCache is a map whose entries expire in insertion order: every entry
// of one cache lives for (roughly) the same lifetime, so a FIFO queue is an
// exact expiry index and eviction is O(1). It is bounded: inserting beyond
// max evicts the oldest entry even if it has not expired (counted by the
// caller via the returned flag). Not safe for concurrent use on its own.
type fifoCache[K comparable, V any] struct {
	m    map[K]*fifoEntry[V]
	q    []fifoItem[K] // insertion order; q[head:] are live candidates
	head int
	max  int
	seq  uint64
	// stale counts queue items of q[head:] whose entry was replaced or
	// deleted since: when they outnumber the live entries the queue is
	// rebuilt, so replacing one key over and over does not grow it.
	stale int
}

type fifoEntry[V any] struct {
	val     V
	expires time.Time
	seq     uint64
}

type fifoItem[K comparable] struct {
	key K
	seq uint64
}

func newFIFOCache[K comparable, V any](max int) *fifoCache[K, V] {
	return &fifoCache[K, V]{m: make(map[K]*fifoEntry[V]), max: max}
}

// get returns the live entry for k.
func (c *fifoCache[K, V]) get(k K, now time.Time) (*fifoEntry[V], bool) {
	e, ok := c.m[k]
	if !ok || !now.Before(e.expires) {
		return nil, false
	}
	return e, true
}

// put inserts or replaces k; it reports how many live entries were evicted
// early because the cache was full.
func (c *fifoCache[K, V]) put(k K, v V, ttl time.Duration, now time.Time) (evictedEarly int) {
	c.seq++
	if _, ok := c.m[k]; ok {
		c.stale++ // its queue item is superseded
	}
	c.m[k] = &fifoEntry[V]{val: v, expires: now.Add(ttl), seq: c.seq}
	c.q = append(c.q, fifoItem[K]{key: k, seq: c.seq})
	c.dropStale()
	return c.expire(now)
}

// del removes k.
func (c *fifoCache[K, V]) del(k K) {
	if _, ok := c.m[k]; ok {
		c.stale++
		delete(c.m, k)
		c.dropStale()
	}
}

// dropStale rebuilds the queue without superseded items once they
// outnumber the live ones: amortised O(1) per put, and the queue stays
// below twice the live entries (plus a small constant).
func (c *fifoCache[K, V]) dropStale() {
	if c.stale <= 64 || c.stale <= len(c.m) {
		return
	}
	live := c.q[:0]
	for _, it := range c.q[c.head:] {
		if e, ok := c.m[it.key]; ok && e.seq == it.seq {
			live = append(live, it)
		}
	}
	clear(c.q[len(live):])
	c.q, c.head, c.stale = live, 0, 0
}

// queued returns the number of queue items (live and superseded).
func (c *fifoCache[K, V]) queued() int { return len(c.q) - c.head }

// expire drops expired entries from the head and, while over capacity,
// live ones too.
func (c *fifoCache[K, V]) expire(now time.Time) (evictedEarly int) {
	for c.head < len(c.q) {
		it := c.q[c.head]
		e, ok := c.m[it.key]
		stale := !ok || e.seq != it.seq // replaced or deleted since queued
		switch {
		case stale:
			c.stale--
		case !now.Before(e.expires):
			delete(c.m, it.key)
		case len(c.m) > c.max:
			delete(c.m, it.key)
			evictedEarly++
		default:
			c.compact()
			return evictedEarly
		}
		c.q[c.head] = fifoItem[K]{}
		c.head++
	}
	c.compact()
	return evictedEarly
}

// compact reclaims the consumed prefix of the queue once it dominates.
func (c *fifoCache[K, V]) compact() {
	if c.head > 1024 && c.head > len(c.q)/2 {
		n := copy(c.q, c.q[c.head:])
		clear(c.q[n:])
		c.q = c.q[:n]
		c.head = 0
	}
}

func (c *fifoCache[K, V]) len() int { return len(c.m) }

// exchangeKey identifies a message exchange: RFC 7252 §4.5 duplicate
// detection keys on the peer and the Message ID, never on the token (the
// vendor SDK restarts its token counter on every init, docs/protocol.md §3.3).
// On a secured session the session is the peer (its address may change,
// RFC 9146): peer is then zero and sess the session's ID.
type exchangeKey struct {
	peer netip.AddrPort
	sess uint64
	mid  uint16
}

// exchange is the state of one exchange in the dedup cache.
type exchange struct {
	done bool
	resp []byte // the encoded response (ACK) for a CON, replayed to duplicates
}

// dedupState is what the read loop learns about an incoming message.
type dedupState int

const (
	dedupNew      dedupState = iota // first copy: process it
	dedupInFlight                   // a copy is being processed: drop
	dedupDone                       // already answered: replay the response (CON) or drop (NON)
)

const dedupShards = 64

// dedupCache is the bounded duplicate-detection and response cache, sharded
// to keep lock hold times short between the read loop and the workers.
//
// Exchanges answered with a refusal (4.xx: nothing was acted upon) move to
// a table of their own, an eighth of the size: a flood of refused requests
// (peers without credentials) evicts only other refusals, never the
// exchanges of devices whose requests were acted upon. A refusal evicted
// early is refused again if retransmitted, which changes nothing.
type dedupCache struct {
	seed   maphash.Seed
	shards [dedupShards]struct {
		mu      sync.Mutex
		c       *fifoCache[exchangeKey, exchange] // guarded by mu
		refused *fifoCache[exchangeKey, exchange] // guarded by mu
	}
}

func newDedupCache(size int) *dedupCache {
	d := &dedupCache{seed: maphash.MakeSeed()}
	per := size / dedupShards
	if per < 16 {
		per = 16
	}
	for i := range d.shards {
		d.shards[i].c = newFIFOCache[exchangeKey, exchange](per)
		d.shards[i].refused = newFIFOCache[exchangeKey, exchange](max(per/8, 16))
	}
	return d
}

func (d *dedupCache) shard(k exchangeKey) int {
	return int(maphash.Comparable(d.seed, k) % dedupShards)
}

// begin registers the first copy of an exchange, or reports the state of an
// earlier copy (and the cached response for a completed CON).
func (d *dedupCache) begin(k exchangeKey, ttl time.Duration, now time.Time) (st dedupState, resp []byte, evictedEarly int) {
	s := &d.shards[d.shard(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.c.get(k, now); ok {
		if e.val.done {
			return dedupDone, e.val.resp, 0
		}
		return dedupInFlight, nil, 0
	}
	if e, ok := s.refused.get(k, now); ok {
		return dedupDone, e.val.resp, 0
	}
	return dedupNew, nil, s.c.put(k, exchange{}, ttl, now)
}

// refuse records the response of an exchange that was refused (nil for
// NON), in the refusals' table for the rest of the exchange's lifetime.
func (d *dedupCache) refuse(k exchangeKey, resp []byte, now time.Time) (evictedEarly int) {
	s := &d.shards[d.shard(k)]
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.c.get(k, now)
	if !ok {
		return 0
	}
	ttl := e.expires.Sub(now)
	s.c.del(k)
	return s.refused.put(k, exchange{done: true, resp: resp}, ttl, now)
}

// complete records the response of an exchange (nil for NON).
func (d *dedupCache) complete(k exchangeKey, resp []byte, now time.Time) {
	s := &d.shards[d.shard(k)]
	s.mu.Lock()
	if e, ok := s.c.get(k, now); ok {
		e.val = exchange{done: true, resp: resp}
	}
	s.mu.Unlock()
}

// abort forgets an exchange that was not processed (overload), so a
// retransmission is processed normally.
func (d *dedupCache) abort(k exchangeKey) {
	s := &d.shards[d.shard(k)]
	s.mu.Lock()
	s.c.del(k)
	s.mu.Unlock()
}

// sweep expires old entries in every shard (called periodically so idle
// shards release memory too).
func (d *dedupCache) sweep(now time.Time) {
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		s.c.expire(now)
		s.refused.expire(now)
		s.mu.Unlock()
	}
}

// len returns the exchanges held, refusals included.
func (d *dedupCache) len() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += s.c.len() + s.refused.len()
		s.mu.Unlock()
	}
	return n
}

// acted returns the exchanges held that were not refusals.
func (d *dedupCache) acted() int {
	n := 0
	for i := range d.shards {
		s := &d.shards[i]
		s.mu.Lock()
		n += s.c.len()
		s.mu.Unlock()
	}
	return n
}
