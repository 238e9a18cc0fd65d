package ratelog

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"
)

func records(t *testing.T, b *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatal(err)
		}
		out = append(out, m)
	}
	b.Reset()
	return out
}

func TestLimiter(t *testing.T) {
	var buf bytes.Buffer
	now := time.Unix(1000, 0)
	l := New(slog.New(slog.NewJSONHandler(&buf, nil)), Config{Rate: 2, Burst: 3, Every: 10 * time.Second, Now: func() time.Time { return now }})
	ctx := context.Background()
	passed := 0
	for range 100 {
		if l.Log(ctx, slog.LevelInfo, "a", "refused", "n", 1) {
			passed++
		}
	}
	if passed != 3 || l.Suppressed("a") != 97 {
		t.Fatalf("passed %d, suppressed %d; want the burst of 3 and 97", passed, l.Suppressed("a"))
	}
	// Another kind has its own bucket.
	if !l.Log(ctx, slog.LevelInfo, "b", "other") {
		t.Fatal("kind b starved by kind a")
	}
	if got := len(records(t, &buf)); got != 4 {
		t.Fatalf("%d lines, want 4", got)
	}
	// Half a second later one token (rate 2/s) is back: the summary of
	// the 97 comes first, then the line.
	now = now.Add(500 * time.Millisecond)
	if !l.Log(ctx, slog.LevelInfo, "a", "refused") {
		t.Fatal("refill did not pass a line")
	}
	recs := records(t, &buf)
	if len(recs) != 2 || recs[0]["msg"] != "log lines suppressed" || recs[0]["suppressed"] != float64(97) || recs[0]["kind"] != "a" || recs[1]["msg"] != "refused" {
		t.Fatalf("records %v", recs)
	}
	// A flood that goes on gets a summary every interval, not a line per
	// suppressed event.
	for range 50 {
		l.Log(ctx, slog.LevelInfo, "a", "refused")
	}
	now = now.Add(11 * time.Second) // refills the burst too
	for range 3 {
		l.Log(ctx, slog.LevelInfo, "a", "refused")
	}
	recs = records(t, &buf)
	if len(recs) != 4 || recs[0]["suppressed"] != float64(50) {
		t.Fatalf("records %v", recs)
	}
	// Flush reports what a stopped flood left unreported.
	for range 10 {
		l.Log(ctx, slog.LevelInfo, "a", "refused")
	}
	l.Flush(ctx)
	recs = records(t, &buf)
	if len(recs) != 1 || recs[0]["suppressed"] != float64(10) {
		t.Fatalf("flush records %v", recs)
	}
	l.Flush(ctx)
	if recs := records(t, &buf); len(recs) != 0 {
		t.Fatalf("second flush wrote %v", recs)
	}
}

func TestLimiterDisabledLevel(t *testing.T) {
	var buf bytes.Buffer
	l := New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelWarn})), Config{})
	for range 100 {
		l.Log(context.Background(), slog.LevelInfo, "a", "refused")
	}
	if buf.Len() != 0 || l.Suppressed("a") != 0 {
		t.Fatalf("disabled level wrote %q / counted %d", buf.String(), l.Suppressed("a"))
	}
}
