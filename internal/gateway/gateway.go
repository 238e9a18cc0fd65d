// Package gateway answers the dialects' CoAP requests (docs/protocol.md §2.2,
// §3–5): POST /auth issues tokens (dialect A, §3.1) and POST /topic/{topic…}
// authenticates the token, applies the topic ACL, stores the uplink durably
// and replies 2.04 with option 2090 and the thing-model reply (§3.2, §4).
//
// A Gateway serves one listener in one of two modes. The plain mode (port
// 5683) also serves dialect E's non-DTLS auth, POST /auth/{pk}/{dk}, and
// uplinks authenticated by option 2101 (§2.2). The symmetric mode (port
// 5682, §3.4) issues session randoms from POST /auth and takes uplinks whose
// payload and sequence number (option 2089) are AES-128-CBC encrypted; a
// plain-mode listener may take that mode too (Options.SymmetricOnPlain).
// Both session modes refuse replayed sequence numbers with state that is
// committed with each uplink and survives restarts (package replay).
package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/ratelog"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/topic"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
)

// Ingester stores an uplink durably; it returns once the message is
// committed (msg.ID set) or failed.
type Ingester interface {
	Append(ctx context.Context, msg *message.Message) error
}

// StateIngester is an Ingester that also makes replay states durable
// (ingest.Batcher): AppendState commits msg (nil: none) together with the
// replay state its acceptance produced (nil: none), in one transaction; a
// store that keeps no states ignores st. With a plain Ingester the session
// modes' state lives in memory only. An error satisfying replay.IsReplay is
// the store refusing st.Accepted (used through another node of a cluster):
// the uplink is answered as a replay.
type StateIngester interface {
	AppendState(ctx context.Context, msg *message.Message, st *replay.State) error
}

// appendState commits msg and st through the Ingester.
func (g *Gateway) appendState(ctx context.Context, msg *message.Message, st *replay.State) error {
	if si, ok := g.o.Ingest.(StateIngester); ok {
		return si.AppendState(ctx, msg, st)
	}
	if msg == nil {
		return nil
	}
	return g.o.Ingest.Append(ctx, msg)
}

// Options configures a Gateway.
type Options struct {
	Registry Registry
	// Devices creates devices on DTLS activation (secureMode 3); nil
	// refuses activation of devices that do not exist.
	Devices  DeviceCreator
	Tokens   *token.Codec
	Ingest   Ingester
	Presence *presence.Tracker
	// Commands is the downlink queue (nil: no downlink, GET /topic is 4.05).
	Commands  Commands
	Transport string // message.TransportCoAP for 5683, TransportSymmetric for 5682
	// Symmetric selects dialect A's symmetric-encryption mode (port 5682,
	// docs/protocol.md §3.4): /auth requires seq and answers random and
	// seqOffset; /topic requires a symmetric token, option 2089 and an
	// encrypted payload, and gets an encrypted reply.
	Symmetric bool
	// Rand is the source of session randoms and seqOffsets (default
	// crypto/rand); tests inject fixed bytes.
	Rand io.Reader
	// Started is when the node started (default: New's time). Session
	// tokens issued at or before its second are refused: this node may
	// have lost their replay state.
	Started time.Time
	// ReplayWindow is how many sequence numbers below the highest one a
	// session remembers (default 1024); older ones are refused.
	ReplayWindow int
	// MaxSessions bounds the replay state held (default 100000).
	MaxSessions int
	// Sessions is the replay state table, shared by the listeners of a node
	// so that a session's numbers are used once whichever port they reach
	// (default: a table of this Gateway's own, from Started, ReplayWindow,
	// MaxSessions, TokenTTL and ReplayStore).
	Sessions *replay.Sessions
	// SignESessions is the replay state table of option 2101 sessions
	// (numbers strictly increasing: a window of one), shared like Sessions;
	// nil builds one from the same settings.
	SignESessions *replay.Sessions
	// ReplayStore is the durable replay state the default table rebuilds
	// sessions from (nil: per-node memory only).
	ReplayStore replay.Store
	// SymmetricOnPlain lets a plain-mode listener (5683) take the
	// symmetric mode too: an /auth carrying seq is answered in symmetric
	// form and an uplink with option 2089 is a symmetric uplink. Token
	// modes stay bound.
	SymmetricOnPlain bool
	// SignEIV is the AES-CBC IV of dialect E's option 2101 (16 bytes,
	// default symmetric.IV: the document does not publish one).
	SignEIV []byte
	// TokenTTL is the lifetime of issued tokens, sliding: a token stays
	// valid while its device (a session token: its session) had an accepted
	// contact within TokenTTL.
	TokenTTL time.Duration
	// TokenMaxAge caps a token's validity from issue time whatever the
	// activity (0: no cap).
	TokenMaxAge time.Duration
	// OnlineLifetime applies to products without their own.
	OnlineLifetime time.Duration
	// DeviceCacheTTL bounds staleness of cached device records (0: no cache).
	DeviceCacheTTL time.Duration
	// DeviceCacheEntries bounds the cached known devices (default 262144);
	// NegativeCacheEntries the cached unknown names (default 4096), which
	// expire after a second and never push out a known device.
	DeviceCacheEntries   int
	NegativeCacheEntries int
	// RefusalLog writes refused authentications at a bounded rate (nil:
	// a limiter of the gateway's own with the defaults of ratelog).
	RefusalLog *ratelog.Limiter
	// UnavailableMaxAge is sent with 5.03 when storage fails.
	UnavailableMaxAge time.Duration
	Registerer        prometheus.Registerer
	Logger            *slog.Logger
	Now               func() time.Time
}

