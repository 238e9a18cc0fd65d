package command_test

import (
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func openStore(t *testing.T) *sqlitestore.Store {
	t.Helper()
	s, err := sqlitestore.Open(context.Background(), filepath.Join(t.TempDir(), "db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func newQueue(t *testing.T, s command.Store, clk *clock, p command.Pusher) *command.Queue {
	t.Helper()
	q, err := command.NewQueue(context.Background(), command.Options{Store: s, Pusher: p, Now: clk.now})
	if err != nil {
		t.Fatal(err)
	}
	return q
}

// commandEvents returns the states of the command events in the log, in order.
func commandEvents(t *testing.T, s *sqlitestore.Store, pk, dk string) []string {
	t.Helper()
	msgs, err := s.List(context.Background(), message.Query{ProductKey: pk, DeviceKey: dk, IncludeEvents: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range msgs {
		if m.Topic != message.EventTopic(pk, dk, "command") {
			continue
		}
		var ev struct{ CommandID, State string }
		if err := json.Unmarshal(m.Payload, &ev); err != nil || m.Transport != message.TransportEvent || m.ContentFormat != 50 {
			t.Fatalf("event %+v: %v", m, err)
		}
		out = append(out, ev.CommandID+":"+ev.State)
	}
	return out
}

func TestQueueLifecycle(t *testing.T) {
	ctx := context.Background()
	s := openStore(t)
	clk := &clock{t: time.Unix(1_700_000_000, 0).UTC()}
	q := newQueue(t, s, clk, nil)

	if q.HasPending("pk", "dk") {
		t.Fatal("pending before any command")
	}
	a, err := q.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"light": 1}`)}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if a.Topic != "/sys/pk/dk/thing/service/property/set" || a.State != command.StatePending || !a.ExpiresAt.Equal(clk.now().Add(24*time.Hour)) {
		t.Fatalf("created %+v", a)
	}
	clk.add(time.Millisecond)
	b, err := q.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindInvokeService, Service: "reboot"}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if !q.HasPending("pk", "dk") || q.HasPending("pk", "other") || q.PendingTotal() != 2 {
		t.Fatal("HasPending not maintained on create")
	}
	// Oldest first.
	if top, _ := q.NextTopic(ctx, "pk", "dk", clk.now()); top != a.Topic {
		t.Fatalf("next topic %q, want %q", top, a.Topic)
	}
	// Delivery by topic; next names the other command.
	got, next, err := q.Deliver(ctx, "pk", "dk", a.Topic, clk.now())
	if err != nil || got.ID != a.ID || got.State != command.StateDelivered || got.DeliveredVia != command.ViaGet || next != b.Topic {
		t.Fatalf("deliver: %+v next %q err %v", got, next, err)
	}
	if _, _, err := q.Deliver(ctx, "pk", "dk", a.Topic, clk.now()); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("second deliver of the same topic: %v", err)
	}
	body, _ := got.Payload(false)
	if want := `{"id":"` + a.ID + `","version":"1.0","method":"thing.service.property.set","params":{"light":1}}`; string(body) != want {
		t.Fatalf("payload %s, want %s", body, want)
	}
	// A reply from another device does not touch it.
	if _, err := q.Reply(ctx, "pk", "other", command.Reply{ID: a.ID, Code: 200}, clk.now()); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("foreign reply: %v", err)
	}
	done, err := q.Reply(ctx, "pk", "dk", command.Reply{ID: a.ID, Code: 200, Data: json.RawMessage(`{"light":1}`), Message: "success"}, clk.now())
	if err != nil || done.State != command.StateReplied || string(done.ReplyData) != `{"light":1}` {
		t.Fatalf("reply: %+v %v", done, err)
	}
	if _, err := q.Reply(ctx, "pk", "dk", command.Reply{ID: a.ID, Code: 200}, clk.now()); !errors.Is(err, command.ErrState) {
		t.Fatalf("second reply: %v", err)
	}
	// Cancel only while pending.
	if _, err := q.Cancel(ctx, "pk", "dk", a.ID); !errors.Is(err, command.ErrState) {
		t.Fatalf("cancel replied: %v", err)
	}
	// Expiry: b's TTL passes; it is never delivered afterwards.
	clk.add(time.Minute)
	if _, _, err := q.Deliver(ctx, "pk", "dk", b.Topic, clk.now()); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("deliver after expiry: %v", err)
	}
	if top, _ := q.NextTopic(ctx, "pk", "dk", clk.now()); top != "" {
		t.Fatalf("next topic after expiry %q", top)
	}
	if n, err := q.ExpireDue(ctx, clk.now()); n != 1 || err != nil {
		t.Fatalf("expire: %d %v", n, err)
	}
	if q.HasPending("pk", "dk") {
		t.Fatal("HasPending after expiry")
	}
	if c, _ := q.Get(ctx, "pk", "dk", b.ID); c.State != command.StateExpired {
		t.Fatalf("b is %s", c.State)
	}
	want := []string{a.ID + ":pending", b.ID + ":pending", a.ID + ":delivered", a.ID + ":replied", b.ID + ":expired"}
	if got := commandEvents(t, s, "pk", "dk"); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("log events %v, want %v", got, want)
	}
	// A new queue (restart) loads counts from the store.
	c, _ := q.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindRawDown, Raw: []byte{1, 2}}, time.Hour)
	if q2 := newQueue(t, s, clk, nil); !q2.HasPending("pk", "dk") || q2.PendingTotal() != 1 {
		t.Fatal("restart lost the pending count")
	}
	if _, err := q.Cancel(ctx, "pk", "dk", c.ID); err != nil || q.HasPending("pk", "dk") {
		t.Fatalf("cancel: %v", err)
	}
	list, err := q.List(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "dk", Limit: 2})
	if err != nil || len(list) != 2 || list[0].ID != c.ID || list[0].State != command.StateCancelled || string(list[0].Raw) != "\x01\x02" {
		t.Fatalf("list newest first: %+v %v", list, err)
	}
	if l, _ := q.List(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "dk", State: command.StateReplied}); len(l) != 1 || l[0].ID != a.ID {
		t.Fatalf("state filter: %+v", l)
	}
}

func TestQueueValidation(t *testing.T) {
	q := newQueue(t, openStore(t), &clock{t: time.Unix(1, 0)}, nil)
	ctx := context.Background()
	bad := []struct {
		name string
		s    command.Spec
		ttl  time.Duration
	}{
		{"unknown type", command.Spec{Kind: "reboot"}, 0},
		{"params not an object", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`[1]`)}, 0},
		{"service missing", command.Spec{Kind: command.KindInvokeService}, 0},
		{"service with slash", command.Spec{Kind: command.KindInvokeService, Service: "a/b"}, 0},
		{"raw without bytes", command.Spec{Kind: command.KindRawDown}, 0},
		{"raw on a service", command.Spec{Kind: command.KindSetProperties, Raw: []byte{1}}, 0},
		{"ttl over max", command.Spec{Kind: command.KindSetProperties}, 8 * 24 * time.Hour},
		{"ttl below 1s", command.Spec{Kind: command.KindSetProperties}, time.Millisecond},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := q.Create(ctx, "pk", "dk", tt.s, tt.ttl); !errors.Is(err, command.ErrInvalid) {
				t.Fatalf("err %v, want ErrInvalid", err)
			}
		})
	}
	if q.HasPending("pk", "dk") {
		t.Fatal("a refused command counts as pending")
	}
}

func TestParseReply(t *testing.T) {
	tests := []struct {
		name, body string
		cbor       bool
		want       command.Reply
		ok         bool
	}{
		{"string id", `{"id":"12","code":200,"data":{"a":1},"message":"success"}`, false, command.Reply{ID: "12", Code: 200, Data: json.RawMessage(`{"a":1}`), Message: "success"}, true},
		{"number id", `{"id":12,"code":460,"message":"bad"}`, false, command.Reply{ID: "12", Code: 460, Message: "bad"}, true},
		{"cbor", "\xa3\x62id\x62\x31\x32\x64code\x18\xc8\x64data\xa1\x61a\x01", true, command.Reply{ID: "12", Code: 200, Data: json.RawMessage(`{"a":1}`)}, true},
		{"no id", `{"code":200}`, false, command.Reply{}, false},
		{"code not a number", `{"id":"1","code":"x"}`, false, command.Reply{}, false},
		{"not json", `{`, false, command.Reply{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := command.ParseReply([]byte(tt.body), tt.cbor)
			if (err == nil) != tt.ok {
				t.Fatalf("err %v", err)
			}
			if tt.ok && (got.ID != tt.want.ID || got.Code != tt.want.Code || string(got.Data) != string(tt.want.Data) || got.Message != tt.want.Message) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestReplyRequestTopic(t *testing.T) {
	for topic, want := range map[string]string{
		"/sys/p/d/thing/service/property/set_reply":     "/sys/p/d/thing/service/property/set",
		"/sys/p/d/thing/service/measurepoint/set_reply": "/sys/p/d/thing/service/measurepoint/set",
		"/sys/p/d/thing/service/reboot_reply":           "/sys/p/d/thing/service/reboot",
		"/sys/p/d/thing/model/down_raw_reply":           "/sys/p/d/thing/model/down_raw",
		"/sys/p/d/thing/event/property/post_reply":      "",
		"/sys/p/d/thing/service/property/set":           "",
	} {
		got, ok := command.ReplyRequestTopic(topic)
		if got != want || ok != (want != "") {
			t.Errorf("%s: %q %v, want %q", topic, got, ok, want)
		}
	}
}

// fakePusher records pushes and answers with err (a real device is in the
// e2e tests; this checks the queue's bookkeeping around the outcome).
type fakePusher struct {
	err   error
	reply bool
	got   chan command.Command
}

func (p *fakePusher) Push(_ context.Context, c command.Command) (*command.Reply, error) {
	p.got <- c
	if p.reply && p.err == nil {
		return &command.Reply{ID: c.ID, Code: 200, Message: "success"}, nil
	}
	return nil, p.err
}

func TestQueuePush(t *testing.T) {
	for _, tt := range []struct {
		name  string
		err   error
		reply bool
		want  command.State
	}{
		{"acked", nil, false, command.StateDelivered},
		{"acked with reply", nil, true, command.StateReplied},
		{"timeout leaves it pending", errors.New("timeout"), false, command.StatePending},
		{"not live", command.ErrNotLive, false, command.StatePending},
	} {
		t.Run(tt.name, func(t *testing.T) {
			s := openStore(t)
			p := &fakePusher{err: tt.err, reply: tt.reply, got: make(chan command.Command, 1)}
			q := newQueue(t, s, &clock{t: time.Now()}, p)
			// The push worker reports when it has finished with a command
			// (store and in-memory count both updated): the assertions
			// below run after that, never between the two.
			pushed := make(chan command.Command, 1)
			command.SetPushedHook(q, func(c command.Command) { pushed <- c })
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { q.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()
			c, err := q.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindSetMeasurepoints, Params: json.RawMessage(`{"measurepoints":{"x":1}}`)}, 0)
			if err != nil {
				t.Fatal(err)
			}
			if got := <-p.got; got.ID != c.ID {
				t.Fatalf("pushed %s, want %s", got.ID, c.ID)
			}
			if got := <-pushed; got.ID != c.ID {
				t.Fatalf("push finished for %s, want %s", got.ID, c.ID)
			}
			got, err := q.Get(ctx, "pk", "dk", c.ID)
			if err != nil {
				t.Fatal(err)
			}
			st := got.State
			if st != tt.want {
				t.Fatalf("state %s, want %s", st, tt.want)
			}
			if q.HasPending("pk", "dk") != (tt.want == command.StatePending) {
				t.Fatalf("HasPending %v in state %s", q.HasPending("pk", "dk"), st)
			}
		})
	}
}
