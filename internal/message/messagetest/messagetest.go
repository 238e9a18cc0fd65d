// Package messagetest is the conformance suite every message.Store adapter
// must pass: call Run from the adapter's tests with a constructor that
// returns a fresh, empty store.
//
// It tests the message.Store contract only: ID assignment, exact payload
// round trips, every Query field, cursor paging both ways, the limit cap,
// atomic Append and concurrent Appends.
package messagetest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

// Run runs the conformance suite. newStore must return a new empty store
// for each call and arrange its cleanup with t.Cleanup.
func Run(t *testing.T, newStore func(t *testing.T) message.Store) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s message.Store)
	}{
		{"AppendAssignsIncreasingIDs", testAppendIDs},
		{"AppendEmpty", testAppendEmpty},
		{"FieldRoundTrip", testFieldRoundTrip},
		{"PayloadRoundTrip", testPayloadRoundTrip},
		{"Filters", testFilters},
		{"CursorAscending", testCursorAscending},
		{"CursorDescending", testCursorDescending},
		{"Limit", testLimit},
		{"AppendCancelledIsAtomic", testAppendCancelled},
		{"ConcurrentAppend", testConcurrentAppend},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.fn(t, newStore(t))
		})
	}
}

// base is a fixed, millisecond-precise instant in a non-UTC zone.
var base = time.Date(2024, 5, 6, 7, 8, 9, 123_000_000, time.FixedZone("UTC-5", -5*3600))

func msg(pk, dk string, at time.Time, payload string) *message.Message {
	return &message.Message{
		ProductKey:    pk,
		DeviceKey:     dk,
		Topic:         "/sys/" + pk + "/" + dk + "/thing/event/property/post",
		Payload:       []byte(payload),
		ContentFormat: 50,
		ReceivedAt:    at,
		Peer:          "192.0.2.1:5683",
		Transport:     message.TransportCoAP,
	}
}

func mustAppend(t *testing.T, s message.Store, msgs ...*message.Message) {
	t.Helper()
	if err := s.Append(context.Background(), msgs); err != nil {
		t.Fatalf("Append(%d): %v", len(msgs), err)
	}
}

func mustList(t *testing.T, s message.Store, q message.Query) []message.Message {
	t.Helper()
	got, err := s.List(context.Background(), q)
	if err != nil {
		t.Fatalf("List(%+v): %v", q, err)
	}
	return got
}

