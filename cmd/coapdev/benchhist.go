package main

import (
	"math/bits"
	"sync/atomic"
	"time"
)

// Latency histogram of the load generator: log-linear buckets over
// microseconds, exact below 128 µs and within 1/64 (1.6 %) above, up to
// about 2^40 µs. Adding is one atomic increment, so receivers of all
// sockets share one histogram and the progress line can read it live.

const (
	histLinear  = 128
	histSub     = 64
	histBuckets = histLinear + 40*histSub
)

type hist struct {
	b [histBuckets]atomic.Uint64
}

// histCounts is a snapshot of a hist.
type histCounts [histBuckets]uint64

func bucketOf(us uint64) int {
	if us < histLinear {
		return int(us)
	}
	s := bits.Len64(us) - 7 // us>>s is in [64,128)
	i := histLinear + (s-1)*histSub + int(us>>s) - histSub
	return min(i, histBuckets-1)
}

// bucketHigh is the largest value of bucket i in µs (what a quantile reports).
func bucketHigh(i int) uint64 {
	if i < histLinear {
		return uint64(i)
	}
	j := i - histLinear
	s := j/histSub + 1
	return ((uint64(j%histSub)+histSub+1)<<s - 1)
}

func (h *hist) add(d time.Duration) {
	us := d.Microseconds()
	if us < 0 {
		us = 0
	}
	h.b[bucketOf(uint64(us))].Add(1)
}

func (h *hist) snapshot(dst *histCounts) {
	for i := range h.b {
		dst[i] = h.b[i].Load()
	}
}

// sub returns c - prev, bucket by bucket.
func (c *histCounts) sub(prev *histCounts) histCounts {
	var out histCounts
	for i := range c {
		out[i] = c[i] - prev[i]
	}
	return out
}

func (c *histCounts) total() uint64 {
	var n uint64
	for _, v := range c {
		n += v
	}
	return n
}

// quantile returns the q-quantile (0..1) as a duration; 0 without samples.
func (c *histCounts) quantile(q float64) time.Duration {
	n := c.total()
	if n == 0 {
		return 0
	}
	rank := uint64(q*float64(n) + 0.5)
	rank = max(1, min(rank, n))
	var seen uint64
	for i, v := range c {
		seen += v
		if seen >= rank {
			return time.Duration(bucketHigh(i)) * time.Microsecond
		}
	}
	return 0
}

// max returns the upper bound of the highest non-empty bucket.
func (c *histCounts) max() time.Duration {
	for i := len(c) - 1; i >= 0; i-- {
		if c[i] > 0 {
			return time.Duration(bucketHigh(i)) * time.Microsecond
		}
	}
	return 0
}
