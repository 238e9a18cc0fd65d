package point

import (
	"math"
	"testing"
)

// TestSplitRollups: the pieces cover [lo, hi) exactly, in order, each
// rollup piece aligned to its width (an unbounded start, math.MinInt64,
// stays unbounded), whatever the bounds.
func TestSplitRollups(t *testing.T) {
	levels := []int64{RollupHour, RollupMinute}
	for _, c := range [][2]int64{
		{0, 3 * RollupHour},
		{-RollupHour - 7, 2*RollupHour + RollupMinute + 3},
		{5, 59 * RollupMinute},
		{math.MinInt64, 90 * RollupMinute},
		{RollupMinute + 1, RollupMinute + 2},
		{10, 10},
	} {
		lo, hi := c[0], c[1]
		at := lo
		next := func(a, b int64) {
			if a != at || a >= b {
				t.Fatalf("[%d, %d): piece [%d, %d) after %d", lo, hi, a, b, at)
			}
			at = b
		}
		err := SplitRollups(lo, hi, levels,
			func(res, a, b int64) error {
				if (a != math.MinInt64 && FloorTo(a, res) != a) || FloorTo(b, res) != b {
					t.Fatalf("[%d, %d): rollup piece [%d, %d) not aligned to %d", lo, hi, a, b, res)
				}
				next(a, b)
				return nil
			},
			func(a, b int64) error { next(a, b); return nil })
		if err != nil {
			t.Fatal(err)
		}
		if lo < hi && at != hi {
			t.Fatalf("[%d, %d): covered up to %d", lo, hi, at)
		}
	}
}
