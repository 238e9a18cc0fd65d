package api

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/registry"
)

// Limits of the point routes.
const (
	maxPointLimit  = point.MaxLimit // history page size
	maxBuckets     = 10000          // aggregation buckets per request
	minInterval    = time.Second
	maxPointName   = 128
	defaultAggList = "avg,min,max,count"
)

// errNoPoints answers the point routes when no point store is configured.
var errNoPoints = fmt.Errorf("%w: the point store is not enabled on this node", errUnavailable)

// PointValue is the JSON form of a latest value.
type PointValue struct {
	Name      string    `json:"name"`
	Value     any       `json:"value"`
	Time      time.Time `json:"time"`
	MessageID string    `json:"messageId"`
}

// PointSample is the JSON form of one history sample.
type PointSample struct {
	Time      time.Time `json:"time"`
	Value     any       `json:"value"`
	MessageID string    `json:"messageId"`
}

// PointBucket is the JSON form of one aggregation bucket; fields not asked
// for, and numeric aggregates of buckets without numeric values, are
// omitted.
type PointBucket struct {
	Start time.Time `json:"start"`
	Avg   *float64  `json:"avg,omitempty"`
	Min   *float64  `json:"min,omitempty"`
	Max   *float64  `json:"max,omitempty"`
	Sum   *float64  `json:"sum,omitempty"`
	Count *int64    `json:"count,omitempty"`
}

// parseKind reads the kind query parameter (default point).
func parseKind(r *http.Request) (string, error) {
	k := r.URL.Query().Get("kind")
	if k == "" {
		return point.KindPoint, nil
	}
	if !point.ValidKind(k) {
		return "", badRequest("kind must be \"point\", \"event\" or \"attribute\"")
	}
	return k, nil
}

// pointDevice checks that the point store exists and loads the device of
// the path (404 for an unknown one).
func (s *server) pointDevice(r *http.Request) (registry.Device, error) {
	if s.o.Points == nil {
		return registry.Device{}, errNoPoints
	}
	d, _, err := s.loadDevice(r)
	return d, err
}

func validPointName(name string) error {
	if name == "" || len(name) > maxPointName {
		return badRequest("point name must be 1..%d bytes", maxPointName)
	}
	return nil
}

