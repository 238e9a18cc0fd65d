package main

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/presence"
)

// countStub is a shared presence whose count the test sets.
type countStub struct {
	online, seen, calls int
	err                 error
}

func (c *countStub) CountPresence(context.Context, time.Time) (int, int, error) {
	c.calls++
	return c.online, c.seen, c.err
}

// TestClusterDevices: the overview's device counts come from the shared
// presence, recounted at most once per interval; this node's own counts
// stand in until the first count succeeds, and the last count while the
// store fails.
func TestClusterDevices(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	local := presence.NewTracker()
	local.Seen("p", "d1", "a", "coap", time.Minute, t0)
	st := &countStub{err: errors.New("store down")}
	c := &clusterDevices{st: st, local: local, every: time.Minute, log: slog.New(slog.DiscardHandler)}
	check := func(at time.Duration, online, seen, calls int) {
		t.Helper()
		on, n := c.Devices(t0.Add(at))
		if on != online || n != seen || st.calls != calls {
			t.Fatalf("at %v: %d online of %d after %d counts, want %d of %d after %d", at, on, n, st.calls, online, seen, calls)
		}
	}
	check(0, 1, 1, 1) // no count yet: this node's
	st.err, st.online, st.seen = nil, 700, 1000
	check(10*time.Second, 700, 1000, 2)
	st.online = 650
	check(20*time.Second, 700, 1000, 2) // within the interval: the last count
	check(70*time.Second, 650, 1000, 3)
	st.err = errors.New("store down")
	check(140*time.Second, 650, 1000, 4) // failed: the last count, retried at the next sample
	check(150*time.Second, 650, 1000, 5)
}
