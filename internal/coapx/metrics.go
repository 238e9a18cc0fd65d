package coapx

import (
	"fmt"
	"time"

	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the CoAP layer's Prometheus metrics, shared by every listener
// (labelled by transport).
type Metrics struct {
	responses  *prometheus.CounterVec
	latency    *prometheus.HistogramVec
	malformedC *prometheus.CounterVec
	duplicates *prometheus.CounterVec
	overloads  *prometheus.CounterVec
	evicted    *prometheus.CounterVec
	writeErrs  *prometheus.CounterVec
	pings      *prometheus.CounterVec
	dedupSize  *prometheus.GaugeVec
	outReqs    *prometheus.CounterVec
	blockRef   *prometheus.CounterVec
	blockBytes *prometheus.GaugeVec
	blockXfers *prometheus.GaugeVec
	blockPeers *prometheus.GaugeVec
	blockAnon  *prometheus.GaugeVec
}

// NewMetrics registers the CoAP metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		responses: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_responses_total", Help: "CoAP responses sent, by transport and response code.",
		}, []string{"transport", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "coapgate_coap_request_duration_seconds", Help: "Time from datagram receipt to response sent.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1},
		}, []string{"transport"}),
		malformedC: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_malformed_total", Help: "Datagrams rejected as malformed, by reason.",
		}, []string{"transport", "reason"}),
		duplicates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_duplicates_total", Help: "Duplicate requests (same peer and Message ID) answered from cache or dropped.",
		}, []string{"transport"}),
		overloads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_overload_total", Help: "Requests refused with 5.03 because the worker queue was full.",
		}, []string{"transport"}),
		evicted: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_dedup_evicted_early_total", Help: "Dedup entries evicted before EXCHANGE_LIFETIME because the cache was full.",
		}, []string{"transport"}),
		writeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_write_errors_total", Help: "UDP writes that failed.",
		}, []string{"transport"}),
		pings: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_pings_total", Help: "CoAP pings (empty CON) answered with RST.",
		}, []string{"transport"}),
		dedupSize: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_coap_dedup_entries", Help: "Exchanges held in the dedup/response cache.",
		}, []string{"transport"}),
		outReqs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_server_requests_total", Help: "Server-initiated CON requests (command pushes), by result: acked, reset, timeout.",
		}, []string{"transport", "result"}),
		blockRef: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_coap_block1_refused_total", Help: "Block1 transfers refused before buffering, by reason: not_admitted (credential or resource refused at the first block), budget (reassembly budget spent: 5.03), too_large (4.13).",
		}, []string{"transport", "reason"}),
		blockBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_coap_block1_reserved_bytes", Help: "Bytes reserved by Block1 transfers in progress (bounded by coap.block_budget).",
		}, []string{"transport"}),
		blockXfers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_coap_block1_transfers", Help: "Block1 transfers in progress.",
		}, []string{"transport"}),
		blockAnon: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_coap_block1_anonymous_bytes", Help: "Bytes reserved by Block1 transfers admitted without a credential (authentication requests; at most an eighth of coap.block_budget).",
		}, []string{"transport"}),
		blockPeers: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_coap_block1_peers", Help: "Peers (source addresses or sessions) with a Block1 transfer in progress.",
		}, []string{"transport"}),
	}
	if reg != nil {
		reg.MustRegister(m.responses, m.latency, m.malformedC, m.duplicates, m.overloads, m.evicted, m.writeErrs, m.pings, m.dedupSize, m.outReqs,
			m.blockRef, m.blockBytes, m.blockXfers, m.blockPeers, m.blockAnon)
	}
	return m
}

// CodeString formats a CoAP code as "c.dd" (e.g. "2.04").
func CodeString(c codes.Code) string { return fmt.Sprintf("%d.%02d", c>>5, c&0x1f) }

// listenerMetrics is Metrics curried for one transport; a nil receiver is a
// no-op, so a Server without metrics needs no checks.
type listenerMetrics struct {
	m         *Metrics
	transport string
	latency   prometheus.Observer
	dups      prometheus.Counter
}

func (m *Metrics) forListener(transport string) *listenerMetrics {
	if m == nil {
		return nil
	}
	return &listenerMetrics{m: m, transport: transport,
		latency: m.latency.WithLabelValues(transport),
		dups:    m.duplicates.WithLabelValues(transport)}
}

func (l *listenerMetrics) response(c codes.Code, d time.Duration) {
	if l == nil {
		return
	}
	l.m.responses.WithLabelValues(l.transport, CodeString(c)).Inc()
	l.latency.Observe(d.Seconds())
}

func (l *listenerMetrics) malformed(reason string) {
	if l != nil {
		l.m.malformedC.WithLabelValues(l.transport, reason).Inc()
	}
}

func (l *listenerMetrics) duplicate() {
	if l != nil {
		l.dups.Inc()
	}
}

func (l *listenerMetrics) overload() {
	if l != nil {
		l.m.overloads.WithLabelValues(l.transport).Inc()
	}
}

func (l *listenerMetrics) dedupEvicted(n int) {
	if l != nil {
		l.m.evicted.WithLabelValues(l.transport).Add(float64(n))
	}
}

func (l *listenerMetrics) writeError() {
	if l != nil {
		l.m.writeErrs.WithLabelValues(l.transport).Inc()
	}
}

func (l *listenerMetrics) ping() {
	if l != nil {
		l.m.pings.WithLabelValues(l.transport).Inc()
	}
}

func (l *listenerMetrics) setDedupSize(n int) {
	if l != nil {
		l.m.dedupSize.WithLabelValues(l.transport).Set(float64(n))
	}
}

func (l *listenerMetrics) outRequest(result string) {
	if l != nil {
		l.m.outReqs.WithLabelValues(l.transport, result).Inc()
	}
}

func (l *listenerMetrics) blockRefused(reason string) {
	if l != nil {
		l.m.blockRef.WithLabelValues(l.transport, reason).Inc()
	}
}

func (l *listenerMetrics) setBlockStats(st BlockStats) {
	if l != nil {
		l.m.blockBytes.WithLabelValues(l.transport).Set(float64(st.Reserved))
		l.m.blockXfers.WithLabelValues(l.transport).Set(float64(st.Transfers))
		l.m.blockPeers.WithLabelValues(l.transport).Set(float64(st.Peers))
		l.m.blockAnon.WithLabelValues(l.transport).Set(float64(st.Anonymous))
	}
}
