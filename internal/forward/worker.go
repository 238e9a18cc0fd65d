package forward

import (
	"context"
	"errors"
	"log/slog"
	"math/rand/v2"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/message"
)

// saveInterval bounds how long a cursor that moved only past entries the
// rule does not match stays unsaved (re-reading them after a crash is
// harmless, so they need no sync each).
const saveInterval = time.Second

// storeTimeout bounds one store write of a worker.
const storeTimeout = 10 * time.Second

// worker forwards the log to one action of one rule, in log order.
type worker struct {
	m      *Manager
	rule   Rule
	prog   *vm.Program
	idx    int
	action Action
	target Target
	label  string
	log    *slog.Logger

	cursor atomic.Int64 // last log ID handled (saved or not)

	// soft stops taking new work; hard aborts an in-flight delivery.
	soft, hard             context.Context
	cancelSoft, cancelHard context.CancelFunc
	done                   chan struct{}

	pending  Progress // not yet saved; owned by run
	dirty    bool     // pending has changes; owned by run
	lastSave time.Time

	delivered, failures, deadLetters prometheus.Counter
	lag                              prometheus.Gauge
	latency                          prometheus.Observer
	condErrors                       prometheus.Counter
}

func newWorker(m *Manager, r Rule, prog *vm.Program, idx int, a Action, t Target, cursor int64) *worker {
	label := Label(idx, a.Type)
	w := &worker{
		m: m, rule: r, prog: prog, idx: idx, action: a, target: t, label: label,
		log:         m.log.With("rule", r.ID, "action", label),
		done:        make(chan struct{}),
		delivered:   m.met.delivered.WithLabelValues(r.ID, label),
		failures:    m.met.failures.WithLabelValues(r.ID, label),
		deadLetters: m.met.deadLetters.WithLabelValues(r.ID, label),
		lag:         m.met.lag.WithLabelValues(r.ID, label),
		latency:     m.met.latency.WithLabelValues(a.Type),
		condErrors:  m.met.condErrors.WithLabelValues(r.ID),
	}
	w.hard, w.cancelHard = context.WithCancel(context.Background())
	w.soft, w.cancelSoft = context.WithCancel(w.hard)
	w.cursor.Store(cursor)
	w.pending.Cursor = cursor
	w.lastSave = time.Now()
	return w
}

// run holds the worker's lease (one node of a cluster delivers an action)
// and runs the loop while it holds it.
func (w *worker) run() {
	defer close(w.done)
	w.m.o.Leases.Run(w.soft, LeaseName(w.rule.ID, w.idx), w.runHeld)
}

// LeaseName is the lease under which action idx of rule ruleID runs.
func LeaseName(ruleID string, idx int) string {
	return "forward:" + ruleID + ":" + strconv.Itoa(idx)
}

// runHeld is the worker's loop while it holds the lease (ctx ends when
// the lease is lost or the worker stops): load the shared cursor, read
// after it, handle each entry in order, save progress; idle until the log
// grows.
func (w *worker) runHeld(ctx context.Context) {
	defer w.save()
	// Another node may have moved the cursor since this one last held
	// the lease: start from the stored one.
	for {
		cs, err := w.m.o.Store.Cursors(ctx, w.rule.ID)
		if err == nil {
			for _, c := range cs {
				if c.Action == w.idx {
					w.cursor.Store(c.Cursor)
					w.pending = Progress{Cursor: c.Cursor}
					w.dirty = false
				}
			}
			break
		}
		if ctx.Err() != nil {
			return
		}
		w.log.Warn("load forwarding cursor", "err", err)
		if !w.sleep(ctx, w.m.o.PollInterval) {
			return
		}
	}
	for ctx.Err() == nil {
		var wake <-chan struct{}
		if w.m.o.Notifier != nil {
			wake = w.m.o.Notifier.Changed() // before reading: no append is missed
		}
		msgs, err := w.m.o.Log.List(ctx, message.Query{AfterID: w.cursor.Load(), IncludeEvents: true, Limit: w.m.o.BatchSize})
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			w.log.Warn("read message log", "err", err)
			w.sleep(ctx, w.m.o.PollInterval)
			continue
		}
		if len(msgs) == 0 {
			w.lag.Set(0)
			if w.dirty {
				w.save()
			}
			poll := time.NewTimer(w.m.o.PollInterval)
			select {
			case <-wake:
			case <-poll.C:
			case <-ctx.Done():
			}
			poll.Stop()
			continue
		}
		for i := range msgs {
			if !w.handle(ctx, &msgs[i]) {
				return
			}
			w.cursor.Store(msgs[i].ID)
			w.pending.Cursor = msgs[i].ID
			w.dirty = true
		}
		if len(msgs) < w.m.o.BatchSize {
			w.lag.Set(0) // caught up with what was committed at the read
		} else if h, err := w.m.head(ctx); err == nil {
			w.lag.Set(float64(max(0, h-w.cursor.Load())))
		}
		if w.pending.Delivered > 0 || w.pending.DeadLetters > 0 || w.pending.Failures > 0 || time.Since(w.lastSave) >= saveInterval {
			w.save()
		}
	}
}

