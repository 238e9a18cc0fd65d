package forward

import "github.com/prometheus/client_golang/prometheus"

// metrics are the forwarding counters, labelled by rule ID and action
// label ("{index}:{type}").
type metrics struct {
	delivered   *prometheus.CounterVec
	failures    *prometheus.CounterVec
	deadLetters *prometheus.CounterVec
	lag         *prometheus.GaugeVec
	latency     *prometheus.HistogramVec // by action type
	condErrors  *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_forward_delivered_total",
			Help: "Log entries delivered by forwarding actions.",
		}, []string{"rule", "action"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_forward_failures_total",
			Help: "Failed delivery attempts of forwarding actions (each retry counts).",
		}, []string{"rule", "action"}),
		deadLetters: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_forward_dead_letters_total",
			Help: "Log entries given up on after the rule's maxAttempts and stored as dead letters.",
		}, []string{"rule", "action"}),
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "coapgate_forward_lag_messages",
			Help: "Log entries after a forwarding action's cursor (newest log ID minus cursor).",
		}, []string{"rule", "action"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "coapgate_forward_delivery_seconds",
			Help:    "Duration of successful delivery attempts, by action type.",
			Buckets: prometheus.ExponentialBuckets(0.0005, 4, 9),
		}, []string{"type"}),
		condErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_forward_condition_errors_total",
			Help: "Rule conditions that failed at run time (the entry counts as not matching).",
		}, []string{"rule"}),
	}
	if reg != nil {
		reg.MustRegister(m.delivered, m.failures, m.deadLetters, m.lag, m.latency, m.condErrors)
	}
	return m
}

// forget drops the series of a deleted rule.
func (m *metrics) forget(ruleID string) {
	l := prometheus.Labels{"rule": ruleID}
	m.delivered.DeletePartialMatch(l)
	m.failures.DeletePartialMatch(l)
	m.deadLetters.DeletePartialMatch(l)
	m.lag.DeletePartialMatch(l)
	m.condErrors.DeletePartialMatch(l)
}
