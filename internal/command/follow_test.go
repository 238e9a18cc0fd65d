package command_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/command"
)

// TestFollowSeesOtherNodes: two queues on one store stand for two nodes.
// A command created through a sees b announce it once b's Follow reads
// the log, and a cancel through b clears a's count the same way.
func TestFollowSeesOtherNodes(t *testing.T) {
	st := openStore(t)
	clk := &clock{t: time.Now()}
	a, b := newQueue(t, st, clk, nil), newQueue(t, st, clk, nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{}, 2)
	go func() { a.Follow(ctx, st, st, time.Hour); done <- struct{}{} }()
	go func() { b.Follow(ctx, st, st, time.Hour); done <- struct{}{} }()
	defer func() { cancel(); <-done; <-done }()

	eventually := func(what string, cond func() bool) {
		t.Helper()
		for end := time.Now().Add(30 * time.Second); !cond(); time.Sleep(5 * time.Millisecond) {
			if time.Now().After(end) { // a hang guard, not a timing assert
				t.Fatal(what)
			}
		}
	}
	if b.HasPending("pk", "dk") {
		t.Fatal("pending before any command")
	}
	c, err := a.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"x":1}`)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	eventually("b never saw the command created through a", func() bool { return b.HasPending("pk", "dk") })
	if topic, err := b.NextTopic(ctx, "pk", "dk", clk.now()); err != nil || topic != c.Topic {
		t.Fatalf("b's next topic %q, %v; want %q", topic, err, c.Topic)
	}
	if _, err := b.Cancel(ctx, "pk", "dk", c.ID); err != nil {
		t.Fatal(err)
	}
	eventually("a still counts a command cancelled through b", func() bool { return !a.HasPending("pk", "dk") })
	if a.PendingTotal() != 0 || b.PendingTotal() != 0 {
		t.Fatalf("pending totals %d, %d after the cancel", a.PendingTotal(), b.PendingTotal())
	}
}
