package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"strconv"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/internal/auth/devsign"
)

// authRequest is the body of POST /auth (docs/protocol.md §3.1). The json tags
// serve the CBOR encoding too.
type authRequest struct {
	ProductKey string `json:"productKey"`
	DeviceName string `json:"deviceName"`
	ClientID   string `json:"clientId"`
	Sign       string `json:"sign"`
	SignMethod string `json:"signmethod"`
	// Seq is sent (as a string, as the vendor SDK does) in symmetric mode.
	Seq string `json:"seq,omitempty"`
}

// authResponse is the /auth answer; Random and SeqOffset come only in
// symmetric mode (docs/protocol.md §3.1).
type authResponse struct {
	Token     string `json:"token"`
	Random    string `json:"random"`
	SeqOffset uint64 `json:"seqOffset"`
}

// authPayload builds the signed POST /auth body of cr in format cf (pure).
func authPayload(cr Credentials, cf message.MediaType) ([]byte, error) {
	return authPayloadSeq(cr, cf, "")
}

// authPayloadSeq is authPayload with the symmetric mode's seq field (signed
// like every field, docs/protocol.md §3.4) when seq is not empty (pure).
func authPayloadSeq(cr Credentials, cf message.MediaType, seq string) ([]byte, error) {
	method, err := devsign.ParseMethod(cr.SignMethod)
	if err != nil {
		return nil, err
	}
	req := authRequest{
		ProductKey: cr.ProductKey,
		DeviceName: cr.DeviceName,
		ClientID:   cr.clientID(),
		SignMethod: string(method),
		Seq:        seq,
	}
	// docs/protocol.md §3.1: every submitted field except sign and signmethod is signed.
	fields := map[string]string{
		"productKey": req.ProductKey,
		"deviceName": req.DeviceName,
		"clientId":   req.ClientID,
	}
	if seq != "" {
		fields["seq"] = seq
	}
	req.Sign, err = devsign.Sign(method, cr.DeviceSecret, fields)
	if err != nil {
		return nil, err
	}
	if cf == CBOR {
		return cbor.Marshal(req)
	}
	return json.Marshal(req)
}

// parseAuthToken extracts the token of a 2.xx /auth response body (pure).
func parseAuthToken(payload []byte, isCBOR bool) (string, error) {
	ar, err := parseAuthReply(payload, isCBOR, false)
	return ar.Token, err
}

// parseAuthReply decodes a 2.xx /auth response body; symmetric requires
// random (at most 32 characters) and a seqOffset >= 1 as well (pure).
func parseAuthReply(payload []byte, isCBOR, symmetric bool) (authResponse, error) {
	var ar authResponse
	var err error
	if isCBOR {
		err = cbor.Unmarshal(payload, &ar)
	} else {
		err = json.Unmarshal(payload, &ar)
	}
	if err != nil {
		return authResponse{}, fmt.Errorf("%w: auth response: %w", ErrMalformed, err)
	}
	if ar.Token == "" {
		return authResponse{}, ErrNoToken
	}
	if symmetric && (ar.Random == "" || len(ar.Random) > 32 || ar.SeqOffset == 0) {
		return authResponse{}, fmt.Errorf("%w: symmetric auth response needs random and seqOffset", ErrMalformed)
	}
	return ar, nil
}

// Auth sends POST /auth with the credentials given to Dial, stores the
// returned token in the Client and returns it. A non-2.xx answer is a
// *StatusError: 4.00 bad payload, 4.01 bad signature or unknown device,
// 4.03 disabled device. With WithSymmetric the request carries seq and the
// Client keeps the session (random, seqOffset, key) with the token.
func (c *Client) Auth(ctx context.Context) (string, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	st, err := c.authLocked(ctx)
	return st.token, err
}

// authLocked is Auth with c.authMu held.
func (c *Client) authLocked(ctx context.Context) (authState, error) {
	if !c.cfg.hasCreds {
		return authState{}, ErrNoCredentials
	}
	cf := c.cfg.contentFormat
	var seq string
	if c.cfg.symmetric {
		seq = strconv.FormatUint(uint64(mrand.Uint32N(1<<31)), 10)
	}
	body, err := authPayloadSeq(c.cfg.creds, cf, seq)
	if err != nil {
		return authState{}, fmt.Errorf("auth payload: %w", err)
	}
	resp, err := c.send(ctx, &request{
		code:          codes.POST,
		path:          []string{"auth"},
		confirmable:   true,
		contentFormat: cf,
		accept:        cf,
		hasAccept:     true,
		payload:       body,
	}, 0)
	if err != nil {
		return authState{}, fmt.Errorf("auth: %w", err)
	}
	if !isSuccess(resp.Code) {
		return authState{}, statusError(resp)
	}
	sym := c.cfg.symmetric
	var ar authResponse
	if resp.hasContentFormat {
		ar, err = parseAuthReply(resp.Payload, resp.ContentFormat == CBOR, sym)
	} else {
		// No Content-Format: expect what we asked for, accept the other.
		ar, err = parseAuthReply(resp.Payload, cf == CBOR, sym)
		if err != nil {
			if a, err2 := parseAuthReply(resp.Payload, cf != CBOR, sym); err2 == nil {
				ar, err = a, nil
			}
		}
	}
	if err != nil {
		return authState{}, err
	}
	st := authState{token: ar.Token}
	if sym {
		st.sym = newSymSession(c.cfg.creds.DeviceSecret, ar)
	}
	c.setAuth(st)
	return st, nil
}

// ensureAuth returns the stored token (and session), authenticating first
// if there is none.
func (c *Client) ensureAuth(ctx context.Context) (authState, error) {
	if c.cfg.dtlsPSK != nil {
		return authState{}, nil // docs/protocol.md §2: the DTLS-PSK session is the device
	}
	if st := c.auth(); st.usable(c.cfg.symmetric) {
		return st, nil
	}
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if st := c.auth(); st.usable(c.cfg.symmetric) { // another request authenticated meanwhile
		return st, nil
	}
	return c.authLocked(ctx)
}

// reauth replaces the token stale that the server refused, once for all the
// requests that were refused with it.
func (c *Client) reauth(ctx context.Context, stale string) (authState, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if st := c.auth(); st.usable(c.cfg.symmetric) && st.token != stale {
		return st, nil
	}
	return c.authLocked(ctx)
}
