package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

func TestAdminPoints(t *testing.T) {
	e := newAdminEnv(t)
	e.run(cmdProduct, true, "create", "--name", "p", "pk").want(t, 0)
	e.run(cmdDevice, true, "create", "pk", "d1").want(t, 0)
	base := time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	var samples []point.Sample
	for i := range 4 {
		samples = append(samples, point.Sample{ProductKey: "pk", DeviceKey: "d1", Kind: point.KindPoint, Name: "temp",
			Time: base.Add(time.Duration(i) * 30 * time.Minute), Value: float64(20 + i), MessageID: int64(i + 1)})
	}
	samples = append(samples, point.Sample{ProductKey: "pk", DeviceKey: "d1", Kind: point.KindPoint, Name: "state",
		Time: base, Value: "on", MessageID: 5})
	if err := e.store.Project(context.Background(), "test", 5, samples); err != nil {
		t.Fatal(err)
	}

	r := e.run(cmdPoints, true, "latest", "pk", "d1").want(t, 0)
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[1], "state") || !strings.Contains(lines[1], " on ") ||
		!strings.HasPrefix(lines[2], "temp") || !strings.Contains(lines[2], " 23 ") {
		t.Fatalf("latest:\n%s", r.stdout)
	}

	r = e.run(cmdPoints, true, "history", "--limit", "3", "pk", "d1", "temp").want(t, 0)
	if lines = strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 4 || !strings.Contains(lines[1], "2025-01-01T00:00:00Z") {
		t.Fatalf("history:\n%s", r.stdout)
	}
	cursor := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(r.stderr), "more results: repeat with --cursor"))
	if cursor == "" || cursor == strings.TrimSpace(r.stderr) {
		t.Fatalf("no paging hint: %q", r.stderr)
	}
	r = e.run(cmdPoints, true, "history", "--limit", "3", "--cursor", cursor, "pk", "d1", "temp").want(t, 0)
	if lines = strings.Split(strings.TrimSpace(r.stdout), "\n"); len(lines) != 2 || !strings.Contains(lines[1], "01:30:00Z") || r.stderr != "" {
		t.Fatalf("second page:\n%s%s", r.stdout, r.stderr)
	}

	// Hourly buckets: 20,21 and 22,23.
	r = e.run(cmdPoints, true, "history", "--interval", "1h", "--agg", "avg,count,max",
		"--from", "2025-01-01T00:00:00Z", "--to", "2025-01-01T02:00:00Z", "pk", "d1", "temp").want(t, 0)
	lines = strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != 3 || strings.Join(strings.Fields(lines[1]), " ") != "2025-01-01T00:00:00Z 2 20.5 - 21 -" ||
		strings.Join(strings.Fields(lines[2]), " ") != "2025-01-01T01:00:00Z 2 22.5 - 23 -" {
		t.Fatalf("aggregation:\n%s", r.stdout)
	}
	e.run(cmdPoints, true, "history", "--interval", "1h", "pk", "d1", "temp").want(t, 1) // from/to required: the API's 400

	out := filepath.Join(t.TempDir(), "temp.csv")
	e.run(cmdPoints, true, "export", "--point", "temp", "--output", out, "pk", "d1").want(t, 0)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if csv := strings.Split(strings.TrimSpace(string(b)), "\n"); len(csv) != 5 || csv[0] != "time,point,value,messageId" || !strings.HasPrefix(csv[1], "2025-01-01T00:00:00Z,temp,20,") {
		t.Fatalf("export:\n%s", b)
	}
	r = e.run(cmdPoints, true, "export", "--format", "ndjson", "pk", "d1").want(t, 0)
	if n := strings.Count(r.stdout, "\n"); n != 5 || !strings.Contains(r.stdout, `"point":"state"`) {
		t.Fatalf("ndjson export:\n%s", r.stdout)
	}

	// Unknown device: not_found and exit 1, for every subcommand.
	for _, args := range [][]string{{"latest", "pk", "nope"}, {"history", "pk", "nope", "temp"}, {"export", "pk", "nope"}} {
		if r = e.run(cmdPoints, true, args...).want(t, 1); !strings.HasPrefix(r.stderr, "error: not_found") {
			t.Errorf("%q: %q", args, r.stderr)
		}
	}
}
