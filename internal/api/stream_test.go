package api

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

type sseEvent struct {
	id, typ string
	data    Message
}

// sseClient reads events from an open stream.
type sseClient struct {
	t    *testing.T
	resp *http.Response
	r    *bufio.Reader
}

func openStream(t *testing.T, srv *httptest.Server, key, query, lastID string) (*sseClient, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+Prefix+"/stream?"+query, nil)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if lastID != "" {
		req.Header.Set("Last-Event-ID", lastID)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { resp.Body.Close() })
	if resp.StatusCode != http.StatusOK {
		return nil, resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	return &sseClient{t: t, resp: resp, r: bufio.NewReader(resp.Body)}, resp.StatusCode
}

// next returns the next event, skipping comments and the retry field.
func (c *sseClient) next() sseEvent {
	c.t.Helper()
	done := make(chan sseEvent, 1)
	go func() {
		var ev sseEvent
		for {
			line, err := c.r.ReadString('\n')
			if err != nil {
				close(done)
				return
			}
			line = strings.TrimSuffix(line, "\n")
			switch {
			case line == "" && ev.id != "":
				done <- ev
				return
			case strings.HasPrefix(line, "id: "):
				ev.id = line[4:]
			case strings.HasPrefix(line, "event: "):
				ev.typ = line[7:]
			case strings.HasPrefix(line, "data: "):
				if err := json.Unmarshal([]byte(line[6:]), &ev.data); err != nil {
					c.t.Errorf("data %q: %v", line, err)
				}
			}
		}
	}()
	select {
	case ev, ok := <-done:
		if !ok {
			c.t.Fatal("stream ended")
		}
		return ev
	case <-time.After(10 * time.Second):
		c.t.Fatal("no event within 10s")
	}
	panic("unreachable")
}

func TestStream(t *testing.T) {
	ctx := context.Background()
	st, err := sqlitestore.Open(ctx, filepath.Join(t.TempDir(), "coapgate.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	secret, k, _ := apikey.New("test", testNow)
	if err := st.CreateAPIKey(ctx, k); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(New(Options{Registry: st, Messages: st, Keys: st, Notify: st, MaxStreams: 3}))
	t.Cleanup(srv.Close) // runs after the streams' cancels (cleanups are LIFO)

	up := func(dk string) int64 {
		m := &message.Message{ProductKey: "pk", DeviceKey: dk, Topic: "/sys/pk/" + dk + "/thing/event/property/post",
			Payload: []byte(`{"id":"1","params":{"t":1}}`), ContentFormat: 50, ReceivedAt: testNow, Transport: message.TransportCoAP}
		if err := st.Append(ctx, []*message.Message{m}); err != nil {
			t.Fatal(err)
		}
		return m.ID
	}
	a1, _, a2 := up("d1"), up("d2"), up("d1")
	if err := st.AppendEvents(ctx, []event.Event{{ProductKey: "pk", DeviceKey: "d1", Type: event.Online, At: testNow}}); err != nil {
		t.Fatal(err)
	}

	// Resume from the beginning, one device, uplinks only.
	c, _ := openStream(t, srv, secret, "topic=/sys/%2B/%2B/thing/%23&productKey=pk&deviceKey=d1", "0")
	for _, want := range []int64{a1, a2} {
		ev := c.next()
		if ev.id != strconv.FormatInt(want, 10) || ev.typ != "message" || ev.data.DeviceKey != "d1" || string(ev.data.Payload) != `{"id":"1","params":{"t":1}}` {
			t.Fatalf("got %+v, want id %d", ev, want)
		}
	}
	// Live: a new uplink arrives through the notifier.
	a3 := up("d1")
	if ev := c.next(); ev.id != strconv.FormatInt(a3, 10) {
		t.Fatalf("live: got %+v, want id %d", ev, a3)
	}

	// Events are only for filters naming $events; resumable after a given id.
	e, _ := openStream(t, srv, secret, "topic=%24events/%23", strconv.FormatInt(a1, 10))
	if ev := e.next(); ev.typ != "event" || ev.data.Topic != "$events/pk/d1/online" {
		t.Fatalf("event stream: %+v", ev)
	}

	// No Last-Event-ID: starts at the end of the log.
	tail, _ := openStream(t, srv, secret, "", "")
	a4 := up("d2")
	if ev := tail.next(); ev.id != strconv.FormatInt(a4, 10) || ev.data.DeviceKey != "d2" {
		t.Fatalf("tail: got %+v, want id %d", ev, a4)
	}

	// Bounded: three open, the fourth is refused.
	if _, code := openStream(t, srv, secret, "", ""); code != http.StatusServiceUnavailable {
		t.Fatalf("fourth stream: status %d, want 503", code)
	}
	for q, want := range map[string]int{
		"topic=a/%23/b":  http.StatusBadRequest,
		"deviceKey=d1":   http.StatusBadRequest,
		"lastEventId=-1": http.StatusBadRequest,
	} {
		if _, code := openStream(t, srv, secret, q, ""); code != want {
			t.Errorf("%s: status %d, want %d", q, code, want)
		}
	}
	if _, code := openStream(t, srv, "", "", ""); code != http.StatusUnauthorized {
		t.Errorf("no key: status %d", code)
	}
}
