package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/buildinfo"
	"github.com/coapgate/coapgate/internal/coapx"
	downlink "github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/console"
	"github.com/coapgate/coapgate/internal/dtlsx/native"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/forward/mqttout"
	"github.com/coapgate/coapgate/internal/forward/natsout"
	"github.com/coapgate/coapgate/internal/forward/pgout"
	"github.com/coapgate/coapgate/internal/gateway"
	"github.com/coapgate/coapgate/internal/ingest"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/pgstore"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/retention"
	"github.com/coapgate/coapgate/internal/secretbox"
	"github.com/coapgate/coapgate/internal/sqlitestore"
	"github.com/coapgate/coapgate/internal/stats"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// server is one running gateway node: the CoAP listener, the management API
// and the stores behind them.
type server struct {
	cfg     config.Config
	log     *slog.Logger
	store   store
	batcher *ingest.Batcher
	// points projects the message log into the point store.
	points   *point.Projector
	forward  *forward.Manager // nil until started
	sampler  *stats.Sampler   // the console overview's history of counters
	coapConn *net.UDPConn
	symConn  *net.UDPConn // nil when coap.symmetric_listen is empty
	dtlsConn *net.UDPConn // nil when dtls.listen is empty
	dtls     *native.Server
	// closeChanges releases the device-change feed (nil before it exists).
	closeChanges func()
	// closeDTLSRepl releases the DTLS session replication (nil: none).
	closeDTLSRepl func()
	// flushPresence records offline transitions due at now and writes the
	// presence table (tests call it with a clock of their own).
	flushPresence func(now time.Time)
	apiLn         net.Listener
	// AdminKey is set when this start created the first API key.
	AdminKey string

	// retention deletes expired data in the background (nil when the
	// store does not support it).
	retention *retention.Worker

	cancel context.CancelFunc
	done   chan struct{} // closed when a listener fails
	wg     sync.WaitGroup
	errMu  sync.Mutex
	err    error // guarded by errMu; first fatal serving error
}

