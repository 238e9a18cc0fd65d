// Package forwardtest is the conformance suite every forward.Store adapter
// must pass: rules, their per-action cursors and dead letters.
package forwardtest

import (
	"context"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/forward"
)

// Run runs the suite; newStore returns a new empty store per call.
func Run(t *testing.T, newStore func(t *testing.T) forward.Store) {
	t.Helper()
	for _, tt := range []struct {
		name string
		fn   func(t *testing.T, s forward.Store)
	}{
		{"RuleRoundTrip", testRuleRoundTrip},
		{"RuleNotFound", testRuleNotFound},
		{"ListRules", testListRules},
		{"UpdateKeepsCursors", testUpdateKeepsCursors},
		{"Progress", testProgress},
		{"DeadLetters", testDeadLetters},
		{"DeleteCascades", testDeleteCascades},
	} {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var base = time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)

func rule(id string, actions int) forward.Rule {
	qos := 1
	r := forward.Rule{ID: id, Name: "rule " + id, Enabled: true, TopicFilter: "/sys/+/+/thing/#",
		ProductKey: "pk", DeviceKey: "", Condition: `payload.t > 1`, MaxAttempts: 5,
		CreatedAt: base, UpdatedAt: base}
	for i := range actions {
		switch i % 2 {
		case 0:
			r.Actions = append(r.Actions, forward.Action{Type: forward.ActionWebhook, URL: "http://127.0.0.1:9/hook",
				Secret: "whsec-" + id, Headers: map[string]string{"Authorization": "Bearer x"}, Timeout: forward.Duration(2 * time.Second)})
		default:
			r.Actions = append(r.Actions, forward.Action{Type: forward.ActionMQTT, URL: "tcp://127.0.0.1:1883",
				Topic: "out/{pk}", QoS: &qos, Username: "u", Password: "p-" + id})
		}
	}
	return r
}

func mustCreate(t *testing.T, s forward.Store, r forward.Rule, cursor int64) {
	t.Helper()
	if err := s.CreateRule(context.Background(), r, cursor); err != nil {
		t.Fatalf("CreateRule: %v", err)
	}
}

func cursors(t *testing.T, s forward.Store, id string) []forward.CursorState {
	t.Helper()
	cs, err := s.Cursors(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return cs
}

func testRuleRoundTrip(t *testing.T, s forward.Store) {
	r := rule("r1", 2)
	mustCreate(t, s, r, 42)
	got, err := s.GetRule(context.Background(), "r1")
	if err != nil {
		t.Fatal(err)
	}
	if !got.CreatedAt.Equal(base) || !got.UpdatedAt.Equal(base) {
		t.Fatalf("times %v %v", got.CreatedAt, got.UpdatedAt)
	}
	got.CreatedAt, got.UpdatedAt = r.CreatedAt, r.UpdatedAt
	a, _ := json.Marshal(got)
	b, _ := json.Marshal(r)
	if string(a) != string(b) {
		t.Fatalf("round trip:\n got %s\nwant %s", a, b)
	}
	cs := cursors(t, s, "r1")
	if len(cs) != 2 || cs[0].Action != 0 || cs[1].Action != 1 || cs[0].Cursor != 42 || cs[1].Cursor != 42 {
		t.Fatalf("cursors = %+v", cs)
	}
	if err := s.CreateRule(context.Background(), r, 0); err == nil {
		t.Fatal("duplicate rule id accepted")
	}
}

func testRuleNotFound(t *testing.T, s forward.Store) {
	ctx := context.Background()
	if _, err := s.GetRule(ctx, "nope"); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("GetRule = %v", err)
	}
	if err := s.UpdateRule(ctx, rule("nope", 1), 0); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("UpdateRule = %v", err)
	}
	if err := s.DeleteRule(ctx, "nope"); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("DeleteRule = %v", err)
	}
	if err := s.AddDeadLetter(ctx, &forward.DeadLetter{RuleID: "nope", Envelope: json.RawMessage(`{}`)}); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("AddDeadLetter = %v", err)
	}
	if _, err := s.GetDeadLetter(ctx, "nope", 1); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("GetDeadLetter = %v", err)
	}
	if err := s.DeleteDeadLetter(ctx, "nope", 1); !errors.Is(err, forward.ErrNotFound) {
		t.Errorf("DeleteDeadLetter = %v", err)
	}
	// SaveProgress of a deleted rule is not an error.
	if err := s.SaveProgress(ctx, "nope", 0, forward.Progress{Cursor: 5}); err != nil {
		t.Errorf("SaveProgress = %v", err)
	}
}

