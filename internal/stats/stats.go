// Package stats keeps a short in-memory history of the gateway's own
// Prometheus counters: a ring of periodic samples (by default one every
// 10 s for the last hour) of uplinks stored, errors answered, devices
// online and registered, for the console's overview (GET /api/v1/stats).
// Nothing is persisted; a restart starts an empty history.
package stats

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/coapgate/coapgate/internal/registry"
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
	// DevicesOnline at Time, as Options.Devices counts them (this node's,
	// or a cluster's).
	DevicesOnline int `json:"devicesOnline"`
	// DevicesOffline: devices seen that are no longer online (Options.Devices).
	DevicesOffline int `json:"devicesOffline"`
	// DevicesRegistered is the number of devices in the registry, counted
	// every Options.CountEvery and at the next sample after MarkChanged (-1
	// until the first count).
	DevicesRegistered int `json:"devicesRegistered"`
}

// DeviceLister pages through the registry's devices (registry.Store).
type DeviceLister interface {
	ListDevices(ctx context.Context, productKey string, page registry.Page) ([]registry.Device, error)
}

// countPage is the page size of a registry count.
const countPage = 1000

// CountDevices counts every device of the registry by paging through it.
func CountDevices(ctx context.Context, l DeviceLister) (int, error) {
	n, after := 0, ""
	for {
		ds, err := l.ListDevices(ctx, "", registry.Page{Limit: countPage, After: after})
		if err != nil {
			return n, fmt.Errorf("count devices: %w", err)
		}
		n += len(ds)
		if len(ds) < countPage {
			return n, nil
		}
		last := ds[len(ds)-1]
		after = last.ProductKey + "/" + last.DeviceKey
	}
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
	Size int
	// Registry, when set, is counted for DevicesRegistered every
	// CountEvery (<= 0 means 1 minute), and at the next sample after
	// MarkChanged.
	Registry   DeviceLister
	CountEvery time.Duration
	Logger     *slog.Logger
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

	registered int       // guarded by mu; -1 until counted
	countedAt  time.Time // guarded by mu
	changed    bool      // guarded by mu; devices were added or removed since the count
}

// MarkChanged tells the Sampler that devices were created or deleted: the
// next sample recounts the registry instead of waiting for CountEvery.
func (s *Sampler) MarkChanged() {
	s.mu.Lock()
	s.changed = true
	s.mu.Unlock()
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
	if o.CountEvery <= 0 {
		o.CountEvery = time.Minute
	}
	return &Sampler{o: o, ring: make([]Sample, o.Size), registered: -1}
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
	s.countRegistry(now)
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
			Time:              now,
			Uplinks:           delta(c.uplinks, s.last.uplinks),
			Errors:            delta(c.errors, s.last.errors),
			DevicesOnline:     online,
			DevicesOffline:    max(seen-online, 0),
			DevicesRegistered: s.registered,
		}
		s.next++
		if s.next == len(s.ring) {
			s.next, s.full = 0, true
		}
	}
	s.last, s.haveLast = c, true
}

// countRegistry recounts the registry when the last count is older than
// CountEvery; a failed count keeps the previous one (and is logged).
func (s *Sampler) countRegistry(now time.Time) {
	if s.o.Registry == nil {
		return
	}
	s.mu.Lock()
	due := s.registered < 0 || s.changed || now.Sub(s.countedAt) >= s.o.CountEvery
	if due {
		s.changed = false // a change during the count marks it again
	}
	s.mu.Unlock()
	if !due {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.o.Interval)
	defer cancel()
	n, err := CountDevices(ctx, s.o.Registry)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.countedAt = now
	if err != nil {
		s.o.Logger.Warn("stats: count devices", "err", err)
		return
	}
	s.registered = n
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
