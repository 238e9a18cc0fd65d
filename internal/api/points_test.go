package api

import (
	"bufio"
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/point"
)

// pointT0 is the time of the first seeded sample.
var pointT0 = time.Date(2025, 3, 4, 0, 0, 0, 0, time.UTC)

// seedPoints projects 5 samples of "temp" one minute apart (values 10..14,
// messages 1..5), a string point and an event.
func seedPoints(t *testing.T, e *testEnv, pk, dk string) {
	t.Helper()
	var ss []point.Sample
	for i := range 5 {
		ss = append(ss, point.Sample{ProductKey: pk, DeviceKey: dk, Kind: point.KindPoint, Name: "temp",
			Time: pointT0.Add(time.Duration(i) * time.Minute), Value: float64(10 + i), MessageID: int64(i + 1)})
	}
	ss = append(ss,
		point.Sample{ProductKey: pk, DeviceKey: dk, Kind: point.KindPoint, Name: "mode", Time: pointT0, Value: "eco, \"quiet\"", MessageID: 1},
		point.Sample{ProductKey: pk, DeviceKey: dk, Kind: point.KindEvent, Name: "alarm", Time: pointT0, Value: map[string]any{"level": 2.0}, MessageID: 2})
	if err := e.store.Project(context.Background(), "test", 5, ss); err != nil {
		t.Fatal(err)
	}
}

func TestPointsLatestAndHistory(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("p1")
	e.createDevice("p1", "d1")
	seedPoints(t, e, "p1", "d1")
	base := "/api/v1/devices/p1/d1/measurepoints"

	var latest List[PointValue]
	e.do("GET", base, nil).want(t, 200, &latest)
	if len(latest.Items) != 2 || latest.Items[0].Name != "mode" || latest.Items[1].Name != "temp" ||
		latest.Items[1].Value != 14.0 || latest.Items[1].MessageID != "5" || !latest.Items[1].Time.Equal(pointT0.Add(4*time.Minute)) {
		t.Fatalf("latest = %+v", latest)
	}
	e.do("GET", base+"?kind=event", nil).want(t, 200, &latest)
	if len(latest.Items) != 1 || latest.Items[0].Name != "alarm" {
		t.Fatalf("latest events = %+v", latest)
	}
	e.do("GET", "/api/v1/devices/p1/nope/measurepoints", nil).wantError(t, 404, "not_found")

	// Pages of 2 in both orders, following nextCursor; a range in unix ms.
	for _, order := range []string{"asc", "desc"} {
		var got []string
		cursor := ""
		for range 10 {
			q := url.Values{"limit": {"2"}, "order": {order}, "from": {strconv.FormatInt(pointT0.Add(time.Minute).UnixMilli(), 10)}}
			if cursor != "" {
				q.Set("cursor", cursor)
			}
			var page List[PointSample]
			e.do("GET", base+"/temp/history?"+q.Encode(), nil).want(t, 200, &page)
			for _, it := range page.Items {
				got = append(got, it.MessageID)
			}
			if cursor = page.NextCursor; cursor == "" {
				break
			}
		}
		want := []string{"2", "3", "4", "5"}
		if order == "desc" {
			slices.Reverse(want)
		}
		if !slices.Equal(got, want) {
			t.Fatalf("%s pages = %v, want %v", order, got, want)
		}
	}

	// Two-minute buckets over the five samples: [10,11] [12,13] [14].
	var buckets List[map[string]any]
	e.do("GET", base+"/temp/history?interval=2m&agg=avg,min,max,count,sum&from="+pointT0.Format(time.RFC3339)+
		"&to="+pointT0.Add(time.Hour).Format(time.RFC3339), nil).want(t, 200, &buckets)
	want := []map[string]any{
		{"start": pointT0.Format(time.RFC3339), "avg": 10.5, "min": 10.0, "max": 11.0, "count": 2.0, "sum": 21.0},
		{"start": pointT0.Add(2 * time.Minute).Format(time.RFC3339), "avg": 12.5, "min": 12.0, "max": 13.0, "count": 2.0, "sum": 25.0},
		{"start": pointT0.Add(4 * time.Minute).Format(time.RFC3339), "avg": 14.0, "min": 14.0, "max": 14.0, "count": 1.0, "sum": 14.0},
	}
	b1, _ := json.Marshal(buckets.Items)
	b2, _ := json.Marshal(want)
	if !bytes.Equal(b1, b2) {
		t.Fatalf("buckets = %s, want %s", b1, b2)
	}
	// A non-numeric point aggregates to counts only; default aggs omit sum.
	buckets = List[map[string]any]{}
	e.do("GET", base+"/mode/history?interval=1h&from="+pointT0.Format(time.RFC3339)+"&to="+pointT0.Add(time.Hour).Format(time.RFC3339), nil).want(t, 200, &buckets)
	if len(buckets.Items) != 1 || buckets.Items[0]["count"] != 1.0 || len(buckets.Items[0]) != 2 {
		t.Fatalf("string point buckets = %v", buckets.Items)
	}
}

