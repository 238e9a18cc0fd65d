// Package lease gives background work that must run on one node of a
// cluster at a time (the point projector, each forwarding action) a
// leader lease.
//
// Work runs under Run: fn gets a context that ends when the lease is lost
// (or the caller's context ends); a node that does not hold the lease
// waits and retries, so when the holder dies another node takes over.
// Leases make delivery single-consumer in the normal case; across a
// failure two holders may overlap for a short time, which is why the
// consumers keep their cursors in the shared store and deliver at least
// once.
package lease

import "context"

// Elector runs work under a named lease.
type Elector interface {
	// Run calls fn while this node holds the lease name, with a context
	// cancelled when the lease is lost or ctx ends, and then waits to
	// hold it again. It returns when ctx is done (after fn returned).
	Run(ctx context.Context, name string, fn func(ctx context.Context))
}

// Local is the Elector of a single node: it always holds every lease.
type Local struct{}

// Run calls fn(ctx) once.
func (Local) Run(ctx context.Context, _ string, fn func(ctx context.Context)) {
	if ctx.Err() == nil {
		fn(ctx)
	}
}
