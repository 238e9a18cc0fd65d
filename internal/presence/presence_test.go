package presence

import (
	"testing"
	"time"
)

func TestOnlineVia(t *testing.T) {
	tr := NewTracker()
	now := time.Unix(1000, 0)
	tr.Seen("p", "a", "1.2.3.4:1", "coap", time.Minute, now)
	tr.Seen("p", "b", "1.2.3.4:2", "coap-sym", time.Minute, now)
	tr.Seen("p", "c", "1.2.3.4:3", "coap-sym", time.Second, now.Add(-time.Hour)) // offline
	tr.Seen("p", "a", "1.2.3.4:1", "coap-sym", time.Minute, now)                 // moved: counts once, for its latest transport
	if got := tr.OnlineVia("coap", now); got != 0 {
		t.Errorf("coap: %d, want 0", got)
	}
	if got := tr.OnlineVia("coap-sym", now); got != 2 {
		t.Errorf("coap-sym: %d, want 2", got)
	}
	if got := tr.Online(now); got != 2 {
		t.Errorf("all: %d, want 2", got)
	}
}