// Gateway is the coapx.Handler of one token-auth listener.
type Gateway struct {
	o        Options
	cache    *devCache
	sessions *replay.Sessions
	// signE holds dialect E's option 2101 sessions: N strictly increasing
	// (a window of one), as the dialect's documents state.
	signE    *replay.Sessions
	log      *slog.Logger
	refusals *ratelog.Limiter
	m        *metrics
	maxAge   uint32
	// requester pushes commands (set once by SetRequester before serving).
	requester Requester
	live      liveSessions
	bound     bindings
	// held are contacts the shared presence could not take yet.
	heldMu sync.Mutex
	held   []presence.Contact // guarded by heldMu
}

var (
	_ coapx.Handler  = (*Gateway)(nil)
	_ coapx.Admitter = (*Gateway)(nil)
)

// New returns a Gateway.
func New(o Options) *Gateway {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Transport == "" {
		o.Transport = message.TransportCoAP
		if o.Symmetric {
			o.Transport = message.TransportSymmetric
		}
	}
	if o.Rand == nil {
		o.Rand = rand.Reader
	}
	if o.Started.IsZero() {
		o.Started = o.Now()
	}
	if len(o.SignEIV) != symmetric.BlockSize {
		o.SignEIV = []byte(symmetric.IV)
	}
	if o.Sessions == nil {
		o.Sessions = replay.NewSessions(replay.Config{Started: o.Started, Window: o.ReplayWindow,
			MaxSessions: o.MaxSessions, Lifetime: o.TokenTTL, Store: o.ReplayStore})
	}
	if o.SignESessions == nil {
		o.SignESessions = replay.NewSessions(replay.Config{Started: o.Started, Window: 1,
			MaxSessions: o.MaxSessions, Lifetime: o.TokenTTL, Store: o.ReplayStore})
	}
	g := &Gateway{
		o:        o,
		cache:    newDevCache(o.Registry, o.DeviceCacheTTL, o.DeviceCacheEntries, o.NegativeCacheEntries),
		sessions: o.Sessions,
		signE:    o.SignESessions,
		log:      o.Logger.With("component", "gateway", "transport", o.Transport),
		maxAge:   uint32(max(o.UnavailableMaxAge, time.Second) / time.Second),
	}
	g.refusals = o.RefusalLog
	if g.refusals == nil {
		g.refusals = ratelog.New(g.log, ratelog.Config{})
	}
	g.m = newMetrics(o.Registerer, o.Transport, o.Presence, o.Now, g.sessions, g.signE)
	g.m.registerCache(o.Registerer, o.Transport, g.cache)
	return g
}

// RunRefusalLog writes the summaries of refusal log lines suppressed (see
// package ratelog) every 10 s until ctx ends, so the count of a flood that
// stopped is reported too.
func (g *Gateway) RunRefusalLog(ctx context.Context) { g.refusals.Run(ctx) }

// Invalidate drops cached registry data of a device (or of every device of
// a product when dk is ""). DeviceChanged does it too, and more.
func (g *Gateway) Invalidate(pk, dk string) {
	g.cache.Invalidate(pk, dk)
}

// ServeCoAP routes a request.
func (g *Gateway) ServeCoAP(ctx context.Context, req *coapx.Request) *coapx.Response {
	resp := g.route(ctx, req)
	if (g.o.Symmetric || g.symmetricUplink(req)) && resp != nil && resp.Code>>5 != 2 {
		// The device decrypts every non-empty response payload (docs/protocol.md
		// §3.4): error answers carry none here.
		resp.Payload = nil
	}
	return resp
}

