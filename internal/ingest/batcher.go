// Package ingest is the uplink pipeline's persistence stage: a group-commit
// batcher that makes every acknowledged uplink durable before its ACK is
// sent (many uplinks per transaction, each caller released after commit).
// The anti-replay state a session-mode uplink advanced (package replay)
// rides in the same transaction, so making it durable costs no extra sync.
package ingest

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by Append after the batcher stopped.
var ErrClosed = errors.New("ingest: batcher closed")

// Appender is the persistence the batcher needs (message.Store satisfies it).
type Appender interface {
	Append(ctx context.Context, msgs []*message.Message) error
}

// StateAppender is a store that also persists session replay states in
// the transaction that appends msgs (either all of it commits or none):
// for each state's key it keeps the one with the highest Version, so states
// committed out of order never move a session back.
type StateAppender interface {
	AppendWithState(ctx context.Context, msgs []*message.Message, states []replay.State) error
}

// ClaimAppender is a store shared by the nodes of a cluster, where a
// node's replay windows are only its view: it appends entry i (msgs[i],
// nil: none, with states[i], an empty Key: none) in one transaction and
// admits each state's accepted number against the session's stored window
// under a lock on it (replay.Admit), so that a number is accepted once
// cluster-wide. An entry whose number was already used is left out (its
// message is not stored) and refused[i] is the Window's error (replay.IsReplay);
// err is a failure of the whole transaction.
type ClaimAppender interface {
	AppendClaims(ctx context.Context, msgs []*message.Message, states []replay.State) (refused []error, err error)
}

type pending struct {
	msg   *message.Message // nil for a state alone
	state *replay.State    // nil for a message alone
	done  chan error
}

// Batcher groups concurrent Append calls into one store transaction.
type Batcher struct {
	store    Appender
	states   StateAppender // nil: the store keeps no replay states
	claims   ClaimAppender // nil: states are this node's (no cluster-wide admission)
	max      int
	in       chan pending
	log      *slog.Logger
	latency  prometheus.Histogram
	batches  prometheus.Histogram
	failures prometheus.Counter
	stored   prometheus.Counter

	mu     sync.RWMutex
	closed bool // guarded by mu
	wg     sync.WaitGroup
}

// NewBatcher starts a batcher writing to store in batches of at most max.
// Close stops it after flushing what was submitted.
func NewBatcher(store Appender, max int, reg prometheus.Registerer, log *slog.Logger) *Batcher {
	b := &Batcher{
		store: store, max: max, in: make(chan pending, max*4), log: log.With("component", "ingest"),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "coapgate_ingest_commit_seconds", Help: "Time an uplink waits for its group commit.",
			Buckets: []float64{.0005, .001, .002, .005, .01, .02, .05, .1, .25, .5, 1, 5},
		}),
		batches: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "coapgate_ingest_batch_size", Help: "Uplinks per group commit.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 11),
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_ingest_commit_failures_total", Help: "Group commits that failed (their uplinks were answered 5.03).",
		}),
		stored: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_ingest_messages_total", Help: "Uplinks durably stored.",
		}),
	}
	if reg != nil {
		reg.MustRegister(b.latency, b.batches, b.failures, b.stored)
	}
	b.states, _ = store.(StateAppender)
	b.claims, _ = store.(ClaimAppender)
	if b.claims != nil && b.states == nil {
		b.claims = nil
	}
	b.wg.Add(1)
	go b.run()
	return b
}

// Append stores msg durably and returns after the commit that contains it;
// msg.ID is set on success.
func (b *Batcher) Append(ctx context.Context, msg *message.Message) error {
	return b.AppendState(ctx, msg, nil)
}

// KeepsStates reports whether the store persists replay states
// (AppendState with a state is then durable).
func (b *Batcher) KeepsStates() bool { return b.states != nil }

// AppendState is Append with the replay state that msg's acceptance
// produced, committed in the same transaction; msg may be nil to persist a
// state alone (a new session, an uplink that stores no message). When the
// store keeps no states, st is ignored. On a store shared by a cluster
// (ClaimAppender), st.Accepted is admitted against the stored window: an
// error satisfying replay.IsReplay means another node (or an earlier
// uplink) used that number, and msg was not stored.
func (b *Batcher) AppendState(ctx context.Context, msg *message.Message, st *replay.State) error {
	if b.states == nil {
		st = nil
	}
	if msg == nil && st == nil {
		return nil
	}
	p := pending{msg: msg, state: st, done: make(chan error, 1)}
	start := time.Now()
	b.mu.RLock()
	if b.closed {
		b.mu.RUnlock()
		return ErrClosed
	}
	select {
	case b.in <- p:
		b.mu.RUnlock()
	case <-ctx.Done():
		b.mu.RUnlock()
		return ctx.Err()
	}
	// Once queued, wait for the outcome even if ctx ends: the message may be
	// committed, and the caller must not report a failure for a stored one.
	err := <-p.done
	b.latency.Observe(time.Since(start).Seconds())
	return err
}

