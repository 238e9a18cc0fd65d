package natschanges

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/natstest"
	"github.com/coapgate/coapgate/internal/registry"
)

// TestTwoNodes: a change published by one node reaches the other node's
// subscriber once, and the publishing node's own subscriber once
// (synchronously, not echoed back). The delivery time is logged.
func TestTwoNodes(t *testing.T) {
	subject := fmt.Sprintf("coapgate_test_%d.device_changed", time.Now().UnixNano())
	a, err := New(natstest.Connect(t), subject)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	b, err := New(natstest.Connect(t), subject)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	onA := make(chan registry.DeviceChange, 4)
	onB := make(chan registry.DeviceChange, 4)
	a.Subscribe(func(c registry.DeviceChange) { onA <- c })
	b.Subscribe(func(c registry.DeviceChange) { onB <- c })

	want := registry.DeviceChange{ProductKey: "pk", DeviceKey: "dk"}
	sent := time.Now()
	if err := a.Publish(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-onA:
		if got != want {
			t.Fatalf("node A got %+v", got)
		}
	default:
		t.Fatal("node A's subscriber not called synchronously")
	}
	select {
	case got := <-onB:
		if got != want {
			t.Fatalf("node B got %+v", got)
		}
		t.Logf("change reached the other node in %v", time.Since(sent))
	case <-time.After(10 * time.Second):
		t.Fatal("node B never got the change")
	}
	// A product-wide change, and no duplicates: B publishes, then A
	// publishes again; each side sees exactly what the other sent.
	if err := b.Publish(context.Background(), registry.DeviceChange{ProductKey: "pk"}); err != nil {
		t.Fatal(err)
	}
	if got := <-onA; got != (registry.DeviceChange{ProductKey: "pk"}) {
		t.Fatalf("node A got %+v", got)
	}
	<-onB // B's own, synchronous
	if err := a.Publish(context.Background(), registry.DeviceChange{ProductKey: "p2", DeviceKey: "d2"}); err != nil {
		t.Fatal(err)
	}
	<-onA // A's own, synchronous
	if got := <-onB; got.ProductKey != "p2" {
		t.Fatalf("node B got %+v (a duplicate of an earlier change?)", got)
	}
	// B answers only after p2 reached it, so the server delivers A's echo
	// of p2 (if it were not filtered) to A before p3.
	if err := b.Publish(context.Background(), registry.DeviceChange{ProductKey: "p3"}); err != nil {
		t.Fatal(err)
	}
	<-onB
	if got := <-onA; got.ProductKey != "p3" {
		t.Fatalf("node A got %+v before p3: its own change echoed", got)
	}
}