// Admit judges a request before coapx buffers the first block of its
// Block1 body: uplinks to /topic/… are authenticated (token, option 2101,
// symmetric token or DTLS-PSK session; no sequence number is consumed) and
// their topic checked, so an unauthenticated peer is refused at block 0
// and holds no reassembly memory. /auth bodies are admitted as anonymous
// (coapx caps them and gives them a share of the budget of their own); an
// unknown resource is 4.04 at once.
func (g *Gateway) Admit(ctx context.Context, req *coapx.Request) *coapx.Response {
	resp := g.admit(ctx, req)
	if g.o.Symmetric && resp != nil {
		resp.Payload = nil // as ServeCoAP: no plaintext error payload
	}
	return resp
}

func (g *Gateway) admit(ctx context.Context, req *coapx.Request) *coapx.Response {
	if psk, ok := pskIdentity(req); ok && psk.SecureMode == dtlspsk.ModeProduct {
		return nil // activation: routeActivation answers
	}
	p := req.Path
	switch {
	case len(p) == 1 && p[0] == "auth", len(p) == 3 && p[0] == "auth" && !g.o.Symmetric:
		if req.Code != codes.POST {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		req.Anonymous = true // the credential is in the body
		return nil
	case len(p) >= 2 && p[0] == "topic":
		if req.Code != codes.POST && req.Code != codes.GET {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		up, resp := g.authUplink(ctx, req)
		if resp != nil {
			g.m.publish.WithLabelValues("refused").Inc()
			return resp
		}
		if req.Code == codes.GET {
			return nil // a command fetch: route checks the request topic
		}
		top, err := topic.Parse(p[1:])
		if err != nil {
			g.m.publish.WithLabelValues("bad_topic").Inc()
			return badRequest(err)
		}
		if !topic.Allowed(top, up.id.dev.ProductKey, up.id.dev.DeviceKey) {
			g.m.authFailures.WithLabelValues(reasonACL).Inc()
			g.m.publish.WithLabelValues("denied").Inc()
			return &coapx.Response{Code: codes.Forbidden}
		}
		return nil
	default:
		return &coapx.Response{Code: codes.NotFound}
	}
}

func (g *Gateway) route(ctx context.Context, req *coapx.Request) *coapx.Response {
	if psk, ok := pskIdentity(req); ok && psk.SecureMode == dtlspsk.ModeProduct {
		return g.routeActivation(ctx, req, psk)
	}
	p := req.Path
	switch {
	case len(p) == 1 && p[0] == "auth":
		if req.Code != codes.POST {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		return g.auth(ctx, req)
	case len(p) == 3 && p[0] == "auth" && !g.o.Symmetric:
		if req.Code != codes.POST {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		return g.authSignE(ctx, req)
	case len(p) >= 2 && p[0] == "topic":
		switch {
		case req.Code == codes.POST:
			return g.publish(ctx, req)
		case req.Code == codes.GET && g.o.Commands != nil && command.IsRequestTopic(p[1:]):
			return g.pull(ctx, req)
		}
		return &coapx.Response{Code: codes.MethodNotAllowed}
	default:
		// Includes /.well-known/core: no resource discovery (docs/protocol.md §5).
		return &coapx.Response{Code: codes.NotFound}
	}
}

// unavailable is the answer when storage cannot be reached: 5.03 with
// Max-Age, never a false success.
func (g *Gateway) unavailable() *coapx.Response {
	r := &coapx.Response{Code: codes.ServiceUnavailable}
	return r.SetUint(optMaxAge, g.maxAge)
}

func (g *Gateway) lifetime(id identity) time.Duration {
	if id.prod.OnlineLifetime > 0 {
		return id.prod.OnlineLifetime
	}
	return g.o.OnlineLifetime
}

func (g *Gateway) seen(id identity, req *coapx.Request) {
	g.seenVia(id, req, g.o.Transport)
}

// seenVia is seen with the transport to record: a symmetric-mode device on
// the plain listener is recorded as such, so that no plaintext command is
// pushed to it.
func (g *Gateway) seenVia(id identity, req *coapx.Request, transport string) {
	if g.o.Presence == nil {
		return
	}
	lifetime := g.lifetime(id)
	if psk, ok := pskIdentity(req); ok {
		lifetime = psk.Lifetime // docs/protocol.md §2: the identity's lifetime
	}
	if req.Session != nil {
		g.live.put(id.dev.ProductKey, id.dev.DeviceKey, req.Session) // a push route
	}
	if g.o.Presence.Seen(id.dev.ProductKey, id.dev.DeviceKey, req.Peer.String(), transport, lifetime, req.Received) {
		g.log.Info("device online", "productKey", id.dev.ProductKey, "deviceKey", id.dev.DeviceKey, "peer", req.Peer.String())
	}
}

// isStoreTrouble reports whether err is an infrastructure failure (as
// opposed to a missing record).
func isStoreTrouble(err error) bool {
	return err != nil && !errors.Is(err, registry.ErrNotFound)
}

// PresenceWriter persists what the presence table learnt: last contacts and
// online/offline transitions.
type PresenceWriter interface {
	TouchDevices(ctx context.Context, seen []registry.Presence) error
	AppendEvents(ctx context.Context, evs []event.Event) error
}

// PresenceRecorder is a presence shared by the nodes of a cluster
// (pgstore): each node hands it the contacts it saw and it decides the
// online/offline transitions once for all nodes (its offline sweep runs
// elsewhere, on one node). When the PresenceWriter is one, this node's own
// transitions are not written: they are one node's view.
type PresenceRecorder interface {
	RecordPresence(ctx context.Context, contacts []presence.Contact) error
}

// maxHeldContacts bounds the contacts kept for the next flush after the
// shared presence could not be written.
const maxHeldContacts = 1 << 16

// FlushPresence writes last-contact times and online/offline transitions
// to the store every interval until ctx ends (and once more then), so
// lastSeenAt survives restarts without a database write per uplink.
// Offline transitions are detected here: at most interval late, with the
// exact time (last contact + lifetime) recorded.
func (g *Gateway) FlushPresence(ctx context.Context, w PresenceWriter, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			g.FlushPresenceOnce(w, g.o.Now())
			return
		case <-t.C:
			g.FlushPresenceOnce(w, g.o.Now())
		}
	}
}

// FlushPresenceOnce records offline transitions due at now and writes
// everything pending.
func (g *Gateway) FlushPresenceOnce(w PresenceWriter, now time.Time) {
	wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var batch []registry.Presence
	rec, shared := w.(PresenceRecorder)
	var contacts []presence.Contact
	g.o.Presence.Drain(func(pk, dk string, s presence.Status) {
		batch = append(batch, registry.Presence{ProductKey: pk, DeviceKey: dk, SeenAt: s.LastSeen, Address: s.Address})
		if shared {
			contacts = append(contacts, presence.Contact{ProductKey: pk, DeviceKey: dk, First: s.Since, Last: s.LastSeen,
				Address: s.Address, Transport: s.Transport, Lifetime: s.Lifetime})
		}
	})
	if len(batch) > 0 {
		if err := w.TouchDevices(wctx, batch); err != nil {
			g.log.Warn("presence flush failed", "devices", len(batch), "err", err)
		}
	}
	g.o.Presence.Sweep(now)
	evs, dropped := g.o.Presence.DrainEvents()
	if shared {
		g.recordShared(wctx, rec, contacts)
		return // the shared presence decides the transitions
	}
	if dropped > 0 {
		g.log.Warn("device events dropped (flush too slow)", "dropped", dropped)
	}
	for _, e := range evs {
		if e.Type == event.Offline {
			g.log.Info("device offline", "productKey", e.ProductKey, "deviceKey", e.DeviceKey, "lastPeer", e.Peer, "transport", e.Transport)
		}
	}
	if len(evs) > 0 {
		if err := w.AppendEvents(wctx, evs); err != nil {
			g.log.Warn("device events write failed", "events", len(evs), "err", err)
		}
	}
}

// recordShared hands contacts (and those a failed flush kept) to the shared
// presence; on failure they are kept, bounded, for the next flush.
func (g *Gateway) recordShared(ctx context.Context, rec PresenceRecorder, contacts []presence.Contact) {
	g.heldMu.Lock()
	contacts = append(g.held, contacts...)
	g.held = nil
	g.heldMu.Unlock()
	if len(contacts) == 0 {
		return
	}
	if err := rec.RecordPresence(ctx, contacts); err != nil {
		g.log.Warn("shared presence flush failed; retrying with the next flush", "devices", len(contacts), "err", err)
		if len(contacts) > maxHeldContacts {
			contacts = contacts[len(contacts)-maxHeldContacts:]
		}
		g.heldMu.Lock()
		g.held = append(contacts, g.held...)
		g.heldMu.Unlock()
	}
}
