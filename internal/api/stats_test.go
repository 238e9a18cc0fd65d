package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/sqlitestore"
	"github.com/coapgate/coapgate/internal/stats"
)

func TestStats(t *testing.T) {
	e := newTestEnv(t)
	e.do("GET", Prefix+"/stats", nil).wantError(t, http.StatusServiceUnavailable, codeUnavailable)
	e.raw("GET", Prefix+"/stats", "", nil).wantError(t, http.StatusUnauthorized, codeUnauthorized)

	st, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	secret, k, err := apikey.New("test", testNow)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.CreateAPIKey(context.Background(), k); err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	up := prometheus.NewCounter(prometheus.CounterOpts{Name: "coapgate_ingest_messages_total", Help: "x"})
	reg.MustRegister(up)
	smp := stats.New(stats.Options{Gatherer: reg, Interval: 10 * time.Second,
		Devices: func(time.Time) (int, int) { return 1, 3 }})
	smp.SampleOnce()
	up.Add(7)
	smp.SampleOnce()
	srv := httptest.NewServer(New(Options{Registry: st, Messages: st, Keys: st, Stats: smp}))
	defer srv.Close()
	get := func(query string) *http.Response {
		req, _ := http.NewRequest("GET", srv.URL+Prefix+"/stats"+query, nil)
		req.Header.Set("Authorization", "Bearer "+secret)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	resp := get("")
	defer resp.Body.Close()
	var out Stats
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET /stats = %d, %v", resp.StatusCode, err)
	}
	if out.IntervalSeconds != 10 || len(out.Samples) != 1 || out.Samples[0].Uplinks != 7 ||
		out.Samples[0].DevicesOnline != 1 || out.Samples[0].DevicesOffline != 2 {
		t.Fatalf("GET /stats = %+v", out)
	}
	if r := get("?x=1"); r.StatusCode != http.StatusBadRequest {
		t.Fatalf("unknown parameter: %d, want 400", r.StatusCode)
	}
}
