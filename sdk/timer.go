package sdk

import "time"

// RFC 7252 §4.2 / §4.8.2 timer math, kept pure so it is tested without sleeps.

// initialTimeout returns the initial retransmission timeout of a CON message:
// a value in [ACK_TIMEOUT, ACK_TIMEOUT*ACK_RANDOM_FACTOR] chosen by rnd in
// [0, 1) (RFC 7252 §4.2).
func initialTimeout(p TransmissionParams, rnd float64) time.Duration {
	rnd = min(max(rnd, 0), 1)
	spread := float64(p.AckTimeout) * (p.AckRandomFactor - 1) * rnd
	return p.AckTimeout + time.Duration(spread)
}

// retransmitTimeout returns how long to wait after transmission number
// attempt (0 = the first transmission) before the next retransmission or,
// after the last one, before giving up: the initial timeout doubled per
// retransmission (RFC 7252 §4.2).
func retransmitTimeout(p TransmissionParams, attempt int, rnd float64) time.Duration {
	return initialTimeout(p, rnd) << attempt
}

// maxTransmitSpan is MAX_TRANSMIT_SPAN (RFC 7252 §4.8.2):
// ACK_TIMEOUT * (2**MAX_RETRANSMIT - 1) * ACK_RANDOM_FACTOR.
func maxTransmitSpan(p TransmissionParams) time.Duration {
	return time.Duration(float64(p.AckTimeout) * float64(int64(1)<<p.MaxRetransmit-1) * p.AckRandomFactor)
}

// maxTransmitWait is MAX_TRANSMIT_WAIT (RFC 7252 §4.8.2):
// ACK_TIMEOUT * (2**(MAX_RETRANSMIT + 1) - 1) * ACK_RANDOM_FACTOR, the longest
// a sender waits for an ACK or reset of a CON message.
func maxTransmitWait(p TransmissionParams) time.Duration {
	return time.Duration(float64(p.AckTimeout) * float64(int64(1)<<(p.MaxRetransmit+1)-1) * p.AckRandomFactor)
}

// separateTimeout is how long to wait for a separate response after an empty ACK.
func separateTimeout(p TransmissionParams) time.Duration {
	if p.SeparateTimeout > 0 {
		return p.SeparateTimeout
	}
	return maxTransmitWait(p)
}