func testListRules(t *testing.T, s forward.Store) {
	rs, err := s.ListRules(context.Background())
	if err != nil || rs == nil || len(rs) != 0 {
		t.Fatalf("empty list = %#v, %v; want empty non-nil", rs, err)
	}
	for _, id := range []string{"b", "c", "a"} {
		mustCreate(t, s, rule(id, 1), 0)
	}
	rs, err = s.ListRules(context.Background())
	if err != nil || len(rs) != 3 || rs[0].ID != "a" || rs[1].ID != "b" || rs[2].ID != "c" {
		t.Fatalf("list = %+v, %v", rs, err)
	}
	if rs[0].Actions[0].Secret != "whsec-a" {
		t.Fatalf("listed rule lost its action secret: %+v", rs[0].Actions[0])
	}
}

func testUpdateKeepsCursors(t *testing.T, s forward.Store) {
	ctx := context.Background()
	mustCreate(t, s, rule("r", 3), 10)
	if err := s.SaveProgress(ctx, "r", 0, forward.Progress{Cursor: 20, Delivered: 3}); err != nil {
		t.Fatal(err)
	}
	for a := range 3 {
		if err := s.AddDeadLetter(ctx, &forward.DeadLetter{RuleID: "r", Action: a, LogID: 11, Topic: "/t",
			Envelope: json.RawMessage(`{"a":1}`), LastError: "x", Attempts: 1, CreatedAt: base, UpdatedAt: base}); err != nil {
			t.Fatal(err)
		}
	}
	// Two actions now; the third's cursor and dead letter go, the first keeps its cursor.
	r := rule("r", 2)
	r.Name, r.Enabled, r.UpdatedAt = "renamed", false, base.Add(time.Hour)
	if err := s.UpdateRule(ctx, r, 99); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetRule(ctx, "r")
	if err != nil || got.Name != "renamed" || got.Enabled || len(got.Actions) != 2 || !got.UpdatedAt.Equal(base.Add(time.Hour)) {
		t.Fatalf("updated rule = %+v, %v", got, err)
	}
	cs := cursors(t, s, "r")
	if len(cs) != 2 || cs[0].Cursor != 20 || cs[0].Delivered != 3 || cs[1].Cursor != 10 {
		t.Fatalf("cursors after shrink = %+v", cs)
	}
	dls, err := s.ListDeadLetters(ctx, "r", 0, 0)
	if err != nil || len(dls) != 2 {
		t.Fatalf("dead letters after shrink = %+v, %v", dls, err)
	}
	// Grow to four: new positions start at the given cursor.
	if err := s.UpdateRule(ctx, rule("r", 4), 77); err != nil {
		t.Fatal(err)
	}
	cs = cursors(t, s, "r")
	if len(cs) != 4 || cs[0].Cursor != 20 || cs[1].Cursor != 10 || cs[2].Cursor != 77 || cs[3].Cursor != 77 {
		t.Fatalf("cursors after grow = %+v", cs)
	}
}

func testProgress(t *testing.T, s forward.Store) {
	ctx := context.Background()
	mustCreate(t, s, rule("r", 1), 5)
	steps := []forward.Progress{
		{Cursor: 10, Delivered: 4},
		{Cursor: 8, Failures: 2, LastError: "boom", LastErrorAt: base}, // cursor does not move back
		{Cursor: 12, Delivered: 1, DeadLetters: 1},                     // last error kept
	}
	for _, p := range steps {
		if err := s.SaveProgress(ctx, "r", 0, p); err != nil {
			t.Fatal(err)
		}
	}
	want := forward.CursorState{Action: 0, Cursor: 12, Delivered: 5, Failures: 2, DeadLetters: 1, LastError: "boom", LastErrorAt: base}
	cs := cursors(t, s, "r")
	if len(cs) != 1 || !cs[0].LastErrorAt.Equal(want.LastErrorAt) {
		t.Fatalf("cursor = %+v, want %+v", cs, want)
	}
	cs[0].LastErrorAt = want.LastErrorAt
	if !reflect.DeepEqual(cs[0], want) {
		t.Fatalf("cursor = %+v, want %+v", cs[0], want)
	}
}

