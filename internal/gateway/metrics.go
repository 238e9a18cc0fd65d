package gateway

import (
	"time"

	"github.com/coapgate/coapgate/internal/presence"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	authOK       prometheus.Counter
	authFailures *prometheus.CounterVec
	publish      *prometheus.CounterVec
}

// Failure reasons, as metric labels and log attributes.
const (
	reasonBadPayload    = "bad_payload"
	reasonUnknownDevice = "unknown_device"
	reasonBadSign       = "bad_sign"
	reasonDisabled      = "disabled"
	reasonStore         = "store_unavailable"
	reasonNoToken       = "no_token"
	reasonBadToken      = "bad_token"
	reasonExpired       = "expired_token"
	reasonRevoked       = "revoked_token"
	reasonACL           = "topic_denied"
)

func newMetrics(reg prometheus.Registerer, transport string, p *presence.Tracker, now func() time.Time) *metrics {
	labels := prometheus.Labels{"transport": transport}
	m := &metrics{
		authOK: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_auth_success_total", Help: "Successful device authentications.", ConstLabels: labels,
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_auth_failures_total", Help: "Refused device authentications and token checks, by reason.", ConstLabels: labels,
		}, []string{"reason"}),
		publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_publish_total", Help: "Uplink publishes by result.", ConstLabels: labels,
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.authOK, m.authFailures, m.publish)
		if p != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "coapgate_devices_online", Help: "Devices online (seen within their lifetime) on this node.", ConstLabels: labels,
			}, func() float64 { return float64(p.Online(now())) }))
		}
	}
	return m
}
