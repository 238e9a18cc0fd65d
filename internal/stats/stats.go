// Package stats keeps a short in-memory history of the gateway's own
// Prometheus counters: a ring of periodic samples (by default one every
// 10 s for the last hour) of uplinks stored, errors answered and devices
// online, for the console's overview (GET /api/v1/stats). Nothing is
// persisted; a restart starts an empty history.
package stats

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Metric names read from the gatherer.
const (
	metricUplinks   = "coapgate_ingest_messages_total"
	metricResponses = "coapgate_coap_responses_total"
	metricMalformed = "coapgate_coap_malformed_total"
)

// Sample is one interval of the history: Uplinks and Errors are counted
// during the interval ending at Time; the device counts are taken at Time.
type Sample struct {
	Time time.Time `json:"time"`
	// Uplinks stored (acknowledged) during the interval.
	Uplinks uint64 `json:"uplinks"`
	// Errors: CoAP responses with a 4.xx or 5.xx code plus datagrams
	// dropped as malformed, during the interval.
	Errors uint64 `json:"errors"`
	// DevicesOnline on this node at Time.
	DevicesOnline int `json:"devicesOnline"`
	// DevicesOffline: devices this node has seen since it started that are
	// no longer online.
	DevicesOffline int `json:"devicesOffline"`
}

// Options configures a Sampler.
type Options struct {
	Gatherer prometheus.Gatherer
	// Devices returns how many devices are online and how many this node
	// has seen in all; nil reports zeros.
	Devices func(now time.Time) (online, seen int)
	// Interval between samples; <= 0 means 10 s.
	Interval time.Duration
	// Size is the number of samples kept; <= 0 means one hour's worth.
	Size   int
	Logger *slog.Logger
	// Now defaults to time.Now.
	Now func() time.Time
}

// Sampler samples the counters periodically into a fixed-size ring. Safe
// for concurrent use.
type Sampler struct {
	o Options

	mu       sync.Mutex
	ring     []Sample // guarded by mu; ring[next] is the oldest once full
	next     int      // guarded by mu
	full     bool     // guarded by mu
	last     counters // guarded by mu; totals at the previous sample
	haveLast bool     // guarded by mu
}

type counters struct{ uplinks, errors float64 }

// New returns a Sampler; call Run to start sampling.
func New(o Options) *Sampler {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.Size <= 0 {
		o.Size = int(time.Hour / o.Interval)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Sampler{o: o, ring: make([]Sample, o.Size)}
}

// Interval is the time between samples.
func (s *Sampler) Interval() time.Duration { return s.o.Interval }

// Run samples once at start (the baseline) and then every Interval until
// ctx ends.
func (s *Sampler) Run(ctx context.Context) {
	s.SampleOnce()
	t := time.NewTicker(s.o.Interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			s.SampleOnce()
		}
	}
}

// SampleOnce reads the counters and, from the second call on, appends the
// interval since the previous call to the ring.
func (s *Sampler) SampleOnce() {
	now := s.o.Now().UTC()
	c, err := s.read()
	if err != nil {
		s.o.Logger.Warn("stats: gather metrics", "err", err)
		return
	}
	var online, seen int
	if s.o.Devices != nil {
		online, seen = s.o.Devices(now)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.haveLast {
		s.ring[s.next] = Sample{
			Time:           now,
			Uplinks:        delta(c.uplinks, s.last.uplinks),
			Errors:         delta(c.errors, s.last.errors),
			DevicesOnline:  online,
			DevicesOffline: max(seen-online, 0),
		}
		s.next++
		if s.next == len(s.ring) {
			s.next, s.full = 0, true
		}
	}
	s.last, s.haveLast = c, true
}

// delta is cur-prev for a counter, cur when the counter went back (reset).
func delta(cur, prev float64) uint64 {
	if cur < prev {
		return uint64(cur)
	}
	return uint64(cur - prev)
}

// Samples returns the history, oldest first.
func (s *Sampler) Samples() []Sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.full {
		return append([]Sample(nil), s.ring[:s.next]...)
	}
	out := make([]Sample, 0, len(s.ring))
	out = append(out, s.ring[s.next:]...)
	return append(out, s.ring[:s.next]...)
}

// read sums the counters of interest over all their label sets.
func (s *Sampler) read() (counters, error) {
	mfs, err := s.o.Gatherer.Gather()
	if err != nil {
		return counters{}, err
	}
	var c counters
	for _, mf := range mfs {
		switch mf.GetName() {
		case metricUplinks:
			c.uplinks += sum(mf, nil)
		case metricMalformed:
			c.errors += sum(mf, nil)
		case metricResponses:
			c.errors += sum(mf, func(m *dto.Metric) bool {
				for _, l := range m.GetLabel() {
					if l.GetName() == "code" {
						return strings.HasPrefix(l.GetValue(), "4.") || strings.HasPrefix(l.GetValue(), "5.")
					}
				}
				return false
			})
		}
	}
	return c, nil
}

func sum(mf *dto.MetricFamily, keep func(*dto.Metric) bool) float64 {
	var t float64
	for _, m := range mf.GetMetric() {
		if keep != nil && !keep(m) {
			continue
		}
		if c := m.GetCounter(); c != nil {
			t += c.GetValue()
		}
	}
	return t
}
