package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/forward"
)

// TestE2EForwardWebhook: a device publishes over CoAP and a webhook rule
// created through the API receives the envelope, signed; a failing
// receiver's entries become dead letters that the API replays.
func TestE2EForwardWebhook(t *testing.T) {
	g := startTestGateway(t, func(c *config.Config) {
		c.Forward.BackoffBase, c.Forward.BackoffMax = 5*time.Millisecond, 20*time.Millisecond
	})
	var (
		mu   sync.Mutex
		got  []forward.Envelope
		sigs []bool
		fail atomic.Bool
	)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if fail.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		var e forward.Envelope
		_ = json.Unmarshal(body, &e)
		mu.Lock()
		got = append(got, e)
		sigs = append(sigs, r.Header.Get(forward.HeaderSignature) == forward.Sign([]byte("hooksecret"), body))
		mu.Unlock()
	}))
	defer hook.Close()

	// A condition that does not compile is refused with the reason.
	var apiErr struct{ Code, Message string }
	bad := map[string]any{"name": "bad", "topicFilter": "#", "condition": "params.temp >",
		"actions": []any{map[string]any{"type": "webhook", "url": hook.URL}}}
	if code := g.api("POST", "/api/v1/rules", bad, &apiErr); code != 400 || !strings.Contains(apiErr.Message, "condition") {
		t.Fatalf("bad condition: %d %+v", code, apiErr)
	}

	var rule forward.Rule
	req := map[string]any{"name": "hot", "topicFilter": "/sys/+/+/thing/#", "condition": "params.temp > 30", "maxAttempts": 2,
		"actions": []any{map[string]any{"type": "webhook", "url": hook.URL, "secret": "hooksecret"}}}
	if code := g.api("POST", "/api/v1/rules", req, &rule); code != 201 || rule.ID == "" {
		t.Fatalf("create rule: %d %+v", code, rule)
	}
	if rule.Actions[0].Secret != forward.Redacted {
		t.Fatalf("secret shown in the response: %q", rule.Actions[0].Secret)
	}

	d := g.newDevice("", "thermo_1")
	c := g.dial(d)
	ctx := context.Background()
	if _, err := c.Auth(ctx); err != nil {
		t.Fatal(err)
	}
	topic := fmt.Sprintf("/sys/%s/%s/thing/event/property/post", d.pk, d.dk)
	for _, temp := range []int{20, 35} {
		if _, err := c.Publish(ctx, topic, fmt.Appendf(nil, `{"id":"1","params":{"temp":%d}}`, temp)); err != nil {
			t.Fatal(err)
		}
	}
	wait := func(what string, cond func() bool) {
		t.Helper()
		for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s", what)
			}
		}
	}
	wait("webhook delivery", func() bool { mu.Lock(); defer mu.Unlock(); return len(got) == 1 })
	mu.Lock()
	e := got[0]
	if e.Topic != topic || e.ProductKey != d.pk || e.DeviceKey != d.dk || e.Transport != "coap" || !sigs[0] ||
		!strings.Contains(string(e.Payload), `"temp":35`) {
		t.Fatalf("envelope %+v (signature ok %t)", e, sigs[0])
	}
	mu.Unlock()

	var st struct {
		Actions []forward.ActionStatus
	}
	wait("status", func() bool {
		g.api("GET", "/api/v1/rules/"+rule.ID+"/status", nil, &st)
		return len(st.Actions) == 1 && st.Actions[0].Delivered == 1 && st.Actions[0].Lag == 0
	})

	// Receiver failing: the entry becomes a dead letter; replay delivers it.
	fail.Store(true)
	if _, err := c.Publish(ctx, topic, []byte(`{"id":"2","params":{"temp":40}}`)); err != nil {
		t.Fatal(err)
	}
	var dls struct{ Items []forward.DeadLetter }
	wait("dead letter", func() bool {
		g.api("GET", "/api/v1/rules/"+rule.ID+"/deadletters", nil, &dls)
		return len(dls.Items) == 1
	})
	fail.Store(false)
	var res forward.ReplayResult
	if code := g.api("POST", "/api/v1/rules/"+rule.ID+"/deadletters/replay", map[string]any{"ids": []int64{dls.Items[0].ID}}, &res); code != 200 || res.Delivered != 1 {
		t.Fatalf("replay: %d %+v", code, res)
	}
	mu.Lock()
	if len(got) != 2 || !strings.Contains(string(got[1].Payload), `"temp":40`) {
		t.Fatalf("after replay the receiver has %d envelopes", len(got))
	}
	mu.Unlock()

	// Disable, then delete.
	var upd forward.Rule
	if code := g.api("PATCH", "/api/v1/rules/"+rule.ID, map[string]any{"enabled": false}, &upd); code != 200 || upd.Enabled {
		t.Fatalf("disable: %d %+v", code, upd)
	}
	if code := g.api("DELETE", "/api/v1/rules/"+rule.ID, nil, nil); code != 204 {
		t.Fatalf("delete: %d", code)
	}
	if code := g.api("GET", "/api/v1/rules/"+rule.ID, nil, &apiErr); code != 404 {
		t.Fatalf("get deleted rule: %d", code)
	}
}
