package point

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/message"
)

// DecodeFunc turns one logged uplink into samples. The Projector sets each
// sample's MessageID, fills an empty ProductKey/DeviceKey from m and a zero
// Time with m.ReceivedAt. It returns (nil, nil)
// for messages that carry no points (raw data, custom topics, replies) and
// an error for a thing-model payload that does not decode; the Projector
// skips such a message (its raw form stays in the log) and counts it.
// It must be safe to call from one goroutine at a time and must not keep m.
type DecodeFunc func(m *message.Message) ([]Sample, error)

// Log is the part of the message log the projector reads.
type Log interface {
	List(ctx context.Context, q message.Query) ([]message.Message, error)
}

// ProjectorOptions configures NewProjector. Log, Store and Decode are
// required.
type ProjectorOptions struct {
	Log    Log
	Store  Writer
	Decode DecodeFunc
	// Notify wakes the projector when the log grows; nil: it only polls.
	Notify message.Notifier
	// Name is the cursor's name (default "points").
	Name string
	// Poll is the fallback poll interval (default 1 s).
	Poll time.Duration
	// Batch is the number of log entries read per transaction (default
	// and cap 1000, the log's page cap).
	Batch      int
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Backoff bounds of the retry after a failed read or write.
const (
	minBackoff = 100 * time.Millisecond
	maxBackoff = 30 * time.Second
)

// Projector tails the message log and projects it into a Writer. Run it on
// a goroutine its owner cancels; WaitFor is safe for concurrent use.
type Projector struct {
	o   ProjectorOptions
	log *slog.Logger

	projected   prometheus.Counter
	undecodable prometheus.Counter
	failures    prometheus.Counter
	lag         prometheus.Gauge

	mu   sync.Mutex
	done int64         // guarded by mu; every log entry <= done is projected
	wake chan struct{} // guarded by mu; closed when done advances
}

// NewProjector returns a projector; call Run to start it.
func NewProjector(o ProjectorOptions) *Projector {
	if o.Name == "" {
		o.Name = "points"
	}
	if o.Poll <= 0 {
		o.Poll = time.Second
	}
	if o.Batch <= 0 || o.Batch > 1000 {
		o.Batch = 1000
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	p := &Projector{
		o:   o,
		log: o.Logger.With("component", "points", "cursor", o.Name),
		projected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_points_projected_total", Help: "Samples written to the point store by the projector.",
		}),
		undecodable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_points_undecodable_total", Help: "Logged messages skipped by the projector because their payload did not decode (they stay in the log).",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_points_projector_failures_total", Help: "Failed projector reads or writes (retried with backoff).",
		}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_points_projector_lag_messages", Help: "Newest log ID minus the projector's cursor.",
		}),
		wake: make(chan struct{}),
	}
	if o.Registerer != nil {
		o.Registerer.MustRegister(p.projected, p.undecodable, p.failures, p.lag)
	}
	return p
}

// Run projects until ctx is done, then returns nil. Failures are logged,
// counted and retried with exponential backoff (100 ms to 30 s); a batch
// is never skipped because of a store error.
func (p *Projector) Run(ctx context.Context) error {
	backoff := minBackoff
	var cursor int64
	loaded := false
	for {
		// Subscribe before reading, so an append committed during the
		// read wakes the next wait.
		var changed <-chan struct{}
		if p.o.Notify != nil {
			changed = p.o.Notify.Changed()
		}
		var err error
		if !loaded {
			if cursor, err = p.o.Store.Cursor(ctx, p.o.Name); err == nil {
				loaded = true
				p.advance(cursor)
			}
		}
		more := false
		if err == nil {
			cursor, more, err = p.step(ctx, cursor)
		}
		if ctx.Err() != nil {
			return nil
		}
		wait := p.o.Poll
		switch {
		case err != nil:
			p.failures.Inc()
			p.log.Warn("projection failed; retrying", "err", err, "retry_in", backoff)
			wait = backoff
			backoff = min(backoff*2, maxBackoff)
		case more:
			backoff = minBackoff
			continue
		default:
			backoff = minBackoff
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-changed:
			if err != nil { // keep the backoff after a failure
				<-t.C
			}
		case <-t.C:
		}
		t.Stop()
	}
}

// step projects one batch after cursor and returns the new cursor and
// whether more entries may be waiting.
func (p *Projector) step(ctx context.Context, cursor int64) (int64, bool, error) {
	// The newest ID (events included) read before the listing: once the
	// listing comes back short, everything up to newest is projected. The
	// log has one writer, so no ID below newest can commit later.
	newest, err := p.newest(ctx)
	if err != nil {
		return cursor, false, err
	}
	msgs, err := p.o.Log.List(ctx, message.Query{AfterID: cursor, Limit: p.o.Batch})
	if err != nil {
		return cursor, false, fmt.Errorf("read log after %d: %w", cursor, err)
	}
	more := len(msgs) >= p.o.Batch
	upto := cursor
	if len(msgs) > 0 {
		upto = msgs[len(msgs)-1].ID
	}
	if !more && newest > upto {
		upto = newest // only events (which carry no points) follow
	}
	if upto == cursor {
		p.lag.Set(0)
		return cursor, false, nil
	}
	var samples []Sample
	for i := range msgs {
		m := &msgs[i]
		ss, err := p.o.Decode(m)
		if err != nil {
			p.undecodable.Inc()
			p.log.Debug("message skipped: payload does not decode", "id", m.ID, "pk", m.ProductKey, "dk", m.DeviceKey, "topic", m.Topic, "err", err)
			continue
		}
		for j := range ss {
			ss[j].MessageID = m.ID
			if ss[j].Time.IsZero() {
				ss[j].Time = m.ReceivedAt
			}
			if ss[j].ProductKey == "" {
				ss[j].ProductKey, ss[j].DeviceKey = m.ProductKey, m.DeviceKey
			}
		}
		samples = append(samples, ss...)
	}
	if err := p.o.Store.Project(ctx, p.o.Name, upto, samples); err != nil {
		return cursor, false, fmt.Errorf("project log %d..%d: %w", cursor+1, upto, err)
	}
	p.projected.Add(float64(len(samples)))
	p.lag.Set(float64(max(newest-upto, 0)))
	p.advance(upto)
	return upto, more, nil
}

// newest returns the newest log ID, 0 for an empty log.
func (p *Projector) newest(ctx context.Context) (int64, error) {
	ms, err := p.o.Log.List(ctx, message.Query{Descending: true, Limit: 1, IncludeEvents: true})
	if err != nil {
		return 0, fmt.Errorf("read newest log id: %w", err)
	}
	if len(ms) == 0 {
		return 0, nil
	}
	return ms[0].ID, nil
}

// advance records that every entry up to id is projected.
func (p *Projector) advance(id int64) {
	p.mu.Lock()
	if id > p.done {
		p.done = id
		close(p.wake)
		p.wake = make(chan struct{})
	}
	p.mu.Unlock()
}

// Done returns the ID up to which the log is projected.
func (p *Projector) Done() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.done
}

// WaitFor blocks until the log entry id (and every one before it) is
// projected, or ctx is done.
func (p *Projector) WaitFor(ctx context.Context, id int64) error {
	for {
		p.mu.Lock()
		done, wake := p.done, p.wake
		p.mu.Unlock()
		if done >= id {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait for projection of %d (at %d): %w", id, done, context.Cause(ctx))
		case <-wake:
		}
	}
}
