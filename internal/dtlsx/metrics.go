package dtlsx

import (
	"net/netip"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	failures   *prometheus.CounterVec
	handshakes *prometheus.CounterVec
	closed     *prometheus.CounterVec
	sessions   prometheus.Gauge
	inflight   prometheus.Gauge
	dropped    prometheus.Counter

	hibernated        prometheus.Gauge
	hibernations      prometheus.Counter
	memoryReleases    prometheus.Counter
	resumes           prometheus.Counter
	resumeFailures    prometheus.Counter
	hibernateFailures prometheus.Counter
	asleepRejected    prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_dtls_handshake_failures_total",
			Help: "DTLS handshakes refused or failed, by reason.",
		}, []string{"reason"}),
		handshakes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_dtls_handshakes_total",
			Help: "DTLS handshakes completed, by cipher suite.",
		}, []string{"suite"}),
		closed: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_dtls_sessions_closed_total",
			Help: "Established DTLS sessions ended, by reason.",
		}, []string{"reason"}),
		sessions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_dtls_sessions",
			Help: "Established DTLS sessions.",
		}),
		inflight: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_dtls_handshakes_in_flight",
			Help: "DTLS handshakes in progress (state allocated).",
		}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_datagrams_dropped_total",
			Help: "Datagrams on the DTLS port dropped without state: not a ClientHello from an unknown address, or a full session queue.",
		}),
		hibernated: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "coapgate_dtls_sessions_hibernated",
			Help: "Established DTLS sessions hibernated as a state snapshot (included in coapgate_dtls_sessions).",
		}),
		hibernations: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_hibernations_total",
			Help: "Idle DTLS sessions hibernated.",
		}),
		memoryReleases: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_memory_releases_total",
			Help: "Forced returns of freed memory to the OS after a sweep hibernated many sessions at once.",
		}),
		resumes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_resumes_total",
			Help: "Hibernated DTLS sessions resumed by a datagram or a write.",
		}),
		resumeFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_resume_failures_total",
			Help: "Hibernated DTLS sessions that could not be resumed from their snapshot (and were closed).",
		}),
		hibernateFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_hibernate_failures_total",
			Help: "Idle DTLS sessions whose state could not be snapshotted (they stay active).",
		}),
		asleepRejected: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_hibernated_records_rejected_total",
			Help: "Datagrams for a hibernated DTLS session refused before resuming it: replayed or stale sequence number, wrong epoch, or not a protected record.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.failures, m.handshakes, m.closed, m.sessions, m.inflight, m.dropped,
			m.hibernated, m.hibernations, m.memoryReleases, m.resumes, m.resumeFailures, m.hibernateFailures, m.asleepRejected)
	}
	return m
}

// rateLimiter is a token bucket per source IP address, used only by the
// read loop (not safe for concurrent use). It holds at most max addresses;
// buckets that refilled completely are pruned.
type rateLimiter struct {
	rate  float64 // tokens per second; < 0: unlimited
	burst float64
	max   int
	m     map[netip.Addr]*bucket
}

type bucket struct {
	tokens float64
	at     time.Time
}

func newRateLimiter(rate float64, max int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: max1(rate), max: max, m: make(map[netip.Addr]*bucket)}
}

func max1(f float64) float64 {
	if f < 1 {
		return 1
	}
	return f
}

// allow takes one token for addr.
func (r *rateLimiter) allow(addr netip.Addr, now time.Time) bool {
	if r.rate < 0 {
		return true
	}
	b, ok := r.m[addr]
	if !ok {
		if len(r.m) >= r.max {
			clear(r.m) // bounded: a flood of sources resets the table
		}
		b = &bucket{tokens: r.burst, at: now}
		r.m[addr] = b
	}
	b.tokens = min(r.burst, b.tokens+now.Sub(b.at).Seconds()*r.rate)
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// prune drops buckets that are full again.
func (r *rateLimiter) prune(now time.Time) {
	if r.rate <= 0 {
		return
	}
	for a, b := range r.m {
		if b.tokens+now.Sub(b.at).Seconds()*r.rate >= r.burst {
			delete(r.m, a)
		}
	}
}
