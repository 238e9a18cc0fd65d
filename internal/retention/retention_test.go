package retention

import (
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

func TestPeriod(t *testing.T) {
	d := func(x time.Duration) *time.Duration { return &x }
	const day = 24 * time.Hour
	g := Periods{Messages: 30 * day, Points: 7 * day, Events: 90 * day, Commands: 30 * day, DeadLetters: 14 * day,
		Rollups1m: 60 * day, Rollups1h: 0}
	for _, tc := range []struct {
		name string
		kind Kind
		o    registry.Retention
		per  Periods
		want time.Duration
	}{
		{"global messages", Messages, registry.Retention{}, g, 30 * day},
		{"override messages", Messages, registry.Retention{Messages: d(2 * day)}, g, 2 * day},
		{"override forever", Messages, registry.Retention{Messages: d(0)}, g, 0},
		{"points", Points, registry.Retention{Points: d(time.Hour)}, g, time.Hour},
		{"events", Events, registry.Retention{}, g, 90 * day},
		{"commands", Commands, registry.Retention{Commands: d(day)}, g, day},
		{"dead letters have no override", DeadLetters, registry.Retention{Messages: d(day)}, g, 14 * day},
		{"1m rollups", Rollups1m, registry.Retention{}, g, 60 * day},
		{"1m rollups outlive longer points", Rollups1m, registry.Retention{Points: d(90 * day)}, g, 90 * day},
		{"1m rollups kept while points are", Rollups1m, registry.Retention{Points: d(0)}, g, 0},
		{"1h rollups forever", Rollups1h, registry.Retention{}, g, 0},
		{"1h rollups outlive 1m", Rollups1h, registry.Retention{}, Periods{Points: day, Rollups1m: 60 * day, Rollups1h: 30 * day}, 60 * day},
		{"1m rollups forever", Rollups1m, registry.Retention{}, Periods{Points: day}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.per.Period(tc.kind, tc.o); got != tc.want {
				t.Fatalf("Period(%s) = %v, want %v", tc.kind, got, tc.want)
			}
		})
	}
}
