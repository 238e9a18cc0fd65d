package thing

import (
	"math"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"
)

// Decode parses an uplink's payload. topic is the full topic as stored
// ("/sys/pk/dk/thing/..."), cf the CoAP content format (50 JSON, 60 CBOR,
// 42 or 0 treated by topic kind: opaque for raw and custom topics, sniffed
// as JSON or CBOR otherwise), receivedAt the server time used when the
// device sent no timestamp. It never panics. On a validation failure it
// returns a non-nil *Request as far as it could be decoded (at least Kind,
// and ID when present) and an error of type *Error carrying the reply code
// and message. Records come in a stable order: batch items in order, the
// names of each object sorted.
func Decode(topic string, payload []byte, cf uint16, receivedAt time.Time) (req *Request, err error) {
	kind, eventID := KindOf(topic)
	req = &Request{Kind: kind}
	defer func() {
		if p := recover(); p != nil {
			req.Records = nil
			err = &Error{Code: CodeInternal, Message: "internal error decoding the payload"}
		}
	}()
	switch {
	case kind == KindRawUp, kind == KindCustom, kind == KindReply && isRawReply(topic):
		req.Raw = payload
		return req, nil
	case kind == KindActivate && len(payload) == 0:
		return req, nil // the activation request is a GET without a body
	}
	root, perr := parse(payload, cf)
	if perr != nil {
		return req, perr
	}
	d := decoder{req: req, root: root, received: receivedAt}
	if e := d.header(); e != nil {
		return req, e
	}
	var e *Error
	switch kind {
	case KindMeasurePointPost:
		e = d.measurePoints()
	case KindMeasurePointBatch:
		e = d.batch()
	case KindPropertyPost:
		e = d.properties()
	case KindEventPost:
		e = d.event(eventID)
	case KindAttributeUpdate:
		e = d.attributeUpdate()
	case KindAttributeQuery, KindAttributeDelete:
		e = d.attributeNames(kind == KindAttributeDelete)
	case KindDeviceInfoUpdate:
		e = d.deviceInfo()
	case KindReply:
		e = d.reply()
	}
	if e != nil {
		req.Records = nil
		return req, e
	}
	return req, nil
}

type decoder struct {
	req      *Request
	root     map[string]any
	received time.Time
}

// header reads id and method.
func (d *decoder) header() *Error {
	switch id := d.root["id"].(type) {
	case nil:
	case string:
		if utf8.RuneCountInString(id) > MaxIDLen {
			return badParams("id is longer than %d characters", MaxIDLen)
		}
		d.req.ID = id
	default:
		if _, ok := number(id); !ok {
			return badParams("id must be a string or a number")
		}
		s := numberText(id)
		if len(s) > MaxIDLen {
			return badParams("id is longer than %d characters", MaxIDLen)
		}
		d.req.ID, d.req.IDIsNumber = s, true
	}
	switch m := d.root["method"].(type) {
	case nil:
	case string:
		d.req.Method = m
	default:
		return badParams("method must be a string")
	}
	return nil
}

