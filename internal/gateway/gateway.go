// Package gateway answers the dialects' CoAP requests (docs/protocol.md §2.2,
// §3–5): POST /auth issues tokens (dialect A, §3.1) and POST /topic/{topic…}
// authenticates the token, applies the topic ACL, stores the uplink durably
// and replies 2.04 with option 2090 and the thing-model reply (§3.2, §4).
//
// A Gateway serves one listener in one of two modes. The plain mode (port
// 5683) also serves dialect E's non-DTLS auth, POST /auth/{pk}/{dk}, and
// uplinks authenticated by option 2101 (§2.2). The symmetric mode (port
// 5682, §3.4) issues session randoms from POST /auth and takes uplinks whose
// payload and sequence number (option 2089) are AES-128-CBC encrypted. Both
// session modes refuse replayed sequence numbers with per-node state
// (package replay).
package gateway

import (
	"context"
	"crypto/rand"
	"errors"
	"io"
	"log/slog"
	"time"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/prometheus/client_golang/prometheus"
)

// Ingester stores an uplink durably; it returns once the message is
// committed (msg.ID set) or failed.
type Ingester interface {
	Append(ctx context.Context, msg *message.Message) error
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
	// SignEIV is the AES-CBC IV of dialect E's option 2101 (16 bytes,
	// default symmetric.IV: the document does not publish one).
	SignEIV []byte
	// TokenTTL is the lifetime of issued tokens.
	TokenTTL time.Duration
	// OnlineLifetime applies to products without their own.
	OnlineLifetime time.Duration
	// DeviceCacheTTL bounds staleness of cached device records (0: no cache).
	DeviceCacheTTL time.Duration
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
	log      *slog.Logger
	m        *metrics
	maxAge   uint32
	// requester pushes commands (set once by SetRequester before serving).
	requester Requester
	live      liveSessions
}

var _ coapx.Handler = (*Gateway)(nil)

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
	g := &Gateway{
		o:        o,
		cache:    newDevCache(o.Registry, o.DeviceCacheTTL, 1<<20),
		sessions: replay.NewSessions(replay.Config{Started: o.Started, Window: o.ReplayWindow, MaxSessions: o.MaxSessions}),
		log:      o.Logger.With("component", "gateway", "transport", o.Transport),
		maxAge:   uint32(max(o.UnavailableMaxAge, time.Second) / time.Second),
	}
	g.m = newMetrics(o.Registerer, o.Transport, o.Presence, g.sessions, o.Now)
	return g
}

// Invalidate drops cached registry data of a device (or of every device of
// a product when dk is ""); the management API calls it after writes.
func (g *Gateway) Invalidate(pk, dk string) {
	g.cache.Invalidate(pk, dk)
}

// ServeCoAP routes a request.
func (g *Gateway) ServeCoAP(ctx context.Context, req *coapx.Request) *coapx.Response {
	resp := g.route(ctx, req)
	if g.o.Symmetric && resp != nil && resp.Code>>5 != 2 {
		// The device decrypts every non-empty response payload (docs/protocol.md
		// §3.4): error answers carry none here.
		resp.Payload = nil
	}
	return resp
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
	if g.o.Presence.Seen(id.dev.ProductKey, id.dev.DeviceKey, req.Peer.String(), g.o.Transport, lifetime, req.Received) {
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
	g.o.Presence.Drain(func(pk, dk string, s presence.Status) {
		batch = append(batch, registry.Presence{ProductKey: pk, DeviceKey: dk, SeenAt: s.LastSeen, Address: s.Address})
	})
	if len(batch) > 0 {
		if err := w.TouchDevices(wctx, batch); err != nil {
			g.log.Warn("presence flush failed", "devices", len(batch), "err", err)
		}
	}
	g.o.Presence.Sweep(now)
	evs, dropped := g.o.Presence.DrainEvents()
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
