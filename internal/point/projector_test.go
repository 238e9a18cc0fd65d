package point_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

// decodeMeasurePoints is a small test decoder for
// {"params":{"measurepoints":{...},"time":ms}} payloads; other topics carry
// no points.
func decodeMeasurePoints(m *message.Message) ([]point.Sample, error) {
	if m.Topic != "/sys/"+m.ProductKey+"/"+m.DeviceKey+"/thing/measurepoint/post" {
		return nil, nil
	}
	var req struct {
		Params struct {
			MeasurePoints map[string]any `json:"measurepoints"`
			Time          int64          `json:"time"`
		} `json:"params"`
	}
	if err := json.Unmarshal(m.Payload, &req); err != nil {
		return nil, err
	}
	var out []point.Sample
	for name, v := range req.Params.MeasurePoints {
		out = append(out, point.Sample{Kind: point.KindPoint, Name: name, Value: v, Time: time.UnixMilli(req.Params.Time)})
	}
	return out, nil
}

type env struct {
	t     *testing.T
	store *sqlitestore.Store
	path  string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	path := filepath.Join(t.TempDir(), "coapgate.db")
	st, err := sqlitestore.Open(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return &env{t: t, store: st, path: path}
}

// publish appends one measure-point message and returns its log ID.
func (e *env) publish(dk, payload string) int64 {
	e.t.Helper()
	m := &message.Message{ProductKey: "p1", DeviceKey: dk, Topic: "/sys/p1/" + dk + "/thing/measurepoint/post",
		Payload: []byte(payload), ContentFormat: 50, ReceivedAt: time.Now(), Transport: "coap"}
	if err := e.store.Append(context.Background(), []*message.Message{m}); err != nil {
		e.t.Fatal(err)
	}
	return m.ID
}

// start runs a projector until the test ends (or stop is called).
func (e *env) start(reg prometheus.Registerer) (p *point.Projector, stop func()) {
	p = point.NewProjector(point.ProjectorOptions{
		Log: e.store, Store: e.store, Notify: e.store, Decode: decodeMeasurePoints,
		Poll:  time.Hour, // only the store's notifications wake it
		Batch: 3, Registerer: reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- p.Run(ctx) }()
	stopped := false
	stop = func() {
		if !stopped {
			stopped = true
			cancel()
			if err := <-done; err != nil {
				e.t.Errorf("Run: %v", err)
			}
		}
	}
	e.t.Cleanup(stop)
	return p, stop
}

func waitFor(t *testing.T, p *point.Projector, id int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitFor(ctx, id); err != nil {
		t.Fatal(err)
	}
}

func (e *env) historyLen(dk, name string) int {
	e.t.Helper()
	p, err := e.store.History(context.Background(), point.HistoryQuery{PK: "p1", DK: dk, Name: name, Limit: point.MaxLimit})
	if err != nil {
		e.t.Fatal(err)
	}
	return len(p.Samples)
}

func TestProjectorProjectsAndResumes(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	p, stop := e.start(reg)
	var last int64
	for i := range 10 { // more than one batch of 3
		last = e.publish("d1", fmt.Sprintf(`{"params":{"measurepoints":{"temp":%d,"hum":40.5},"time":%d}}`, i, 1700000000000+int64(i)*1000))
	}
	waitFor(t, p, last)
	if n := e.historyLen("d1", "temp"); n != 10 {
		t.Fatalf("temp history has %d samples, want 10", n)
	}
	latest, err := e.store.Latest(context.Background(), "p1", "d1", point.KindPoint)
	if err != nil || len(latest) != 2 || latest[1].Name != "temp" || latest[1].Value != 9.0 || latest[1].MessageID != last {
		t.Fatalf("latest = %+v, %v", latest, err)
	}
	if got := metricValue(t, reg, "coapgate_points_projected_total"); got != 20 {
		t.Fatalf("projected_total = %v, want 20", got)
	}

	// Restart: a new projector resumes from the stored cursor; appends made
	// while none ran are projected once, older ones not again.
	stop()
	var more int64
	for i := range 4 {
		more = e.publish("d1", fmt.Sprintf(`{"params":{"measurepoints":{"temp":%d},"time":%d}}`, 100+i, 1800000000000+int64(i)))
	}
	p2, _ := e.start(nil)
	waitFor(t, p2, more)
	if n := e.historyLen("d1", "temp"); n != 14 {
		t.Fatalf("after restart temp history has %d samples, want 14", n)
	}
	if cur, err := e.store.Cursor(context.Background(), "points"); err != nil || cur != more {
		t.Fatalf("cursor = %d, %v; want %d", cur, err, more)
	}
}

func TestProjectorSkipsUndecodable(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	p, _ := e.start(reg)
	bad := e.publish("d1", `{"params":`)
	good := e.publish("d1", `{"params":{"measurepoints":{"temp":1},"time":1700000000000}}`)
	// An event after the last uplink: WaitFor still returns for its ID.
	ev := &message.Message{ProductKey: "p1", DeviceKey: "d1", Topic: message.EventTopic("p1", "d1", "online"),
		Payload: []byte(`{}`), ContentFormat: 50, ReceivedAt: time.Now(), Transport: message.TransportEvent}
	if err := e.store.Append(context.Background(), []*message.Message{ev}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, p, ev.ID)
	if good <= bad || e.historyLen("d1", "temp") != 1 {
		t.Fatalf("good message not projected after the bad one")
	}
	if got := metricValue(t, reg, "coapgate_points_undecodable_total"); got != 1 {
		t.Fatalf("undecodable_total = %v, want 1", got)
	}
	if got := metricValue(t, reg, "coapgate_points_projector_lag_messages"); got != 0 {
		t.Fatalf("lag = %v, want 0", got)
	}
	// The raw message stays in the log.
	ms, err := e.store.List(context.Background(), message.Query{AfterID: bad - 1, Limit: 1})
	if err != nil || len(ms) != 1 || string(ms[0].Payload) != `{"params":` {
		t.Fatalf("raw message: %v, %v", ms, err)
	}
}

// failingWriter fails its first n Project calls.
type failingWriter struct {
	point.Writer
	n int
}

func (f *failingWriter) Project(ctx context.Context, name string, upto int64, s []point.Sample) error {
	if f.n > 0 {
		f.n--
		return errors.New("disk on fire")
	}
	return f.Writer.Project(ctx, name, upto, s)
}

func TestProjectorRetriesFailures(t *testing.T) {
	e := newEnv(t)
	reg := prometheus.NewRegistry()
	p := point.NewProjector(point.ProjectorOptions{
		Log: e.store, Store: &failingWriter{Writer: e.store, n: 2}, Notify: e.store,
		Decode: decodeMeasurePoints, Registerer: reg,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	id := e.publish("d1", `{"params":{"measurepoints":{"temp":1},"time":1700000000000}}`)
	waitFor(t, p, id)
	if got := metricValue(t, reg, "coapgate_points_projector_failures_total"); got != 2 {
		t.Fatalf("failures_total = %v, want 2", got)
	}
	if e.historyLen("d1", "temp") != 1 {
		t.Fatal("sample not stored after retries")
	}
}

// metricValue returns the value of a registered counter or gauge.
func metricValue(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			m := mf.GetMetric()[0]
			return m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	t.Fatalf("metric %s not registered", name)
	return 0
}