func testDeadLetters(t *testing.T, s forward.Store) {
	ctx := context.Background()
	mustCreate(t, s, rule("r", 1), 0)
	mustCreate(t, s, rule("other", 1), 0)
	var ids []int64
	for i := range 5 {
		dl := &forward.DeadLetter{RuleID: "r", Action: 0, LogID: int64(100 + i), Topic: "/sys/pk/dk/x",
			Envelope: json.RawMessage(`{"id":` + string(rune('0'+i)) + `}`), LastError: "e", Attempts: 3,
			CreatedAt: base, UpdatedAt: base}
		if err := s.AddDeadLetter(ctx, dl); err != nil {
			t.Fatal(err)
		}
		if dl.ID == 0 || (len(ids) > 0 && dl.ID <= ids[len(ids)-1]) {
			t.Fatalf("dead letter id %d after %v", dl.ID, ids)
		}
		ids = append(ids, dl.ID)
	}
	if err := s.AddDeadLetter(ctx, &forward.DeadLetter{RuleID: "other", Envelope: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	page, err := s.ListDeadLetters(ctx, "r", ids[1], 2)
	if err != nil || len(page) != 2 || page[0].ID != ids[2] || page[1].ID != ids[3] {
		t.Fatalf("page = %+v, %v", page, err)
	}
	dl, err := s.GetDeadLetter(ctx, "r", ids[0])
	if err != nil || dl.LogID != 100 || string(dl.Envelope) != `{"id":0}` || dl.Attempts != 3 || !dl.CreatedAt.Equal(base) {
		t.Fatalf("get = %+v, %v", dl, err)
	}
	if _, err := s.GetDeadLetter(ctx, "other", ids[0]); !errors.Is(err, forward.ErrNotFound) {
		t.Fatalf("get through another rule = %v", err)
	}
	if err := s.FailDeadLetter(ctx, ids[0], "again", base.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	dl, _ = s.GetDeadLetter(ctx, "r", ids[0])
	if dl.Attempts != 4 || dl.LastError != "again" || !dl.UpdatedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("after fail = %+v", dl)
	}
	if err := s.DeleteDeadLetter(ctx, "r", ids[0]); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteDeadLetter(ctx, "r", ids[0]); !errors.Is(err, forward.ErrNotFound) {
		t.Fatalf("delete twice = %v", err)
	}
	if all, _ := s.ListDeadLetters(ctx, "r", 0, 0); len(all) != 4 {
		t.Fatalf("%d left, want 4", len(all))
	}
}

func testDeleteCascades(t *testing.T, s forward.Store) {
	ctx := context.Background()
	mustCreate(t, s, rule("r", 2), 0)
	if err := s.AddDeadLetter(ctx, &forward.DeadLetter{RuleID: "r", Envelope: json.RawMessage(`{}`)}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRule(ctx, "r"); err != nil {
		t.Fatal(err)
	}
	if cs := cursors(t, s, "r"); len(cs) != 0 {
		t.Fatalf("cursors left: %+v", cs)
	}
	if dls, err := s.ListDeadLetters(ctx, "r", 0, 0); err != nil || len(dls) != 0 {
		t.Fatalf("dead letters left: %+v, %v", dls, err)
	}
	// A new rule with the same id starts clean.
	mustCreate(t, s, rule("r", 1), 3)
	if cs := cursors(t, s, "r"); len(cs) != 1 || cs[0].Cursor != 3 || cs[0].Delivered != 0 {
		t.Fatalf("recreated cursors: %+v", cs)
	}
}
