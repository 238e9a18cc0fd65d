package main

// coapgate points: latest values, history, aggregation and export of a
// device's measure points, through the management API.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coapgate/coapgate/internal/api"
)

var adminPointsCmds = [][2]string{
	{"latest", "the newest value of every point of a device"},
	{"history", "a point's samples in time order, or aggregated per interval (--interval)"},
	{"export", "all samples of a device (or of the listed points) as CSV or NDJSON"},
}

// cmdPoints runs "coapgate points <command>".
func cmdPoints(args []string, stdout, stderr io.Writer) int {
	return adminDispatch("points", "Read a device's measure points (also properties, events, attributes with --kind) through the management API.",
		adminPointsCmds, map[string]func([]string, io.Writer, io.Writer) int{
			"latest":  adminPointsLatest,
			"history": adminPointsHistory,
			"export":  adminPointsExport,
		}, args, stdout, stderr)
}

func adminPointsPath(pk, dk string) string {
	return "/devices/" + adminEsc(pk) + "/" + adminEsc(dk) + "/measurepoints"
}

// adminValue renders a point value on one line (JSON for anything but
// strings).
func adminValue(v any) string {
	if s, ok := v.(string); ok {
		return s
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func adminPointsLatest(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("points latest", "PRODUCT_KEY DEVICE_KEY", "Show the newest value of every point of a device, ordered by name.",
		"coapgate points latest wm01 meter_0001", stdout, stderr)
	kind := c.fs.String("kind", "point", "point (measure points and properties), event or attribute")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	body, err := c.call("GET", adminPointsPath(pos[0], pos[1]), url.Values{"kind": {*kind}}, nil)
	if err != nil {
		return c.finish(err)
	}
	return c.finish(adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.PointValue]) {
		fmt.Fprintln(w, "NAME\tVALUE\tTIME\tMESSAGE")
		for _, p := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", p.Name, adminValue(p.Value), p.Time.UTC().Format(time.RFC3339Nano), p.MessageID)
		}
	}))
}

func adminPointsHistory(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("points history", "PRODUCT_KEY DEVICE_KEY POINT",
		"Show a point's samples in time order (paged: --cursor), or with --interval its\n"+
			"aggregates per epoch-aligned bucket (--from and --to required). Times are RFC 3339\nor unix milliseconds.",
		"coapgate points history --from 2025-01-01T00:00:00Z --to 2025-01-02T00:00:00Z --interval 1h wm01 meter_0001 temp", stdout, stderr)
	kind := c.fs.String("kind", "point", "point (measure points and properties), event or attribute")
	from := c.fs.String("from", "", "samples at or after this `time`")
	to := c.fs.String("to", "", "samples before this `time`")
	limit := c.fs.Int("limit", 100, "page size (1..10000), not with --interval")
	cursor := c.cursorFlag("opaque")
	desc := c.fs.Bool("desc", false, "newest first, not with --interval")
	interval := c.fs.String("interval", "", "aggregate per `duration` bucket (e.g. 1m, 1h)")
	agg := c.fs.String("agg", "", "with --interval: comma-separated avg,min,max,count,sum (default avg,min,max,count)")
	pos, code, ok := c.parse(args, 3, 3)
	if !ok {
		return code
	}
	q := url.Values{"kind": {*kind}}
	for k, v := range map[string]string{"from": *from, "to": *to, "cursor": *cursor, "interval": *interval, "agg": *agg} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if *interval == "" {
		q.Set("limit", strconv.Itoa(*limit))
		if *desc {
			q.Set("order", "desc")
		}
	} else if *desc || *cursor != "" {
		return c.finish(adminUsagef("--desc and --cursor do not apply with --interval"))
	}
	body, err := c.call("GET", adminPointsPath(pos[0], pos[1])+"/"+adminEsc(pos[2])+"/history", q, nil)
	if err != nil {
		return c.finish(err)
	}
	if *interval != "" {
		return c.finish(adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.PointBucket]) {
			fmt.Fprintln(w, "START\tCOUNT\tAVG\tMIN\tMAX\tSUM")
			f := func(p *float64) string {
				if p == nil {
					return "-"
				}
				return strconv.FormatFloat(*p, 'g', -1, 64)
			}
			for _, b := range l.Items {
				n := "-"
				if b.Count != nil {
					n = strconv.FormatInt(*b.Count, 10)
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", b.Start.UTC().Format(time.RFC3339), n, f(b.Avg), f(b.Min), f(b.Max), f(b.Sum))
			}
		}))
	}
	var next string
	err = adminOutput(c, body, func(w *tabwriter.Writer, l api.List[api.PointSample]) {
		fmt.Fprintln(w, "TIME\tVALUE\tMESSAGE")
		for _, s := range l.Items {
			fmt.Fprintf(w, "%s\t%s\t%s\n", s.Time.UTC().Format(time.RFC3339Nano), adminValue(s.Value), s.MessageID)
		}
		next = l.NextCursor
	})
	c.moreHint(next)
	return c.finish(err)
}

