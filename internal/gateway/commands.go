package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/topic"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Commands is the downlink command queue as the gateway uses it
// (docs/protocol.md §2.1): HasPending runs on every uplink and must not touch
// storage.
type Commands interface {
	HasPending(pk, dk string) bool
	// NextTopic returns the request topic of the oldest deliverable
	// command, "" when none.
	NextTopic(ctx context.Context, pk, dk string, now time.Time) (string, error)
	// Deliver marks the oldest deliverable command of topic delivered and
	// returns it with the next command's topic; command.ErrNotFound when
	// none waits.
	Deliver(ctx context.Context, pk, dk, topic string, now time.Time) (command.Command, string, error)
	// Reply completes the device's command r.ID.
	Reply(ctx context.Context, pk, dk string, r command.Reply, now time.Time) (command.Command, error)
}

// Requester sends server-initiated CON requests on the gateway's listener
// (*coapx.Server).
type Requester interface {
	Request(ctx context.Context, peer netip.AddrPort, sess coapx.Session, r *coapx.OutRequest) (*coapx.Response, error)
}

// liveSessions maps devices to their DTLS sessions, for pushes.
type liveSessions struct {
	mu    sync.Mutex
	byDev map[command.DeviceKey]coapx.Session // guarded by mu
	byID  map[uint64]command.DeviceKey        // guarded by mu
}

func (l *liveSessions) put(pk, dk string, s coapx.Session) {
	k := command.DeviceKey{ProductKey: pk, DeviceKey: dk}
	l.mu.Lock()
	if cur, ok := l.byDev[k]; !ok || cur.SessionID() != s.SessionID() {
		if l.byDev == nil {
			l.byDev, l.byID = map[command.DeviceKey]coapx.Session{}, map[uint64]command.DeviceKey{}
		}
		if ok {
			// The replaced session is no longer a push route: forget it
			// now, so that byID holds one entry per device, not one per
			// session that ever carried it.
			delete(l.byID, cur.SessionID())
		}
		l.byDev[k] = s
		l.byID[s.SessionID()] = k
	}
	l.mu.Unlock()
}

func (l *liveSessions) remove(s coapx.Session) {
	l.mu.Lock()
	if k, ok := l.byID[s.SessionID()]; ok {
		delete(l.byID, s.SessionID())
		if cur := l.byDev[k]; cur != nil && cur.SessionID() == s.SessionID() {
			delete(l.byDev, k)
		}
	}
	l.mu.Unlock()
}

func (l *liveSessions) get(pk, dk string) coapx.Session {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.byDev[command.DeviceKey{ProductKey: pk, DeviceKey: dk}]
}

// SetRequester gives the gateway its listener for pushes (the listener is
// created after the gateway, which is its handler).
func (g *Gateway) SetRequester(r Requester) { g.requester = r }

// SessionLive records that a DTLS session carries device pk/dk, so that
// commands can be pushed over it. PSK sessions are recorded when they come
// up, certificate sessions at their first token-authenticated request.
func (g *Gateway) SessionLive(pk, dk string, s coapx.Session) { g.live.put(pk, dk, s) }

// SessionGone forgets a session that ended.
func (g *Gateway) SessionGone(s coapx.Session) {
	g.live.remove(s)
	g.bound.remove(s.SessionID())
}

// authUplink authenticates a request to /topic/… by the listener's mode:
// the DTLS-PSK session, a symmetric token, option 2101 or a plain token.
func (g *Gateway) authUplink(ctx context.Context, req *coapx.Request) (uplinkAuth, *coapx.Response) {
	var (
		up   uplinkAuth
		resp *coapx.Response
	)
	psk, isPSK := pskIdentity(req)
	switch {
	case isPSK:
		// DTLS-PSK: the session is the device, no token (docs/protocol.md §2).
		up.id, resp = g.authenticateSession(ctx, req, psk)
	case g.o.Symmetric || g.symmetricUplink(req):
		up, resp = g.authenticateSymmetric(ctx, req)
	case hasSignE(req):
		up, resp = g.authenticateSignE(ctx, req)
	default:
		up.id, resp = g.authenticate(ctx, req)
	}
	return up, resp
}

// addDownlink adds option 2100 = "/topic" + the next command's request
// topic to an uplink's success response when the device has a command
// waiting (docs/protocol.md §2.1). The check is in memory; storage is read only
// for devices with something pending. The value is never encrypted.
func (g *Gateway) addDownlink(ctx context.Context, id identity, r *coapx.Response, now time.Time) {
	if g.o.Commands == nil || !g.o.Commands.HasPending(id.dev.ProductKey, id.dev.DeviceKey) {
		return
	}
	next, err := g.o.Commands.NextTopic(ctx, id.dev.ProductKey, id.dev.DeviceKey, now)
	if err != nil {
		g.log.Warn("next command lookup failed", "productKey", id.dev.ProductKey, "deviceKey", id.dev.DeviceKey, "err", err)
		return
	}
	if next != "" {
		r.SetBytes(coapx.OptionDownlink, []byte("/topic"+next))
		g.m.downlink.WithLabelValues("announced").Inc()
	}
}

