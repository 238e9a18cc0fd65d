package main

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHealthCommand(t *testing.T) {
	e := newAdminEnv(t)
	// No API key needed: the health check must work in a container with
	// nothing but the binary.
	var ok, okErr strings.Builder
	if code := cmdHealth([]string{"--api", e.url}, &ok, &okErr); code != 0 || !strings.Contains(ok.String(), `"status":"ok"`) {
		t.Fatalf("health: exit %d, %q %q", code, ok.String(), okErr.String())
	}
	unhealthy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write([]byte(`{"code":"unavailable","message":"storage: ping failed"}`))
	}))
	defer unhealthy.Close()
	var out, errb strings.Builder
	if code := cmdHealth([]string{"--api", unhealthy.URL}, &out, &errb); code != 1 || !strings.Contains(errb.String(), "unavailable") {
		t.Fatalf("unhealthy: exit %d, %q", code, errb.String())
	}
}
