// Package commandtest is the conformance suite every command.Store adapter
// must pass. Command changes also enter the message log, so the store under
// test includes the adapter's message store.
package commandtest

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/message"
)

// Store is what the suite needs of an adapter.
type Store interface {
	command.Store
	message.Store
}

// Run runs the suite; newStore returns a new empty store per call.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Helper()
	for _, tt := range []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"CreateGet", testCreateGet},
		{"List", testList},
		{"NextPending", testNextPending},
		{"Lifecycle", testLifecycle},
		{"Cancel", testCancel},
		{"Expire", testExpire},
		{"PendingCounts", testPendingCounts},
		{"BadIDs", testBadIDs},
		{"ConcurrentDeliver", testConcurrentDeliver},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var base = time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)

func newCommand(dk, topic string, ttl time.Duration) *command.Command {
	return &command.Command{
		ProductKey: "pk", DeviceKey: dk, Topic: topic, Method: "thing.service.property.set",
		Params: json.RawMessage(`{"a":1}`), CreatedAt: base, ExpiresAt: base.Add(ttl),
	}
}

func mustCreate(t *testing.T, s Store, c *command.Command) {
	t.Helper()
	if err := s.CreateCommand(context.Background(), c); err != nil {
		t.Fatalf("CreateCommand: %v", err)
	}
}

// logStates returns the states of the command log entries of (pk, dk).
func logStates(t *testing.T, s Store, dk string) []string {
	t.Helper()
	ms, err := s.List(context.Background(), message.Query{ProductKey: "pk", DeviceKey: dk, IncludeEvents: true, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, m := range ms {
		if m.Topic != message.EventTopic("pk", dk, "command") {
			continue
		}
		var ev struct {
			CommandID, State string
		}
		if err := json.Unmarshal(m.Payload, &ev); err != nil {
			t.Fatalf("log payload %s: %v", m.Payload, err)
		}
		out = append(out, ev.CommandID+":"+ev.State)
	}
	return out
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func testCreateGet(t *testing.T, s Store) {
	ctx := context.Background()
	c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, c)
	if c.ID == "" || c.State != command.StatePending {
		t.Fatalf("after create: id %q state %q", c.ID, c.State)
	}
	raw := newCommand("d1", "/sys/pk/d1/thing/model/down_raw", time.Hour)
	raw.Method, raw.Params, raw.Raw = "", nil, []byte{0, 1, 2, 0xff}
	mustCreate(t, s, raw)
	if n1, _ := strconv.ParseInt(c.ID, 10, 64); func() int64 { n2, _ := strconv.ParseInt(raw.ID, 10, 64); return n2 }() <= n1 {
		t.Fatalf("ids not increasing: %s then %s", c.ID, raw.ID)
	}
	got, err := s.GetCommand(ctx, "pk", "d1", c.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Topic != c.Topic || got.Method != c.Method || string(got.Params) != `{"a":1}` || got.State != command.StatePending ||
		!got.CreatedAt.Equal(base) || !got.ExpiresAt.Equal(base.Add(time.Hour)) || !got.DeliveredAt.IsZero() || got.Raw != nil {
		t.Fatalf("GetCommand = %+v", got)
	}
	gr, err := s.GetCommand(ctx, "pk", "d1", raw.ID)
	if err != nil || string(gr.Raw) != "\x00\x01\x02\xff" || gr.Params != nil {
		t.Fatalf("raw command = %+v, %v", gr, err)
	}
	if _, err := s.GetCommand(ctx, "pk", "d2", c.ID); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("another device's command: %v, want ErrNotFound", err)
	}
	if want := []string{c.ID + ":pending", raw.ID + ":pending"}; !equal(logStates(t, s, "d1"), want) {
		t.Fatalf("log = %v, want %v", logStates(t, s, "d1"), want)
	}
}

func testList(t *testing.T, s Store) {
	ctx := context.Background()
	var ids []string
	for range 5 {
		c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
		mustCreate(t, s, c)
		ids = append(ids, c.ID)
	}
	mustCreate(t, s, newCommand("d2", "/sys/pk/d2/thing/service/property/set", time.Hour))
	if _, err := s.CancelCommand(ctx, "pk", "d1", ids[1], base); err != nil {
		t.Fatal(err)
	}
	all, err := s.ListCommands(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "d1"})
	if err != nil || len(all) != 5 || all[0].ID != ids[4] || all[4].ID != ids[0] {
		t.Fatalf("list all = %d, %v (want newest first)", len(all), err)
	}
	page, err := s.ListCommands(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "d1", Limit: 2})
	if err != nil || len(page) != 2 || page[1].ID != ids[3] {
		t.Fatalf("page 1 = %+v, %v", page, err)
	}
	before, _ := strconv.ParseInt(page[1].ID, 10, 64)
	page, err = s.ListCommands(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "d1", Limit: 2, Before: before})
	if err != nil || len(page) != 2 || page[0].ID != ids[2] || page[1].ID != ids[1] {
		t.Fatalf("page 2 = %+v, %v", page, err)
	}
	cancelled, err := s.ListCommands(ctx, command.ListQuery{ProductKey: "pk", DeviceKey: "d1", State: command.StateCancelled})
	if err != nil || len(cancelled) != 1 || cancelled[0].ID != ids[1] {
		t.Fatalf("cancelled = %+v, %v", cancelled, err)
	}
}