// repeated is a flag that may be given several times.
type repeated []string

func (r *repeated) String() string     { return strings.Join(*r, ",") }
func (r *repeated) Set(s string) error { *r = append(*r, s); return nil }

func adminPointsExport(args []string, stdout, stderr io.Writer) int {
	c := newAdminCmd("points export", "PRODUCT_KEY DEVICE_KEY",
		"Stream every sample of a device (or of the --point names) ordered by point, then\n"+
			"time, as CSV (time,point,value,messageId) or NDJSON, to stdout or --output.",
		"coapgate points export --format ndjson --from 2025-01-01T00:00:00Z --point temp --output temp.ndjson wm01 meter_0001", stdout, stderr)
	kind := c.fs.String("kind", "point", "point (measure points and properties), event or attribute")
	from := c.fs.String("from", "", "samples at or after this `time`")
	to := c.fs.String("to", "", "samples before this `time`")
	format := c.fs.String("format", "csv", "csv or ndjson")
	output := c.fs.String("output", "", "write to this `file` instead of stdout")
	var points repeated
	c.fs.Var(&points, "point", "only this point `name` (repeatable)")
	pos, code, ok := c.parse(args, 2, 2)
	if !ok {
		return code
	}
	if c.apiKey == "" {
		return c.finish(adminUsagef("no API key: set %s (preferred) or pass --api-key", adminEnvKey))
	}
	q := url.Values{"kind": {*kind}, "format": {*format}}
	for k, v := range map[string]string{"from": *from, "to": *to} {
		if v != "" {
			q.Set(k, v)
		}
	}
	for _, p := range points {
		q.Add("point", p)
	}
	// The export is streamed: no size limit and no overall timeout, unlike
	// the other commands' buffered calls.
	u := strings.TrimRight(c.apiURL, "/") + api.Prefix + adminPointsPath(pos[0], pos[1]) + "/export?" + q.Encode()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, u, nil)
	if err != nil {
		return c.finish(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.apiKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return c.finish(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		e := &api.Error{Status: resp.StatusCode}
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		if json.Unmarshal(b, e) != nil || e.Code == "" {
			e.Code, e.Message = "http_"+strconv.Itoa(resp.StatusCode), http.StatusText(resp.StatusCode)
		}
		return c.finish(e)
	}
	w := c.stdout
	if *output != "" {
		f, err := os.OpenFile(*output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err != nil {
			return c.finish(err)
		}
		defer f.Close()
		w = f
	}
	if _, err := io.Copy(w, resp.Body); err != nil {
		return c.finish(fmt.Errorf("export interrupted: %w", err))
	}
	if f, ok := w.(*os.File); ok && *output != "" {
		return c.finish(f.Sync())
	}
	return adminOK
}
