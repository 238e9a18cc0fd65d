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

// livePusher is a fakePusher that holds the sessions of the devices in live.
type livePusher struct {
	fakePusher
	live map[string]bool
}

func (p *livePusher) Live(pk, dk string) bool { return p.live[pk+"/"+dk] }

// TestFollowPushesOnTheSessionHolder: a command created through node a,
// whose device's session is on node b, is pushed by b (a has no session:
// its push is not live); b pushes it once however often it reads the log.
func TestFollowPushesOnTheSessionHolder(t *testing.T) {
	st := openStore(t)
	clk := &clock{t: time.Now()}
	pa := &fakePusher{err: command.ErrNotLive, got: make(chan command.Command, 8)}
	pb := &livePusher{fakePusher: fakePusher{got: make(chan command.Command, 8)}, live: map[string]bool{"pk/dk": true}}
	a, b := newQueue(t, st, clk, pa), newQueue(t, st, clk, pb)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 4)
	for _, q := range []*command.Queue{a, b} {
		go func() { q.Follow(ctx, st, st, time.Hour); done <- struct{}{} }()
		go func() { q.Run(ctx); done <- struct{}{} }()
	}
	defer func() { cancel(); <-done; <-done; <-done; <-done }()
	// b tails the log once it counts a command created after it started.
	warm, err := a.Create(ctx, "pk", "warm", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"x":0}`)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	<-pa.got
	for end := time.Now().Add(30 * time.Second); !b.HasPending("pk", "warm"); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(end) { // a hang guard, not a timing assert
			t.Fatalf("b never counted %s", warm.ID)
		}
	}
	c, err := a.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"x":1}`)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if got := <-pa.got; got.ID != c.ID {
		t.Fatalf("node a pushed %s, want %s", got.ID, c.ID)
	}
	select {
	case got := <-pb.got:
		if got.ID != c.ID {
			t.Fatalf("node b pushed %s, want %s", got.ID, c.ID)
		}
	case <-time.After(30 * time.Second): // a hang guard, not a timing assert
		t.Fatal("node b, the session holder, never pushed the command created through a")
	}
	// Another command for an unrelated device makes b read the log again:
	// the first is not pushed twice, and the other device (not live on b)
	// is not pushed by b at all.
	c2, err := a.Create(ctx, "pk", "other", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"x":2}`)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	<-pa.got
	c3, err := a.Create(ctx, "pk", "dk", command.Spec{Kind: command.KindSetProperties, Params: json.RawMessage(`{"x":3}`)}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	<-pa.got
	select {
	case got := <-pb.got:
		if got.ID != c3.ID {
			t.Fatalf("node b pushed %s (%s is another device's, %s pushed before); want %s", got.ID, c2.ID, c.ID, c3.ID)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("node b never pushed the second command")
	}
}
