package retention

import (
	"context"
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

// endless is a Store with an endless backlog: every Purge deletes a full
// batch. It reports each call on calls.
type endless struct{ calls chan Purge }

func (e endless) RetentionProducts(context.Context, Kind) ([]string, error) {
	return []string{"p"}, nil
}

func (e endless) Purge(ctx context.Context, p Purge) (Result, error) {
	select {
	case e.calls <- p:
	case <-ctx.Done():
		return Result{}, ctx.Err()
	}
	return Result{Deleted: p.Limit}, nil
}

// TestRunStopsMidBacklog: Run is owned by its context. Cancelled in the
// middle of a backlog that would never end, it returns (the test would
// hang otherwise), and every batch it asked for was bounded.
func TestRunStopsMidBacklog(t *testing.T) {
	st := endless{calls: make(chan Purge)}
	w := New(Options{Store: st, Periods: Periods{Messages: time.Hour}, BatchSize: 100, Pause: -1, StartDelay: -1})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		w.Run(ctx)
	}()
	for range 3 { // the start-up pass is under way, batch after batch
		if p := <-st.calls; p.Kind != Messages || p.ProductKey != "p" || p.Limit != 100 {
			t.Fatalf("purge %+v", p)
		}
	}
	cancel()
	<-done
}
