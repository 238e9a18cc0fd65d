// Package pointtest is the conformance suite every point.Store adapter must
// pass: call Run from the adapter's tests with a constructor that returns a
// fresh, empty store.
package pointtest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

// Run runs the conformance suite. newStore must return a new empty store
// for each call and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) point.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s point.Store)
	}{
		{"LatestKeepsNewest", testLatestKeepsNewest},
		{"ValueTypes", testValueTypes},
		{"HistoryPaging", testHistoryPaging},
		{"Aggregate", testAggregate},
		{"Export", testExport},
		{"ProjectExactlyOnce", testProjectExactlyOnce},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

var pointBase = time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)

func sample(name string, at time.Duration, msg int64, v any) point.Sample {
	return point.Sample{ProductKey: "p1", DeviceKey: "d1", Kind: point.KindPoint, Name: name,
		Time: pointBase.Add(at), Value: v, MessageID: msg}
}

func testLatestKeepsNewest(t *testing.T, s point.Store) {
	ctx := context.Background()
	steps := []struct {
		name string
		in   point.Sample
		want any // latest value of "temp" afterwards
	}{
		{"first", sample("temp", 10*time.Second, 1, 20.5), 20.5},
		{"newer", sample("temp", 20*time.Second, 2, 21.5), 21.5},
		{"older arrives late", sample("temp", 5*time.Second, 3, 19.0), 21.5},
		{"same time, later message", sample("temp", 20*time.Second, 4, 22.5), 22.5},
	}
	for _, st := range steps {
		if err := s.Project(ctx, "t", st.in.MessageID, []point.Sample{st.in}); err != nil {
			t.Fatalf("%s: project: %v", st.name, err)
		}
		got, err := s.Latest(ctx, "p1", "d1", point.KindPoint)
		if err != nil {
			t.Fatalf("%s: latest: %v", st.name, err)
		}
		if len(got) != 1 || got[0].Value != st.want {
			t.Fatalf("%s: latest = %+v, want value %v", st.name, got, st.want)
		}
	}
	// Every sample is in the history, the late one included.
	p, err := s.History(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "temp", Limit: 100})
	if err != nil || len(p.Samples) != 4 || p.Next != "" {
		t.Fatalf("history = %+v, %v; want 4 samples on one page", p, err)
	}
	// Other kinds are separate.
	if ev, err := s.Latest(ctx, "p1", "d1", point.KindEvent); err != nil || len(ev) != 0 {
		t.Fatalf("latest events = %v, %v", ev, err)
	}
}

func testValueTypes(t *testing.T, s point.Store) {
	ctx := context.Background()
	in := map[string]struct{ in, want any }{
		"f":     {21.5, 21.5},
		"whole": {21.0, 21.0},
		"i":     {int64(-7), int64(-7)},
		"u":     {uint8(7), int64(7)},
		"big":   {uint64(math.MaxUint64), float64(math.MaxUint64)},
		"s":     {"on", "on"},
		"b":     {true, true},
		"nan":   {math.NaN(), "NaN"},
		"obj":   {map[string]any{"a": 1.0, "b": []any{"x"}}, map[string]any{"a": 1.0, "b": []any{"x"}}},
		"arr":   {[]any{1.0, "y"}, []any{1.0, "y"}},
	}
	var batch []point.Sample
	for name, v := range in {
		batch = append(batch, sample(name, 0, 1, v.in))
	}
	if err := s.Project(ctx, "t", 1, batch); err != nil {
		t.Fatal(err)
	}
	got, err := s.Latest(ctx, "p1", "d1", "")
	if err != nil || len(got) != len(in) {
		t.Fatalf("latest = %v, %v", got, err)
	}
	for _, g := range got {
		if want := in[g.Name].want; !reflect.DeepEqual(g.Value, want) {
			t.Errorf("%s = %#v, want %#v", g.Name, g.Value, want)
		}
	}
}

// seedHistory stores n samples of "temp" (some sharing a time) and returns
// them in (time, message) order.
func seedHistory(t *testing.T, s point.Store, n int) []point.Sample {
	t.Helper()
	var all []point.Sample
	for i := range n {
		// Every third sample repeats the previous time from a new message.
		at := time.Duration(i-i/3) * time.Second
		all = append(all, sample("temp", at, int64(i+1), float64(i)))
	}
	// Store in shuffled batches: order of arrival must not matter.
	shuffled := slices.Clone(all)
	rand.New(rand.NewPCG(1, 2)).Shuffle(len(shuffled), func(i, j int) { shuffled[i], shuffled[j] = shuffled[j], shuffled[i] })
	if err := s.Project(context.Background(), "seed", int64(n), shuffled); err != nil {
		t.Fatal(err)
	}
	return all
}

