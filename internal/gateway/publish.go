package gateway

import (
	"context"
	"log/slog"
	"strconv"
	"time"

	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/topic"
	coapmsg "github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// requestToken returns the token from option 2088 or, as SDK v3.x and
// third-party modules send it, option 61 (docs/protocol.md §3.2).
func requestToken(req *coapx.Request) string {
	if v, ok := coapx.Bytes(req.Options, coapx.OptionAuthToken); ok && len(v) > 0 {
		return string(v)
	}
	if v, ok := coapx.Bytes(req.Options, coapx.OptionToken61); ok {
		return string(v)
	}
	return ""
}

// authenticate checks the plain-mode token of the request and returns the
// device, or the response to send: 4.01 (no payload) for a missing,
// malformed, expired or revoked token, a token of a session mode, or a
// deleted device; 4.03 for a disabled one.
func (g *Gateway) authenticate(ctx context.Context, req *coapx.Request) (identity, *coapx.Response) {
	tok := requestToken(req)
	if tok == "" {
		return identity{}, g.tokenFail(req, reasonNoToken, codes.Unauthorized, "", "")
	}
	cl, id, resp := g.checkToken(ctx, req, tok)
	if resp != nil {
		return identity{}, resp
	}
	if cl.Symmetric || cl.SignE {
		// A session token is sent in the clear: alone it must not let
		// anyone publish without the session key.
		return identity{}, g.tokenFail(req, reasonWrongMode, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	// A plain token's lifetime slides with its device's activity, if it is
	// the newest token the device was given or used.
	lt := token.Lifetime{Idle: g.o.TokenTTL, MaxAge: g.o.TokenMaxAge}
	if err := lt.Alive(cl, g.lastActive(id, cl), req.Received); err != nil {
		return identity{}, g.tokenFail(req, reasonExpired, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	g.noteToken(cl)
	return id, nil
}

// lastActive is the device's last accepted contact known here (this node's
// presence table, else the registry's last-seen time, flushed by every node
// so it survives restarts), or zero when cl is older than the newest token
// this node saw the device get or use: an older token keeps only its own
// lifetime, so a leaked one is not kept alive by the device's activity.
func (g *Gateway) lastActive(id identity, cl token.Claims) time.Time {
	last := id.dev.LastSeenAt
	if g.o.Presence != nil {
		if newest, ok := g.o.Presence.NewestToken(id.dev.ProductKey, id.dev.DeviceKey); ok && cl.IssuedAt.Before(newest) {
			return time.Time{}
		}
		if st, ok := g.o.Presence.Lookup(id.dev.ProductKey, id.dev.DeviceKey); ok && st.LastSeen.After(last) {
			last = st.LastSeen
		}
	}
	return last
}

// noteToken records that the device was given or used a token issued at
// cl.IssuedAt.
func (g *Gateway) noteToken(cl token.Claims) {
	if g.o.Presence != nil {
		g.o.Presence.NoteToken(cl.ProductKey, cl.DeviceKey, cl.IssuedAt)
	}
}

// checkToken verifies tok and loads its device: signature, the absolute
// age cap, generation (revocation) and enabled flag. The sliding lifetime
// is the caller's: the device's activity for plain tokens, the session's
// for session tokens.
func (g *Gateway) checkToken(ctx context.Context, req *coapx.Request, tok string) (token.Claims, identity, *coapx.Response) {
	cl, err := g.o.Tokens.Parse(tok)
	if err != nil {
		return cl, identity{}, g.tokenFail(req, reasonBadToken, codes.Unauthorized, "", "")
	}
	if g.o.TokenMaxAge > 0 && !req.Received.Before(cl.IssuedAt.Add(g.o.TokenMaxAge)) {
		return cl, identity{}, g.tokenFail(req, reasonExpired, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	id, err := g.cache.get(ctx, cl.ProductKey, cl.DeviceKey, req.Received)
	switch {
	case isStoreTrouble(err):
		g.log.Error("device lookup failed", "productKey", cl.ProductKey, "deviceKey", cl.DeviceKey, "err", err)
		return cl, identity{}, g.unavailable()
	case err != nil:
		return cl, identity{}, g.tokenFail(req, reasonUnknownDevice, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	case cl.Legacy && cl.IssuedAt.Before(id.dev.CreatedAt.Truncate(time.Second)),
		!cl.Legacy && id.dev.Incarnation != cl.Incarnation:
		// A legacy token (no incarnation) belongs to the device that
		// existed when it was issued: one created later is another device.
		return cl, identity{}, g.tokenFail(req, reasonOtherIncarnation, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	case id.dev.Generation != cl.Generation:
		return cl, identity{}, g.tokenFail(req, reasonRevoked, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	case !id.dev.Enabled:
		return cl, identity{}, g.tokenFail(req, reasonDisabled, codes.Forbidden, cl.ProductKey, cl.DeviceKey)
	}
	return cl, id, nil
}

func (g *Gateway) tokenFail(req *coapx.Request, reason string, code codes.Code, pk, dk string) *coapx.Response {
	g.m.authFailures.WithLabelValues(reason).Inc()
	g.log.Debug("token refused", "reason", reason, "productKey", pk, "deviceKey", dk, "peer", req.Peer.String())
	return &coapx.Response{Code: code}
}

// publish answers POST /topic/{topic…} (docs/protocol.md §2.2, §3.2–3.4, §4):
// authentication (token, option 2101 or symmetric token), ACL, the session
// modes' sequence number and decryption, thing-model decoding (package
// thing), durable store, then 2.04 with option 2090 and the reply
// (encrypted in symmetric mode). A thing payload that fails decoding is
// stored all the same; its reply carries the error's code and message.
func (g *Gateway) publish(ctx context.Context, req *coapx.Request) *coapx.Response {
	up, resp := g.authUplink(ctx, req)
	if resp != nil {
		g.m.publish.WithLabelValues("refused").Inc()
		return resp
	}
	id := up.id
	top, err := topic.Parse(req.Path[1:])
	if err != nil {
		g.m.publish.WithLabelValues("bad_topic").Inc()
		return badRequest(err)
	}
	if !topic.Allowed(top, id.dev.ProductKey, id.dev.DeviceKey) {
		g.m.authFailures.WithLabelValues(reasonACL).Inc()
		g.m.publish.WithLabelValues("denied").Inc()
		g.refusals.Log(ctx, slog.LevelInfo, "topic denied", "topic denied", "productKey", id.dev.ProductKey, "deviceKey", id.dev.DeviceKey, "topic", top, "peer", req.Peer.String())
		return &coapx.Response{Code: codes.Forbidden}
	}
	def := cfJSON
	if id.prod.DataFormat == registry.FormatCBOR {
		def = cfCBOR
	}
	cf, ok := contentFormat(req, def)
	if !ok {
		g.m.publish.WithLabelValues("bad_content_format").Inc()
		return &coapx.Response{Code: codes.UnsupportedMediaType}
	}
	respCF, ok := accept(req, cf)
	if !ok {
		g.m.publish.WithLabelValues("not_acceptable").Inc()
		return &coapx.Response{Code: codes.NotAcceptable}
	}
	payload, resp := g.open(req, &up)
	if resp != nil {
		return resp
	}
	defer up.release()
	// docs/protocol.md §4: a payload that fails validation is still stored and
	// gets a reply with a non-200 code and a message, never silence.
	body, treq, terr := thingReply(top, payload, cf, respCF, req.Received)
	if terr != nil {
		g.m.thingDecodeFailures.WithLabelValues(string(treq.Kind)).Inc()
		g.log.Debug("thing payload invalid", "productKey", id.dev.ProductKey, "deviceKey", id.dev.DeviceKey,
			"topic", top, "kind", string(treq.Kind), "code", terr.Code, "reason", terr.Message)
	}
	if up.key == nil {
		payload = append([]byte(nil), payload...) // req buffers are the server's
	}
	msg := &message.Message{
		ProductKey:    id.dev.ProductKey,
		DeviceKey:     id.dev.DeviceKey,
		Topic:         top,
		Payload:       payload,
		ContentFormat: cf,
		ReceivedAt:    req.Received,
		Peer:          req.Peer.String(),
		Transport:     up.transport(g.o.Transport),
	}
	if req.Type == coapmsg.Confirmable {
		msg.Exchange = message.ExchangeKey(msg.ProductKey, msg.DeviceKey, req.MessageID, req.Token, payload)
	}
	// The session's advanced replay state commits with the uplink.
	if err := g.appendState(ctx, msg, up.state); err != nil {
		if replay.IsReplay(err) { // another node of the cluster accepted the number
			return g.replayRefused(req, &up, up.state.Accepted, err)
		}
		g.m.publish.WithLabelValues("store_unavailable").Inc()
		return g.unavailable()
	}
	g.m.publish.WithLabelValues("stored").Inc()
	g.seenVia(id, req, msg.Transport)
	if isNTPRequest(req.Path[1:]) {
		// The reply of the NTP topic is the time, taken after the commit.
		body = ntpReply(payload, cf, respCF, req.Received, g.o.Now())
	}
	g.commandReply(ctx, id, top, payload, cf, req.Received)
	if up.key != nil {
		// docs/protocol.md §3.4: the reply is encrypted like the uplink.
		if body, err = symmetric.Encrypt(*up.key, []byte(symmetric.IV), body); err != nil {
			return &coapx.Response{Code: codes.InternalServerError}
		}
	}
	r := &coapx.Response{Code: codes.Changed, Payload: body}
	r.SetBytes(coapx.OptionMessageID, strconv.AppendInt(nil, msg.ID, 10))
	g.addDownlink(ctx, id, r, req.Received)
	return r.SetUint(optContentFormat, uint32(respCF))
}