// newLogger builds the slog logger the config asks for.
func newLogger(c config.LogConfig, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: lvl}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// loadTokenKey returns the token signing key: from config (hex) or from
// DataDir/token.key, generated on first start.
func loadTokenKey(cfg config.Config, log *slog.Logger) ([]byte, error) {
	if cfg.Auth.TokenKey != "" {
		k, err := hex.DecodeString(string(cfg.Auth.TokenKey))
		if err != nil || len(k) < 16 {
			return nil, errors.New("auth.token_key must be at least 16 bytes of hex")
		}
		return k, nil
	}
	path := filepath.Join(cfg.DataDir, "token.key")
	b, err := os.ReadFile(path)
	if err == nil {
		k, err := hex.DecodeString(strings.TrimSpace(string(b)))
		if err != nil || len(k) < 16 {
			return nil, fmt.Errorf("%s: not a hex key of at least 16 bytes", path)
		}
		return k, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read token key: %w", err)
	}
	k := make([]byte, 32)
	if _, err := rand.Read(k); err != nil {
		return nil, err
	}
	if err := os.WriteFile(path, []byte(hex.EncodeToString(k)+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("write token key: %w", err)
	}
	log.Info("generated token signing key; share it with every node of a cluster", "path", path)
	return k, nil
}

// serverHooks replace parts of a server in tests.
type serverHooks struct {
	// rand is the gateways' source of session randoms (default crypto/rand).
	rand io.Reader
}

// startServer opens the stores and starts the listeners; it returns once
// every socket is bound.
func startServer(ctx context.Context, cfg config.Config, log *slog.Logger, hooks ...func(*serverHooks)) (_ *server, err error) {
	started := time.Now()
	var hk serverHooks
	for _, h := range hooks {
		h(&hk)
	}
	s := &server{cfg: cfg, log: log, done: make(chan struct{})}
	defer func() {
		if err != nil {
			s.shutdown()
		}
	}()
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	if st, err := os.Stat(cfg.DataDir); err == nil && st.Mode().Perm()&0o077 != 0 {
		log.Warn("the data directory is accessible to other users; it holds keys and the database: chmod 700 it",
			"path", cfg.DataDir, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	key, err := loadTokenKey(cfg, log)
	if err != nil {
		return nil, err
	}
	codec, err := token.NewCodec(key)
	if err != nil {
		return nil, err
	}
	if s.store, err = openStore(ctx, cfg, log); err != nil {
		return nil, err
	}
	if s.AdminKey, err = ensureAdminKey(ctx, s.store); err != nil {
		return nil, err
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	s.batcher = ingest.NewBatcher(s.store, cfg.Store.BatchMax, reg, log)
	s.points = point.NewProjector(point.ProjectorOptions{
		Log: s.store, Store: s.store, Notify: s.store, Decode: decodePoints,
		Registerer: reg, Logger: log,
	})
	leases, monitorLeases, err := newLeases(cfg, reg, log)
	if err != nil {
		return nil, err
	}
	// Forwarding workers tail the stored log, decoupled from ingest.
	fwd, err := forward.New(forward.Options{
		Leases: leases,
		Store:  s.store, Log: s.store, Notifier: s.store,
		Targets: map[string]forward.TargetFactory{
			forward.ActionMQTT:     mqttout.Factory(),
			forward.ActionNATS:     natsout.Factory(),
			forward.ActionPostgres: pgout.Factory(),
		},
		BackoffBase: cfg.Forward.BackoffBase, BackoffMax: cfg.Forward.BackoffMax,
		Registerer: reg, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	if err := fwd.Start(ctx); err != nil {
		return nil, err
	}
	s.forward = fwd
	rc := cfg.Retention
	pause := rc.BatchPause
	if pause == 0 {
		pause = -1 // the worker's "no pause"
	}
	if rs, ok := any(s.store).(retention.Store); ok {
		s.retention = retention.New(retention.Options{
			Store: rs, Products: s.store,
			Periods: retention.Periods{Messages: rc.Messages, Points: rc.Points, Events: rc.Events, Commands: rc.Commands,
				DeadLetters: rc.DeadLetters, Rollups1m: rc.Rollups1m, Rollups1h: rc.Rollups1h},
			Interval: rc.Interval, BatchSize: rc.BatchSize, Pause: pause,
			Registerer: reg, Logger: log,
		})
	} else {
		log.Warn("this store does not support retention: stored data is kept forever")
	}
	pres := presence.NewTracker()
	signEIV, err := cfg.Auth.SignEIV()
	if err != nil {
		return nil, err
	}
	// The downlink queue; pushes go through whichever listener reaches the
	// device (gateways are appended below, before anything is served).
	var pushers pushRouter
	var pusher downlink.Pusher
	if cfg.Commands.Push {
		pusher = &pushers
	}
	queue, err := downlink.NewQueue(ctx, downlink.Options{
		Store: s.store, Pusher: pusher, DefaultTTL: cfg.Commands.DefaultTTL, MaxTTL: cfg.Commands.MaxTTL,
		Registerer: reg, Logger: log,
	})
	if err != nil {
		return nil, err
	}
	// The session modes' replay state: one table for every listener (a
	// number is used once whichever port it reaches), durable in the store
	// through the batcher (same transaction as the uplink).
	var replayStore replay.Store
	if s.batcher.KeepsStates() {
		replayStore = s.store
	} else {
		log.Warn("the store keeps no replay state: session-mode devices (options 2089, 2101) must authenticate again after a restart")
	}
	sessions := replay.NewSessions(replay.Config{Started: started, Window: cfg.CoAP.ReplayWindow,
		MaxSessions: cfg.CoAP.ReplaySessions, Lifetime: cfg.Auth.TokenTTL, Store: replayStore})
	// Option 2101 numbers must strictly increase: a window of one.
	signESessions := replay.NewSessions(replay.Config{Started: started, Window: 1,
		MaxSessions: cfg.CoAP.ReplaySessions, Lifetime: cfg.Auth.TokenTTL, Store: replayStore})
	// One Gateway per listener; they share the registry, the batcher, the
	// presence table and the metrics registry (their metrics differ by the
	// transport label).
	newGateway := func(transport string, symmetric bool) *gateway.Gateway {
		return gateway.New(gateway.Options{
			Registry:          s.store,
			Devices:           s.store,
			Tokens:            codec,
			Ingest:            s.batcher,
			Presence:          pres,
			Commands:          queue,
			Transport:         transport,
			Symmetric:         symmetric,
			Rand:              hk.rand,
			Started:           started,
			Sessions:          sessions,
			SignESessions:     signESessions,
			SymmetricOnPlain:  transport == message.TransportCoAP && cfg.CoAP.SymmetricOnPlain,
			SignEIV:           signEIV,
			TokenTTL:          cfg.Auth.TokenTTL,
			TokenMaxAge:       cfg.Auth.TokenMaxAge,
			OnlineLifetime:    cfg.Auth.OnlineLifetime,
			DeviceCacheTTL:    cfg.Auth.DeviceCacheTTL,
			UnavailableMaxAge: cfg.Store.UnavailableMaxAge,
			Registerer:        reg,
			Logger:            log,

			DeviceCacheEntries: cfg.Auth.DeviceCacheEntries,
		})
	}
	coapMetrics := coapx.NewMetrics(reg)
	newCoAPServer := func(transport string, h coapx.Handler) *coapx.Server {
		return coapx.NewServer(coapx.Config{
			Workers: cfg.CoAP.Workers, Queue: cfg.CoAP.Queue, ReadBuffer: cfg.CoAP.ReadBuffer,
			MaxBody: cfg.CoAP.MaxBody, BlockSize: cfg.CoAP.BlockSize, DedupEntries: cfg.CoAP.DedupEntries,
			BlockPeerBudget: cfg.CoAP.BlockPeerBudget, BlockBudget: cfg.CoAP.BlockBudget, BlockTransfers: cfg.CoAP.BlockTransfers,
			ExchangeLifetime: cfg.CoAP.ExchangeLifetime, NonLifetime: cfg.CoAP.NonLifetime,
			Transport:  transport,
			AckTimeout: cfg.Commands.PushTimeout, MaxRetransmit: cfg.Commands.PushRetransmit,
		}, h, coapMetrics, log)
	}
	gw := newGateway(message.TransportCoAP, false)
	coapSrv := newCoAPServer(message.TransportCoAP, gw)
	gw.SetRequester(coapSrv)
	gateways := []*gateway.Gateway{gw}
	var symSrv *coapx.Server
	if cfg.CoAP.SymmetricListen != "" {
		symGW := newGateway(message.TransportSymmetric, true)
		symSrv = newCoAPServer(message.TransportSymmetric, symGW)
		gateways = append(gateways, symGW)
	}

	var dtlsCoAP *coapx.Server
	if cfg.DTLS.Listen != "" {
		dtlsGW := newGateway(message.TransportDTLS, false)
		gateways = append(gateways, dtlsGW)
		dtlsCoAP = newCoAPServer(message.TransportDTLS, dtlsGW)
		dtlsGW.SetRequester(dtlsCoAP)
		pushers = append(pushers, dtlsGW) // a live DTLS session first
		if s.dtls, s.closeDTLSRepl, err = newDTLS(cfg, dtlsGW, dtlsCoAP, reg, log); err != nil {
			return nil, err
		}
		if s.dtlsConn, err = listenUDP(cfg.DTLS.Listen); err != nil {
			return nil, fmt.Errorf("dtls.listen: %w", err)
		}
	}

	pushers = append(pushers, gw) // plain UDP by the last address
	if s.coapConn, err = listenUDP(cfg.CoAP.Listen); err != nil {
		return nil, fmt.Errorf("coap.listen: %w", err)
	}
	if symSrv != nil {
		if s.symConn, err = listenUDP(cfg.CoAP.SymmetricListen); err != nil {
			return nil, fmt.Errorf("coap.symmetric_listen: %w", err)
		}
	}
	if s.apiLn, err = net.Listen("tcp", cfg.API.Listen); err != nil {
		return nil, fmt.Errorf("api listen: %w", err)
	}
	// Device changes reach every gateway: caches are dropped and DTLS
	// sessions bound to a changed device are checked (and revoked); with
	// cluster.nats_url on every node.
	changes, closeChanges, err := deviceChanges(cfg, log)
	if err != nil {
		return nil, err
	}
	s.closeChanges = closeChanges
	for _, g := range gateways {
		changes.Subscribe(g.DeviceChanged)
	}
	invalidate := func(pk, dk string) {
		if err := changes.Publish(context.Background(), registry.DeviceChange{ProductKey: pk, DeviceKey: dk}); err != nil {
			log.Warn("device change not delivered to every node", "productKey", pk, "deviceKey", dk, "err", err)
		}
		s.sampler.MarkChanged() // the overview's device count
	}
	// The console's overview: an hour of samples of the counters above.
	devices := func(now time.Time) (int, int) { return pres.Online(now), pres.Len() }
	var apiPresence api.PresenceLookup = pres
	shared, sharedOK := s.store.(presenceStore)
	if sharedOK {
		apiPresence = sharedPresence{st: shared, local: pres}
		devices = (&clusterDevices{st: shared, local: pres, every: presenceCountEvery, log: log}).Devices
	}
	s.sampler = stats.New(stats.Options{Gatherer: reg, Logger: log, Registry: s.store, Devices: devices})
	apiHandler := api.New(api.Options{
		Registry: s.store, Messages: s.store, Keys: s.store, Events: s.store, Points: s.store, Commands: queue,
		Rules: s.forward, Notify: s.store, Presence: apiPresence, Health: s.store.Ping,
		Metrics:               promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}),
		OnDeviceChange:        invalidate,
		Logger:                log,
		Version:               buildinfo.Version(),
		DefaultOnlineLifetime: cfg.Auth.OnlineLifetime,
		Stats:                 s.sampler,
	})
	handler := console.New(apiHandler) // the web console at /, the API under /api/v1
	httpSrv := &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second, ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}

	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Go(func() {
		if err := coapSrv.Serve(runCtx, s.coapConn); err != nil {
			s.fail(fmt.Errorf("coap: %w", err))
		}
	})
	if symSrv != nil {
		s.wg.Go(func() {
			if err := symSrv.Serve(runCtx, s.symConn); err != nil {
				s.fail(fmt.Errorf("coap-sym: %w", err))
			}
		})
	}
	if s.dtls != nil {
		s.wg.Go(func() {
			if err := dtlsCoAP.Run(runCtx); err != nil {
				s.fail(fmt.Errorf("coap-dtls: %w", err))
			}
		})
		s.wg.Go(func() {
			if err := s.dtls.Serve(runCtx, s.dtlsConn); err != nil {
				s.fail(fmt.Errorf("dtls: %w", err))
			}
		})
	}
	s.wg.Go(func() {
		if err := httpSrv.Serve(s.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.fail(fmt.Errorf("api: %w", err))
		}
	})
	s.wg.Go(func() {
		<-runCtx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = httpSrv.Shutdown(sctx)
	})
	if monitorLeases != nil {
		s.wg.Go(func() { monitorLeases(runCtx) })
		// Rules changed through other nodes start and stop here too.
		s.wg.Go(func() { s.forward.RunSync(runCtx, cfg.Cluster.LeaseRetry) })
		// Commands created or finished through other nodes: option 2100 here.
		s.wg.Go(func() { queue.Follow(runCtx, s.store, s.store, 5*time.Second) })
	}
	s.wg.Go(func() { // the projector logs and retries its own failures
		leases.Run(runCtx, "points", func(ctx context.Context) { _ = s.points.Run(ctx) })
	})
	s.wg.Go(func() { queue.Run(runCtx) })
	if s.retention != nil {
		s.wg.Go(func() { s.retention.Run(runCtx) })
	}
	s.wg.Go(func() { s.sampler.Run(runCtx) })
	if cfg.API.PprofListen != "" {
		if err := s.servePprof(runCtx, cfg.API.PprofListen, log); err != nil {
			cancel()
			return nil, err
		}
	}
	if replayStore != nil {
		s.wg.Go(func() { pruneReplayStates(runCtx, s.store, log) })
	}
	// The presence table is shared: one flusher drains it for every listener.
	s.wg.Go(func() { gw.FlushPresence(runCtx, s.store, presenceFlushInterval) })
	for _, g := range gateways { // "log lines suppressed" summaries after a flood
		s.wg.Go(func() { g.RunRefusalLog(runCtx) })
	}
	s.flushPresence = func(now time.Time) { gw.FlushPresenceOnce(s.store, now) }
	if sharedOK {
		// Online/offline transitions: decided in the shared presence; the
		// offline sweep on one node of the cluster at a time.
		s.wg.Go(func() {
			leases.Run(runCtx, "presence", func(ctx context.Context) { sweepPresence(ctx, shared, log) })
		})
		s.flushPresence = func(now time.Time) {
			gw.FlushPresenceOnce(s.store, now)
			if _, err := shared.SweepPresence(context.Background(), now); err != nil {
				log.Warn("presence sweep failed", "err", err)
			}
		}
	}
	symAddr := "disabled"
	if s.symConn != nil {
		symAddr = s.symConn.LocalAddr().String()
	}
	dtlsAddr := "disabled"
	if s.dtlsConn != nil {
		dtlsAddr = s.dtlsConn.LocalAddr().String()
	}
	log.Info("coapgate started", "version", buildinfo.Version(), "coap", s.coapConn.LocalAddr().String(), "coap_sym", symAddr, "dtls", dtlsAddr, "api", s.apiLn.Addr().String(), "data_dir", cfg.DataDir)
	return s, nil
}

// pruneReplayStates deletes expired session states (and a device's beyond
// sqlitestore.MaxReplayStatesPerDevice) hourly until ctx ends.
func pruneReplayStates(ctx context.Context, st store, log *slog.Logger) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		if n, err := st.PruneReplayStates(ctx, time.Now()); err != nil && ctx.Err() == nil {
			log.Warn("replay state prune failed", "err", err)
		} else if n > 0 {
			log.Debug("replay states pruned", "sessions", n)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// pushRouter pushes a command through the first listener that reaches
// the device (downlink.ErrNotLive from the others).
type pushRouter []*gateway.Gateway

func (r *pushRouter) Push(ctx context.Context, c downlink.Command) (*downlink.Reply, error) {
	for _, g := range *r {
		reply, err := g.Push(ctx, c)
		if !errors.Is(err, downlink.ErrNotLive) {
			return reply, err
		}
	}
	return nil, downlink.ErrNotLive
}

// Live reports whether any listener of this node holds the device's
// session (command.LivePusher: commands created through other nodes are
// pushed by the node the device is live on).
func (r *pushRouter) Live(pk, dk string) bool {
	for _, g := range *r {
		if g.Live(pk, dk) {
			return true
		}
	}
	return false
}

func listenUDP(addr string) (*net.UDPConn, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, err
	}
	return net.ListenUDP("udp", udpAddr)
}

func (s *server) fail(err error) {
	s.errMu.Lock()
	if s.err == nil {
		s.err = err
		close(s.done)
	}
	s.errMu.Unlock()
	s.cancel()
}

func (s *server) doneCh() <-chan struct{} { return s.done }

// CoAPAddr and APIAddr are the bound addresses.
func (s *server) CoAPAddr() *net.UDPAddr { return s.coapConn.LocalAddr().(*net.UDPAddr) }
func (s *server) APIAddr() string        { return s.apiLn.Addr().String() }

// SymmetricAddr is the bound symmetric-encryption address, nil if disabled.
func (s *server) SymmetricAddr() *net.UDPAddr {
	if s.symConn == nil {
		return nil
	}
	return s.symConn.LocalAddr().(*net.UDPAddr)
}

// DTLSAddr is the bound DTLS address, nil if disabled.
func (s *server) DTLSAddr() *net.UDPAddr {
	if s.dtlsConn == nil {
		return nil
	}
	return s.dtlsConn.LocalAddr().(*net.UDPAddr)
}

// shutdown stops accepting, lets in-flight requests finish (their uplinks
// commit before the batcher closes), then closes the store.
func (s *server) shutdown() error {
	if s.cancel != nil {
		s.cancel()
	} else {
		if s.coapConn != nil {
			s.coapConn.Close()
		}
		if s.symConn != nil {
			s.symConn.Close()
		}
		if s.dtlsConn != nil {
			s.dtlsConn.Close()
		}
		if s.apiLn != nil {
			s.apiLn.Close()
		}
	}
	s.wg.Wait()
	if s.forward != nil {
		// In-flight deliveries may finish; then their workers stop.
		ctx, cancel := context.WithTimeout(context.Background(), s.cfg.Forward.ShutdownTimeout)
		if err := s.forward.Close(ctx); err != nil {
			s.log.Warn("forwarding stopped with errors", "err", err)
		}
		cancel()
	}
	if s.closeChanges != nil {
		s.closeChanges()
	}
	if s.closeDTLSRepl != nil {
		s.closeDTLSRepl()
	}
	if s.batcher != nil {
		s.batcher.Close()
	}
	if s.store != nil {
		if err := s.store.Close(); err != nil {
			return err
		}
	}
	s.errMu.Lock()
	defer s.errMu.Unlock()
	return s.err
}

// ensureAdminKey creates the first API key when none exists and returns
// its secret (shown once); "" when keys exist already.
func ensureAdminKey(ctx context.Context, st apikey.Store) (string, error) {
	keys, err := st.ListAPIKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("list api keys: %w", err)
	}
	if len(keys) > 0 {
		return "", nil
	}
	secret, k, err := apikey.New("admin", time.Now())
	if err != nil {
		return "", err
	}
	if err := st.CreateAPIKey(ctx, k); err != nil {
		return "", fmt.Errorf("create admin api key: %w", err)
	}
	return secret, nil
}

// servePprof serves net/http/pprof on its own listener (api.pprof_listen),
// never on the API's: it has no authentication. It stops with ctx.
func (s *server) servePprof(ctx context.Context, addr string, log *slog.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("api.pprof_listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	log.Warn("serving /debug/pprof without authentication", "addr", ln.Addr().String())
	s.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof listener failed", "err", err)
		}
	})
	s.wg.Go(func() {
		<-ctx.Done()
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		_ = srv.Shutdown(sctx)
	})
	return nil
}

