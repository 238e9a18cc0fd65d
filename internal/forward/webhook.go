package forward

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Webhook headers.
const (
	HeaderSignature = "X-Coapgate-Signature" // "sha256=" + hex HMAC-SHA256(secret, body)
	HeaderDelivery  = "X-Coapgate-Delivery"  // "{rule}-{log id}": the idempotency key
	HeaderTimestamp = "X-Coapgate-Timestamp" // unix seconds of the attempt
)

// maxErrorBody bounds the part of a failed webhook's response kept in the
// error text.
const maxErrorBody = 256

// Sign returns the X-Coapgate-Signature value of body under secret.
func Sign(secret, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write(body)
	return "sha256=" + hex.EncodeToString(mac.Sum(nil))
}

// webhook POSTs envelopes to a URL; 2xx is success.
type webhook struct {
	client *http.Client
	a      Action
}

// WebhookFactory returns the TargetFactory of webhook actions, sending
// through rt (nil: a Transport of its own shared by all webhooks).
func WebhookFactory(rt http.RoundTripper) TargetFactory {
	if rt == nil {
		rt = &http.Transport{
			Proxy:               http.ProxyFromEnvironment,
			MaxIdleConnsPerHost: 16,
			IdleConnTimeout:     90 * time.Second,
			TLSHandshakeTimeout: 10 * time.Second,
			ForceAttemptHTTP2:   true,
		}
	}
	client := &http.Client{
		Transport: rt,
		// A redirect would re-send the body elsewhere: treat 3xx as failure.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	return func(a Action) (Target, error) {
		if a.Type != ActionWebhook {
			return nil, invalid("not a webhook action")
		}
		return &webhook{client: client, a: a}, nil
	}
}

func (w *webhook) Deliver(ctx context.Context, d *Delivery) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.a.URL, bytes.NewReader(d.Body))
	if err != nil {
		return fmt.Errorf("webhook: build request: %w", err)
	}
	for k, v := range w.a.Headers {
		req.Header.Set(k, v)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "coapgate-forward")
	req.Header.Set(HeaderDelivery, d.RuleID+"-"+strconv.FormatInt(d.Envelope.ID, 10))
	req.Header.Set(HeaderTimestamp, strconv.FormatInt(time.Now().Unix(), 10))
	if w.a.Secret != "" {
		req.Header.Set(HeaderSignature, Sign([]byte(w.a.Secret), d.Body))
	}
	resp, err := w.client.Do(req)
	if err != nil {
		// The URL (which may carry a token in its query) stays out of
		// the error: it is stored and shown.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return fmt.Errorf("webhook: post: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 == 2 {
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10)) // keep the connection reusable
		return nil
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	return fmt.Errorf("webhook: status %d: %q", resp.StatusCode, b)
}

func (w *webhook) Close() error { return nil }
