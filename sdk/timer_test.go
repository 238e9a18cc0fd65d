package sdk

import (
	"testing"
	"time"
)

func TestRetransmitTimeout(t *testing.T) {
	p := DefaultTransmissionParams()
	tests := []struct {
		name    string
		attempt int
		rnd     float64
		want    time.Duration
	}{
		{"initial, low end", 0, 0, 2 * time.Second},
		{"initial, high end", 0, 1, 3 * time.Second},
		{"initial, middle", 0, 0.5, 2500 * time.Millisecond},
		{"first retransmission doubles", 1, 0, 4 * time.Second},
		{"second retransmission", 2, 0.5, 10 * time.Second},
		{"last wait (MAX_RETRANSMIT 4)", 4, 1, 48 * time.Second},
		{"rnd clamped below", 0, -3, 2 * time.Second},
		{"rnd clamped above", 0, 7, 3 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retransmitTimeout(p, tt.attempt, tt.rnd); got != tt.want {
				t.Errorf("retransmitTimeout(%d, %v) = %v, want %v", tt.attempt, tt.rnd, got, tt.want)
			}
		})
	}
}

// TestScheduleWithinSpan checks RFC 7252 §4.8.2: the last retransmission is
// sent at most MAX_TRANSMIT_SPAN after the first transmission, and the sender
// gives up at most MAX_TRANSMIT_WAIT after it.
func TestScheduleWithinSpan(t *testing.T) {
	p := DefaultTransmissionParams()
	if got, want := maxTransmitSpan(p), 45*time.Second; got != want {
		t.Errorf("MAX_TRANSMIT_SPAN = %v, want %v", got, want)
	}
	if got, want := maxTransmitWait(p), 93*time.Second; got != want {
		t.Errorf("MAX_TRANSMIT_WAIT = %v, want %v", got, want)
	}
	for _, rnd := range []float64{0, 0.25, 0.999999} {
		var sent, giveUp time.Duration
		for attempt := 0; attempt <= p.MaxRetransmit; attempt++ {
			if attempt == p.MaxRetransmit {
				sent = giveUp
			}
			giveUp += retransmitTimeout(p, attempt, rnd)
		}
		if sent > maxTransmitSpan(p) {
			t.Errorf("rnd %v: last retransmission at %v > MAX_TRANSMIT_SPAN", rnd, sent)
		}
		if giveUp > maxTransmitWait(p) {
			t.Errorf("rnd %v: give up at %v > MAX_TRANSMIT_WAIT", rnd, giveUp)
		}
	}
	if got := separateTimeout(p); got != maxTransmitWait(p) {
		t.Errorf("default separate timeout = %v, want MAX_TRANSMIT_WAIT", got)
	}
	p.SeparateTimeout = time.Second
	if got := separateTimeout(p); got != time.Second {
		t.Errorf("separate timeout = %v, want 1s", got)
	}
}
