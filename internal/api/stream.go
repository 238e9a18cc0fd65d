package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/topic"
)

// Live stream tuning.
const (
	streamBatch         = 500              // log entries read per query
	streamHeartbeat     = 15 * time.Second // comment line that keeps proxies from closing an idle stream
	streamPoll          = time.Second      // re-read interval when the store has no Notifier
	streamWriteTimeout  = 30 * time.Second // a client that reads nothing for this long is dropped
	defaultMaxStreams   = 64
	maxStreamTopicCount = 16
)

// errTooManyStreams refuses a stream when Options.MaxStreams are open.
var errTooManyStreams = fmt.Errorf("%w: too many open streams, retry later", errUnavailable)

// streamFilter selects the log entries a stream client asked for.
type streamFilter struct {
	topics     []string // MQTT filters, any may match; never empty
	productKey string
	deviceKey  string
}

func (f *streamFilter) match(m *message.Message) bool {
	for _, tf := range f.topics {
		if topic.Match(tf, m.Topic) {
			return true
		}
	}
	return false
}

// stream serves GET /api/v1/stream as Server-Sent Events
// (https://html.spec.whatwg.org/multipage/server-sent-events.html): the
// message log (uplinks and, for filters naming $events, lifecycle events),
// filtered by MQTT topic filters (?topic=, repeatable; default "#") and
// optionally ?productKey= / ?deviceKey=. Each entry is one event whose id is
// its log ID, type "message" (uplink) or "event" ($events/...), and data the
// same JSON as GET /messages. A client that reconnects with Last-Event-ID
// (header, or ?lastEventId=) resumes right after that entry, so nothing is
// missed while it was away; without it the stream starts at the log's end.
// Because the stream reads the durable log by cursor, a slow client costs
// no server memory; it only falls behind.
func (s *server) stream(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	f := streamFilter{topics: q["topic"], productKey: q.Get("productKey"), deviceKey: q.Get("deviceKey")}
	if len(f.topics) == 0 {
		f.topics = []string{"#"}
	}
	if len(f.topics) > maxStreamTopicCount {
		return badRequest("at most %d topic filters", maxStreamTopicCount)
	}
	for _, tf := range f.topics {
		if err := topic.ValidFilter(tf); err != nil {
			return badRequest("topic filter %q: %v", tf, err)
		}
	}
	if f.deviceKey != "" && f.productKey == "" {
		return badRequest("deviceKey needs productKey")
	}
	cursor := int64(-1) // start at the end
	last := r.Header.Get("Last-Event-ID")
	if last == "" {
		last = q.Get("lastEventId")
	}
	if last != "" {
		id, err := strconv.ParseInt(last, 10, 64)
		if err != nil || id < 0 {
			return badRequest("Last-Event-ID %q: want a log id (a non-negative integer)", last)
		}
		cursor = id
	}

	select {
	case s.streams <- struct{}{}:
		defer func() { <-s.streams }()
	default:
		return errTooManyStreams
	}

	ctx := r.Context()
	if cursor < 0 {
		end, err := s.o.Messages.List(ctx, message.Query{Descending: true, Limit: 1, IncludeEvents: true})
		if err != nil {
			return &unavailableError{err: fmt.Errorf("stream: read log end: %w", err)}
		}
		cursor = 0
		if len(end) == 1 {
			cursor = end[0].ID
		}
	}

	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	s.log.Info("stream opened", "topics", f.topics, "productKey", f.productKey, "deviceKey", f.deviceKey, "from", cursor, "remote", r.RemoteAddr)
	defer s.log.Info("stream closed", "remote", r.RemoteAddr)

	sw := &sseWriter{w: w, rc: rc}
	sw.printf("retry: 2000\n\n")
	if err := sw.flush(); err != nil {
		return nil // client gone; nothing more to answer
	}
	for {
		var changed <-chan struct{}
		if s.o.Notify != nil {
			changed = s.o.Notify.Changed() // before reading: no commit is missed
		}
		n, err := s.streamBatch(ctx, sw, &f, &cursor)
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, errClientGone) {
				s.log.Warn("stream: read log", "err", err)
				sw.printf("event: error\ndata: {\"code\":%q,\"message\":\"log unavailable\"}\n\n", codeUnavailable)
				_ = sw.flush()
			}
			return nil
		}
		if n == streamBatch {
			continue // more is waiting
		}
		if err := s.waitLog(ctx, sw, changed); err != nil {
			return nil
		}
	}
}

// errClientGone ends a stream whose client stopped reading.
var errClientGone = errors.New("stream: client gone")

// streamBatch sends the matching entries of the next batch after *cursor
// and advances it past every entry read; it returns how many were read.
func (s *server) streamBatch(ctx context.Context, sw *sseWriter, f *streamFilter, cursor *int64) (int, error) {
	msgs, err := s.o.Messages.List(ctx, message.Query{
		ProductKey: f.productKey, DeviceKey: f.deviceKey,
		AfterID: *cursor, Limit: streamBatch, IncludeEvents: true,
	})
	if err != nil {
		return 0, err
	}
	sent := false
	for i := range msgs {
		m := &msgs[i]
		*cursor = m.ID
		if !f.match(m) {
			continue
		}
		data, err := json.Marshal(messageJSON(*m))
		if err != nil {
			return 0, fmt.Errorf("stream: encode entry %d: %w", m.ID, err)
		}
		typ := "message"
		if message.IsEvent(m.Topic) {
			typ = "event"
		}
		sw.printf("id: %d\nevent: %s\ndata: %s\n\n", m.ID, typ, data)
		sent = true
	}
	if sent {
		if err := sw.flush(); err != nil {
			return 0, errClientGone
		}
	}
	return len(msgs), nil
}

// waitLog blocks until the log may have grown (changed fires, or the poll
// interval passes when there is no notifier), sending heartbeats meanwhile.
func (s *server) waitLog(ctx context.Context, sw *sseWriter, changed <-chan struct{}) error {
	var poll <-chan time.Time
	if changed == nil {
		t := time.NewTimer(streamPoll)
		defer t.Stop()
		poll = t.C
	}
	hb := time.NewTimer(streamHeartbeat)
	defer hb.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-changed:
			return nil
		case <-poll:
			return nil
		case <-hb.C:
			sw.printf(": keepalive\n\n")
			if err := sw.flush(); err != nil {
				return errClientGone
			}
			hb.Reset(streamHeartbeat)
		}
	}
}

// sseWriter writes event-stream text, remembering the first write error,
// and flushes with a write deadline so a stuck client is dropped.
type sseWriter struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	err error
}

func (sw *sseWriter) printf(format string, args ...any) {
	if sw.err == nil {
		_, sw.err = fmt.Fprintf(sw.w, format, args...)
	}
}

func (sw *sseWriter) flush() error {
	if sw.err != nil {
		return sw.err
	}
	_ = sw.rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout)) // not all writers support it
	sw.err = sw.rc.Flush()
	return sw.err
}
