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
	// HeaderSignatureV2 is "v2=" + hex HMAC-SHA256(secret, timestamp + "." +
	// body), timestamp being the HeaderTimestamp value: it covers the time,
	// so a receiver that checks the time against a tolerance window rejects
	// replayed requests.
	HeaderSignatureV2 = "X-Coapgate-Signature-V2"
	// HeaderSignature is "sha256=" + hex HMAC-SHA256(secret, body): the
	// body-only signature of earlier versions, still sent; it does not
	// protect against replays. Deprecated: verify HeaderSignatureV2.
	HeaderSignature = "X-Coapgate-Signature"
	HeaderDelivery  = "X-Coapgate-Delivery"  // "{rule}-{log id}": the idempotency key
	HeaderTimestamp = "X-Coapgate-Timestamp" // unix seconds of the attempt
)

// DefaultSignatureTolerance is the tolerance window VerifySignature
// receivers are advised to use: requests whose timestamp is further than
// this from the receiver's clock are refused.
const DefaultSignatureTolerance = 5 * time.Minute

// Signature verification errors.
var (
	ErrSignatureMissing  = errors.New("forward: webhook signature or timestamp missing")
	ErrSignatureMismatch = errors.New("forward: webhook signature does not match")
	ErrSignatureExpired  = errors.New("forward: webhook timestamp outside the tolerance window")
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

// SignV2 returns the X-Coapgate-Signature-V2 value of body sent with the
// X-Coapgate-Timestamp value timestamp.
func SignV2(secret []byte, timestamp string, body []byte) string {
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(timestamp))
	mac.Write([]byte{'.'})
	mac.Write(body)
	return "v2=" + hex.EncodeToString(mac.Sum(nil))
}

// VerifySignature is what a Go receiver runs on a webhook request: the
// X-Coapgate-Timestamp value timestamp must be within tolerance of now and
// the X-Coapgate-Signature-V2 value sig must be SignV2(secret, timestamp,
// body), compared in constant time. Together with the X-Coapgate-Delivery
// idempotency key this lets a receiver refuse replayed requests.
func VerifySignature(secret []byte, timestamp, sig string, body []byte, now time.Time, tolerance time.Duration) error {
	if timestamp == "" || sig == "" {
		return ErrSignatureMissing
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return fmt.Errorf("%w: timestamp %q", ErrSignatureMismatch, timestamp)
	}
	if !hmac.Equal([]byte(sig), []byte(SignV2(secret, timestamp, body))) {
		return ErrSignatureMismatch
	}
	if d := now.Sub(time.Unix(ts, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: %s off", ErrSignatureExpired, d.Round(time.Second))
	}
	return nil
}

// webhook POSTs envelopes to a URL; 2xx is success.
type webhook struct {
	client *http.Client
	a      Action
	now    func() time.Time
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
		return &webhook{client: client, a: a, now: time.Now}, nil
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
	ts := strconv.FormatInt(w.now().Unix(), 10)
	req.Header.Set(HeaderTimestamp, ts)
	if w.a.Secret != "" {
		req.Header.Set(HeaderSignatureV2, SignV2([]byte(w.a.Secret), ts, d.Body))
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
