package native

import (
	"net/netip"
	"time"
)

// rateLimiter is a token bucket per source IP address (the per-address
// handshake rate under pressure). Not safe for concurrent use: it runs
// under the engine's lock. It holds at most max addresses; buckets that
// refilled completely are pruned once a second.
type rateLimiter struct {
	rate      float64 // tokens per second; < 0: unlimited
	burst     float64
	max       int
	m         map[netip.Addr]*bucket
	nextPrune time.Time
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, max int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: max1(rate), max: max, m: make(map[netip.Addr]*bucket)}
}

func max1(f float64) float64 {
	if f < 1 {
		return 1
	}
	return f
}

// allow takes one token for addr.
func (r *rateLimiter) allow(addr netip.Addr, now time.Time) bool {
	if r.rate < 0 {
		return true
	}
	if now.After(r.nextPrune) {
		r.prune(now)
		r.nextPrune = now.Add(time.Second)
	}
	b, ok := r.m[addr]
	if !ok {
		if len(r.m) >= r.max {
			clear(r.m) // bounded: a flood of sources resets the table
		}
		b = &bucket{tokens: r.burst, at: now}
		r.m[addr] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune drops buckets that are full again.
func (r *rateLimiter) prune(now time.Time) {
	for a, b := range r.m {
		if b.tokens+now.Sub(b.at).Seconds()*r.rate >= r.burst {
			delete(r.m, a)
		}
	}
}
