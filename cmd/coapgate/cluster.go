package main

import (
	"context"
	"log/slog"
	"os"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/lease"
	"github.com/coapgate/coapgate/internal/lease/pglease"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/prometheus/client_golang/prometheus"
)

// newLeases picks the Elector of background work: on PostgreSQL, nodes
// sharing the database take turns through advisory locks (monitor must
// run for the node's lifetime, its end releases the leases); the embedded
// store has one node, which holds every lease (monitor nil).
func newLeases(cfg config.Config, reg prometheus.Registerer, log *slog.Logger) (lease.Elector, func(context.Context), error) {
	if cfg.Store.Driver != "postgres" {
		return lease.Local{}, nil, nil
	}
	node := cfg.Cluster.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	e, err := pglease.New(pglease.Options{
		URL: string(cfg.Store.PostgresURL), Node: node,
		Retry: cfg.Cluster.LeaseRetry, Check: cfg.Cluster.LeaseRetry, Registerer: reg, Logger: log,
	})
	if err != nil {
		return nil, nil, err
	}
	return e, e.Monitor, nil
}

// presenceStore is a presence shared by the nodes of a cluster (pgstore):
// the gateway's flush merges each node's contacts into it
// (gateway.PresenceRecorder); one node at a time sweeps it for offline
// transitions; the API reads the online state from it.
type presenceStore interface {
	SweepPresence(ctx context.Context, before time.Time) (int, error)
	LookupPresence(ctx context.Context, pk, dk string) (presence.Record, bool, error)
	CountPresence(ctx context.Context, now time.Time) (online, seen int, err error)
}

// presenceFlushInterval is how often a node flushes its contacts; the
// shared sweep leaves two of them of grace, so that a contact still on
// its way from another node does not make a device offline and online.
const presenceFlushInterval = 5 * time.Second

// sweepPresence records the shared presence's offline transitions every
// presenceFlushInterval until ctx ends (run under the "presence" lease).
func sweepPresence(ctx context.Context, st presenceStore, log *slog.Logger) {
	t := time.NewTicker(presenceFlushInterval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		n, err := st.SweepPresence(ctx, time.Now().Add(-2*presenceFlushInterval))
		switch {
		case err != nil && ctx.Err() == nil:
			if !failing { // once per outage
				log.Warn("presence sweep failed; retrying", "err", err)
			}
			failing = true
		case err == nil:
			failing = false
			if n > 0 {
				log.Debug("devices offline", "devices", n)
			}
		}
	}
}

// sharedPresence answers the API's online state from the shared presence,
// so every node answers the same, except that a contact this node saw
// after the shared record's (not flushed yet: at most one flush interval)
// is answered from this node's table; this node's table alone when the
// store cannot be read.
type sharedPresence struct {
	st    presenceStore
	local *presence.Tracker
}

func (p sharedPresence) Lookup(pk, dk string) (presence.Status, bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	r, ok, err := p.st.LookupPresence(ctx, pk, dk)
	local, lok := p.local.Lookup(pk, dk)
	if err != nil || (lok && (!ok || local.LastSeen.After(r.LastSeen))) {
		return local, lok
	}
	return r.Status(), ok
}

// presenceCountEvery: how often the overview recounts the cluster's
// devices (a scan of the shared presence, as the registry's count is).
const presenceCountEvery = time.Minute

// clusterDevices gives the console's overview the cluster's device counts
// (stats.Options.Devices) from the shared presence, counted at most once
// per every; between counts it gives the last count, and this node's own
// until the first count succeeds. A failed count is retried at the next
// sample and logged once per outage.
type clusterDevices struct {
	st interface {
		CountPresence(context.Context, time.Time) (int, int, error)
	}
	local *presence.Tracker
	every time.Duration
	log   *slog.Logger

	mu           sync.Mutex
	at           time.Time // of the last count; zero: none yet
	online, seen int
	failing      bool
}

func (c *clusterDevices) Devices(now time.Time) (online, seen int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.at.IsZero() || now.Sub(c.at) >= c.every {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		on, n, err := c.st.CountPresence(ctx, now)
		cancel()
		switch {
		case err != nil:
			if !c.failing {
				c.log.Warn("cluster device count failed; the overview shows the last count", "err", err)
			}
			c.failing = true
		default:
			c.at, c.online, c.seen, c.failing = now, on, n, false
		}
	}
	if c.at.IsZero() {
		return c.local.Online(now), c.local.Len()
	}
	return c.online, c.seen
}