// numberText renders a number as sent: a JSON literal as written, a CBOR
// integer in decimal, a CBOR float in its shortest form.
func numberText(v any) string {
	switch x := v.(type) {
	case interface{ String() string }: // json.Number
		return x.String()
	case uint64:
		return strconv.FormatUint(x, 10)
	case int64:
		return strconv.FormatInt(x, 10)
	case float32:
		return strconv.FormatFloat(float64(x), 'g', -1, 32)
	}
	f, _ := number(v)
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// params returns the "params" object.
func (d *decoder) params() (map[string]any, *Error) {
	p, ok := d.root["params"]
	if !ok || p == nil {
		return nil, badParams("params is missing")
	}
	m, ok := p.(map[string]any)
	if !ok {
		return nil, badParams("params must be an object")
	}
	return m, nil
}

// object returns obj[key] as an object; path names it in messages.
func object(obj map[string]any, key, path string) (map[string]any, *Error) {
	v, ok := obj[key]
	if !ok || v == nil {
		return nil, badParams("%s is missing", path)
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, badParams("%s must be an object", path)
	}
	return m, nil
}

// maxMillis is 9999-12-31T23:59:59.999Z.
const maxMillis = 253402300799999

// timeField returns obj["time"] as unix milliseconds, or def when absent.
func timeField(obj map[string]any, path string, def time.Time) (time.Time, *Error) {
	v, ok := obj["time"]
	if !ok || v == nil {
		return def, nil
	}
	f, ok := number(v)
	if !ok {
		return def, badParams("%s must be a number (unix milliseconds)", path)
	}
	if f < 0 || f > maxMillis {
		return def, badParams("%s must be unix milliseconds in 0..%d", path, int64(maxMillis))
	}
	return time.UnixMilli(int64(math.Trunc(f))).UTC(), nil
}

func checkName(name, what string) *Error {
	switch {
	case name == "":
		return badParams("%s name is empty", what)
	case utf8.RuneCountInString(name) > MaxNameLen:
		return badParams("%s name %s is longer than %d characters", what, quote(name), MaxNameLen)
	}
	return nil
}

// add appends a record, enforcing MaxRecords.
func (d *decoder) add(r Record) *Error {
	if len(d.req.Records) >= MaxRecords {
		return badParams("more than %d records in one request", MaxRecords)
	}
	d.req.Records = append(d.req.Records, r)
	return nil
}

// value normalizes a record's value; null is refused.
func value(v any, what, name string) (any, *Error) {
	if v == nil {
		return nil, badParams("%s %s: value is null", what, quote(name))
	}
	n, why := normalize(v)
	if why != "" {
		return nil, badParams("%s %s: %s", what, quote(name), why)
	}
	return n, nil
}

// points adds one record per entry of a measure point / property object.
// An entry is a plain value or the form {"value":v[,"time":ms][,"quality":q]}.
func (d *decoder) points(pts map[string]any, what string, def time.Time, pk, dk string) *Error {
	if len(d.req.Records)+len(pts) > MaxRecords {
		return badParams("more than %d records in one request", MaxRecords)
	}
	for _, name := range sortedKeys(pts) {
		if e := checkName(name, what); e != nil {
			return e
		}
		r := Record{Kind: RecordPoint, Name: name, Time: def, ProductKey: pk, DeviceKey: dk}
		raw := pts[name]
		if w, ok := wrapped(raw); ok {
			raw = w["value"]
			t, e := timeField(w, what+" "+quote(name)+" time", def)
			if e != nil {
				return e
			}
			r.Time = t
			if q, ok := w["quality"]; ok && q != nil {
				n, why := normalize(q)
				if why != "" {
					return badParams("%s %s: quality: %s", what, quote(name), why)
				}
				r.Quality = n
			}
		}
		v, e := value(raw, what, name)
		if e != nil {
			return e
		}
		r.Value = v
		if e := d.add(r); e != nil {
			return e
		}
	}
	return nil
}

// wrapped reports the {"value":v,"time":ms,"quality":q} form: an object with
// a "value" key and no keys but those three. Any other object is a value of
// its own (a struct-typed point).
func wrapped(v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, false
	}
	if _, ok := m["value"]; !ok {
		return nil, false
	}
	for k := range m {
		if k != "value" && k != "time" && k != "quality" {
			return nil, false
		}
	}
	return m, true
}

// measurePoints: params {"measurepoints":{…},"time":ms} (dialect E).
func (d *decoder) measurePoints() *Error {
	p, e := d.params()
	if e != nil {
		return e
	}
	pts, e := object(p, "measurepoints", "params.measurepoints")
	if e != nil {
		return e
	}
	t, e := timeField(p, "params.time", d.received)
	if e != nil {
		return e
	}
	return d.points(pts, "measure point", t, "", "")
}

// batch: params is an array of {"productKey":…,"deviceKey":…,
// "measurepoints":{…},"time":ms} (the platform's documented form), or an
// object whose "measurepoints" is such an array (its "time" is the default
// for the items) or a single measure point object.
func (d *decoder) batch() *Error {
	var (
		items []any
		def   = d.received
	)
	switch p := d.root["params"].(type) {
	case nil:
		return badParams("params is missing")
	case []any:
		items = p
	case map[string]any:
		var e *Error
		if def, e = timeField(p, "params.time", d.received); e != nil {
			return e
		}
		switch mp := p["measurepoints"].(type) {
		case []any:
			items = mp
		case map[string]any:
			items = []any{p}
		case nil:
			return badParams("params.measurepoints is missing")
		default:
			return badParams("params.measurepoints must be an array or an object")
		}
	default:
		return badParams("params must be an array of measure point objects")
	}
	if len(items) > MaxRecords {
		return badParams("more than %d records in one request", MaxRecords)
	}
	for i, it := range items {
		path := "params[" + strconv.Itoa(i) + "]"
		obj, ok := it.(map[string]any)
		if !ok {
			return badParams("%s must be an object", path)
		}
		pk, ok1 := optString(obj, "productKey")
		dk, ok2 := optString(obj, "deviceKey")
		if !ok1 || !ok2 {
			return badParams("%s: productKey and deviceKey must be strings", path)
		}
		pts, e := object(obj, "measurepoints", path+".measurepoints")
		if e != nil {
			return e
		}
		t, e := timeField(obj, path+".time", def)
		if e != nil {
			return e
		}
		if e := d.points(pts, "measure point", t, pk, dk); e != nil {
			return e
		}
	}
	return nil
}

func optString(obj map[string]any, key string) (string, bool) {
	switch v := obj[key].(type) {
	case nil:
		return "", true
	case string:
		return v, true
	}
	return "", false
}

// properties: params {"name":v or {"value":v,"time":ms},…} (dialect A).
func (d *decoder) properties() *Error {
	p, e := d.params()
	if e != nil {
		return e
	}
	return d.points(p, "property", d.received, "", "")
}

