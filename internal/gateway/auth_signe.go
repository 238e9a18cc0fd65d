package gateway

import (
	"context"
	"fmt"
	"strconv"

	"github.com/coapgate/coapgate/internal/auth/esign"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Lifetime bounds of dialect E (docs/protocol.md §2), seconds.
const (
	minLifetimeE = 30
	maxLifetimeE = 86400
)

// authSignE answers dialect E's non-DTLS POST /auth/{pk}/{dk} (docs/protocol.md
// §2.2): payload {"secureMode":2,"lifetime":N,"sign":S} with S the uppercase
// hex SHA-256 of the sorted name+value pairs followed by the device secret;
// answer 2.05 {"token":T}. The token is a sign-E session token: usable only
// inside option 2101. Implemented from the documents alone.
func (g *Gateway) authSignE(ctx context.Context, req *coapx.Request) *coapx.Response {
	pk, dk := req.Path[1], req.Path[2]
	respCF, fields, resp, err := authBody(req)
	if resp != nil {
		return resp
	}
	if err != nil {
		return g.authFail(req, reasonBadPayload, badRequest(err), pk, dk)
	}
	sm, lt, sign := fields["secureMode"], fields["lifetime"], fields["sign"]
	if sm == "" || lt == "" || sign == "" {
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: secureMode, lifetime and sign are required", errPayload)), pk, dk)
	}
	if sm != "2" {
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: secureMode %q: only 2 (device secret) without DTLS", errPayload, sm)), pk, dk)
	}
	if n, err := strconv.Atoi(lt); err != nil || n < minLifetimeE || n > maxLifetimeE {
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: lifetime %q: want an integer in %d..%d", errPayload, lt, minLifetimeE, maxLifetimeE)), pk, dk)
	}
	if len(pk) > token.MaxKeyLen || len(dk) > token.MaxKeyLen {
		return g.authFail(req, reasonUnknownDevice, &coapx.Response{Code: codes.Unauthorized}, pk, dk)
	}
	id, err := g.cache.get(ctx, pk, dk, req.Received)
	if isStoreTrouble(err) {
		g.log.Error("device lookup failed", "productKey", pk, "deviceKey", dk, "err", err)
		return g.authFail(req, reasonStore, g.unavailable(), pk, dk)
	}
	if err != nil {
		return g.authFail(req, reasonUnknownDevice, &coapx.Response{Code: codes.Unauthorized}, pk, dk)
	}
	if !esign.Verify(pk, dk, lt, sm, id.dev.DeviceSecret.Reveal(), sign) {
		return g.authFail(req, reasonBadSign, &coapx.Response{Code: codes.Unauthorized}, pk, dk)
	}
	if !id.dev.Enabled {
		return g.authFail(req, reasonDisabled, &coapx.Response{Code: codes.Forbidden}, pk, dk)
	}
	cl := token.Claims{
		ProductKey: pk, DeviceKey: dk, Generation: id.dev.Generation,
		IssuedAt: req.Received, ExpiresAt: req.Received.Add(g.o.TokenTTL), SignE: true,
	}
	err = g.newSession(&cl)
	var tok string
	if err == nil {
		tok, err = g.issueSession(cl, 1, req.Received) // N starts at 1
	}
	if err != nil {
		g.log.Error("issue token failed", "productKey", pk, "deviceKey", dk, "err", err)
		return &coapx.Response{Code: codes.InternalServerError}
	}
	g.m.authOK.Inc()
	g.seen(id, req)
	g.log.Debug("device authenticated", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "mode", "sign-e")
	return authReply(respCF, tokenReply{Token: tok})
}
