package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"

	"github.com/coapgate/coapgate/internal/auth/esign"
	"github.com/coapgate/coapgate/internal/auth/symmetric"
	"github.com/coapgate/coapgate/internal/auth/token"
	"github.com/coapgate/coapgate/internal/coapx"
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
}

// sessionKey is the replay state key of a session token.
func sessionKey(cl token.Claims) replay.Key {
	return replay.Key{ProductKey: cl.ProductKey, DeviceKey: cl.DeviceKey, Random: cl.Random}
}

func hasSignE(req *coapx.Request) bool {
	_, ok := coapx.Bytes(req.Options, coapx.OptionSignE)
	return ok
}

// session returns the replay state of a session token, or 4.01 when this
// node may have forgotten it (the token predates the node's start or an
// eviction): the device authenticates again.
func (g *Gateway) session(req *coapx.Request, cl token.Claims, floor uint64) (*replay.Session, *coapx.Response) {
	sess, err := g.sessions.Get(sessionKey(cl), floor, cl.IssuedAt, cl.ExpiresAt, req.Received)
	if err != nil {
		return nil, g.tokenFail(req, reasonStaleSession, codes.Unauthorized, cl.ProductKey, cl.DeviceKey)
	}
	return sess, nil
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
	sess, resp := g.session(req, cl, uint64(max(cl.SeqOffset, 1)))
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
		cl, err := g.o.Tokens.Verify(inClear, req.Received)
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
	sess, resp := g.session(req, cl, 1) // N starts at 1
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
			g.log.Info("uplink refused", "reason", "bad_seq", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "err", err)
			return nil, badRequest(fmt.Errorf("%w: option 2089: %w", errPayload, err))
		}
	}
	payload := req.Payload
	var decryptErr error
	err := up.sess.Use(seq, func() error {
		if up.key == nil || (req.Code == codes.GET && len(req.Payload) == 0) {
			return nil // a command fetch has no payload, only the number
		}
		payload, decryptErr = symmetric.Decrypt(*up.key, []byte(symmetric.IV), req.Payload)
		return decryptErr
	})
	switch {
	case err == nil:
		return payload, nil
	case replay.IsReplay(err):
		reason := replayReason(err)
		g.m.replays.WithLabelValues(reason).Inc()
		g.m.publish.WithLabelValues("replay").Inc()
		g.log.Info("replay refused", "reason", reason, "seq", strconv.FormatUint(seq, 10), "productKey", pk, "deviceKey", dk, "peer", req.Peer.String())
		return nil, &coapx.Response{Code: codes.Unauthorized}
	case errors.Is(err, decryptErr):
		g.m.publish.WithLabelValues("bad_ciphertext").Inc()
		g.log.Info("uplink refused", "reason", "bad_ciphertext", "productKey", pk, "deviceKey", dk, "peer", req.Peer.String(), "err", err)
		return nil, badRequest(fmt.Errorf("%w: %w", errPayload, err))
	}
	return nil, &coapx.Response{Code: codes.InternalServerError}
}
