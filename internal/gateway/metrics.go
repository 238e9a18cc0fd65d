package gateway

import (
	"errors"
	"time"

	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	authOK       prometheus.Counter
	authFailures *prometheus.CounterVec
	publish      *prometheus.CounterVec
	replays      *prometheus.CounterVec
	// thingDecodeFailures counts stored uplinks whose payload failed
	// thing-model validation (replied with a non-200 code), by kind.
	thingDecodeFailures *prometheus.CounterVec
	downlink            *prometheus.CounterVec
	// sessionsRevoked counts DTLS sessions ended because their device's
	// credentials changed.
	sessionsRevoked prometheus.Counter
}

// Failure reasons, as metric labels and log attributes.
const (
	reasonBadPayload       = "bad_payload"
	reasonUnknownDevice    = "unknown_device"
	reasonBadSign          = "bad_sign"
	reasonDisabled         = "disabled"
	reasonStore            = "store_unavailable"
	reasonNoToken          = "no_token"
	reasonBadToken         = "bad_token"
	reasonExpired          = "expired_token"
	reasonRevoked          = "revoked_token"
	reasonOtherIncarnation = "other_incarnation" // issued to a deleted device of the same keys
	reasonACL              = "topic_denied"
	reasonWrongMode        = "token_mode"    // a token of another mode (plain, symmetric, sign-E)
	reasonStaleSession     = "stale_session" // session token this node may have forgotten (restart, eviction)
	reasonNoSeq            = "no_seq"        // symmetric uplink without option 2089
	reasonBadSignE         = "bad_sign_e"    // option 2101 that no candidate device's key opens
)

func newMetrics(reg prometheus.Registerer, transport string, p *presence.Tracker, now func() time.Time, tables ...*replay.Sessions) *metrics {
	labels := prometheus.Labels{"transport": transport}
	m := &metrics{
		sessionsRevoked: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_dtls_sessions_revoked_total", Help: "DTLS sessions ended because their device was deleted, re-created or disabled, or its secret rotated or tokens revoked.", ConstLabels: labels,
		}),
		authOK: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "coapgate_auth_success_total", Help: "Successful device authentications.", ConstLabels: labels,
		}),
		authFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_auth_failures_total", Help: "Refused device authentications and token checks, by reason.", ConstLabels: labels,
		}, []string{"reason"}),
		publish: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_publish_total", Help: "Uplink publishes by result.", ConstLabels: labels,
		}, []string{"result"}),
		replays: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_replay_rejected_total", Help: "Session-mode uplinks refused for their sequence number (options 2089, 2101), by reason.", ConstLabels: labels,
		}, []string{"reason"}),
		thingDecodeFailures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_thing_decode_failures_total", Help: "Uplinks stored whose thing-model payload failed validation (answered with a non-200 reply code), by topic kind.", ConstLabels: labels,
		}, []string{"kind"}),
		downlink: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_downlink_total", Help: "Downlink command traffic on the CoAP listener by result: announced (option 2100), delivered, none_waiting, denied, refused, replied, reply_unmatched, reply_late, reply_unparsable.", ConstLabels: labels,
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.authOK, m.authFailures, m.publish, m.replays, m.thingDecodeFailures, m.downlink, m.sessionsRevoked)
		// The table is one per node (shared by the listeners): every
		// transport label reports the same figures.
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgate_replay_sessions", Help: "Sessions whose replay window this node holds in memory (tables shared by all listeners).", ConstLabels: labels,
		}, func() float64 {
			n := 0
			for _, t := range tables {
				n += t.Len()
			}
			return float64(n)
		}))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_replay_sessions_evicted_total", Help: "Unexpired sessions evicted from memory for room (rebuilt from the store on their next uplink; tables shared by all listeners).", ConstLabels: labels,
		}, func() float64 {
			var n uint64
			for _, t := range tables {
				n += t.Evicted()
			}
			return float64(n)
		}))
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "coapgate_replay_sessions_restored_total", Help: "Sessions rebuilt from their durable replay state (after a restart or an eviction; tables shared by all listeners).", ConstLabels: labels,
		}, func() float64 {
			var n uint64
			for _, t := range tables {
				n += t.Restored()
			}
			return float64(n)
		}))
		if p != nil {
			reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "coapgate_devices_online", Help: "Devices online (seen within their lifetime) on this node, by the transport of their last contact.", ConstLabels: labels,
			}, func() float64 { return float64(p.OnlineVia(transport, now())) }))
		}
	}
	return m
}

// replayReason labels a refused sequence number.
func replayReason(err error) string {
	switch {
	case errors.Is(err, replay.ErrBelowFloor):
		return "below_offset"
	case errors.Is(err, replay.ErrTooOld):
		return "too_old"
	default:
		return "repeated"
	}
}

// registerCache exports the device cache's segment sizes.
func (m *metrics) registerCache(reg prometheus.Registerer, transport string, c *devCache) {
	if reg == nil {
		return
	}
	for _, seg := range []string{"known", "unknown"} {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgate_device_cache_entries", Help: "Device cache entries, by segment: known devices, unknown names (expiring after 1 s).",
			ConstLabels: prometheus.Labels{"transport": transport, "segment": seg},
		}, func() float64 {
			k, n := c.sizes()
			if seg == "known" {
				return float64(k)
			}
			return float64(n)
		}))
	}
}
