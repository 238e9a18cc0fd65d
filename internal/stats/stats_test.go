package stats

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/registry"
)

func TestSamplerDeltasAndRing(t *testing.T) {
	reg := prometheus.NewRegistry()
	up := prometheus.NewCounter(prometheus.CounterOpts{Name: metricUplinks, Help: "x"})
	resp := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricResponses, Help: "x"}, []string{"transport", "code"})
	bad := prometheus.NewCounterVec(prometheus.CounterOpts{Name: metricMalformed, Help: "x"}, []string{"reason"})
	reg.MustRegister(up, resp, bad)
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s := New(Options{
		Gatherer: reg, Interval: time.Second, Size: 3,
		Now:     func() time.Time { return now },
		Devices: func(time.Time) (int, int) { return 2, 5 },
	})
	s.SampleOnce() // baseline
	if got := s.Samples(); len(got) != 0 {
		t.Fatalf("samples after baseline = %v, want none", got)
	}
	for i := 1; i <= 4; i++ {
		now = now.Add(time.Second)
		up.Add(float64(i))
		resp.WithLabelValues("coap", "2.04").Add(100) // not an error
		resp.WithLabelValues("coap", "4.01").Add(1)
		resp.WithLabelValues("coap-dtls", "5.03").Add(2)
		bad.WithLabelValues("short").Add(float64(i))
		s.SampleOnce()
	}
	got := s.Samples()
	if len(got) != 3 {
		t.Fatalf("len = %d, want 3 (ring size)", len(got))
	}
	for j, smp := range got {
		i := j + 2 // the first interval was overwritten
		if smp.Uplinks != uint64(i) || smp.Errors != uint64(3+i) {
			t.Errorf("sample %d = %+v, want uplinks %d errors %d", j, smp, i, 3+i)
		}
		if smp.DevicesOnline != 2 || smp.DevicesOffline != 3 {
			t.Errorf("sample %d devices = %d/%d, want 2/3", j, smp.DevicesOnline, smp.DevicesOffline)
		}
		if j > 0 && !smp.Time.After(got[j-1].Time) {
			t.Errorf("samples not oldest first: %v", got)
		}
	}
}

// listDevices pages an in-memory, sorted device list like the registry:
// After is "productKey/deviceKey" when productKey is empty.
type listDevices struct {
	keys  []string // "pk/dk", sorted
	calls int
}

func (l *listDevices) ListDevices(_ context.Context, pk string, p registry.Page) ([]registry.Device, error) {
	l.calls++
	if pk != "" {
		return nil, fmt.Errorf("want all products, got %q", pk)
	}
	i, _ := slices.BinarySearch(l.keys, p.After)
	if i < len(l.keys) && l.keys[i] == p.After {
		i++
	}
	var out []registry.Device
	for ; i < len(l.keys) && len(out) < p.Limit; i++ {
		pk, dk, _ := strings.Cut(l.keys[i], "/")
		out = append(out, registry.Device{ProductKey: pk, DeviceKey: dk})
	}
	return out, nil
}

func TestRegisteredDevices(t *testing.T) {
	l := &listDevices{}
	for p := range 3 {
		for d := range 1000 {
			l.keys = append(l.keys, fmt.Sprintf("p%d/d%04d", p, d))
		}
	}
	l.keys = l.keys[:2500]
	if n, err := CountDevices(context.Background(), l); err != nil || n != 2500 {
		t.Fatalf("CountDevices = %d, %v; want 2500", n, err)
	}
	if l.calls != 3 {
		t.Fatalf("%d pages read, want 3", l.calls)
	}

	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	l.calls = 0
	s := New(Options{Gatherer: prometheus.NewRegistry(), Registry: l, Interval: 10 * time.Second, CountEvery: time.Minute,
		Now: func() time.Time { return now }})
	for range 7 { // 0 s .. 60 s
		s.SampleOnce()
		now = now.Add(10 * time.Second)
	}
	if l.calls != 2*3 {
		t.Fatalf("registry read %d pages over 60 s, want two counts of 3", l.calls)
	}
	got := s.Samples()
	if len(got) != 6 || got[0].DevicesRegistered != 2500 {
		t.Fatalf("samples = %+v", got)
	}
	// A change is counted at the next sample, not a minute later.
	l.keys = l.keys[:2499]
	s.SampleOnce() // 70 s: no count due
	s.MarkChanged()
	now = now.Add(time.Second)
	s.SampleOnce()
	if got := s.Samples(); got[len(got)-2].DevicesRegistered != 2500 || got[len(got)-1].DevicesRegistered != 2499 {
		t.Fatalf("after MarkChanged: %+v", got[len(got)-2:])
	}
}