func testNextPending(t *testing.T, s Store) {
	ctx := context.Background()
	if _, err := s.NextPendingCommand(ctx, "pk", "d1", "", base); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("empty queue: %v", err)
	}
	short := newCommand("d1", "/sys/pk/d1/thing/service/a", time.Second)
	mustCreate(t, s, short)
	other := newCommand("d1", "/sys/pk/d1/thing/service/b", time.Hour)
	mustCreate(t, s, other)
	if c, err := s.NextPendingCommand(ctx, "pk", "d1", "", base); err != nil || c.ID != short.ID {
		t.Fatalf("next = %v, %v; want the oldest", c.ID, err)
	}
	if c, err := s.NextPendingCommand(ctx, "pk", "d1", other.Topic, base); err != nil || c.ID != other.ID {
		t.Fatalf("next of topic = %v, %v", c.ID, err)
	}
	// The oldest has expired by then: the next unexpired one comes.
	if c, err := s.NextPendingCommand(ctx, "pk", "d1", "", base.Add(time.Minute)); err != nil || c.ID != other.ID {
		t.Fatalf("next after expiry = %v, %v", c.ID, err)
	}
}

func testLifecycle(t *testing.T, s Store) {
	ctx := context.Background()
	c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, c)
	d, err := s.MarkCommandDelivered(ctx, c.ID, command.ViaPush, base.Add(time.Second))
	if err != nil || d.State != command.StateDelivered || d.DeliveredVia != command.ViaPush || d.Attempts != 1 ||
		!d.DeliveredAt.Equal(base.Add(time.Second)) {
		t.Fatalf("delivered = %+v, %v", d, err)
	}
	if _, err := s.MarkCommandDelivered(ctx, c.ID, command.ViaGet, base.Add(2*time.Second)); !errors.Is(err, command.ErrState) {
		t.Fatalf("deliver twice: %v, want ErrState", err)
	}
	if _, err := s.CompleteCommand(ctx, "pk", "d2", command.Reply{ID: c.ID, Code: 200}, base); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("reply from another device: %v, want ErrNotFound", err)
	}
	tr, err := s.CompleteCommand(ctx, "pk", "d1", command.Reply{ID: c.ID, Code: 200, Data: json.RawMessage(`{"ok":true}`), Message: "success"}, base.Add(3*time.Second))
	if err != nil || tr.From != command.StateDelivered || tr.State != command.StateReplied || string(tr.ReplyData) != `{"ok":true}` {
		t.Fatalf("complete = %+v, %v", tr, err)
	}
	got, err := s.GetCommand(ctx, "pk", "d1", c.ID)
	if err != nil || got.State != command.StateReplied || got.ReplyCode != 200 || got.ReplyMessage != "success" ||
		!got.RepliedAt.Equal(base.Add(3*time.Second)) || got.DeliveredVia != command.ViaPush {
		t.Fatalf("stored = %+v, %v", got, err)
	}
	if _, err := s.CompleteCommand(ctx, "pk", "d1", command.Reply{ID: c.ID, Code: 200}, base); !errors.Is(err, command.ErrState) {
		t.Fatalf("second reply: %v, want ErrState", err)
	}
	// A failed reply of a pending (never delivered) command.
	f := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, f)
	tr, err = s.CompleteCommand(ctx, "pk", "d1", command.Reply{ID: f.ID, Code: 500, Message: "nope"}, base.Add(4*time.Second))
	if err != nil || tr.From != command.StatePending || tr.State != command.StateFailed || tr.DeliveredAt.IsZero() {
		t.Fatalf("failed reply = %+v, %v", tr, err)
	}
	want := []string{c.ID + ":pending", c.ID + ":delivered", c.ID + ":replied", f.ID + ":pending", f.ID + ":failed"}
	if got := logStates(t, s, "d1"); !equal(got, want) {
		t.Fatalf("log = %v, want %v", got, want)
	}
}

