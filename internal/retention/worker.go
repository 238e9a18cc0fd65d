package retention

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/registry"
)

// MaxBatch caps Options.BatchSize: rows deleted per transaction.
const MaxBatch = 5000

// yieldFactor is how many times as long as a batch took the worker waits
// before the next one: with 1, retention takes at most half of the store's
// writer, ingest the rest. (Measured with a backlog, a larger factor slowed
// deletion in proportion without speeding ingest up measurably: what ingest
// loses is mostly CPU and WAL checkpoint I/O that deleting costs anyway.)
const yieldFactor = 1

// ProductLister lists products and their retention overrides.
type ProductLister interface {
	ListProducts(ctx context.Context, page registry.Page) ([]registry.Product, error)
}

// Options configure a Worker.
type Options struct {
	Store    Store
	Products ProductLister
	Periods  Periods
	// Interval is the wait between two runs (default 10 minutes).
	Interval time.Duration
	// StartDelay is the wait before Run's first pass (default 1 minute,
	// so that it does not compete with a starting gateway; negative:
	// none).
	StartDelay time.Duration
	// BatchSize is the number of rows per transaction (default and
	// maximum MaxBatch).
	BatchSize int
	// Pause is the least wait between two batches (default 10 ms;
	// negative: none). The worker also waits as long as the previous
	// batch took, so that it holds the store's writer at most half of the
	// time and queued writers (ingest) go first.
	Pause time.Duration
	// Now is the clock (default time.Now).
	Now        func() time.Time
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Stats is the outcome of one run.
type Stats struct {
	Deleted  map[Kind]int64
	HeldBack int64 // expired log entries kept for the point projector
	Lost     int64 // log entries deleted before a forwarding action handled them
	Duration time.Duration

	lostBy map[lostKey]int64 // Lost by rule action, logged once per run
}

type lostKey struct {
	rule   string
	action int
}

// Worker enforces retention: Run is its loop (a pass after StartDelay,
// then one every Interval) for a goroutine whose owner cancels the context to stop
// it; RunOnce is one pass.
type Worker struct {
	o   Options
	log *slog.Logger

	mu sync.Mutex // serialises runs

	deleted  *prometheus.CounterVec
	lost     *prometheus.CounterVec
	heldBack prometheus.Gauge
	lastRun  prometheus.Gauge
	duration prometheus.Gauge
	failures prometheus.Counter
}

// New returns a Worker; it does nothing until Run or RunOnce.
func New(o Options) *Worker {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Minute
	}
	switch {
	case o.StartDelay == 0:
		o.StartDelay = time.Minute
	case o.StartDelay < 0:
		o.StartDelay = 0
	}
	if o.BatchSize <= 0 || o.BatchSize > MaxBatch {
		o.BatchSize = MaxBatch
	}
	if o.Pause == 0 {
		o.Pause = 10 * time.Millisecond
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Worker{
		o:   o,
		log: o.Logger.With("component", "retention"),
		deleted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_retention_deleted_total", Help: "Rows deleted by retention, by kind of data.",
		}, []string{"kind"}),
		lost: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_retention_forward_lost_total",
			Help: "Message log entries retention deleted before a forwarding action handled them, by rule and action.",
		}, []string{"rule", "action"}),
		heldBack: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_retention_messages_held_back",
			Help: "Expired message log entries kept at the last run because the point projector has not projected them yet.",
		}),
		lastRun: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_retention_last_run_timestamp_seconds", Help: "End of the last retention run (Unix time).",
		}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_retention_last_run_duration_seconds", Help: "Duration of the last retention run.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_retention_failures_total", Help: "Retention runs that stopped on a storage error (retried at the next run).",
		}),
	}
	for _, k := range Kinds {
		w.deleted.WithLabelValues(string(k))
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(w.deleted, w.lost, w.heldBack, w.lastRun, w.duration, w.failures)
	}
	return w
}

// Run runs a pass after StartDelay and then every Interval until ctx
// ends. A pass in progress stops at its next batch when ctx ends.
func (w *Worker) Run(ctx context.Context) {
	t := time.NewTimer(w.o.StartDelay)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if _, err := w.RunOnce(ctx); err != nil && ctx.Err() == nil {
			w.failures.Inc()
			w.log.Warn("retention run failed", "err", err)
		}
		t.Reset(w.o.Interval)
	}
}

// overrides returns every product's retention overrides by product key.
func (w *Worker) overrides(ctx context.Context) (map[string]registry.Retention, error) {
	out := map[string]registry.Retention{}
	if w.o.Products == nil {
		return out, nil
	}
	page := registry.Page{Limit: 1000}
	for {
		ps, err := w.o.Products.ListProducts(ctx, page)
		if err != nil {
			return nil, fmt.Errorf("retention: list products: %w", err)
		}
		for _, p := range ps {
			out[p.ProductKey] = p.Retention
		}
		if len(ps) < page.Limit {
			return out, nil
		}
		page.After = ps[len(ps)-1].ProductKey
	}
}

