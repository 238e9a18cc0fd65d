package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/coapgate/coapgate/internal/dtlsx/natskv"
	"github.com/coapgate/coapgate/internal/dtlsx/sqlitekv"
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
// (cluster.dtls_sessions with cluster.nats_url), else the keeping of this
// node's sessions across its restarts (dtls.keep_sessions); nil when off.
func dtlsReplication(cfg config.Config, log *slog.Logger) (*native.Replication, func(), error) {
	url := string(cfg.Cluster.NATSURL)
	if url == "" || !cfg.Cluster.DTLSSessions {
		return keptSessions(cfg, log)
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

// sessionFile is the file in data_dir that keeps a node's DTLS sessions
// across its restarts.
const sessionFile = "dtls-sessions.db"

// keptSessionsTTL: a kept session whose record was not written for this
// long is dropped from the file (an idle session's record is written
// again at its next reservation, so only sessions idle that long are lost).
const keptSessionsTTL = 7 * 24 * time.Hour

// keptSessions keeps this node's established DTLS sessions in data_dir
// (dtls.keep_sessions): the session replication with a store of one node,
// so a restarted node takes its sessions back as a cluster node takes over
// a dead one's — on the device's next record, which must authenticate
// under the kept keys, sending from beyond the stored reservation
// (engine.RollbackMargin).
func keptSessions(cfg config.Config, log *slog.Logger) (*native.Replication, func(), error) {
	if !cfg.DTLS.KeepSessions {
		return nil, func() {}, nil
	}
	keys, err := loadSecretKeys(cfg, log)
	if err != nil {
		return nil, nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, nil, fmt.Errorf("dtls.keep_sessions: %w", err)
	}
	path := filepath.Join(cfg.DataDir, sessionFile)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := sqlitekv.Open(ctx, path, keptSessionsTTL)
	if err != nil {
		// An unreadable file costs its devices one handshake, not the
		// node: set it aside and start with none.
		aside := fmt.Sprintf("%s.unreadable-%d", path, time.Now().Unix())
		for _, sfx := range []string{"", "-wal", "-shm"} {
			_ = os.Rename(path+sfx, aside+sfx)
		}
		log.Warn("the kept DTLS sessions could not be read; set aside, their devices make a new handshake", "file", path, "moved_to", aside, "err", err)
		if st, err = sqlitekv.Open(ctx, path, keptSessionsTTL); err != nil {
			return nil, nil, fmt.Errorf("dtls.keep_sessions: %w (set dtls.keep_sessions false to run without)", err)
		}
	}
	if n, err := st.Len(ctx); err == nil && n > 0 {
		log.Info("DTLS sessions kept from the last run; each continues on its device's next record", "sessions", n, "file", path)
	}
	return &native.Replication{
		Store: st, Keys: keys, Node: "local",
		Reserve:         uint64(cfg.Cluster.DTLSSeqReserve),
		ByAddress:       true, // one node: the address it sees is the one it will see again
		FirstWriteAfter: 5 * time.Second,
		Workers:         32, // sqlitekv commits concurrent writes in one transaction
	}, func() { _ = st.Close() }, nil
}