// latestPoints lists the newest value of every point of a device.
func (s *server) latestPoints(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "kind"); err != nil {
		return err
	}
	kind, err := parseKind(r)
	if err != nil {
		return err
	}
	d, err := s.pointDevice(r)
	if err != nil {
		return err
	}
	ls, err := s.o.Points.Latest(r.Context(), d.ProductKey, d.DeviceKey, kind)
	if err != nil {
		return fmt.Errorf("latest points: %w", err)
	}
	out := List[PointValue]{Items: make([]PointValue, 0, len(ls))}
	for _, l := range ls {
		out.Items = append(out.Items, PointValue{Name: l.Name, Value: l.Value, Time: l.Time.UTC(), MessageID: strconv.FormatInt(l.MessageID, 10)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parseRange reads from and to; from must be before to when both are set.
func parseRange(r *http.Request) (from, to time.Time, err error) {
	v := r.URL.Query()
	if from, err = parseTime("from", v.Get("from")); err != nil {
		return
	}
	if to, err = parseTime("to", v.Get("to")); err != nil {
		return
	}
	if !from.IsZero() && !to.IsZero() && !from.Before(to) {
		err = badRequest("from must be before to")
	}
	return
}

// pointHistory answers a page of samples, or aggregation buckets when
// interval is given.
func (s *server) pointHistory(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "from", "to", "limit", "cursor", "after", "order", "interval", "agg", "kind"); err != nil {
		return err
	}
	v := r.URL.Query()
	name := r.PathValue("point")
	if err := validPointName(name); err != nil {
		return err
	}
	kind, err := parseKind(r)
	if err != nil {
		return err
	}
	q := point.HistoryQuery{Kind: kind, Name: name}
	if q.From, q.To, err = parseRange(r); err != nil {
		return err
	}
	if v.Has("interval") || v.Has("agg") {
		if err := parseAggregation(v, &q); err != nil {
			return err
		}
	} else if err := parsePage(v, &q); err != nil {
		return err
	}
	d, err := s.pointDevice(r)
	if err != nil {
		return err
	}
	q.PK, q.DK = d.ProductKey, d.DeviceKey
	if q.Interval > 0 {
		return s.writeBuckets(w, r, q)
	}
	page, err := s.o.Points.History(r.Context(), q)
	if err != nil {
		return fmt.Errorf("point history: %w", err)
	}
	out := List[PointSample]{Items: make([]PointSample, 0, len(page.Samples)), NextCursor: page.Next}
	for _, sm := range page.Samples {
		out.Items = append(out.Items, PointSample{Time: sm.Time.UTC(), Value: sm.Value, MessageID: strconv.FormatInt(sm.MessageID, 10)})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// parsePage reads limit, cursor and order of a history page.
func parsePage(v map[string][]string, q *point.HistoryQuery) error {
	get := func(k string) string {
		if len(v[k]) == 0 {
			return ""
		}
		return v[k][0]
	}
	q.Limit = defaultLimit
	if l := get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > maxPointLimit {
			return badRequest("limit must be an integer in 1..%d", maxPointLimit)
		}
		q.Limit = n
	}
	c, err := pageCursor(v)
	if err != nil {
		return err
	}
	q.Cursor = c
	if q.Cursor != "" {
		if _, _, err := point.DecodeCursor(q.Cursor); err != nil {
			return badRequest("cursor is not a nextCursor of this route")
		}
	}
	switch get("order") {
	case "", "asc":
	case "desc":
		q.Descending = true
	default:
		return badRequest("order must be \"asc\" or \"desc\"")
	}
	return nil
}

// parseAggregation reads interval and agg; from and to are required and
// bound the number of buckets.
func parseAggregation(v map[string][]string, q *point.HistoryQuery) error {
	for _, k := range []string{"limit", "cursor", "after", "order"} {
		if len(v[k]) > 0 {
			return badRequest("%s does not apply to an aggregation (interval/agg)", k)
		}
	}
	iv := ""
	if len(v["interval"]) > 0 {
		iv = v["interval"][0]
	}
	d, err := time.ParseDuration(iv)
	if err != nil || d < minInterval {
		return badRequest("interval must be a duration of at least %s (e.g. 30s, 1m, 1h)", minInterval)
	}
	q.Interval = d
	if q.From.IsZero() || q.To.IsZero() {
		return badRequest("an aggregation needs both from and to")
	}
	if n := q.To.Sub(q.From) / d; n > maxBuckets {
		return badRequest("from..to spans %d intervals; at most %d buckets per request", n, maxBuckets)
	}
	aggs := defaultAggList
	if len(v["agg"]) > 0 {
		aggs = v["agg"][0]
	}
	for _, a := range strings.Split(aggs, ",") {
		if !slices.Contains(point.AggNames, a) {
			return badRequest("agg must be a comma-separated list of %s", strings.Join(point.AggNames, ", "))
		}
		q.Aggs = append(q.Aggs, a)
	}
	return nil
}

func (s *server) writeBuckets(w http.ResponseWriter, r *http.Request, q point.HistoryQuery) error {
	bs, err := s.o.Points.Aggregate(r.Context(), q)
	if err != nil {
		return fmt.Errorf("point aggregation: %w", err)
	}
	countAsked := slices.Contains(q.Aggs, "count")
	out := List[PointBucket]{Items: make([]PointBucket, 0, len(bs))}
	for _, b := range bs {
		pb := PointBucket{Start: b.Start.UTC(), Avg: b.Avg, Min: b.Min, Max: b.Max, Sum: b.Sum}
		if countAsked {
			c := b.Count
			pb.Count = &c
		}
		out.Items = append(out.Items, pb)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// exportPoints streams a device's samples as CSV or NDJSON, ordered by
// point name, then time. The body is written while the store is read in
// chunks, so a large export needs no memory for the whole result.
func (s *server) exportPoints(w http.ResponseWriter, r *http.Request) error {
	if err := allowQuery(r, "from", "to", "format", "point", "kind"); err != nil {
		return err
	}
	v := r.URL.Query()
	format := v.Get("format")
	if format == "" {
		format = "csv"
	}
	if format != "csv" && format != "ndjson" {
		return badRequest("format must be \"csv\" or \"ndjson\"")
	}
	kind, err := parseKind(r)
	if err != nil {
		return err
	}
	q := point.ExportQuery{Kind: kind, Names: v["point"]}
	for _, n := range q.Names {
		if err := validPointName(n); err != nil {
			return err
		}
	}
	if q.From, q.To, err = parseRange(r); err != nil {
		return err
	}
	d, err := s.pointDevice(r)
	if err != nil {
		return err
	}
	q.PK, q.DK = d.ProductKey, d.DeviceKey

	ew := &exportWriter{w: w, format: format, filename: fmt.Sprintf("%s_%s_%s.%s", d.ProductKey, d.DeviceKey, kind, format)}
	err = s.o.Points.Export(r.Context(), q, ew.write)
	if err == nil {
		err = ew.finish()
	}
	if err == nil {
		return nil
	}
	if !ew.started {
		return fmt.Errorf("export points: %w", err)
	}
	// The status line is gone: abort the response so the client sees a
	// broken transfer rather than a silently short file.
	if !errors.Is(err, r.Context().Err()) {
		s.log.Error("point export failed midway", "pk", d.ProductKey, "dk", d.DeviceKey, "rows", ew.rows, "err", err)
	}
	panic(http.ErrAbortHandler)
}

// exportWriter writes export rows, sending the headers with the first one.
type exportWriter struct {
	w        http.ResponseWriter
	format   string
	filename string
	started  bool
	rows     int
	csv      *csv.Writer
	enc      *json.Encoder
	rec      [4]string
}

// exportLine is one NDJSON row.
type exportLine struct {
	Time      time.Time `json:"time"`
	Point     string    `json:"point"`
	Value     any       `json:"value"`
	MessageID string    `json:"messageId"`
}

func (e *exportWriter) start() error {
	e.started = true
	h := e.w.Header()
	h.Set("Content-Disposition", `attachment; filename="`+e.filename+`"`)
	if e.format == "csv" {
		h.Set("Content-Type", "text/csv; charset=utf-8")
		e.w.WriteHeader(http.StatusOK)
		e.csv = csv.NewWriter(e.w)
		return e.csv.Write([]string{"time", "point", "value", "messageId"})
	}
	h.Set("Content-Type", "application/x-ndjson")
	e.w.WriteHeader(http.StatusOK)
	e.enc = json.NewEncoder(e.w)
	return nil
}

func (e *exportWriter) write(sm point.Sample) error {
	if !e.started {
		if err := e.start(); err != nil {
			return err
		}
	}
	e.rows++
	id := strconv.FormatInt(sm.MessageID, 10)
	if e.enc != nil {
		return e.enc.Encode(exportLine{Time: sm.Time.UTC(), Point: sm.Name, Value: sm.Value, MessageID: id})
	}
	val, err := csvValue(sm.Value)
	if err != nil {
		return err
	}
	e.rec = [4]string{sm.Time.UTC().Format(time.RFC3339Nano), sm.Name, val, id}
	return e.csv.Write(e.rec[:])
}

// finish writes the headers of an empty export and flushes the CSV buffer.
func (e *exportWriter) finish() error {
	if !e.started {
		if err := e.start(); err != nil {
			return err
		}
	}
	if e.csv != nil {
		e.csv.Flush()
		return e.csv.Error()
	}
	return nil
}

// csvValue formats a value for a CSV cell: numbers and booleans as in
// JSON, strings as they are, objects and arrays as compact JSON.
func csvValue(v any) (string, error) {
	switch x := v.(type) {
	case string:
		return x, nil
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64), nil
	case int64:
		return strconv.FormatInt(x, 10), nil
	case bool:
		return strconv.FormatBool(x), nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return "", fmt.Errorf("format value: %w", err)
	}
	return string(b), nil
}
