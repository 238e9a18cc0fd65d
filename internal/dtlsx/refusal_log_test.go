package dtlsx

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/dtlspsk"
	"github.com/pion/dtls/v3"
)

// refusalLog is a JSON log sink safe for the handshake goroutines.
type refusalLog struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *refusalLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *refusalLog) count(msg string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range strings.Split(l.b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			n++
		}
	}
	return n
}

// Refused PSK identities are counted exactly but logged at a bounded rate
// (a burst of 20, then 5 lines a second), not one line per attempt.
func TestRefusedIdentitiesLoggedAtBoundedRate(t *testing.T) {
	var logs refusalLog
	ts := start(t, func(c *Config) { c.Logger = slog.New(slog.NewJSONHandler(&logs, nil)) })
	const n = 60
	began := time.Now()
	for i := range n {
		if _, err := dialPSK(t, ts.addr, "pk,nobody,2,60", dtlspsk.Key(secret), dtls.TLS_PSK_WITH_AES_128_CCM_8, false); err == nil {
			t.Fatalf("handshake %d succeeded", i)
		}
	}
	waitFor(t, func() bool { return ts.failures(dtlspsk.ReasonUnknownDevice) == n }, "every refusal counted")
	elapsed := time.Since(began)
	// The limiter's bound over the time the attempts took.
	bound := 20 + int(math.Ceil(5*elapsed.Seconds()))
	if got := logs.count("handshake refused"); got > bound {
		t.Fatalf("%d refusal lines for %d refusals in %v, want at most %d", got, n, elapsed, bound)
	}
}
