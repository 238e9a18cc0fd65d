// Package pglease implements lease.Elector with PostgreSQL session-level
// advisory locks held on one dedicated connection per node.
//
// A lease is pg_try_advisory_lock on a 64-bit key derived from the schema
// and the lease name. The server releases a session's locks when its
// connection ends, so a node that dies (or loses the database) loses its
// leases at once, and a standby node, which retries every Retry, takes
// them. The holder pings its connection every Check; a failed ping ends
// every lease it held (their work is cancelled) before it reconnects, so
// two nodes overlap at most for about Check after a connection is cut.
package pglease

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"
)

// Options configures New. URL is required.
type Options struct {
	// URL is the PostgreSQL connection URL (its search_path names the
	// schema, which scopes the leases).
	URL string
	// Node names this node in logs and in pg_stat_activity.
	Node string
	// Retry is how often a lease not held is tried again (default 1 s).
	Retry time.Duration
	// Check is how often the connection of held leases is pinged
	// (default 1 s).
	Check time.Duration
	// Registerer, when set, gets coapgate_cluster_leases_held and
	// coapgate_cluster_lease_connection_drops_total.
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// queryTimeout bounds one statement on the lease connection.
const queryTimeout = 5 * time.Second

// Elector holds this node's leases on one connection. Create it with New,
// run Monitor on a goroutine its owner cancels, then call Run.
type Elector struct {
	o   Options
	log *slog.Logger

	mu     sync.Mutex // serialises use of conn
	conn   *pgx.Conn  // nil while disconnected
	schema string     // of conn
	gen    uint64     // incremented on every new connection
	held   map[string]*holding
	closed bool // Monitor ended: no new connection

	drops prometheus.Counter
}

// ErrClosed is returned once Monitor has ended: the node gives up its
// leases for good (it is shutting down).
var ErrClosed = errors.New("pglease: closed")

// holding is one lease held on connection gen.
type holding struct {
	gen    uint64
	cancel context.CancelFunc
}

// New returns an Elector; it connects lazily.
func New(o Options) (*Elector, error) {
	if o.URL == "" {
		return nil, errors.New("pglease: Options.URL is required")
	}
	if o.Retry <= 0 {
		o.Retry = time.Second
	}
	if o.Check <= 0 {
		o.Check = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	e := &Elector{
		o: o, log: o.Logger.With("component", "lease", "node", o.Node),
		held: make(map[string]*holding),
		drops: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_cluster_lease_connection_drops_total",
			Help: "Lease connections lost (every lease held on one is given up).",
		}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(e.drops, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgate_cluster_leases_held",
			Help: "Leases of background work (point projector, forwarding actions) this node holds.",
		}, func() float64 {
			e.mu.Lock()
			defer e.mu.Unlock()
			return float64(len(e.held))
		}))
	}
	return e, nil
}

// key maps a lease name to its advisory lock key within schema.
func key(schema, name string) int64 {
	h := fnv.New64a()
	h.Write([]byte("coapgate-lease\x00"))
	h.Write([]byte(schema))
	h.Write([]byte{0})
	h.Write([]byte(name))
	return int64(h.Sum64())
}

// connect opens the lease connection (mu held).
func (e *Elector) connect(ctx context.Context) error {
	if e.conn != nil {
		return nil
	}
	if e.closed {
		return ErrClosed
	}
	cfg, err := pgx.ParseConfig(e.o.URL)
	if err != nil {
		return fmt.Errorf("pglease: parse url: %w", err)
	}
	if e.o.Node != "" {
		cfg.RuntimeParams["application_name"] = "coapgate-lease " + e.o.Node
	}
	ctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		return fmt.Errorf("pglease: connect: %w", err)
	}
	var schema string
	if err := conn.QueryRow(ctx, `SELECT current_schema()`).Scan(&schema); err != nil || schema == "" {
		_ = conn.Close(context.Background())
		return fmt.Errorf("pglease: current schema: %w (empty: %t)", err, schema == "")
	}
	e.conn, e.schema = conn, schema
	e.gen++
	return nil
}