// Close flushes queued messages and stops the batcher.
func (b *Batcher) Close() {
	b.mu.Lock()
	if !b.closed {
		b.closed = true
		close(b.in)
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func (b *Batcher) run() {
	defer b.wg.Done()
	batch := make([]pending, 0, b.max)
	msgs := make([]*message.Message, 0, b.max)
	var states []replay.State
	for first := range b.in {
		batch = append(batch[:0], first)
		batch = b.fill(batch)
		msgs, states = msgs[:0], states[:0]
		for _, p := range batch {
			if p.msg != nil {
				msgs = append(msgs, p.msg)
			}
			if p.state != nil {
				states = append(states, *p.state)
			}
		}
		// The commit runs to completion regardless of callers' contexts.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		var (
			err     error
			refused []error
		)
		switch {
		case len(states) > 0 && b.claims != nil:
			refused, err = b.appendClaims(ctx, batch)
		case len(states) > 0:
			err = b.states.AppendWithState(ctx, msgs, newestStates(states))
		default:
			err = b.store.Append(ctx, msgs)
		}
		cancel()
		b.batches.Observe(float64(len(batch)))
		if err != nil {
			b.failures.Inc()
			b.log.Error("group commit failed", "messages", len(msgs), "states", len(states), "err", err)
		} else {
			n := len(msgs)
			for i, r := range refused {
				if r != nil && batch[i].msg != nil {
					n--
				}
			}
			b.stored.Add(float64(n))
		}
		for i, p := range batch {
			if err == nil && i < len(refused) && refused[i] != nil {
				p.done <- refused[i]
				continue
			}
			p.done <- err
		}
		clear(batch)
	}
}

// appendClaims commits batch through the ClaimAppender, entry for entry:
// each state's number is admitted cluster-wide, so states are not merged
// per session here (the store admits them in order).
func (b *Batcher) appendClaims(ctx context.Context, batch []pending) ([]error, error) {
	msgs := make([]*message.Message, len(batch))
	states := make([]replay.State, len(batch))
	for i, p := range batch {
		msgs[i] = p.msg
		if p.state != nil {
			states[i] = *p.state
		}
	}
	refused, err := b.claims.AppendClaims(ctx, msgs, states)
	if err == nil && refused != nil && len(refused) != len(batch) {
		err = errors.New("ingest: store answered a different number of entries")
	}
	return refused, err
}

// newestStates keeps, per session, the state with the highest Version (a
// session's concurrent uplinks in one batch carry successive snapshots).
func newestStates(states []replay.State) []replay.State {
	if len(states) < 2 {
		return states
	}
	at := make(map[replay.Key]int, len(states))
	out := states[:0]
	for _, st := range states {
		if i, ok := at[st.Key]; ok {
			if st.Version > out[i].Version {
				out[i] = st
			}
			continue
		}
		at[st.Key] = len(out)
		out = append(out, st)
	}
	return out
}

// maxYields bounds the scheduler yields of one fill.
const maxYields = 8

// fill adds to batch whatever else is already waiting, without a timer.
// When the queue runs dry it yields the processor and looks again, as long
// as yielding brought more: with few Ps (GOMAXPROCS=1 above all) the batcher
// is woken by the first Append and would otherwise commit that uplink alone
// while the requests behind it have not yet been scheduled to reach Append,
// collapsing group commit to one uplink per fsync. A yield costs well under
// a microsecond when nothing else is runnable.
func (b *Batcher) fill(batch []pending) []pending {
	for yields := 0; len(batch) < b.max; {
		select {
		case p, ok := <-b.in:
			if !ok {
				return batch
			}
			batch = append(batch, p)
			continue
		default:
		}
		if yields == maxYields {
			return batch
		}
		runtime.Gosched()
		yields++
		if len(b.in) == 0 {
			return batch // yielding brought nothing new
		}
	}
	return batch
}
