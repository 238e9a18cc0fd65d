// Package retention keeps stored data from growing forever: a Worker
// deletes, in the background and in bounded batches, the message log
// entries, point samples, point rollups, device events, finished commands
// and dead letters that are older than their retention period — the
// gateway's setting, or a product's override (registry.Retention).
//
// Deletion never stalls ingest: every batch is one short write
// transaction of at most BatchSize rows, chosen beforehand on a read
// connection, and after each batch the worker waits at least as long as
// the batch took, so that waiting writers (group commits of uplinks) get
// the store at least half of the time.
//
// Two readers of the message log are protected or told:
//   - the point projector: log entries it has not projected yet are never
//     deleted; they are held back (counted in a metric) until it has;
//   - forwarding actions: retention does not wait for a stalled target.
//     An entry deleted before an action handled it (its ID above the
//     action's saved cursor) is counted on the action (rule status
//     retentionLost) and in a metric, never skipped silently.
package retention

import (
	"context"
	"time"
)

// Kind names a kind of stored data retention deletes.
type Kind string

// The kinds of data, in the order a run handles them.
const (
	Messages    Kind = "messages"     // message log entries
	Points      Kind = "points"       // point samples
	Rollups1m   Kind = "rollups_1m"   // 1-minute point rollups
	Rollups1h   Kind = "rollups_1h"   // 1-hour point rollups
	Events      Kind = "events"       // device online/offline events
	Commands    Kind = "commands"     // finished downlink commands
	DeadLetters Kind = "dead_letters" // forwarding dead letters
)

// Kinds lists every kind in the order a run handles them.
var Kinds = []Kind{Messages, Points, Rollups1m, Rollups1h, Events, Commands, DeadLetters}

// Periods are the global retention periods; 0 keeps forever.
type Periods struct {
	Messages, Points, Events, Commands, DeadLetters time.Duration
	// Rollups1m and Rollups1h keep rollups at least as long as the
	// samples they summarise (a product's point retention may be longer).
	Rollups1m, Rollups1h time.Duration
}

// Purge asks a Store to delete at most Limit rows of one kind of one
// product (ProductKey is ignored for dead letters) that are older than
// Before: for rollups, buckets that end at or before it.
type Purge struct {
	Kind       Kind
	ProductKey string
	Before     time.Time
	Limit      int
}

// Lost is what a purge of the message log took from one forwarding
// action before it handled it.
type Lost struct {
	RuleID  string
	Action  int
	Entries int64 // deleted entries above the action's saved cursor
}

// Result is the outcome of one Purge.
type Result struct {
	// Deleted is the number of rows deleted; fewer than Limit means the
	// product has nothing more to delete of this kind now.
	Deleted int
	// HeldBack (messages, set when Deleted < Limit) counts the product's
	// expired log entries kept because the point projector has not
	// projected them yet.
	HeldBack int64
	// Lost (messages) lists the forwarding actions that had not handled
	// some of the deleted entries.
	Lost []Lost
}

// Store is the storage retention works on.
type Store interface {
	// RetentionProducts returns the distinct product keys that have
	// stored data of kind (including products deleted since); for
	// DeadLetters it returns [""].
	RetentionProducts(ctx context.Context, kind Kind) ([]string, error)
	// Purge deletes at most p.Limit expired rows in one transaction.
	Purge(ctx context.Context, p Purge) (Result, error)
}
