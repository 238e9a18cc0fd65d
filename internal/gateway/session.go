package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"strconv"

	"github.com/coapgate/coapgate/internal/auth/esign"
	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/topic"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// uplinkAuth is what authenticated an uplink. In the session modes it
// carries the session whose window the sequence number must pass.
type uplinkAuth struct {
	id   identity
	sess *replay.Session // nil for plain tokens
	// key is the symmetric-mode session key: payload and reply encrypted.
	key *symmetric.Key
	// seq is dialect E's N, read from option 2101 during authentication.
	seq uint64
	// state is the session's replay state once open accepted the number,
	// to be made durable with the uplink.
	state *replay.State
}

// release tells the session that the state open produced is committed
// (or failed): it may be evicted again.
func (up *uplinkAuth) release() {
	if up.state != nil {
		up.sess.Release()
	}
}

// transport is the message transport to record: symmetric for an
// encrypted uplink, whatever listener it reached.
func (up *uplinkAuth) transport(listener string) string {
	if up.key != nil {
		return message.TransportSymmetric
	}
	return listener
}

// symmetricUplink reports whether req is a symmetric-mode request on a
// plain listener that takes both modes (option 2089 present).
func (g *Gateway) symmetricUplink(req *coapx.Request) bool {
	if !g.o.SymmetricOnPlain {
		return false
	}
	_, ok := coapx.Bytes(req.Options, coapx.OptionSeq)
	return ok
}

// table is the replay table of a session token's mode: dialect E's option
// 2101 sessions accept only strictly increasing numbers (a window of one),
// as the dialect's documents state; symmetric sessions have the window.
func (g *Gateway) table(cl token.Claims) *replay.Sessions {
	if cl.SignE {
		return g.signE
	}
	return g.sessions
}

// sessionKey is the replay state key of a session token.
func sessionKey(cl token.Claims) replay.Key {
	return replay.Key{ProductKey: cl.ProductKey, DeviceKey: cl.DeviceKey, Random: cl.Random}
}

func hasSignE(req *coapx.Request) bool {
	_, ok := coapx.Bytes(req.Options, coapx.OptionSignE)
	return ok
}