// commandReply completes the command a stored uplink to a
// …/{requestTopic}_reply topic answers. An unknown or foreign id, or a
// body that is not a reply, touches no command: logged and counted; the
// uplink is stored and acknowledged all the same.
func (g *Gateway) commandReply(ctx context.Context, id identity, top string, payload []byte, cf uint16, now time.Time) {
	if g.o.Commands == nil {
		return
	}
	if _, ok := command.ReplyRequestTopic(top); !ok {
		return
	}
	if cf == cfOctets {
		cf = sniff(payload)
	}
	pk, dk := id.dev.ProductKey, id.dev.DeviceKey
	r, err := command.ParseReply(payload, cf == cfCBOR)
	if err != nil {
		g.m.downlink.WithLabelValues("reply_unparsable").Inc()
		g.log.Info("command reply not understood", "productKey", pk, "deviceKey", dk, "topic", top, "err", err)
		return
	}
	if _, err := g.o.Commands.Reply(ctx, pk, dk, r, now); err != nil {
		reason := "reply_unmatched"
		if errors.Is(err, command.ErrState) {
			reason = "reply_late"
		}
		g.m.downlink.WithLabelValues(reason).Inc()
		g.log.Info("command reply matched no open command", "productKey", pk, "deviceKey", dk, "command", r.ID, "reason", reason, "err", err)
		return
	}
	g.m.downlink.WithLabelValues("replied").Inc()
}

// ownsRequestTopic reports whether top is a command request topic of pk/dk.
func ownsRequestTopic(top, pk, dk string) bool {
	segs := strings.Split(strings.TrimPrefix(top, "/"), "/")
	return command.IsRequestTopic(segs) && segs[1] == pk && segs[2] == dk
}

// pull answers GET /topic/{requestTopic…} (docs/protocol.md §2.1): the oldest
// waiting command of that topic, marked delivered before the answer, as
// 2.05 with the command as payload (JSON or CBOR by the product's format
// and Accept; raw bytes for down_raw) and option 2100 when more wait.
// Nothing waiting is 4.04, another device's topic 4.03. A retransmitted
// GET gets the cached answer from coapx, not a second command.
func (g *Gateway) pull(ctx context.Context, req *coapx.Request) *coapx.Response {
	up, resp := g.authUplink(ctx, req)
	if resp != nil {
		g.m.downlink.WithLabelValues("refused").Inc()
		return resp
	}
	id := up.id
	pk, dk := id.dev.ProductKey, id.dev.DeviceKey
	top, err := topic.Parse(req.Path[1:])
	if err != nil {
		return badRequest(err)
	}
	if !ownsRequestTopic(top, pk, dk) {
		g.m.authFailures.WithLabelValues(reasonACL).Inc()
		g.m.downlink.WithLabelValues("denied").Inc()
		g.refusals.Log(ctx, slog.LevelInfo, "command fetch denied", "command fetch denied", "productKey", pk, "deviceKey", dk, "topic", top, "peer", req.Peer.String())
		return &coapx.Response{Code: codes.Forbidden}
	}
	def := cfJSON
	if id.prod.DataFormat == registry.FormatCBOR {
		def = cfCBOR
	}
	respCF, ok := accept(req, def)
	if !ok {
		return &coapx.Response{Code: codes.NotAcceptable}
	}
	if respCF == cfOctets {
		respCF = def
	}
	if _, resp := g.open(req, &up); resp != nil { // the session's sequence number
		return resp
	}
	defer up.release()
	if up.state != nil {
		// The number is used: durable before anything is handed out.
		if err := g.appendState(ctx, nil, up.state); err != nil {
			if replay.IsReplay(err) { // another node of the cluster accepted the number
				return g.replayRefused(req, &up, up.state.Accepted, err)
			}
			return g.unavailable()
		}
	}
	g.seenVia(id, req, up.transport(g.o.Transport))
	c, next, err := g.o.Commands.Deliver(ctx, pk, dk, top, req.Received)
	switch {
	case errors.Is(err, command.ErrNotFound):
		g.m.downlink.WithLabelValues("none_waiting").Inc()
		return &coapx.Response{Code: codes.NotFound}
	case err != nil:
		g.log.Error("command delivery failed", "productKey", pk, "deviceKey", dk, "topic", top, "err", err)
		return g.unavailable()
	}
	body, err := c.Payload(respCF == cfCBOR)
	if err != nil {
		g.log.Error("command encoding failed", "command", c.ID, "err", err)
		return &coapx.Response{Code: codes.InternalServerError}
	}
	if c.IsRaw() {
		respCF = cfOctets
	}
	if up.key != nil {
		if body, err = symmetric.Encrypt(*up.key, []byte(symmetric.IV), body); err != nil {
			return &coapx.Response{Code: codes.InternalServerError}
		}
	}
	g.m.downlink.WithLabelValues("delivered").Inc()
	r := &coapx.Response{Code: codes.Content, Payload: body}
	r.SetUint(optContentFormat, uint32(respCF))
	if next != "" {
		r.SetBytes(coapx.OptionDownlink, []byte("/topic"+next))
	}
	return r
}