func testCancel(t *testing.T, s Store) {
	ctx := context.Background()
	c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, c)
	if _, err := s.CancelCommand(ctx, "pk", "d2", c.ID, base); !errors.Is(err, command.ErrNotFound) {
		t.Fatalf("cancel via another device: %v", err)
	}
	got, err := s.CancelCommand(ctx, "pk", "d1", c.ID, base)
	if err != nil || got.State != command.StateCancelled {
		t.Fatalf("cancel = %+v, %v", got, err)
	}
	if _, err := s.CancelCommand(ctx, "pk", "d1", c.ID, base); !errors.Is(err, command.ErrState) {
		t.Fatalf("cancel twice: %v, want ErrState", err)
	}
	if _, err := s.MarkCommandDelivered(ctx, c.ID, command.ViaGet, base); !errors.Is(err, command.ErrState) {
		t.Fatalf("deliver cancelled: %v, want ErrState", err)
	}
}

func testExpire(t *testing.T, s Store) {
	ctx := context.Background()
	var short []*command.Command
	for i := range 3 {
		c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Duration(i+1)*time.Second)
		mustCreate(t, s, c)
		short = append(short, c)
	}
	long := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, long)
	if _, err := s.MarkCommandDelivered(ctx, short[2].ID, command.ViaGet, base); err != nil {
		t.Fatal(err)
	}
	got, err := s.ExpireCommands(ctx, base.Add(time.Minute), 2)
	if err != nil || len(got) != 2 || got[0].ID != short[0].ID || got[0].State != command.StateExpired || got[0].From != command.StatePending {
		t.Fatalf("expire (limit 2) = %+v, %v", got, err)
	}
	got, err = s.ExpireCommands(ctx, base.Add(time.Minute), 10)
	if err != nil || len(got) != 1 || got[0].ID != short[2].ID || got[0].From != command.StateDelivered {
		t.Fatalf("expire rest = %+v, %v", got, err)
	}
	if got, err := s.ExpireCommands(ctx, base.Add(time.Minute), 10); err != nil || len(got) != 0 {
		t.Fatalf("expire again = %+v, %v", got, err)
	}
	if c, _ := s.GetCommand(ctx, "pk", "d1", long.ID); c.State != command.StatePending {
		t.Fatalf("long command %s", c.State)
	}
}

func testPendingCounts(t *testing.T, s Store) {
	ctx := context.Background()
	for range 2 {
		mustCreate(t, s, newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour))
	}
	mustCreate(t, s, newCommand("d2", "/sys/pk/d2/thing/service/property/set", time.Hour))
	mustCreate(t, s, newCommand("d3", "/sys/pk/d3/thing/service/property/set", time.Second)) // expired at the count
	d := newCommand("d4", "/sys/pk/d4/thing/service/property/set", time.Hour)
	mustCreate(t, s, d)
	if _, err := s.MarkCommandDelivered(ctx, d.ID, command.ViaGet, base); err != nil {
		t.Fatal(err)
	}
	got, err := s.PendingCommandCounts(ctx, base.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := map[command.DeviceKey]int{{ProductKey: "pk", DeviceKey: "d1"}: 2, {ProductKey: "pk", DeviceKey: "d2"}: 1}
	if len(got) != len(want) {
		t.Fatalf("counts = %v, want %v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Fatalf("counts = %v, want %v", got, want)
		}
	}
}

func testBadIDs(t *testing.T, s Store) {
	ctx := context.Background()
	for _, id := range []string{"", "0", "-1", "01", "x", "99999999"} {
		if _, err := s.GetCommand(ctx, "pk", "d1", id); !errors.Is(err, command.ErrNotFound) {
			t.Errorf("GetCommand(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := s.MarkCommandDelivered(ctx, id, command.ViaGet, base); !errors.Is(err, command.ErrNotFound) {
			t.Errorf("MarkCommandDelivered(%q) = %v, want ErrNotFound", id, err)
		}
		if _, err := s.CancelCommand(ctx, "pk", "d1", id, base); !errors.Is(err, command.ErrNotFound) {
			t.Errorf("CancelCommand(%q) = %v, want ErrNotFound", id, err)
		}
	}
}

// testConcurrentDeliver: of many concurrent deliveries of one command,
// exactly one succeeds.
func testConcurrentDeliver(t *testing.T, s Store) {
	ctx := context.Background()
	c := newCommand("d1", "/sys/pk/d1/thing/service/property/set", time.Hour)
	mustCreate(t, s, c)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		ok, errs int
	)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.MarkCommandDelivered(ctx, c.ID, command.ViaPush, base)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil:
				ok++
			case errors.Is(err, command.ErrState):
				errs++
			default:
				t.Errorf("deliver: %v", err)
			}
		}()
	}
	wg.Wait()
	if ok != 1 || errs != 7 {
		t.Fatalf("%d deliveries succeeded, %d refused; want 1 and 7", ok, errs)
	}
}