// sleep waits d or until ctx ends; it reports whether d passed.
func (w *worker) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// save writes pending progress; on failure it stays pending.
func (w *worker) save() {
	if !w.dirty {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
	defer cancel()
	if err := w.m.o.Store.SaveProgress(ctx, w.rule.ID, w.idx, w.pending); err != nil {
		w.log.Warn("save forwarding cursor", "err", err)
		return
	}
	w.pending = Progress{Cursor: w.pending.Cursor}
	w.dirty = false
	w.lastSave = time.Now()
}

// matches applies the rule's filters and condition to m. It returns the
// envelope when m is to be delivered.
func (w *worker) matches(m *message.Message) (Envelope, bool) {
	r := &w.rule
	if (r.ProductKey != "" && r.ProductKey != m.ProductKey) ||
		(r.DeviceKey != "" && r.DeviceKey != m.DeviceKey) ||
		!MatchFilter(r.TopicFilter, m.Topic) {
		return Envelope{}, false
	}
	v, raw, ok := decodePayload(m)
	env := newEnvelope(m, raw, ok)
	if w.prog != nil {
		match, err := evalCondition(w.prog, Env(&env, v))
		if err != nil {
			w.condErrors.Inc()
			w.log.Debug("condition failed", "log_id", m.ID, "err", err)
			return Envelope{}, false
		}
		if !match {
			return Envelope{}, false
		}
	}
	return env, true
}

// handle delivers m when it matches, retrying with backoff; after
// MaxAttempts it stores a dead letter. It returns false when the worker
// stopped before m was delivered or dead-lettered.
func (w *worker) handle(ctx context.Context, m *message.Message) bool {
	env, ok := w.matches(m)
	if !ok {
		return true
	}
	d, err := newDelivery(w.rule.ID, env)
	if err != nil { // cannot happen: the payload was re-marshalled already
		w.log.Error("encode envelope", "log_id", m.ID, "err", err)
		return true
	}
	for attempt := 1; ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		start := time.Now()
		dctx, cancel := context.WithTimeout(w.hard, w.action.TimeoutOrDefault())
		err := w.target.Deliver(dctx, d)
		cancel()
		if err == nil {
			w.latency.Observe(time.Since(start).Seconds())
			w.delivered.Inc()
			w.pending.Delivered++
			w.dirty = true
			return true
		}
		if w.hard.Err() != nil {
			return false // aborted: not a failure of the target
		}
		w.failures.Inc()
		now := time.Now().UTC()
		w.pending.Failures++
		w.pending.LastError, w.pending.LastErrorAt = err.Error(), now
		w.dirty = true
		if attempt >= w.rule.MaxAttempts {
			return w.deadLetter(ctx, d, err.Error(), attempt, now)
		}
		if attempt == 1 {
			w.log.Warn("delivery failed; retrying", "log_id", m.ID, "err", err)
		} else {
			w.log.Debug("delivery failed", "log_id", m.ID, "attempt", attempt, "err", err)
		}
		w.save() // the status shows the error while retrying
		if !w.sleep(ctx, Backoff(attempt, w.m.o.BackoffBase, w.m.o.BackoffMax, rand.Float64())) {
			return false
		}
	}
}

// deadLetter stores d as a dead letter, retrying the store write until it
// succeeds or the worker stops.
func (w *worker) deadLetter(ctx context.Context, d *Delivery, lastErr string, attempts int, now time.Time) bool {
	dl := &DeadLetter{
		RuleID: w.rule.ID, Action: w.idx, LogID: d.Envelope.ID, Topic: d.Envelope.Topic,
		Envelope: d.Body, LastError: lastErr, Attempts: attempts, CreatedAt: now, UpdatedAt: now,
	}
	for try := 1; ; try++ {
		ctx, cancel := context.WithTimeout(context.Background(), storeTimeout)
		err := w.m.o.Store.AddDeadLetter(ctx, dl)
		cancel()
		if err == nil {
			break
		}
		if errors.Is(err, ErrNotFound) { // the rule was deleted meanwhile
			return false
		}
		w.log.Error("store dead letter", "log_id", d.Envelope.ID, "err", err)
		if !w.sleep(ctx, Backoff(try, w.m.o.BackoffBase, w.m.o.BackoffMax, rand.Float64())) {
			return false
		}
	}
	w.deadLetters.Inc()
	w.pending.DeadLetters++
	w.dirty = true
	w.log.Warn("delivery dead-lettered", "log_id", d.Envelope.ID, "attempts", attempts, "dead_letter", dl.ID, "err", lastErr)
	return true
}