// Live reports whether Push could reach the device from this listener: a
// DTLS session of the device here, or (plain UDP) its last contact here
// within its lifetime over this listener's transport.
func (g *Gateway) Live(pk, dk string) bool {
	if g.requester == nil || g.o.Symmetric {
		return false
	}
	if sess := g.live.get(pk, dk); sess != nil {
		return true
	}
	if g.o.Presence == nil || g.o.Transport == "coap-dtls" {
		return false
	}
	st, ok := g.o.Presence.Lookup(pk, dk)
	return ok && st.Online(g.o.Now()) && st.Transport == g.o.Transport
}

// Push sends c to its device as a CON POST /topic/{requestTopic…} over the
// device's live DTLS session on this listener, or to the last address of a
// plain-UDP device seen on this listener within its lifetime
// (command.ErrNotLive otherwise; the symmetric listener never pushes: its
// session key is not kept). It implements command.Pusher for one listener.
func (g *Gateway) Push(ctx context.Context, c command.Command) (*command.Reply, error) {
	if g.requester == nil || g.o.Symmetric {
		return nil, command.ErrNotLive
	}
	now := g.o.Now()
	sess := g.live.get(c.ProductKey, c.DeviceKey)
	var peer netip.AddrPort
	switch {
	case sess != nil:
		if id, ok := sess.Identity().(*dtlspsk.Identity); ok && id != nil && (id.ProductKey != c.ProductKey || id.DeviceKey != c.DeviceKey) {
			return nil, command.ErrNotLive
		}
	case g.o.Presence != nil && g.o.Transport != "coap-dtls":
		st, ok := g.o.Presence.Lookup(c.ProductKey, c.DeviceKey)
		if !ok || !st.Online(now) || st.Transport != g.o.Transport {
			return nil, command.ErrNotLive
		}
		var err error
		if peer, err = netip.ParseAddrPort(st.Address); err != nil {
			return nil, command.ErrNotLive
		}
	default:
		return nil, command.ErrNotLive
	}
	id, err := g.cache.get(ctx, c.ProductKey, c.DeviceKey, now)
	if err != nil {
		return nil, fmt.Errorf("push command %s: device: %w", c.ID, err)
	}
	cf := cfJSON
	if id.prod.DataFormat == registry.FormatCBOR {
		cf = cfCBOR
	}
	body, err := c.Payload(cf == cfCBOR)
	if err != nil {
		return nil, fmt.Errorf("push command %s: %w", c.ID, err)
	}
	if c.IsRaw() {
		cf = cfOctets
	}
	opts := message.Options{}
	for _, s := range strings.Split(strings.TrimPrefix(c.Topic, "/"), "/") {
		opts = append(opts, message.Option{ID: message.URIPath, Value: []byte(s)})
	}
	opts = append([]message.Option{{ID: message.URIPath, Value: []byte("topic")}}, opts...)
	opts = append(opts, message.Option{ID: optContentFormat, Value: coapx.EncodeUint(uint32(cf))})
	resp, err := g.requester.Request(ctx, peer, sess, &coapx.OutRequest{Code: codes.POST, Options: opts, Payload: body})
	switch {
	case errors.Is(err, coapx.ErrReset):
		return nil, fmt.Errorf("%w: RST", command.ErrPushRefused)
	case err != nil:
		return nil, fmt.Errorf("push command %s: %w", c.ID, err)
	case resp.Code != codes.Empty && resp.Code>>5 != 2:
		return nil, fmt.Errorf("%w: %s", command.ErrPushRefused, coapx.CodeString(resp.Code))
	}
	if len(resp.Payload) == 0 || c.IsRaw() {
		return nil, nil
	}
	rcf := uint16(cfJSON)
	if v, ok := coapx.Uint(resp.Options, optContentFormat); ok {
		rcf = uint16(v)
	}
	if rcf == cfOctets {
		rcf = sniff(resp.Payload)
	}
	if r, err := command.ParseReply(resp.Payload, rcf == cfCBOR); err == nil {
		return &r, nil
	}
	return nil, nil
}