// event: params {"value":{…},"time":ms} (A) or {"events":{…},"time":ms}
// (E); without either, params less "time" is the event's output.
func (d *decoder) event(id string) *Error {
	if e := checkName(id, "event"); e != nil {
		return e
	}
	p, e := d.params()
	if e != nil {
		return e
	}
	t, e := timeField(p, "params.time", d.received)
	if e != nil {
		return e
	}
	var out any
	if v, ok := p["value"]; ok {
		out = v
	} else if v, ok := p["events"]; ok {
		out = v
	} else {
		rest := make(map[string]any, len(p))
		for k, v := range p {
			if k != "time" {
				rest[k] = v
			}
		}
		out = rest
	}
	v, e := value(out, "event", id)
	if e != nil {
		return e
	}
	return d.add(Record{Kind: RecordEvent, Name: id, Value: v, Time: t})
}

// attributeUpdate: params {"attributes":{"name":v,…}}.
func (d *decoder) attributeUpdate() *Error {
	p, e := d.params()
	if e != nil {
		return e
	}
	attrs, e := object(p, "attributes", "params.attributes")
	if e != nil {
		return e
	}
	if len(attrs) > MaxRecords {
		return badParams("more than %d records in one request", MaxRecords)
	}
	for _, name := range sortedKeys(attrs) {
		if e := checkName(name, "attribute"); e != nil {
			return e
		}
		v, e := value(attrs[name], "attribute", name)
		if e != nil {
			return e
		}
		if e := d.add(Record{Kind: RecordAttribute, Name: name, Value: v, Time: d.received}); e != nil {
			return e
		}
	}
	return nil
}

// attributeNames: params {"attributes":["a","b"]} (query, delete). A query
// without attributes asks for all of them; a delete must name them.
func (d *decoder) attributeNames(required bool) *Error {
	p, e := d.params()
	if e != nil {
		return e
	}
	raw, ok := p["attributes"]
	if !ok || raw == nil {
		if required {
			return badParams("params.attributes is missing")
		}
		return nil
	}
	names, ok := raw.([]any)
	if !ok {
		return badParams("params.attributes must be an array of names")
	}
	if len(names) > MaxRecords {
		return badParams("more than %d records in one request", MaxRecords)
	}
	for i, n := range names {
		name, ok := n.(string)
		if !ok {
			return badParams("params.attributes[%d] must be a string", i)
		}
		if e := checkName(name, "attribute"); e != nil {
			return e
		}
		if e := d.add(Record{Kind: RecordAttribute, Name: name, Time: d.received}); e != nil {
			return e
		}
	}
	return nil
}

// deviceInfo: params [{"attrKey":k,"attrValue":v[,"domain":…]},…] (A), or
// an object {"k":v,…}.
func (d *decoder) deviceInfo() *Error {
	switch p := d.root["params"].(type) {
	case nil:
		return badParams("params is missing")
	case map[string]any:
		if len(p) > MaxRecords {
			return badParams("more than %d records in one request", MaxRecords)
		}
		for _, name := range sortedKeys(p) {
			if e := d.infoEntry(name, p[name]); e != nil {
				return e
			}
		}
	case []any:
		if len(p) > MaxRecords {
			return badParams("more than %d records in one request", MaxRecords)
		}
		for i, it := range p {
			obj, ok := it.(map[string]any)
			if !ok {
				return badParams("params[%d] must be an object", i)
			}
			name, ok := obj["attrKey"].(string)
			if !ok {
				return badParams("params[%d].attrKey must be a string", i)
			}
			if e := d.infoEntry(name, obj["attrValue"]); e != nil {
				return e
			}
		}
	default:
		return badParams("params must be an array of {attrKey, attrValue} objects")
	}
	return nil
}

func (d *decoder) infoEntry(name string, v any) *Error {
	if e := checkName(name, "device info"); e != nil {
		return e
	}
	v, e := value(v, "device info", name)
	if e != nil {
		return e
	}
	return d.add(Record{Kind: RecordAttribute, Name: name, Value: v, Time: d.received})
}

// reply: {"id":…,"code":200,"data":…,"message":…} answering a downlink.
func (d *decoder) reply() *Error {
	r := &Reply{ID: d.req.ID}
	c, ok := d.root["code"]
	if !ok || c == nil {
		return badParams("code is missing")
	}
	f, ok := number(c)
	if !ok || f != math.Trunc(f) || math.Abs(f) > math.MaxInt32 {
		return badParams("code must be an integer")
	}
	r.Code = int(f)
	if data, ok := d.root["data"]; ok {
		v, why := normalize(data)
		if why != "" {
			return badParams("data: %s", why)
		}
		r.Data = v
	}
	switch m := d.root["message"].(type) {
	case nil:
	case string:
		r.Message = m
	default:
		return badParams("message must be a string")
	}
	d.req.Reply = r
	return nil
}

func sortedKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
