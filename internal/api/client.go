package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// maxResponseBytes bounds a response the Client reads.
const maxResponseBytes = 64 << 20

// Client calls the management API, for the admin CLI and tests. Safe for
// concurrent use once set up.
type Client struct {
	// BaseURL is the server's root, e.g. "http://127.0.0.1:8080"; Prefix is
	// added by Do.
	BaseURL string
	// Key is the bearer API key; empty sends no Authorization header.
	Key string
	// HTTP defaults to a client with a 30 s timeout.
	HTTP *http.Client
}

var defaultHTTPClient = &http.Client{Timeout: 30 * time.Second}

// Do sends a request to Prefix+path (path starts with "/", segments already
// escaped) with query and, when body is non-nil, body as JSON. It returns the
// raw body of a 2xx response; any other status yields an *Error.
func (c *Client) Do(ctx context.Context, method, path string, query url.Values, body any) ([]byte, error) {
	u := strings.TrimRight(c.BaseURL, "/") + Prefix + path
	if len(query) > 0 {
		u += "?" + query.Encode()
	}
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	if c.Key != "" {
		req.Header.Set("Authorization", "Bearer "+c.Key)
	}
	hc := c.HTTP
	if hc == nil {
		hc = defaultHTTPClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes))
	if err != nil {
		return nil, fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return b, nil
	}
	e := &Error{Status: resp.StatusCode}
	if json.Unmarshal(b, e) != nil || e.Code == "" {
		// Not one of ours (a proxy, a wrong URL): report the status.
		e.Code = "http_" + strconv.Itoa(resp.StatusCode)
		e.Message = http.StatusText(resp.StatusCode)
		if t := strings.TrimSpace(string(b)); t != "" && len(t) <= 200 {
			e.Message += ": " + t
		}
	}
	return nil, e
}
