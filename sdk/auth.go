package sdk

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"

	"github.com/coapgate/coapgate/internal/auth/devsign"
)

// authRequest is the body of POST /auth (PROTOCOL.md §3.1). The json tags
// serve the CBOR encoding too.
type authRequest struct {
	ProductKey string `json:"productKey"`
	DeviceName string `json:"deviceName"`
	ClientID   string `json:"clientId"`
	Sign       string `json:"sign"`
	SignMethod string `json:"signmethod"`
}

type authResponse struct {
	Token string `json:"token"`
}

// authPayload builds the signed POST /auth body of cr in format cf (pure).
func authPayload(cr Credentials, cf message.MediaType) ([]byte, error) {
	method, err := devsign.ParseMethod(cr.SignMethod)
	if err != nil {
		return nil, err
	}
	req := authRequest{
		ProductKey: cr.ProductKey,
		DeviceName: cr.DeviceName,
		ClientID:   cr.clientID(),
		SignMethod: string(method),
	}
	// PROTOCOL.md §3.1: every submitted field except sign and signmethod is signed.
	req.Sign, err = devsign.Sign(method, cr.DeviceSecret, map[string]string{
		"productKey": req.ProductKey,
		"deviceName": req.DeviceName,
		"clientId":   req.ClientID,
	})
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
	var ar authResponse
	var err error
	if isCBOR {
		err = cbor.Unmarshal(payload, &ar)
	} else {
		err = json.Unmarshal(payload, &ar)
	}
	if err != nil {
		return "", fmt.Errorf("%w: auth response: %w", ErrMalformed, err)
	}
	if ar.Token == "" {
		return "", ErrNoToken
	}
	return ar.Token, nil
}

// Auth sends POST /auth with the credentials given to Dial, stores the
// returned token in the Client and returns it. A non-2.xx answer is a
// *StatusError: 4.00 bad payload, 4.01 bad signature or unknown device,
// 4.03 disabled device.
func (c *Client) Auth(ctx context.Context) (string, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	return c.authLocked(ctx)
}

// authLocked is Auth with c.authMu held.
func (c *Client) authLocked(ctx context.Context) (string, error) {
	if !c.cfg.hasCreds {
		return "", ErrNoCredentials
	}
	cf := c.cfg.contentFormat
	body, err := authPayload(c.cfg.creds, cf)
	if err != nil {
		return "", fmt.Errorf("auth payload: %w", err)
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
		return "", fmt.Errorf("auth: %w", err)
	}
	if !isSuccess(resp.Code) {
		return "", statusError(resp)
	}
	var token string
	if resp.hasContentFormat {
		token, err = parseAuthToken(resp.Payload, resp.ContentFormat == CBOR)
	} else {
		// No Content-Format: expect what we asked for, accept the other.
		token, err = parseAuthToken(resp.Payload, cf == CBOR)
		if err != nil {
			if t, err2 := parseAuthToken(resp.Payload, cf != CBOR); err2 == nil {
				token, err = t, nil
			}
		}
	}
	if err != nil {
		return "", err
	}
	c.setToken(token)
	return token, nil
}

// ensureToken returns the stored token, authenticating first if there is none.
func (c *Client) ensureToken(ctx context.Context) (string, error) {
	if t := c.Token(); t != "" {
		return t, nil
	}
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if t := c.Token(); t != "" { // another request authenticated meanwhile
		return t, nil
	}
	return c.authLocked(ctx)
}

// reauth replaces the token stale that the server refused, once for all the
// requests that were refused with it.
func (c *Client) reauth(ctx context.Context, stale string) (string, error) {
	c.authMu.Lock()
	defer c.authMu.Unlock()
	if t := c.Token(); t != "" && t != stale {
		return t, nil
	}
	return c.authLocked(ctx)
}