// store is every storage interface the server uses; both adapters,
// sqlitestore (embedded) and pgstore (PostgreSQL), implement it.
type store interface {
	registry.Store
	message.Store
	message.Notifier
	apikey.Store
	event.Store
	downlink.Store
	forward.Store
	point.Store
	replay.Store
	// AppendWithState appends uplinks and saves replay states in one
	// transaction (ingest.StateAppender).
	AppendWithState(ctx context.Context, msgs []*message.Message, states []replay.State) error
	// PruneReplayStates deletes the states of sessions expired before t.
	PruneReplayStates(ctx context.Context, before time.Time) (int64, error)
	Ping(ctx context.Context) error
	// Reseal re-encrypts every stored secret under the newest key.
	Reseal(ctx context.Context) (int, error)
	Close() error
}

var (
	_ store = (*sqlitestore.Store)(nil)
	_ store = (*pgstore.Store)(nil)
)

// openStore opens the adapter cfg.Store.Driver names: the only place that
// picks one. Errors never contain store.postgres_url.
func openStore(ctx context.Context, cfg config.Config, log *slog.Logger) (store, error) {
	keys, err := loadSecretKeys(cfg, log)
	if err != nil {
		return nil, err
	}
	switch cfg.Store.Driver {
	case "postgres":
		st, err := pgstore.Open(ctx, pgstore.Options{URL: string(cfg.Store.PostgresURL), Keys: keys, Logger: log})
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	default:
		if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
			return nil, fmt.Errorf("data dir: %w", err)
		}
		st, err := sqlitestore.Open(ctx, sqlitePath(cfg), sqlitestore.WithKeyring(keys))
		if err != nil {
			return nil, fmt.Errorf("open store: %w", err)
		}
		return st, nil
	}
}

