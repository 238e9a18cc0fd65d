package main

// Product retention overrides on the admin command line:
// --retention KIND=DURATION (repeatable) on product create and update.

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/coapgate/coapgate/internal/api"
)

// adminRetentionKinds maps the flag's kinds to the API's fields.
var adminRetentionKinds = map[string]string{
	"messages": "messagesSeconds",
	"points":   "pointsSeconds",
	"events":   "eventsSeconds",
	"commands": "commandsSeconds",
}

// adminRetentionFlag collects --retention KIND=DURATION values; a nil
// value (DURATION "inherit") drops the override.
type adminRetentionFlag map[string]*int64

func (f adminRetentionFlag) String() string { return "" }

func (f adminRetentionFlag) Set(s string) error {
	kind, val, ok := strings.Cut(s, "=")
	field, known := adminRetentionKinds[kind]
	if !ok || !known {
		return fmt.Errorf("want KIND=DURATION with KIND messages, points, events or commands, e.g. messages=720h")
	}
	if val == "inherit" {
		f[field] = nil
		return nil
	}
	d, err := time.ParseDuration(val)
	if err != nil || d < 0 || d%time.Second != 0 {
		return fmt.Errorf("%s: want whole seconds (720h, 0 = forever) or inherit", s)
	}
	secs := int64(d / time.Second)
	f[field] = &secs
	return nil
}

const adminRetentionUsage = "retention override `KIND=DURATION` (repeatable): KIND messages, points, events or commands; " +
	"DURATION e.g. 720h, 0 = keep forever, inherit = the gateway setting"

// merge applies the flag's values to the current overrides (JSON object
// of the API's fields).
func (f adminRetentionFlag) merge(cur api.ProductRetention) (map[string]any, error) {
	b, err := json.Marshal(cur)
	if err != nil {
		return nil, err
	}
	out := map[string]any{}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, err
	}
	for field, v := range f {
		if v == nil {
			delete(out, field)
		} else {
			out[field] = *v
		}
	}
	return out, nil
}

// adminRetentionRow prints a product's overrides ("-": none).
func adminRetentionRow(w *tabwriter.Writer, r api.ProductRetention) {
	var parts []string
	for _, k := range []struct {
		name string
		v    *int64
	}{{"messages", r.MessagesSecs}, {"points", r.PointsSecs}, {"events", r.EventsSecs}, {"commands", r.CommandsSecs}} {
		switch {
		case k.v == nil:
		case *k.v == 0:
			parts = append(parts, k.name+"=forever")
		default:
			parts = append(parts, k.name+"="+(time.Duration(*k.v)*time.Second).String())
		}
	}
	if len(parts) == 0 {
		parts = []string{"-"}
	}
	fmt.Fprintf(w, "retention\t%s\n", strings.Join(parts, " "))
}