func ids(ms []message.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func ptrIDs(ms []*message.Message) []int64 {
	out := make([]int64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

func equalIDs(a, b []int64) bool {
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

func reversed(a []int64) []int64 {
	out := make([]int64, len(a))
	for i, v := range a {
		out[len(a)-1-i] = v
	}
	return out
}

// checkMessage compares every field; times to the millisecond and in UTC,
// nil and empty payloads as equal.
func checkMessage(t *testing.T, got message.Message, want *message.Message) {
	t.Helper()
	if got.ID != want.ID || got.ProductKey != want.ProductKey || got.DeviceKey != want.DeviceKey ||
		got.Topic != want.Topic || got.ContentFormat != want.ContentFormat ||
		got.Peer != want.Peer || got.Transport != want.Transport {
		t.Errorf("message = %+v, want %+v", got, *want)
	}
	if !bytes.Equal(got.Payload, want.Payload) {
		t.Errorf("message %d payload = %x, want %x", want.ID, got.Payload, want.Payload)
	}
	if got.ReceivedAt.Location() != time.UTC ||
		!got.ReceivedAt.Truncate(time.Millisecond).Equal(want.ReceivedAt.Truncate(time.Millisecond)) {
		t.Errorf("message %d ReceivedAt = %v, want %v in UTC", want.ID, got.ReceivedAt, want.ReceivedAt)
	}
}

func testAppendIDs(t *testing.T, s message.Store) {
	var last int64
	for batch, n := range []int{1, 3, 10, 1} {
		msgs := make([]*message.Message, n)
		for i := range msgs {
			msgs[i] = msg("p1", "d1", base, fmt.Sprintf(`{"b":%d,"i":%d}`, batch, i))
		}
		mustAppend(t, s, msgs...)
		for i, m := range msgs {
			if m.ID <= last {
				t.Fatalf("batch %d message %d: ID %d not above previous %d", batch, i, m.ID, last)
			}
			last = m.ID
		}
	}
	got := mustList(t, s, message.Query{})
	if len(got) != 15 {
		t.Fatalf("List returned %d messages, want 15", len(got))
	}
	for i := 1; i < len(got); i++ {
		if got[i].ID <= got[i-1].ID {
			t.Fatalf("List not in ascending ID order: %v", ids(got))
		}
	}
	if got[len(got)-1].ID != last {
		t.Fatalf("last listed ID %d, want %d", got[len(got)-1].ID, last)
	}
}

func testAppendEmpty(t *testing.T, s message.Store) {
	for _, msgs := range [][]*message.Message{nil, {}} {
		if err := s.Append(context.Background(), msgs); err != nil {
			t.Fatalf("Append(%v): %v", msgs, err)
		}
	}
	if got := mustList(t, s, message.Query{}); len(got) != 0 {
		t.Fatalf("List after empty appends = %d messages, want 0", len(got))
	}
}

func testFieldRoundTrip(t *testing.T, s message.Store) {
	tests := []struct {
		name string
		m    *message.Message
	}{
		{"coap json", msg("p1", "d1", base, `{"temp":21.5}`)},
		{"dtls cbor", &message.Message{
			ProductKey: "p2", DeviceKey: "dev-ü", Topic: "/topic/user/update",
			Payload: []byte{0xa1, 0x61, 0x74, 0xf9, 0x3c, 0x00}, ContentFormat: 60,
			ReceivedAt: base.Add(time.Hour), Peer: "[2001:db8::1]:5684", Transport: message.TransportDTLS,
		}},
		{"symmetric max content format", &message.Message{
			ProductKey: "p3", DeviceKey: "d3", Topic: "/", Payload: []byte("x"),
			ContentFormat: 65535, ReceivedAt: time.Date(2099, 12, 31, 23, 59, 59, 999_000_000, time.UTC),
			Peer: "203.0.113.5:1", Transport: message.TransportSymmetric,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mustAppend(t, s, tt.m)
			got := mustList(t, s, message.Query{ProductKey: tt.m.ProductKey, DeviceKey: tt.m.DeviceKey})
			if len(got) != 1 {
				t.Fatalf("List returned %d messages, want 1", len(got))
			}
			checkMessage(t, got[0], tt.m)
		})
	}
}

func testPayloadRoundTrip(t *testing.T, s message.Store) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	big := bytes.Repeat([]byte{0x00, 0xff, 0x7f, 0x80}, 16<<10) // 64 KiB
	tests := []struct {
		name    string
		payload []byte
	}{
		{"nil", nil},
		{"empty", []byte{}},
		{"single zero byte", []byte{0}},
		{"every byte value", all},
		{"invalid utf-8", []byte{0xc3, 0x28, 0xff, 0xfe}},
		{"64 KiB", big},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := msg("p1", fmt.Sprintf("d%d", i), base, "")
			m.Payload = tt.payload
			m.ContentFormat = 42
			mustAppend(t, s, m)
			got := mustList(t, s, message.Query{ProductKey: "p1", DeviceKey: m.DeviceKey})
			if len(got) != 1 {
				t.Fatalf("List returned %d messages, want 1", len(got))
			}
			if !bytes.Equal(got[0].Payload, tt.payload) || len(got[0].Payload) != len(tt.payload) {
				t.Fatalf("payload = %d bytes %x, want %d bytes", len(got[0].Payload), got[0].Payload[:min(len(got[0].Payload), 16)], len(tt.payload))
			}
		})
	}
}

// fixture appends ten messages at base+0s … base+9s, alternating devices
// p1/d1, p1/d2 and p2/d1, and returns them.
func fixture(t *testing.T, s message.Store) []*message.Message {
	t.Helper()
	keys := [][2]string{{"p1", "d1"}, {"p1", "d2"}, {"p2", "d1"}}
	msgs := make([]*message.Message, 10)
	for i := range msgs {
		k := keys[i%len(keys)]
		msgs[i] = msg(k[0], k[1], base.Add(time.Duration(i)*time.Second), fmt.Sprintf(`{"i":%d}`, i))
	}
	mustAppend(t, s, msgs[:4]...)
	mustAppend(t, s, msgs[4:]...)
	return msgs
}

func testFilters(t *testing.T, s message.Store) {
	m := fixture(t, s)
	at := func(i int) time.Time { return base.Add(time.Duration(i) * time.Second) }
	sel := func(idx ...int) []int64 {
		out := make([]int64, len(idx))
		for i, j := range idx {
			out[i] = m[j].ID
		}
		return out
	}
	tests := []struct {
		name string
		q    message.Query
		want []int64
	}{
		{"no filter", message.Query{}, sel(0, 1, 2, 3, 4, 5, 6, 7, 8, 9)},
		{"product", message.Query{ProductKey: "p1"}, sel(0, 1, 3, 4, 6, 7, 9)},
		{"product and device", message.Query{ProductKey: "p1", DeviceKey: "d1"}, sel(0, 3, 6, 9)},
		{"device across products", message.Query{DeviceKey: "d1"}, sel(0, 2, 3, 5, 6, 8, 9)},
		{"unknown product", message.Query{ProductKey: "nope"}, nil},
		{"from inclusive", message.Query{From: at(7)}, sel(7, 8, 9)},
		{"to exclusive", message.Query{To: at(2)}, sel(0, 1)},
		{"from and to", message.Query{From: at(3), To: at(6)}, sel(3, 4, 5)},
		{"from in another zone", message.Query{From: at(8).UTC()}, sel(8, 9)},
		{"empty range", message.Query{From: at(5), To: at(5)}, nil},
		{"from between messages", message.Query{From: at(4).Add(time.Millisecond)}, sel(5, 6, 7, 8, 9)},
		{"device and time", message.Query{ProductKey: "p1", DeviceKey: "d2", From: at(2), To: at(9)}, sel(4, 7)},
		{"after id", message.Query{AfterID: m[6].ID}, sel(7, 8, 9)},
		{"after id and product", message.Query{ProductKey: "p2", AfterID: m[2].ID}, sel(5, 8)},
		{"descending", message.Query{Descending: true}, sel(9, 8, 7, 6, 5, 4, 3, 2, 1, 0)},
		{"descending before id", message.Query{Descending: true, AfterID: m[3].ID}, sel(2, 1, 0)},
		{"descending device and time", message.Query{ProductKey: "p1", DeviceKey: "d1", From: at(1), Descending: true}, sel(9, 6, 3)},
		{"limit", message.Query{Limit: 3}, sel(0, 1, 2)},
		{"descending limit", message.Query{Descending: true, Limit: 2}, sel(9, 8)},
		{"everything", message.Query{ProductKey: "p1", DeviceKey: "d1", From: at(0), To: at(9), AfterID: m[0].ID, Limit: 1}, sel(3)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := mustList(t, s, tt.q)
			if !equalIDs(ids(got), tt.want) {
				t.Fatalf("List(%+v) IDs = %v, want %v", tt.q, ids(got), tt.want)
			}
			if len(got) > 0 {
				for _, w := range m {
					if w.ID == got[0].ID {
						checkMessage(t, got[0], w)
					}
				}
			}
		})
	}
}

