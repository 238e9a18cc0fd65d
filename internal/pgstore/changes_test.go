package pgstore

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
)

// TestDeviceChangesAcrossNodes: a change published through one store
// reaches the subscribers of another store on the same database (another
// node) once, and its own subscribers once.
func TestDeviceChangesAcrossNodes(t *testing.T) {
	a, u := openTest(t)
	b, err := Open(context.Background(), Options{URL: u, Keys: testKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	gotA := make(chan registry.DeviceChange, 4)
	gotB := make(chan registry.DeviceChange, 4)
	a.DeviceChanges().Subscribe(func(c registry.DeviceChange) { gotA <- c })
	b.DeviceChanges().Subscribe(func(c registry.DeviceChange) { gotB <- c })
	want := registry.DeviceChange{ProductKey: "p1", DeviceKey: "d1"}
	if err := a.DeviceChanges().Publish(context.Background(), want); err != nil {
		t.Fatal(err)
	}
	if c := <-gotA; c != want {
		t.Fatalf("publisher's own subscriber got %+v", c)
	}
	select {
	case c := <-gotB:
		if c != want {
			t.Fatalf("other node got %+v, want %+v", c, want)
		}
	case <-time.After(30 * time.Second): // bound for a lost notification only
		t.Fatal("other node never saw the change")
	}
	// A second change proves the publisher did not also get its own
	// notification back: the next thing A sees is that second change.
	second := registry.DeviceChange{ProductKey: "p1"}
	if err := b.DeviceChanges().Publish(context.Background(), second); err != nil {
		t.Fatal(err)
	}
	select {
	case c := <-gotA:
		if c != second {
			t.Fatalf("A got %+v, want %+v (its own change echoed?)", c, second)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("A never saw B's change")
	}
	if c := <-gotB; c != second {
		t.Fatalf("B's own subscriber got %+v", c)
	}
}
