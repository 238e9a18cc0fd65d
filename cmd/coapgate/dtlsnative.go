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

// newNativeDTLS builds the DTLS listener on the native engine
// (dtls.engine: native): same gateway, PSK lookup, presence and push
// hooks as the pion listener.
func newNativeDTLS(cfg config.Config, gw *gateway.Gateway, coap *coapx.Server, reg prometheus.Registerer, log *slog.Logger) (*native.Server, error) {
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
		OnUp: func(ss *native.Session) {
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
