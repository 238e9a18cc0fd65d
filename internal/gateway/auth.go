package gateway

import (
	"context"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"time"

	"github.com/coapgate/coapgate/internal/auth/devsign"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// maxClientID is the dialect's clientId limit (docs/protocol.md §3.1).
const maxClientID = 64

// authBody negotiates the formats of an auth request and decodes its body
// (both dialects' /auth): a non-nil resp is 4.15 or 4.06 to send as is; err
// is a payload that does not decode (4.00).
func authBody(req *coapx.Request) (respCF uint16, fields map[string]string, resp *coapx.Response, err error) {
	cf, ok := contentFormat(req, 0)
	if !ok {
		return 0, nil, &coapx.Response{Code: codes.UnsupportedMediaType}, nil
	}
	if cf == 0 || cf == cfOctets {
		cf = sniff(req.Payload)
	}
	if respCF, ok = accept(req, cf); !ok {
		return 0, nil, &coapx.Response{Code: codes.NotAcceptable}, nil
	}
	fields, err = decodeFields(req.Payload, cf)
	return respCF, fields, nil, err
}

// auth answers POST /auth (docs/protocol.md §3.1).
func (g *Gateway) auth(ctx context.Context, req *coapx.Request) *coapx.Response {
	respCF, fields, resp, err := authBody(req)
	if resp != nil {
		return resp
	}
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
	if _, ok := fields["seq"]; g.o.Symmetric && !ok {
		// docs/protocol.md §3.4: the symmetric-mode auth carries seq, signed.
		return g.authFail(req, reasonBadPayload, badRequest(fmt.Errorf("%w: seq is required in symmetric-encryption mode", errPayload)), pk, dn)
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
	cl := token.Claims{
		ProductKey: pk, DeviceKey: dn, Generation: id.dev.Generation,
		IssuedAt: req.Received, ExpiresAt: req.Received.Add(g.o.TokenTTL),
		Symmetric: g.o.Symmetric,
	}
	var tok string
	if g.o.Symmetric {
		if err = g.newSession(&cl); err == nil {
			tok, err = g.issueSession(cl, uint64(cl.SeqOffset), req.Received)
		}
	} else {
		tok, err = g.o.Tokens.Issue(cl)
	}
	if err != nil {
		g.log.Error("issue token failed", "productKey", pk, "deviceKey", dn, "err", err)
		return &coapx.Response{Code: codes.InternalServerError}
	}
	g.m.authOK.Inc()
	g.seen(id, req)
	g.log.Debug("device authenticated", "productKey", pk, "deviceKey", dn, "peer", req.Peer.String(), "signmethod", string(method))
	var reply any = tokenReply{Token: tok}
	if g.o.Symmetric {
		reply = symmetricReply{Random: hex.EncodeToString(cl.Random[:]), SeqOffset: cl.SeqOffset, Token: tok}
	}
	return authReply(respCF, reply)
}

// tokenReply is the plain and dialect-E auth answer; symmetricReply the
// symmetric-mode one (docs/protocol.md §3.1), fields in this order.
type tokenReply struct {
	Token string `json:"token" cbor:"token"`
}

type symmetricReply struct {
	Random    string `json:"random" cbor:"random"`
	SeqOffset uint32 `json:"seqOffset" cbor:"seqOffset"`
	Token     string `json:"token" cbor:"token"`
}

// authReply is 2.05 with v in format cf.
func authReply(cf uint16, v any) *coapx.Response {
	var (
		body []byte
		err  error
	)
	if cf == cfCBOR {
		body, err = cbor.Marshal(v)
	} else {
		body, err = json.Marshal(v)
	}
	if err != nil {
		return &coapx.Response{Code: codes.InternalServerError}
	}
	r := &coapx.Response{Code: codes.Content, Payload: body}
	return r.SetUint(optContentFormat, uint32(cf))
}

// newSession fills the session part of a symmetric or sign-E token: the
// random (8 bytes, sent as 16 lower-case hex characters) and, for
// symmetric tokens, a seqOffset in 1..65536.
func (g *Gateway) newSession(cl *token.Claims) error {
	var b [10]byte
	if _, err := io.ReadFull(g.o.Rand, b[:]); err != nil {
		return fmt.Errorf("read random: %w", err)
	}
	copy(cl.Random[:], b[:8])
	if cl.Symmetric {
		cl.SeqOffset = 1 + uint32(binary.BigEndian.Uint16(b[8:]))
	}
	return nil
}

// issueSession issues a session token and creates its replay state on this
// node, so that it is usable even in the second the node started.
func (g *Gateway) issueSession(cl token.Claims, floor uint64, now time.Time) (string, error) {
	tok, err := g.o.Tokens.Issue(cl)
	if err != nil {
		return "", err
	}
	// The token carries whole seconds; so does the session.
	g.sessions.Create(sessionKey(cl), floor, cl.IssuedAt.Truncate(time.Second), cl.ExpiresAt, now)
	return tok, nil
}

func (g *Gateway) authFail(req *coapx.Request, reason string, resp *coapx.Response, pk, dk string) *coapx.Response {
	g.m.authFailures.WithLabelValues(reason).Inc()
	g.log.Info("auth refused", "reason", reason, "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "code", coapx.CodeString(resp.Code))
	return resp
}
