package stats

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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
