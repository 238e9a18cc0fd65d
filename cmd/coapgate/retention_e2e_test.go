package main

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/config"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/retention"
)

// TestE2ERetention runs the server's retention worker over expired log
// entries of two products, one of which keeps its messages forever
// (override set through the API), while a forwarding rule whose target
// fails has not handled them: the other product's entries go, the rule's
// status and the metrics report the loss.
func TestE2ERetention(t *testing.T) {
	g := startTestGateway(t, func(c *config.Config) {
		c.Forward.BackoffBase, c.Forward.BackoffMax = time.Hour, time.Hour // the failing action stays put
		c.Retention.Messages = 30 * 24 * time.Hour
	})
	if g.s.retention == nil {
		t.Skipf("store %s does not support retention", g.s.cfg.Store.Driver)
	}
	ctx := context.Background()
	// The worker's first pass comes a minute after the start: the pass
	// below is the one that meets the expired entries.
	for _, p := range []map[string]any{
		{"productKey": "pa", "name": "a"},
		{"productKey": "pb", "name": "b", "retention": map[string]any{"messagesSeconds": 0}},
	} {
		if code := g.api("POST", "/api/v1/products", p, nil); code != 201 {
			t.Fatalf("create product: %d", code)
		}
	}
	down := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer down.Close()
	var rule forward.Rule
	if code := g.api("POST", "/api/v1/rules", map[string]any{"name": "down", "topicFilter": "#", "maxAttempts": 20,
		"actions": []any{map[string]any{"type": "webhook", "url": down.URL}}}, &rule); code != 201 {
		t.Fatalf("create rule: %d", code)
	}
	old := time.Now().Add(-40 * 24 * time.Hour)
	var last int64
	for _, seed := range []struct {
		pk string
		n  int
	}{{"pa", 10}, {"pb", 5}} {
		for i := range seed.n {
			m := &message.Message{ProductKey: seed.pk, DeviceKey: "d1", Topic: "/sys/" + seed.pk + "/d1/thing/event/property/post",
				Payload: fmt.Appendf(nil, `{"id":"%d","params":{"t":%d}}`, i, i), ContentFormat: 50,
				ReceivedAt: old.Add(time.Duration(i) * time.Second), Peer: "192.0.2.1:5683", Transport: message.TransportCoAP}
			if err := g.s.store.Append(ctx, []*message.Message{m}); err != nil {
				t.Fatal(err)
			}
			last = m.ID
		}
	}
	// Retention waits for the point projector; let it catch up first.
	deadline := time.Now().Add(10 * time.Second)
	for {
		cur, err := g.s.store.Cursor(ctx, "points")
		if err != nil {
			t.Fatal(err)
		}
		if cur >= last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("projector cursor %d, want %d", cur, last)
		}
		time.Sleep(10 * time.Millisecond) // polls a condition; the deadline bounds it
	}
	st, err := g.s.retention.RunOnce(ctx)
	if err != nil {
		t.Fatalf("retention run: %v", err)
	}
	if st.Deleted[retention.Messages] != 10 || st.Lost != 10 || st.HeldBack != 0 {
		t.Fatalf("retention: deleted %d, lost %d, held back %d; want 10, 10, 0", st.Deleted[retention.Messages], st.Lost, st.HeldBack)
	}
	for pk, want := range map[string]int{"pa": 0, "pb": 5} {
		var page struct{ Items []apiMessage }
		if code := g.api("GET", "/api/v1/messages?productKey="+pk+"&limit=100", nil, &page); code != 200 || len(page.Items) != want {
			t.Errorf("product %s: %d messages (HTTP %d), want %d", pk, len(page.Items), code, want)
		}
	}
	var status struct{ Actions []forward.ActionStatus }
	if code := g.api("GET", "/api/v1/rules/"+rule.ID+"/status", nil, &status); code != 200 || len(status.Actions) != 1 {
		t.Fatalf("rule status: %d %+v", code, status)
	}
	if a := status.Actions[0]; a.RetentionLost != 10 || a.RetentionLostTo == 0 {
		t.Errorf("rule status %+v: want retentionLost 10", a)
	}
	metrics := g.metricsText()
	for _, want := range []string{
		`coapgate_retention_deleted_total{kind="messages"} 10`,
		fmt.Sprintf(`coapgate_retention_forward_lost_total{action="0",rule="%s"} 10`, rule.ID),
		`coapgate_retention_last_run_timestamp_seconds `,
	} {
		if !strings.Contains(metrics, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}
