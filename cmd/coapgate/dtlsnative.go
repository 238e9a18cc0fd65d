package main

import (
	"log/slog"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/coapgate/coapgate/internal/gateway"
	"github.com/prometheus/client_golang/prometheus"
)

// newDTLS builds the DTLS listener (the native engine) with the gateway's
// PSK lookup, session binding, presence and push hooks.
func newDTLS(cfg config.Config, gw *gateway.Gateway, coap *coapx.Server, reg prometheus.Registerer, log *slog.Logger) (*native.Server, error) {
	cert, err := loadDTLSCert(cfg, log)
	if err != nil {
		return nil, err
	}
	suites, err := cfg.DTLS.SuiteIDs()
	if err != nil {
		return nil, err
	}
	return native.New(native.Config{
		LookupPSK:        gw.LookupPSK,
		Suites:           suites,
		Certificate:      cert,
		ConnectionID:     cfg.DTLS.ConnectionID,
		MaxSessions:      cfg.DTLS.MaxSessions,
		MaxHandshakes:    cfg.DTLS.MaxHandshakes,
		HandshakeTimeout: cfg.DTLS.HandshakeTimeout,
		IdleTimeout:      cfg.DTLS.IdleTimeout,
		// Under pressure only (half of max_handshakes in progress).
		MaxHandshakesPerAddress: cfg.DTLS.MaxHandshakesPerAddress,
		HandshakeRate:           float64(cfg.DTLS.HandshakeRate),
		ReadBuffer:              cfg.CoAP.ReadBuffer,
		OnUp: func(ss *native.Session) {
			if !gw.BindSession(ss) {
				return // keyed by a secret the device no longer has, or disabled meanwhile: revoked
			}
			gw.SessionUp(ss.PSKIdentity(), ss.Peer(), time.Now())
			if id := ss.PSKIdentity(); id != nil && id.SecureMode == dtlspsk.ModeDevice {
				gw.SessionLive(id.ProductKey, id.DeviceKey, ss)
			}
		},
		OnDown:     func(ss *native.Session, _ string) { gw.SessionGone(ss) },
		Registerer: reg,
		Logger:     log,
	}, coap)
}