// session returns the replay state of a session token: held here, or
// rebuilt from the durable store (after a restart, say). 4.01 when its
// lifetime passed (unused for the token TTL) or when no state exists that
// this node may have forgotten (the token predates the node's start or an
// eviction and nothing was stored): the device authenticates again. 5.03
// when the store cannot be read.
func (g *Gateway) session(ctx context.Context, req *coapx.Request, cl token.Claims, floor uint64) (*replay.Session, *coapx.Response) {
	sess, err := g.table(cl).Lookup(ctx, sessionKey(cl), floor, cl.IssuedAt, cl.ExpiresAt, req.Received)
	switch {
	case err == nil:
		return sess, nil
	case errors.Is(err, replay.ErrExpired):
		return nil, g.tokenFail(req, reasonExpired, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	case errors.Is(err, replay.ErrUnknownSession):
		return nil, g.tokenFail(req, reasonStaleSession, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	g.log.Error("replay state lookup failed", "productKey", cl.ProductKey, "deviceKey", cl.DeviceKey, "err", err)
	return nil, g.unavailable()
}

// authenticateSymmetric authenticates a symmetric-mode uplink (docs/protocol.md
// §3.4): a valid symmetric token (option 2088 or 61) whose session this node
// holds or may create. The sequence number is checked later, by open.
func (g *Gateway) authenticateSymmetric(ctx context.Context, req *coapx.Request) (uplinkAuth, *coapx.Response) {
	tok := requestToken(req)
	if tok == "" {
		return uplinkAuth{}, g.tokenFail(req, reasonNoToken, codes.Unauthorized, "", "")
	}
	cl, id, resp := g.checkToken(ctx, req, tok)
	if resp != nil {
		return uplinkAuth{}, resp
	}
	if !cl.Symmetric {
		return uplinkAuth{}, g.tokenFail(req, reasonWrongMode, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	sess, resp := g.session(ctx, req, cl, uint64(max(cl.SeqOffset, 1)))
	if resp != nil {
		return uplinkAuth{}, resp
	}
	key := symmetric.SessionKey(id.dev.DeviceSecret.Reveal(), hex.EncodeToString(cl.Random[:]))
	return uplinkAuth{id: id, sess: sess, key: &key}, nil
}

// authenticateSignE authenticates an uplink by dialect E's option 2101
// (docs/protocol.md §2.2): AES-CBC with SHA-256(ds)[8:24] over
// "token"+T+"sequence"+N. The device is the one of the 2088/61 token when
// present (T must then be that token), else the one the topic names.
func (g *Gateway) authenticateSignE(ctx context.Context, req *coapx.Request) (uplinkAuth, *coapx.Response) {
	opt, _ := coapx.Bytes(req.Options, coapx.OptionSignE)
	inClear := requestToken(req)
	var owners []topic.Owner
	if inClear != "" {
		cl, err := g.o.Tokens.Parse(inClear) // its lifetime is the session's
		if err != nil {
			return uplinkAuth{}, g.tokenFail(req, reasonBadToken, codes.Unauthorized, "", "")
		}
		owners = []topic.Owner{{ProductKey: cl.ProductKey, DeviceKey: cl.DeviceKey}}
	} else if top, err := topic.Parse(req.Path[1:]); err == nil {
		owners = topic.Owners(top)
	}
	var (
		tok   string
		n     uint64
		owner topic.Owner
		found bool
	)
	for _, o := range owners {
		id, err := g.cache.get(ctx, o.ProductKey, o.DeviceKey, req.Received)
		if isStoreTrouble(err) {
			g.log.Error("device lookup failed", "productKey", o.ProductKey, "deviceKey", o.DeviceKey, "err", err)
			return uplinkAuth{}, g.unavailable()
		}
		if err != nil {
			continue
		}
		if tok, n, err = esign.Open(esign.Key(id.dev.DeviceSecret.Reveal()), g.o.SignEIV, opt); err == nil {
			owner, found = o, true
			break
		}
	}
	if !found || (inClear != "" && inClear != tok) {
		return uplinkAuth{}, g.tokenFail(req, reasonBadSignE, codes.Unauthorized, "", "")
	}
	cl, id, resp := g.checkToken(ctx, req, tok)
	if resp != nil {
		return uplinkAuth{}, resp
	}
	if !cl.SignE || cl.ProductKey != owner.ProductKey || cl.DeviceKey != owner.DeviceKey {
		return uplinkAuth{}, g.tokenFail(req, reasonWrongMode, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	sess, resp := g.session(ctx, req, cl, 1) // N starts at 1
	if resp != nil {
		return uplinkAuth{}, resp
	}
	return uplinkAuth{id: id, sess: sess, seq: n}, nil
}

// open passes the uplink's sequence number through its session's window and,
// in symmetric mode, decrypts the payload; it returns the plaintext payload
// or the answer: 4.01 without option 2089 or for a refused (replayed, too
// old, below seqOffset) number, 4.00 when option 2089 or the payload does
// not decrypt. A number is marked used only when the payload decrypted, and
// never twice (the session's lock).
func (g *Gateway) open(req *coapx.Request, up *uplinkAuth) ([]byte, *coapx.Response) {
	if up.sess == nil {
		return req.Payload, nil
	}
	pk, dk := up.id.dev.ProductKey, up.id.dev.DeviceKey
	seq := up.seq
	if up.key != nil {
		opt, ok := coapx.Bytes(req.Options, coapx.OptionSeq)
		if !ok || len(opt) == 0 {
			g.m.publish.WithLabelValues("refused").Inc()
			return nil, g.tokenFail(req, reasonNoSeq, codes.Unauthorized, pk, dk)
		}
		var err error
		if seq, err = symmetric.DecryptSeq(*up.key, opt); err != nil {
			g.m.publish.WithLabelValues("bad_seq").Inc()
			g.refusals.Log(context.Background(), slog.LevelInfo, "uplink refused/bad_seq", "uplink refused", "reason", "bad_seq", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "err", err)
			return nil, badRequest(fmt.Errorf("%w: option 2089: %w", errPayload, err))
		}
	}
	payload := req.Payload
	var decryptErr error
	st, err := up.sess.UseAt(seq, req.Received, func() error {
		if up.key == nil || (req.Code == codes.GET && len(req.Payload) == 0) {
			return nil // a command fetch has no payload, only the number
		}
		payload, decryptErr = symmetric.Decrypt(*up.key, []byte(symmetric.IV), req.Payload)
		return decryptErr
	})
	switch {
	case err == nil:
		up.state = &st
		return payload, nil
	case replay.IsReplay(err):
		return nil, g.replayRefused(req, up, seq, err)
	case errors.Is(err, decryptErr):
		g.m.publish.WithLabelValues("bad_ciphertext").Inc()
		g.refusals.Log(context.Background(), slog.LevelInfo, "uplink refused/bad_ciphertext", "uplink refused", "reason", "bad_ciphertext", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "err", err)
		return nil, badRequest(fmt.Errorf("%w: %w", errPayload, err))
	}
	return nil, &coapx.Response{Code: codes.InternalServerError}
}

// replayRefused answers an uplink whose sequence number was refused (4.01):
// by this node's window, or by the store when another node of the cluster
// had accepted it (err from the commit, replay.IsReplay).
func (g *Gateway) replayRefused(req *coapx.Request, up *uplinkAuth, seq uint64, err error) *coapx.Response {
	reason := replayReason(err)
	g.m.replays.WithLabelValues(reason).Inc()
	g.m.publish.WithLabelValues("replay").Inc()
	g.refusals.Log(context.Background(), slog.LevelInfo, "replay refused/"+reason, "replay refused", "reason", reason, "seq", strconv.FormatUint(seq, 10),
		"productKey", up.id.dev.ProductKey, "deviceKey", up.id.dev.DeviceKey, "peer", req.Peer.String())
	return &coapx.Response{Code: codes.Unauthorized}
}