// drop closes the connection and ends every lease held on it (mu held).
func (e *Elector) drop(reason error) {
	if e.conn == nil {
		return
	}
	_ = e.conn.Close(context.Background())
	e.conn = nil
	for name, h := range e.held {
		h.cancel()
		delete(e.held, name)
	}
	e.drops.Inc()
	e.log.Warn("lease connection dropped; leases released", "err", reason)
}

// try takes name if free. It returns the lease's context.
func (e *Elector) try(ctx context.Context, name string) (context.Context, *holding, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if _, ok := e.held[name]; ok {
		return nil, nil, nil // held by another Run of this node
	}
	if err := e.connect(ctx); err != nil {
		return nil, nil, err
	}
	qctx, cancel := context.WithTimeout(ctx, queryTimeout)
	defer cancel()
	var got bool
	if err := e.conn.QueryRow(qctx, `SELECT pg_try_advisory_lock($1)`, key(e.schema, name)).Scan(&got); err != nil {
		// A failure, or a cancellation that closed the connection (and
		// so released every lock on it): the leases held here are gone.
		if ctx.Err() == nil || e.conn.IsClosed() {
			e.drop(err)
		}
		return nil, nil, fmt.Errorf("pglease: try %s: %w", name, err)
	}
	if !got {
		return nil, nil, nil
	}
	lctx, lcancel := context.WithCancel(ctx)
	h := &holding{gen: e.gen, cancel: lcancel}
	e.held[name] = h
	return lctx, h, nil
}

// release gives name back if it is still held on the current connection.
func (e *Elector) release(name string, h *holding) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h.cancel()
	if e.held[name] != h {
		return // dropped with its connection already
	}
	delete(e.held, name)
	if e.conn == nil || h.gen != e.gen {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), queryTimeout)
	defer cancel()
	if _, err := e.conn.Exec(ctx, `SELECT pg_advisory_unlock($1)`, key(e.schema, name)); err != nil {
		e.drop(err)
	}
}

// Run implements lease.Elector.
func (e *Elector) Run(ctx context.Context, name string, fn func(ctx context.Context)) {
	logged := false
	for ctx.Err() == nil {
		lctx, h, err := e.try(ctx, name)
		switch {
		case errors.Is(err, ErrClosed):
		case err != nil:
			if !logged {
				e.log.Warn("lease not available; retrying", "lease", name, "err", err)
				logged = true
			}
		case h != nil:
			logged = false
			e.log.Info("lease acquired", "lease", name)
			fn(lctx)
			e.release(name, h)
			if ctx.Err() == nil {
				e.log.Info("lease lost", "lease", name)
			}
		}
		t := time.NewTimer(e.o.Retry)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
}

// Holds reports whether this node holds name now.
func (e *Elector) Holds(name string) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.held[name]
	return ok
}

// Monitor pings the lease connection every Check while leases are held
// and drops it (ending them) when a ping fails; at ctx's end it closes the
// connection, releasing every lease. Run it once per Elector.
func (e *Elector) Monitor(ctx context.Context) {
	t := time.NewTicker(e.o.Check)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			e.mu.Lock()
			e.closed = true
			if e.conn != nil {
				_ = e.conn.Close(context.Background())
				e.conn = nil
			}
			for name, h := range e.held {
				h.cancel()
				delete(e.held, name)
			}
			e.mu.Unlock()
			return
		case <-t.C:
		}
		e.mu.Lock()
		if e.conn != nil && len(e.held) > 0 {
			pctx, cancel := context.WithTimeout(ctx, queryTimeout)
			if err := e.conn.Ping(pctx); err != nil && ctx.Err() == nil {
				e.drop(err)
			}
			cancel()
		}
		e.mu.Unlock()
	}
}

// Key returns the advisory lock key of lease name in schema (for
// operators and tests looking a holder up in pg_locks).
func Key(schema, name string) int64 { return key(schema, name) }
