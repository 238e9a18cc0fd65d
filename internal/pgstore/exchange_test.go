package pgstore

import (
	"context"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

// TestExchangeStoredOnce: two nodes on one schema append the same CON
// exchange (a retransmission that reached the other node): one entry is
// stored and both get its id; another Message ID, or the same one after
// EXCHANGE_LIFETIME, is a new entry.
func TestExchangeStoredOnce(t *testing.T) {
	a, u := openTest(t)
	b, err := Open(context.Background(), Options{URL: u, Keys: testKeys})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	ctx := context.Background()
	up := func(mid uint16) *message.Message {
		return &message.Message{ProductKey: "pk", DeviceKey: "dk", Topic: "/t", Payload: []byte("x"),
			ReceivedAt: time.Now(), Peer: "127.0.0.1:5000", Transport: message.TransportCoAP,
			Exchange: message.ExchangeKey("pk", "dk", mid, []byte{1}, []byte("x"))}
	}
	m1, m2 := up(7), up(7)
	if err := a.Append(ctx, []*message.Message{m1}); err != nil {
		t.Fatal(err)
	}
	other := up(8)
	if err := b.Append(ctx, []*message.Message{m2, other}); err != nil {
		t.Fatal(err)
	}
	if m2.ID != m1.ID {
		t.Fatalf("retransmission got id %d, first %d", m2.ID, m1.ID)
	}
	if other.ID <= m1.ID {
		t.Fatalf("new exchange got id %d after %d", other.ID, m1.ID)
	}
	// Same key twice in one batch.
	d1, d2 := up(9), up(9)
	if err := a.Append(ctx, []*message.Message{d1, d2}); err != nil {
		t.Fatal(err)
	}
	if d1.ID != d2.ID {
		t.Fatalf("one batch: ids %d and %d", d1.ID, d2.ID)
	}
	all, err := a.List(ctx, message.Query{Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 3 {
		t.Fatalf("stored %d entries, want 3 (one per exchange)", len(all))
	}
	// After the lifetime the key is free again.
	if _, err := a.pool.Exec(ctx, `UPDATE exchanges SET expires_at = $1`, toNanos(time.Now().Add(-time.Second))); err != nil {
		t.Fatal(err)
	}
	late := up(7)
	if err := b.Append(ctx, []*message.Message{late}); err != nil {
		t.Fatal(err)
	}
	if late.ID == m1.ID {
		t.Fatal("a Message ID reused after EXCHANGE_LIFETIME was taken for a retransmission")
	}
	// A large batch (one lookup, one upsert): known keys, a key twice in
	// the batch and new keys.
	var big []*message.Message
	for i := range smallExchangeBatch + 4 {
		big = append(big, up(uint16(100+i)))
	}
	big = append(big, up(7), up(100)) // known (late's); repeated here
	if err := a.Append(ctx, big); err != nil {
		t.Fatal(err)
	}
	if got := big[len(big)-2].ID; got != late.ID {
		t.Fatalf("large batch: known exchange got id %d, want %d", got, late.ID)
	}
	if big[len(big)-1].ID != big[0].ID {
		t.Fatalf("large batch: repeated key got ids %d and %d", big[0].ID, big[len(big)-1].ID)
	}
	again := up(uint16(100 + smallExchangeBatch))
	if err := b.Append(ctx, []*message.Message{again}); err != nil || again.ID != big[smallExchangeBatch].ID {
		t.Fatalf("key recorded by a large batch: id %d, want %d (%v)", again.ID, big[smallExchangeBatch].ID, err)
	}
	all, err = a.List(ctx, message.Query{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if want := 4 + smallExchangeBatch + 4; len(all) != want {
		t.Fatalf("stored %d entries, want %d", len(all), want)
	}
	// Entries without an exchange (NON, events) are never merged.
	n1 := &message.Message{ProductKey: "pk", DeviceKey: "dk", Topic: "/t", ReceivedAt: time.Now()}
	n2 := &message.Message{ProductKey: "pk", DeviceKey: "dk", Topic: "/t", ReceivedAt: time.Now()}
	if err := a.Append(ctx, []*message.Message{n1, n2}); err != nil || n1.ID == n2.ID {
		t.Fatalf("entries without exchange: %d %d %v", n1.ID, n2.ID, err)
	}
}
