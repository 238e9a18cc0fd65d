package main

import (
	"strings"
	"testing"
)

func TestAdminCommand(t *testing.T) {
	e := newAdminEnv(t)
	e.run(cmdProduct, true, "create", "--name", "cmd", "wm01").want(t, 0)
	e.run(cmdDevice, true, "create", "wm01", "m1").want(t, 0)

	r := e.run(cmdCommand, true, "send", "--type", "setProperties", "--params", `{"light":1}`, "--ttl", "10m", "wm01", "m1").want(t, 0)
	id := field(t, r.stdout, "id")
	if field(t, r.stdout, "state") != "pending" || field(t, r.stdout, "topic") != "/sys/wm01/m1/thing/service/property/set" ||
		field(t, r.stdout, "params") != `{"light":1}` {
		t.Fatalf("send output:\n%s", r.stdout)
	}
	r = e.run(cmdCommand, true, "list", "--state", "pending", "wm01", "m1").want(t, 0)
	if !strings.Contains(r.stdout, id+"  ") && !strings.Contains(r.stdout, id+" ") {
		t.Fatalf("list output:\n%s", r.stdout)
	}
	e.run(cmdCommand, true, "get", "wm01", "m1", id).want(t, 0)
	r = e.run(cmdCommand, true, "cancel", "wm01", "m1", id).want(t, 0)
	if field(t, r.stdout, "state") != "cancelled" {
		t.Fatalf("cancel output:\n%s", r.stdout)
	}
	r = e.run(cmdCommand, true, "cancel", "wm01", "m1", id).want(t, adminFailed)
	if !strings.Contains(r.stderr, "not pending") {
		t.Fatalf("second cancel stderr: %s", r.stderr)
	}
	e.run(cmdCommand, true, "send", "--type", "bogus", "wm01", "m1").want(t, adminFailed)
	e.run(cmdCommand, true, "send", "wm01", "m1").want(t, adminUsage)
}
