package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/coapgate/coapgate/internal/dtlsx/natskv"
	"github.com/coapgate/coapgate/internal/gateway"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
)

// newDTLS builds the DTLS listener (the native engine) with the gateway's
// PSK lookup, session binding, presence and push hooks. closeFn releases
// the session replication's NATS connection (after the listener stopped).
func newDTLS(cfg config.Config, gw *gateway.Gateway, coap *coapx.Server, reg prometheus.Registerer, log *slog.Logger) (srv *native.Server, closeFn func(), err error) {
	cert, err := loadDTLSCert(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	suites, err := cfg.DTLS.SuiteIDs()
	if err != nil {
		return nil, nil, err
	}
	repl, closeFn, err := dtlsReplication(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	srv, err = native.New(native.Config{
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
		OnDown:      func(ss *native.Session, _ string) { gw.SessionGone(ss) },
		Registerer:  reg,
		Logger:      log,
		Replication: repl,
	}, coap)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return srv, closeFn, nil
}

// dtlsReplication connects the sharing of DTLS sessions between nodes
// (cluster.dtls_sessions with cluster.nats_url); nil when off.
func dtlsReplication(cfg config.Config, log *slog.Logger) (*native.Replication, func(), error) {
	url := string(cfg.Cluster.NATSURL)
	if url == "" || !cfg.Cluster.DTLSSessions {
		return nil, func() {}, nil
	}
	keys, err := loadSecretKeys(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	nc, err := nats.Connect(url, nats.Name("coapgate dtls sessions"), nats.MaxReconnects(-1),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			log.Warn("cluster: NATS disconnected; new DTLS sessions stay on this node meanwhile", "err", err)
		}))
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.nats_url: connect: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// What a dead node leaves behind expires: no session outlives a day
	// without a new reservation unless it is idle, and an idle one's
	// record is written again on its next reservation.
	st, err := natskv.Open(ctx, nc, cfg.Cluster.DTLSBucket, 24*time.Hour)
	if err != nil {
		// NATS without JetStream still carries device changes: run, with
		// sessions on their node only.
		nc.Close()
		log.Warn("cluster: DTLS sessions stay on their node: the NATS key-value bucket is unavailable (JetStream enabled?)", "bucket", cfg.Cluster.DTLSBucket, "err", err)
		return nil, func() {}, nil
	}
	node := cfg.Cluster.Node
	if node == "" {
		node, _ = os.Hostname()
	}
	// A per-process suffix: two processes under one name stay apart.
	var sfx [4]byte
	_, _ = rand.Read(sfx[:])
	node += "/" + hex.EncodeToString(sfx[:])
	log.Info("cluster: DTLS sessions shared through NATS", "bucket", cfg.Cluster.DTLSBucket, "address_sessions", cfg.Cluster.DTLSAddressSessions)
	return &native.Replication{
		Store: st, Keys: keys, Node: node,
		Reserve:   uint64(cfg.Cluster.DTLSSeqReserve),
		ByAddress: cfg.Cluster.DTLSAddressSessions,
		Ready:     func() bool { return nc.Status() == nats.CONNECTED },
	}, nc.Close, nil
}
