// Package gateway answers the dialects' CoAP requests (PROTOCOL.md §3–5):
// POST /auth issues tokens (dialect A, §3.1) and POST /topic/{topic…}
// authenticates the token, applies the topic ACL, stores the uplink durably
// and replies 2.04 with option 2090 and the thing-model reply (§3.2, §4).
package gateway

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/presence"
	"github.com/coapgate/coapgate/internal/registry"
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
	Registry  Registry
	Tokens    *token.Codec
	Ingest    Ingester
	Presence  *presence.Tracker
	Transport string // message.TransportCoAP for 5683
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

// Gateway is the coapx.Handler for the token-auth listener.
type Gateway struct {
	o      Options
	cache  *devCache
	log    *slog.Logger
	m      *metrics
	maxAge uint32
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
	}
	g := &Gateway{
		o:      o,
		cache:  newDevCache(o.Registry, o.DeviceCacheTTL, 1<<20),
		log:    o.Logger.With("component", "gateway", "transport", o.Transport),
		maxAge: uint32(max(o.UnavailableMaxAge, time.Second) / time.Second),
	}
	g.m = newMetrics(o.Registerer, o.Transport, o.Presence, o.Now)
	return g
}

// Invalidate drops cached registry data of a device (or of every device of
// a product when dk is ""); the management API calls it after writes.
func (g *Gateway) Invalidate(pk, dk string) {
	g.cache.Invalidate(pk, dk)
}

// ServeCoAP routes a request.
func (g *Gateway) ServeCoAP(ctx context.Context, req *coapx.Request) *coapx.Response {
	p := req.Path
	switch {
	case len(p) == 1 && p[0] == "auth":
		if req.Code != codes.POST {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		return g.auth(ctx, req)
	case len(p) >= 2 && p[0] == "topic":
		if req.Code != codes.POST {
			return &coapx.Response{Code: codes.MethodNotAllowed}
		}
		return g.publish(ctx, req)
	default:
		// Includes /.well-known/core: no resource discovery (PROTOCOL.md §5).
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
	if g.o.Presence.Seen(id.dev.ProductKey, id.dev.DeviceKey, req.Peer.String(), g.o.Transport, g.lifetime(id), req.Received) {
		g.log.Info("device online", "productKey", id.dev.ProductKey, "deviceKey", id.dev.DeviceKey, "peer", req.Peer.String())
	}
}

// isStoreTrouble reports whether err is an infrastructure failure (as
// opposed to a missing record).
func isStoreTrouble(err error) bool {
	return err != nil && !errors.Is(err, registry.ErrNotFound)
}

// FlushPresence writes last-contact times to the registry every interval
// until ctx ends (and once more then), so lastSeenAt survives restarts
// without a database write per uplink.
func (g *Gateway) FlushPresence(ctx context.Context, w interface {
	TouchDevices(ctx context.Context, seen []registry.Presence) error
}, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	flush := func() {
		var batch []registry.Presence
		g.o.Presence.Drain(func(pk, dk string, s presence.Status) {
			batch = append(batch, registry.Presence{ProductKey: pk, DeviceKey: dk, SeenAt: s.LastSeen, Address: s.Address})
		})
		if len(batch) == 0 {
			return
		}
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := w.TouchDevices(wctx, batch); err != nil {
			g.log.Warn("presence flush failed", "devices", len(batch), "err", err)
		}
	}
	for {
		select {
		case <-ctx.Done():
			flush()
			return
		case <-t.C:
			flush()
		}
	}
}