func testHistoryPaging(t *testing.T, s point.Store) {
	all := seedHistory(t, s, 500)
	from, to := pointBase.Add(50*time.Second), pointBase.Add(250*time.Second)
	var inRange []point.Sample
	for _, sm := range all {
		if !sm.Time.Before(from) && sm.Time.Before(to) {
			inRange = append(inRange, sm)
		}
	}
	for _, desc := range []bool{false, true} {
		for _, limit := range []int{1, 7, 100, len(inRange), 10000} {
			t.Run(fmt.Sprintf("desc=%v/limit=%d", desc, limit), func(t *testing.T) {
				want := slices.Clone(inRange)
				if desc {
					slices.Reverse(want)
				}
				var got []point.Sample
				q := point.HistoryQuery{PK: "p1", DK: "d1", Name: "temp", From: from, To: to, Limit: limit, Descending: desc}
				for pages := 0; ; pages++ {
					if pages > len(inRange)+1 {
						t.Fatal("paging does not end")
					}
					p, err := s.History(context.Background(), q)
					if err != nil {
						t.Fatal(err)
					}
					if len(p.Samples) > limit {
						t.Fatalf("page of %d > limit %d", len(p.Samples), limit)
					}
					got = append(got, p.Samples...)
					if p.Next == "" {
						break
					}
					q.Cursor = p.Next
				}
				if len(got) != len(want) {
					t.Fatalf("got %d samples, want %d", len(got), len(want))
				}
				for i := range want {
					if got[i].MessageID != want[i].MessageID || !got[i].Time.Equal(want[i].Time) || got[i].Value != want[i].Value {
						t.Fatalf("sample %d = %+v, want %+v", i, got[i], want[i])
					}
				}
			})
		}
	}
	if _, err := s.History(context.Background(), point.HistoryQuery{PK: "p1", DK: "d1", Name: "temp", Cursor: "bogus"}); !errors.Is(err, point.ErrInvalid) {
		t.Fatalf("bad cursor: err = %v, want ErrInvalid", err)
	}
}

func testAggregate(t *testing.T, s point.Store) {
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(3, 4))
	var batch []point.Sample
	for i := range 2000 {
		at := time.Duration(rng.Int64N(int64(time.Hour)))
		var v any
		switch i % 5 {
		case 0:
			v = rng.Int64N(1000) - 500
		case 1:
			v = "text" // counted, not averaged
		default:
			v = rng.Float64()*100 - 50
		}
		batch = append(batch, sample("x", at, int64(i+1), v))
	}
	if err := s.Project(ctx, "t", 2000, batch); err != nil {
		t.Fatal(err)
	}
	from, to := pointBase.Add(7*time.Minute+13*time.Second), pointBase.Add(51*time.Minute)
	// 90 s is no whole number of minutes; 2 and 10 minutes may be answered
	// from rollups for the aligned part of the range, and must agree.
	for _, interval := range []time.Duration{90 * time.Second, 2 * time.Minute, 10 * time.Minute} {
		checkAggregate(t, s, batch, from, to, interval)
	}
	interval := 90 * time.Second

	// Only the asked aggregates are filled.
	got, err := s.Aggregate(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", From: from, To: to, Interval: interval, Aggs: []string{"max"}})
	if err != nil || len(got) == 0 || got[0].Max == nil || got[0].Avg != nil || got[0].Count != 0 {
		t.Fatalf("aggs=max: %+v, %v", got, err)
	}
	if _, err := s.Aggregate(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", Interval: interval, Aggs: []string{"median"}}); !errors.Is(err, point.ErrInvalid) {
		t.Fatalf("unknown aggregate: err = %v", err)
	}
}