func TestPointsValidation(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("p1")
	e.createDevice("p1", "d1")
	h := "/api/v1/devices/p1/d1/measurepoints/temp/history?"
	r := "&from=2025-01-01T00:00:00Z&to=2025-01-02T00:00:00Z"
	for _, tc := range []struct{ name, path string }{
		{"from after to", h + "from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z"},
		{"from equals to", h + "from=1000&to=1000"},
		{"bad time", h + "from=yesterday"},
		{"limit 0", h + "limit=0"},
		{"limit too big", h + "limit=10001"},
		{"bad order", h + "order=sideways"},
		{"bad cursor", h + "cursor=xyz"},
		{"bad kind", h + "kind=thing"},
		{"unknown parameter", h + "page=2"},
		{"interval too small", h + "interval=500ms" + r},
		{"interval not a duration", h + "interval=often" + r},
		{"aggregation without range", h + "interval=1m"},
		{"too many buckets", h + "interval=1s" + r},
		{"unknown aggregate", h + "interval=1h&agg=avg,median" + r},
		{"agg without interval", h + "agg=avg" + r},
		{"cursor with aggregation", h + "interval=1h&cursor=x" + r},
		{"latest bad kind", "/api/v1/devices/p1/d1/measurepoints?kind=x"},
		{"export bad format", "/api/v1/devices/p1/d1/measurepoints/export?format=xml"},
		{"export empty point", "/api/v1/devices/p1/d1/measurepoints/export?point="},
		{"long point name", "/api/v1/devices/p1/d1/measurepoints/" + strings.Repeat("x", 129) + "/history"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e.do("GET", tc.path, nil).wantError(t, 400, "invalid_argument")
		})
	}
	// A device that does not exist is 404 even with a valid query.
	e.do("GET", "/api/v1/devices/p1/d2/measurepoints/temp/history?limit=5", nil).wantError(t, 404, "not_found")
}

func TestPointsExport(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("p1")
	e.createDevice("p1", "d1")
	seedPoints(t, e, "p1", "d1")
	base := "/api/v1/devices/p1/d1/measurepoints/export"

	r := e.do("GET", base+"?to="+pointT0.Add(2*time.Minute).Format(time.RFC3339), nil)
	if r.status != 200 || r.header.Get("Content-Type") != "text/csv; charset=utf-8" ||
		r.header.Get("Content-Disposition") != `attachment; filename="p1_d1_point.csv"` {
		t.Fatalf("csv export: %d %v", r.status, r.header)
	}
	recs, err := csv.NewReader(bytes.NewReader(r.body)).ReadAll()
	if err != nil {
		t.Fatalf("csv: %v\n%s", err, r.body)
	}
	t0 := pointT0.Format(time.RFC3339Nano)
	want := [][]string{
		{"time", "point", "value", "messageId"},
		{t0, "mode", `eco, "quiet"`, "1"},
		{t0, "temp", "10", "1"},
		{pointT0.Add(time.Minute).Format(time.RFC3339Nano), "temp", "11", "2"},
	}
	if !slices.EqualFunc(recs, want, slices.Equal) {
		t.Fatalf("csv = %q, want %q", recs, want)
	}

	r = e.do("GET", base+"?format=ndjson&kind=event", nil)
	if r.status != 200 || r.header.Get("Content-Type") != "application/x-ndjson" {
		t.Fatalf("ndjson export: %d %v", r.status, r.header)
	}
	if got := strings.TrimSpace(string(r.body)); got != `{"time":"`+t0+`","point":"alarm","value":{"level":2},"messageId":"2"}` {
		t.Fatalf("ndjson = %s", got)
	}

	// Selected points, NDJSON: one line per sample, in time order.
	r = e.do("GET", base+"?format=ndjson&point=temp&point=nothing", nil)
	sc := bufio.NewScanner(bytes.NewReader(r.body))
	var n int
	for sc.Scan() {
		var l struct{ Point, MessageID string }
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil || l.Point != "temp" || l.MessageID != strconv.Itoa(n+1) {
			t.Fatalf("line %d: %s (%v)", n, sc.Bytes(), err)
		}
		n++
	}
	if n != 5 {
		t.Fatalf("%d ndjson lines, want 5", n)
	}

	// An empty export is a header only.
	r = e.do("GET", base+"?point=nothing", nil)
	if r.status != 200 || string(r.body) != "time,point,value,messageId\n" {
		t.Fatalf("empty export: %d %q", r.status, r.body)
	}
}

// TestPointsDisabled: without a point store the routes answer 503.
func TestPointsDisabled(t *testing.T) {
	e := newTestEnv(t)
	e.createProduct("p1")
	e.createDevice("p1", "d1")
	h := New(Options{Registry: e.store, Messages: e.store, Keys: e.store})
	for _, p := range []string{"measurepoints", "measurepoints/temp/history", "measurepoints/export"} {
		req := httptest.NewRequest("GET", "/api/v1/devices/p1/d1/"+p, nil)
		req.Header.Set("Authorization", "Bearer "+e.key)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var body Error
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil || w.Code != http.StatusServiceUnavailable || body.Code != "unavailable" {
			t.Fatalf("%s: %d %s", p, w.Code, w.Body)
		}
	}
}
