// Package ingest is the uplink pipeline's persistence stage: a group-commit
// batcher that makes every acknowledged uplink durable before its ACK is
// sent (many uplinks per transaction, each caller released after commit).
package ingest

import (
	"context"
	"errors"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrClosed is returned by Append after the batcher stopped.
var ErrClosed = errors.New("ingest: batcher closed")

// Appender is the persistence the batcher needs (message.Store satisfies it).
type Appender interface {
	Append(ctx context.Context, msgs []*message.Message) error
}

type pending struct {
	msg  *message.Message
	done chan error
}

// Batcher groups concurrent Append calls into one store transaction.
type Batcher struct {
	store    Appender
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
	b.wg.Add(1)
	go b.run()
	return b
}

// Append stores msg durably and returns after the commit that contains it;
// msg.ID is set on success.
func (b *Batcher) Append(ctx context.Context, msg *message.Message) error {
	p := pending{msg: msg, done: make(chan error, 1)}
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
	for first := range b.in {
		batch = append(batch[:0], first)
		batch = b.fill(batch)
		msgs = msgs[:0]
		for _, p := range batch {
			msgs = append(msgs, p.msg)
		}
		// The commit runs to completion regardless of callers' contexts.
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := b.store.Append(ctx, msgs)
		cancel()
		b.batches.Observe(float64(len(batch)))
		if err != nil {
			b.failures.Inc()
			b.log.Error("group commit failed", "messages", len(batch), "err", err)
		} else {
			b.stored.Add(float64(len(batch)))
		}
		for _, p := range batch {
			p.done <- err
		}
		clear(batch)
	}
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