func testCursorAscending(t *testing.T, s message.Store) {
	m := fixture(t, s)
	for _, q := range []message.Query{{}, {ProductKey: "p1"}, {ProductKey: "p1", DeviceKey: "d1"}} {
		want := ids(mustList(t, s, q))
		for limit := 1; limit <= 4; limit++ {
			t.Run(fmt.Sprintf("%+v limit %d", q, limit), func(t *testing.T) {
				var got []int64
				cur := q
				cur.Limit = limit
				for range len(m) + 2 {
					page := mustList(t, s, cur)
					if len(page) > limit {
						t.Fatalf("page of %d, limit %d", len(page), limit)
					}
					if len(page) == 0 {
						break
					}
					got = append(got, ids(page)...)
					cur.AfterID = page[len(page)-1].ID
				}
				if !equalIDs(got, want) {
					t.Fatalf("paged IDs = %v, want %v", got, want)
				}
			})
		}
	}
}

func testCursorDescending(t *testing.T, s message.Store) {
	m := fixture(t, s)
	for _, q := range []message.Query{{}, {ProductKey: "p2"}, {DeviceKey: "d1"}} {
		want := reversed(ids(mustList(t, s, q)))
		for limit := 1; limit <= 4; limit++ {
			t.Run(fmt.Sprintf("%+v limit %d", q, limit), func(t *testing.T) {
				var got []int64
				cur := q
				cur.Descending = true
				cur.Limit = limit
				for range len(m) + 2 {
					page := mustList(t, s, cur)
					if len(page) > limit {
						t.Fatalf("page of %d, limit %d", len(page), limit)
					}
					if len(page) == 0 {
						break
					}
					got = append(got, ids(page)...)
					cur.AfterID = page[len(page)-1].ID
				}
				if !equalIDs(got, want) {
					t.Fatalf("paged IDs = %v, want %v", got, want)
				}
			})
		}
	}
}