func testExport(t *testing.T, s point.Store) {
	ctx := context.Background()
	batch := []point.Sample{
		sample("b", 2*time.Second, 2, 2.0), sample("a", 3*time.Second, 3, "x"),
		sample("a", 1*time.Second, 1, 1.0), sample("c", 1*time.Second, 1, true),
	}
	for i := range 2500 { // more than one export chunk
		batch = append(batch, sample("z", time.Duration(i)*time.Millisecond, int64(10+i), int64(i)))
	}
	if err := s.Project(ctx, "t", 3000, batch); err != nil {
		t.Fatal(err)
	}
	collect := func(q point.ExportQuery) []string {
		t.Helper()
		var out []string
		if err := s.Export(ctx, q, func(sm point.Sample) error {
			out = append(out, fmt.Sprintf("%s@%d=%v#%d", sm.Name, sm.Time.Sub(pointBase).Milliseconds(), sm.Value, sm.MessageID))
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return out
	}
	got := collect(point.ExportQuery{PK: "p1", DK: "d1", Names: []string{"c", "a", "b"}})
	want := []string{"a@1000=1#1", "a@3000=x#3", "b@2000=2#2", "c@1000=true#1"}
	if !slices.Equal(got, want) {
		t.Fatalf("export = %v, want %v", got, want)
	}
	all := collect(point.ExportQuery{PK: "p1", DK: "d1", From: pointBase.Add(time.Second), To: pointBase.Add(3 * time.Second)})
	if len(all) != 1+1+1+1500 || all[0] != "a@1000=1#1" || all[3] != "z@1000=1000#1010" || all[len(all)-1] != "z@2499=2499#2509" {
		t.Fatalf("export of all points in [1s,3s): %d rows, first %v, last %v", len(all), all[:4], all[len(all)-1])
	}
	stop := errors.New("stop")
	n := 0
	err := s.Export(ctx, point.ExportQuery{PK: "p1", DK: "d1"}, func(point.Sample) error {
		n++
		if n == 3 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 3 {
		t.Fatalf("export with failing fn: err %v after %d rows", err, n)
	}
}

// testProjectExactlyOnce: a failed batch stores nothing and leaves the
// cursor; projecting the batch again (twice) stores each sample once.
func testProjectExactlyOnce(t *testing.T, s point.Store) {
	ctx := context.Background()
	good := []point.Sample{sample("a", 0, 5, 1.0), sample("a", time.Second, 6, 2.0), sample("b", 0, 6, 3.0)}
	bad := append(slices.Clone(good), sample("c", 0, 7, make(chan int))) // cannot be stored
	if err := s.Project(ctx, "t", 7, bad); err == nil {
		t.Fatal("project of an unstorable value succeeded")
	}
	if cur, err := s.Cursor(ctx, "t"); err != nil || cur != 0 {
		t.Fatalf("cursor after failed batch = %d, %v; want 0", cur, err)
	}
	if l, _ := s.Latest(ctx, "p1", "d1", ""); len(l) != 0 {
		t.Fatalf("failed batch left latest values %v", l)
	}
	for range 2 {
		if err := s.Project(ctx, "t", 7, good); err != nil {
			t.Fatal(err)
		}
	}
	// A batch overlapping the cursor: only the new sample is stored.
	if err := s.Project(ctx, "t", 8, append(slices.Clone(good), sample("a", 2*time.Second, 8, 4.0))); err != nil {
		t.Fatal(err)
	}
	if cur, err := s.Cursor(ctx, "t"); err != nil || cur != 8 {
		t.Fatalf("cursor = %d, %v; want 8", cur, err)
	}
	// The cursor never moves back.
	if err := s.Project(ctx, "t", 3, nil); err != nil {
		t.Fatal(err)
	}
	if cur, _ := s.Cursor(ctx, "t"); cur != 8 {
		t.Fatalf("cursor moved back to %d", cur)
	}
	n := 0
	for _, name := range []string{"a", "b", "c"} {
		p, err := s.History(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: name, Limit: 100})
		if err != nil {
			t.Fatal(err)
		}
		n += len(p.Samples)
	}
	if n != 4 {
		t.Fatalf("stored samples = %d; want 4", n)
	}
}

// checkAggregate compares Aggregate over [from, to) by interval with a
// brute-force computation over batch.
func checkAggregate(t *testing.T, s point.Store, batch []point.Sample, from, to time.Time, interval time.Duration) {
	t.Helper()
	ctx := context.Background()
	type agg struct {
		count, num    int64
		sum, min, max float64
	}
	brute := map[int64]*agg{}
	for _, sm := range batch {
		if sm.Time.Before(from) || !sm.Time.Before(to) {
			continue
		}
		ns := sm.Time.UnixNano()
		start := ns - ns%int64(interval)
		a := brute[start]
		if a == nil {
			a = &agg{min: math.Inf(1), max: math.Inf(-1)}
			brute[start] = a
		}
		a.count++
		var f float64
		switch v := sm.Value.(type) {
		case int64:
			f = float64(v)
		case float64:
			f = v
		default:
			continue
		}
		a.num++
		a.sum += f
		a.min, a.max = math.Min(a.min, f), math.Max(a.max, f)
	}
	got, err := s.Aggregate(ctx, point.HistoryQuery{PK: "p1", DK: "d1", Name: "x", From: from, To: to, Interval: interval})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(brute) {
		t.Fatalf("interval %v: %d buckets, want %d", interval, len(got), len(brute))
	}
	near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
	for i, bk := range got {
		if i > 0 && !bk.Start.After(got[i-1].Start) {
			t.Fatalf("buckets not ascending at %d", i)
		}
		a := brute[bk.Start.UnixNano()]
		if a == nil {
			t.Fatalf("unexpected bucket %v", bk.Start)
		}
		if bk.Count != a.count {
			t.Fatalf("interval %v: bucket %v count %d, want %d", interval, bk.Start, bk.Count, a.count)
		}
		if a.num == 0 {
			if bk.Avg != nil || bk.Min != nil {
				t.Fatalf("bucket %v without numbers has avg/min", bk.Start)
			}
			continue
		}
		if bk.Avg == nil || !near(*bk.Avg, a.sum/float64(a.num)) || !near(*bk.Sum, a.sum) || *bk.Min != a.min || *bk.Max != a.max {
			t.Fatalf("bucket %v = avg %v min %v max %v sum %v; want %v %v %v %v", bk.Start, *bk.Avg, *bk.Min, *bk.Max, *bk.Sum, a.sum/float64(a.num), a.min, a.max, a.sum)
		}
	}
}
