package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/api"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/message"
)

func TestAdminRule(t *testing.T) {
	e := newAdminEnv(t)
	m, err := forward.New(forward.Options{Store: e.store, Log: e.store, Notifier: e.store,
		BackoffBase: time.Millisecond, BackoffMax: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	// The admin env's server has no rules: serve one that has.
	srv := httptest.NewServer(api.New(api.Options{Registry: e.store, Messages: e.store, Keys: e.store, Rules: m}))
	t.Cleanup(srv.Close)
	e.url = srv.URL

	var hits atomic.Int64
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.WriteHeader(http.StatusBadGateway) // always failing: dead letters
	}))
	defer hook.Close()
	file := filepath.Join(t.TempDir(), "rule.json")
	os.WriteFile(file, []byte(`{"name":"to-hook","topicFilter":"#","maxAttempts":2,
		"actions":[{"type":"webhook","url":"`+hook.URL+`","secret":"shh-secret"}]}`), 0o600)

	r := e.run(cmdRule, true, "create", "--file", file).want(t, 0)
	id := field(t, r.stdout, "id")
	if field(t, r.stdout, "enabled") != "true" || strings.Contains(r.stdout, "shh-secret") {
		t.Fatalf("create:\n%s", r.stdout)
	}
	if r := e.run(cmdRule, true, "list").want(t, 0); !strings.Contains(r.stdout, id) || !strings.Contains(r.stdout, "webhook") {
		t.Fatalf("list:\n%s", r.stdout)
	}
	if err := e.store.Append(context.Background(), []*message.Message{{ProductKey: "p", DeviceKey: "d", Topic: "/x",
		Payload: []byte(`{}`), ContentFormat: 50, ReceivedAt: time.Now(), Transport: "coap"}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		r = e.run(cmdRule, true, "deadletters", id).want(t, 0)
		if strings.Count(strings.TrimSpace(r.stdout), "\n") == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter:\n%s", r.stdout)
		}
	}
	if !strings.Contains(r.stdout, "status 502") {
		t.Fatalf("deadletters:\n%s", r.stdout)
	}
	r = e.run(cmdRule, true, "replay", id).want(t, 0)
	if field(t, r.stdout, "delivered") != "0" || field(t, r.stdout, "failed") != "1" {
		t.Fatalf("replay:\n%s", r.stdout)
	}
	if hits.Load() != 3 { // 2 attempts + 1 replay
		t.Fatalf("webhook hit %d times, want 3", hits.Load())
	}
	r = e.run(cmdRule, true, "status", id).want(t, 0)
	if !strings.Contains(r.stdout, "webhook") || !strings.Contains(r.stdout, "status 502") {
		t.Fatalf("status:\n%s", r.stdout)
	}
	if r := e.run(cmdRule, true, "disable", id).want(t, 0); field(t, r.stdout, "enabled") != "false" {
		t.Fatalf("disable:\n%s", r.stdout)
	}
	if r := e.run(cmdRule, true, "enable", id).want(t, 0); field(t, r.stdout, "enabled") != "true" {
		t.Fatalf("enable:\n%s", r.stdout)
	}
	e.run(cmdRule, true, "delete", id).want(t, 0)
	if r := e.run(cmdRule, true, "get", id).want(t, 1); !strings.HasPrefix(r.stderr, "error: not_found: ") {
		t.Fatalf("get deleted: %q", r.stderr)
	}
	e.run(cmdRule, true, "create").want(t, 2) // --file missing
}