func testLimit(t *testing.T, s message.Store) {
	const n = 1005
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = msg("p1", "d1", base.Add(time.Duration(i)*time.Millisecond), "{}")
	}
	mustAppend(t, s, msgs...)
	tests := []struct {
		name  string
		limit int
		want  int
	}{
		{"zero means 100", 0, 100},
		{"negative means 100", -5, 100},
		{"small", 7, 7},
		{"exactly the cap", 1000, 1000},
		{"capped at 1000", 5000, 1000},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, desc := range []bool{false, true} {
				got := mustList(t, s, message.Query{Limit: tt.limit, Descending: desc})
				if len(got) != tt.want {
					t.Fatalf("List(Limit %d, Descending %v) = %d messages, want %d", tt.limit, desc, len(got), tt.want)
				}
				first := msgs[0].ID
				if desc {
					first = msgs[n-1].ID
				}
				if got[0].ID != first {
					t.Fatalf("List(Limit %d, Descending %v) starts at %d, want %d", tt.limit, desc, got[0].ID, first)
				}
			}
		})
	}
}

// testAppendCancelled checks atomicity as far as the interface allows: an
// Append on a cancelled context either fails and stores nothing or succeeds
// and stores everything.
func testAppendCancelled(t *testing.T, s message.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	msgs := []*message.Message{msg("p1", "d1", base, "a"), msg("p1", "d1", base, "b"), msg("p1", "d1", base, "c")}
	err := s.Append(ctx, msgs)
	got := mustList(t, s, message.Query{})
	switch {
	case err != nil && len(got) != 0:
		t.Fatalf("failed Append (%v) stored %d messages", err, len(got))
	case err == nil && !equalIDs(ids(got), ptrIDs(msgs)):
		t.Fatalf("successful Append stored %v, assigned %v", ids(got), ptrIDs(msgs))
	}
	// The store still works.
	mustAppend(t, s, msg("p1", "d1", base, "after"))
}

func testConcurrentAppend(t *testing.T, s message.Store) {
	const (
		workers = 16
		batches = 20
		perBat  = 5
		total   = workers * batches * perBat
	)
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		errs []error
		seen = make(map[int64]string, total) // guarded by mu
	)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for b := range batches {
				msgs := make([]*message.Message, perBat)
				for i := range msgs {
					msgs[i] = msg("p1", fmt.Sprintf("d%02d", w), base, fmt.Sprintf(`{"w":%d,"b":%d,"i":%d}`, w, b, i))
				}
				err := s.Append(context.Background(), msgs)
				mu.Lock()
				if err != nil {
					errs = append(errs, err)
				}
				for i, m := range msgs {
					if i > 0 && m.ID <= msgs[i-1].ID {
						errs = append(errs, fmt.Errorf("worker %d batch %d: IDs not increasing: %v", w, b, ptrIDs(msgs)))
					}
					if prev, dup := seen[m.ID]; dup {
						errs = append(errs, fmt.Errorf("ID %d assigned twice (%s and %s)", m.ID, prev, m.Payload))
					}
					seen[m.ID] = string(m.Payload)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(errs) > 0 {
		t.Fatal(errors.Join(errs...))
	}

	// Every message is stored once, under the ID it was given.
	var stored int
	q := message.Query{Limit: 1000}
	for {
		page := mustList(t, s, q)
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			want, ok := seen[m.ID]
			if !ok || want != string(m.Payload) {
				t.Fatalf("stored message %d = %s, assigned to %q", m.ID, m.Payload, want)
			}
			stored++
		}
		q.AfterID = page[len(page)-1].ID
	}
	if stored != total {
		t.Fatalf("%d messages stored, want %d", stored, total)
	}
}