// sqlitePath is the embedded database file.
func sqlitePath(cfg config.Config) string {
	if cfg.Store.SQLitePath != "" {
		return cfg.Store.SQLitePath
	}
	return filepath.Join(cfg.DataDir, "coapgate.db")
}

// secretKeyFile is the file holding the keys of secrets at rest.
func secretKeyFile(cfg config.Config) string {
	if cfg.Store.SecretKeyFile != "" {
		return cfg.Store.SecretKeyFile
	}
	return filepath.Join(cfg.DataDir, "secret.key")
}

// loadSecretKeys returns the keys sealing secrets at rest: store.secret_keys
// when set, else the key file, created with one new key when missing.
func loadSecretKeys(cfg config.Config, log *slog.Logger) (*secretbox.Keyring, error) {
	if cfg.Store.SecretKeys != "" {
		k, err := secretbox.FromEnvText(string(cfg.Store.SecretKeys))
		if err != nil {
			return nil, fmt.Errorf("store.secret_keys: %w", err)
		}
		return k, nil
	}
	path := secretKeyFile(cfg)
	k, created, err := secretbox.LoadFile(path, true)
	if err != nil {
		return nil, fmt.Errorf("store.secret_key_file: %w", err)
	}
	if created {
		log.Info("generated the key that encrypts stored secrets; back it up apart from the database, and give every node sharing the database the same file", "path", path)
	}
	return k, nil
}

// consoleURL is the web console's address on the API listener addr; an
// unspecified host (":8080") is shown as loopback.
func consoleURL(addr string) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "http://" + addr + "/"
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/"
}
