package gateway

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/coapgate/coapgate/internal/auth/devsign"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// maxClientID is the dialect's clientId limit (PROTOCOL.md §3.1).
const maxClientID = 64

// auth answers POST /auth (PROTOCOL.md §3.1).
func (g *Gateway) auth(ctx context.Context, req *coapx.Request) *coapx.Response {
	cf, ok := contentFormat(req, 0)
	if !ok {
		return &coapx.Response{Code: codes.UnsupportedMediaType}
	}
	if cf == 0 || cf == cfOctets {
		cf = sniff(req.Payload)
	}
	respCF, ok := accept(req, cf)
	if !ok {
		return &coapx.Response{Code: codes.NotAcceptable}
	}
	fields, err := decodeFields(req.Payload, cf)
	if err != nil {
		return g.authFail(req, reasonBadPayload, badRequest(err), "", "")
	}
	pk, dn, sign := fields["productKey"], fields["deviceName"], fields["sign"]
	if pk == "" || dn == "" || sign == "" {
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: productKey, deviceName and sign are required", errPayload)), pk, dn)
	}
	if len(fields["clientId"]) > maxClientID {
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: clientId longer than %d", errPayload, maxClientID)), pk, dn)
	}
	method, err := devsign.ParseMethod(fields["signmethod"])
	if err != nil {
		return g.authFail(req, reasonBadPayload, badRequest(err), pk, dn)
	}
	id, err := g.cache.get(ctx, pk, dn, req.Received)
	if isStoreTrouble(err) {
		g.log.Error("device lookup failed", "productKey", pk, "deviceKey", dn, "err", err)
		return g.authFail(req, reasonStore, g.unavailable(), pk, dn)
	}
	if err != nil {
		return g.authFail(req, reasonUnknownDevice, &coapx.Response{Code: codes.Unauthorized}, pk, dn)
	}
	if ok, _ := devsign.Verify(method, id.dev.DeviceSecret.Reveal(), fields, sign); !ok {
		return g.authFail(req, reasonBadSign, &coapx.Response{Code: codes.Unauthorized}, pk, dn)
	}
	if !id.dev.Enabled {
		return g.authFail(req, reasonDisabled, &coapx.Response{Code: codes.Forbidden}, pk, dn)
	}
	tok, err := g.o.Tokens.Issue(token.Claims{
		ProductKey: pk, DeviceKey: dn, Generation: id.dev.Generation,
		IssuedAt: req.Received, ExpiresAt: req.Received.Add(g.o.TokenTTL),
	})
	if err != nil {
		g.log.Error("issue token failed", "productKey", pk, "deviceKey", dn, "err", err)
		return &coapx.Response{Code: codes.InternalServerError}
	}
	g.m.authOK.Inc()
	g.seen(id, req)
	g.log.Debug("device authenticated", "productKey", pk, "deviceKey", dn, "peer", req.Peer.String(), "signmethod", string(method))
	var body []byte
	if respCF == cfCBOR {
		body, err = cbor.Marshal(map[string]string{"token": tok})
	} else {
		body, err = json.Marshal(map[string]string{"token": tok})
	}
	if err != nil {
		return &coapx.Response{Code: codes.InternalServerError}
	}
	r := &coapx.Response{Code: codes.Content, Payload: body}
	return r.SetUint(optContentFormat, uint32(respCF))
}

func (g *Gateway) authFail(req *coapx.Request, reason string, resp *coapx.Response, pk, dk string) *coapx.Response {
	g.m.authFailures.WithLabelValues(reason).Inc()
	g.log.Info("auth refused", "reason", reason, "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "code", coapx.CodeString(resp.Code))
	return resp
}