// Period returns the retention period of kind for a product with the
// given overrides (0: keep forever).
func (p Periods) Period(kind Kind, o registry.Retention) time.Duration {
	pick := func(global time.Duration, override *time.Duration) time.Duration {
		if override != nil {
			return *override
		}
		return global
	}
	// longest treats 0 as forever.
	longest := func(a, b time.Duration) time.Duration {
		if a == 0 || b == 0 {
			return 0
		}
		return max(a, b)
	}
	switch kind {
	case Messages:
		return pick(p.Messages, o.Messages)
	case Points:
		return pick(p.Points, o.Points)
	case Events:
		return pick(p.Events, o.Events)
	case Commands:
		return pick(p.Commands, o.Commands)
	case DeadLetters:
		return p.DeadLetters
	case Rollups1m:
		return longest(p.Rollups1m, pick(p.Points, o.Points))
	case Rollups1h:
		return longest(p.Rollups1h, longest(p.Rollups1m, pick(p.Points, o.Points)))
	}
	return 0
}

// RunOnce deletes everything expired now, kind by kind and product by
// product, in batches.
func (w *Worker) RunOnce(ctx context.Context) (Stats, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	start := time.Now()
	st := Stats{Deleted: map[Kind]int64{}}
	defer func() {
		st.Duration = time.Since(start)
		w.duration.Set(st.Duration.Seconds())
		w.lastRun.Set(float64(w.o.Now().UnixNano()) / 1e9)
	}()
	ovr, err := w.overrides(ctx)
	if err != nil {
		return st, err
	}
	now := w.o.Now()
	var errs []error
	for _, kind := range Kinds {
		pks, err := w.o.Store.RetentionProducts(ctx, kind)
		if err != nil {
			errs = append(errs, fmt.Errorf("retention: %s: %w", kind, err))
			continue
		}
		for _, pk := range pks {
			period := w.o.Periods.Period(kind, ovr[pk])
			if period <= 0 {
				continue
			}
			if err := w.purge(ctx, Purge{Kind: kind, ProductKey: pk, Before: now.Add(-period), Limit: w.o.BatchSize}, &st); err != nil {
				if ctx.Err() != nil {
					return st, ctx.Err()
				}
				errs = append(errs, fmt.Errorf("retention: %s of %q: %w", kind, pk, err))
			}
		}
	}
	// One line per run and action, however many batches it took.
	for k, n := range st.lostBy {
		w.log.Warn("log entries deleted before a forwarding action handled them", "rule", k.rule, "action", k.action, "entries", n)
	}
	w.heldBack.Set(float64(st.HeldBack))
	if st.HeldBack > 0 {
		w.log.Warn("expired log entries kept: the point projector has not projected them yet", "entries", st.HeldBack)
	}
	if n := total(st.Deleted); n > 0 {
		w.log.Info("retention run", "deleted", n, "messages", st.Deleted[Messages], "points", st.Deleted[Points],
			"duration", time.Since(start))
	}
	return st, errors.Join(errs...)
}

func total(m map[Kind]int64) int64 {
	var n int64
	for _, v := range m {
		n += v
	}
	return n
}

// purge deletes batches until one comes back short.
func (w *Worker) purge(ctx context.Context, p Purge, st *Stats) error {
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		t0 := time.Now()
		res, err := w.o.Store.Purge(ctx, p)
		if err != nil {
			return err
		}
		took := time.Since(t0)
		st.Deleted[p.Kind] += int64(res.Deleted)
		w.deleted.WithLabelValues(string(p.Kind)).Add(float64(res.Deleted))
		st.HeldBack += res.HeldBack
		for _, l := range res.Lost {
			st.Lost += l.Entries
			w.lost.WithLabelValues(l.RuleID, strconv.Itoa(l.Action)).Add(float64(l.Entries))
			if st.lostBy == nil {
				st.lostBy = map[lostKey]int64{}
			}
			st.lostBy[lostKey{l.RuleID, l.Action}] += l.Entries
		}
		if res.Deleted < p.Limit {
			return nil
		}
		// Yield yieldFactor times as long as the batch took: retention
		// holds the store's writer at most half of the time.
		if pause := max(w.o.Pause, yieldFactor*took); pause > 0 {
			t := time.NewTimer(pause)
			select {
			case <-ctx.Done():
				t.Stop()
				return ctx.Err()
			case <-t.C:
			}
		}
	}
}
