package forward

import "time"

// Backoff returns the wait after the attempt-th failed attempt (1-based):
// base·2^(attempt-1), capped at max, with "equal jitter": half of it fixed,
// the other half scaled by rnd in [0,1). Spreading the waits keeps workers
// that failed together from retrying together.
func Backoff(attempt int, base, max time.Duration, rnd float64) time.Duration {
	if attempt < 1 {
		attempt = 1
	}
	d := base
	for i := 1; i < attempt && d < max; i++ {
		d *= 2
	}
	if d > max || d <= 0 {
		d = max
	}
	half := d / 2
	return half + time.Duration(rnd*float64(d-half))
}
