package sqlitestore

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/apikey"
	"github.com/coapgate/coapgate/internal/apikey/apikeytest"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/message/messagetest"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/registry/storetest"
	"github.com/coapgate/coapgate/internal/retention/retentiontest"
)

// openTemp opens a store on a new file in t's temp dir and closes it at
// cleanup.
func openTemp(tb testing.TB) (*Store, string) {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "coapgate.db")
	s, err := Open(context.Background(), path)
	if err != nil {
		tb.Fatalf("Open: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("Close: %v", err)
		}
	})
	return s, path
}

func TestRegistryStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) registry.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestMessageStore(t *testing.T) {
	messagetest.Run(t, func(t *testing.T) message.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestAPIKeyStore(t *testing.T) {
	apikeytest.Run(t, func(t *testing.T) apikey.Store {
		s, _ := openTemp(t)
		return s
	})
}

func TestOpenBadPath(t *testing.T) {
	tests := []struct {
		name string
		path string
	}{
		{"empty", ""},
		{"memory", ":memory:"},
		{"uri", "file:x.db"},
		{"query", filepath.Join(t.TempDir(), "x.db?mode=ro")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.path)
			if !errors.Is(err, ErrBadPath) {
				if s != nil {
					s.Close()
				}
				t.Fatalf("Open(%q) = %v, want ErrBadPath", tt.path, err)
			}
		})
	}
}

func TestPragmas(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	tests := []struct {
		name   string
		db     func() queryer
		pragma string
		want   string
	}{
		{"writer journal", func() queryer { return s.writer }, "journal_mode", "wal"},
		{"writer synchronous FULL", func() queryer { return s.writer }, "synchronous", "2"},
		{"writer foreign keys", func() queryer { return s.writer }, "foreign_keys", "1"},
		{"writer busy timeout", func() queryer { return s.writer }, "busy_timeout", "5000"},
		{"reader journal", func() queryer { return s.reader }, "journal_mode", "wal"},
		{"reader query only", func() queryer { return s.reader }, "query_only", "1"},
		{"reader busy timeout", func() queryer { return s.reader }, "busy_timeout", "5000"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got string
			if err := tt.db().QueryRowContext(ctx, "PRAGMA "+tt.pragma).Scan(&got); err != nil {
				t.Fatalf("PRAGMA %s: %v", tt.pragma, err)
			}
			if got != tt.want {
				t.Fatalf("PRAGMA %s = %q, want %q", tt.pragma, got, tt.want)
			}
		})
	}
	if _, err := s.reader.ExecContext(ctx, "DELETE FROM messages"); err == nil {
		t.Fatal("write through the reader pool succeeded")
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
}

// queryer is the part of *sql.DB TestPragmas uses.
type queryer interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "coapgate.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 678_901_234, time.UTC)
	msgs := []*message.Message{
		{ProductKey: "p", DeviceKey: "d", Topic: "/a", Payload: []byte{1, 2, 3}, ContentFormat: 42, ReceivedAt: at, Peer: "192.0.2.1:1", Transport: message.TransportCoAP},
		{ProductKey: "p", DeviceKey: "d", Topic: "/b", Payload: nil, ContentFormat: 50, ReceivedAt: at, Peer: "192.0.2.1:1", Transport: message.TransportCoAP},
	}
	if err := s.Append(ctx, msgs); err != nil {
		t.Fatalf("Append: %v", err)
	}
	if err := s.CreateProduct(ctx, registry.Product{ProductKey: "p", ProductSecret: "s", DataFormat: registry.FormatJSON, CreatedAt: at}); err != nil {
		t.Fatalf("CreateProduct: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}

	s, err = Open(ctx, path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s.Close()
	got, err := s.List(ctx, message.Query{ProductKey: "p"})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 2 || got[0].ID != msgs[0].ID || got[1].ID != msgs[1].ID ||
		!bytes.Equal(got[0].Payload, msgs[0].Payload) || len(got[1].Payload) != 0 {
		t.Fatalf("after reopen List = %+v, want %+v", got, msgs)
	}
	// This adapter keeps full nanosecond precision.
	if !got[0].ReceivedAt.Equal(at) {
		t.Fatalf("ReceivedAt = %v, want %v", got[0].ReceivedAt, at)
	}
	p, err := s.GetProduct(ctx, "p")
	if err != nil || !p.CreatedAt.Equal(at) {
		t.Fatalf("GetProduct after reopen = %+v, %v", p, err)
	}
	// IDs continue after the stored ones.
	more := []*message.Message{{ProductKey: "p", DeviceKey: "d", Topic: "/c", ReceivedAt: at}}
	if err := s.Append(ctx, more); err != nil {
		t.Fatalf("Append after reopen: %v", err)
	}
	if more[0].ID <= msgs[1].ID {
		t.Fatalf("ID after reopen %d, want > %d", more[0].ID, msgs[1].ID)
	}
}

func TestMigrationsIdempotent(t *testing.T) {
	ctx := context.Background()
	steps, err := loadMigrations()
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	if len(steps) == 0 {
		t.Fatal("no migrations embedded")
	}
	path := filepath.Join(t.TempDir(), "coapgate.db")
	for i := range 3 {
		s, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		v, err := userVersion(ctx, s.writer)
		if err != nil {
			t.Fatalf("userVersion: %v", err)
		}
		if last := steps[len(steps)-1].version; v != last {
			t.Fatalf("open %d: user_version = %d, want %d", i, v, last)
		}
		// Running migrate again on an up-to-date database is a no-op.
		if err := migrate(ctx, s.writer, s); err != nil {
			t.Fatalf("open %d: migrate again: %v", i, err)
		}
		if err := s.CreateProduct(ctx, registry.Product{ProductKey: fmt.Sprintf("p%d", i), DataFormat: registry.FormatJSON}); err != nil {
			t.Fatalf("open %d: CreateProduct: %v", i, err)
		}
		ps, err := s.ListProducts(ctx, registry.Page{})
		if err != nil || len(ps) != i+1 {
			t.Fatalf("open %d: ListProducts = %d products, %v; want %d", i, len(ps), err, i+1)
		}
		// A zero CreatedAt was stamped.
		if ps[i].CreatedAt.IsZero() {
			t.Fatalf("open %d: zero CreatedAt not stamped", i)
		}
		if err := s.Close(); err != nil {
			t.Fatalf("close %d: %v", i, err)
		}
	}
}

func TestSchemaTooNew(t *testing.T) {
	ctx := context.Background()
	s, path := openTemp(t)
	if _, err := s.writer.ExecContext(ctx, "PRAGMA user_version = 9999"); err != nil {
		t.Fatalf("set user_version: %v", err)
	}
	s2, err := Open(ctx, path)
	if !errors.Is(err, ErrSchemaTooNew) {
		if s2 != nil {
			s2.Close()
		}
		t.Fatalf("Open of a newer schema = %v, want ErrSchemaTooNew", err)
	}
}

func TestAppendRollbackResetsIDs(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.Append(ctx, []*message.Message{{ProductKey: "p", DeviceKey: "d", Topic: "/"}}); err != nil {
		t.Fatalf("Append: %v", err)
	}
	// A trigger makes the third row fail; the first two must not survive.
	if _, err := s.writer.ExecContext(ctx, `CREATE TEMP TRIGGER fail BEFORE INSERT ON messages
		WHEN NEW.topic = '/fail' BEGIN SELECT RAISE(ABORT, 'boom'); END`); err != nil {
		t.Fatalf("create trigger: %v", err)
	}
	msgs := []*message.Message{
		{ProductKey: "p", DeviceKey: "d", Topic: "/ok1"},
		{ProductKey: "p", DeviceKey: "d", Topic: "/ok2"},
		{ProductKey: "p", DeviceKey: "d", Topic: "/fail"},
	}
	if err := s.Append(ctx, msgs); err == nil {
		t.Fatal("Append with a failing row succeeded")
	}
	for i, m := range msgs {
		if m.ID != 0 {
			t.Errorf("msgs[%d].ID = %d after failed Append, want 0", i, m.ID)
		}
	}
	got, err := s.List(ctx, message.Query{})
	if err != nil {
		t.Fatalf("List: %v", err)
	}
	if len(got) != 1 {
		t.Fatalf("%d messages stored after failed Append, want 1", len(got))
	}
}

func TestTouchDevicesKeepsNewest(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	if err := s.CreateProduct(ctx, registry.Product{ProductKey: "p", DataFormat: registry.FormatJSON}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateDevice(ctx, registry.Device{ProductKey: "p", DeviceKey: "d"}); err != nil {
		t.Fatal(err)
	}
	newer := time.Date(2025, 1, 1, 0, 0, 2, 0, time.UTC)
	older := newer.Add(-time.Second)
	if err := s.TouchDevices(ctx, []registry.Presence{
		{ProductKey: "p", DeviceKey: "d", SeenAt: newer, Address: "new:1"},
		{ProductKey: "p", DeviceKey: "d", SeenAt: older, Address: "old:1"},
	}); err != nil {
		t.Fatal(err)
	}
	d, err := s.GetDevice(ctx, "p", "d")
	if err != nil {
		t.Fatal(err)
	}
	if !d.LastSeenAt.Equal(newer) || d.LastAddress != "new:1" {
		t.Fatalf("last contact = %v %q, want %v %q", d.LastSeenAt, d.LastAddress, newer, "new:1")
	}
}

func BenchmarkAppend(b *testing.B) {
	for _, n := range []int{1, 64, 512} {
		b.Run(fmt.Sprintf("batch=%d", n), func(b *testing.B) {
			s, _ := openTemp(b)
			ctx := context.Background()
			payload := []byte(`{"id":"123","version":"1.0","params":{"temperature":21.5,"humidity":40}}`)
			msgs := make([]*message.Message, n)
			for i := range msgs {
				// A realistic group-commit batch: one product, one message
				// per device, each with its own topic, peer and time.
				dk := fmt.Sprintf("dev%04d", i)
				msgs[i] = &message.Message{
					ProductKey: "a1MZxOdcBnO", DeviceKey: dk,
					Topic:   "/sys/a1MZxOdcBnO/" + dk + "/thing/event/property/post",
					Payload: payload, ContentFormat: 50,
					ReceivedAt: time.Now().Add(time.Duration(i) * time.Microsecond),
					Peer:       fmt.Sprintf("192.0.2.%d:%d", i%250+1, 40000+i), Transport: message.TransportDTLS,
				}
			}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Append(ctx, msgs); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*n)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// TestListPlans guards the hot queries against full table scans and checks
// that device-scoped queries are served in ID order by the device index.
func TestListPlans(t *testing.T) {
	s, _ := openTemp(t)
	ctx := context.Background()
	at := time.Unix(1700000000, 0)
	tests := []struct {
		name      string
		q         message.Query
		wantIndex string
		noSort    bool
	}{
		{"device", message.Query{ProductKey: "p", DeviceKey: "d"}, "messages_device_id", true},
		{"device descending cursor", message.Query{ProductKey: "p", DeviceKey: "d", AfterID: 9, Descending: true}, "messages_device_id", true},
		{"device and time", message.Query{ProductKey: "p", DeviceKey: "d", From: at, AfterID: 3}, "messages_device_id", true},
		// messages_product_received (migration 0009, for retention) also
		// serves product listings, with a time range as a seek.
		{"product", message.Query{ProductKey: "p"}, "messages_product_received", false},
		{"product and time", message.Query{ProductKey: "p", From: at, To: at.Add(time.Hour)}, "messages_product_received (product_key=? AND received_at>? AND received_at<?)", false},
		{"time range", message.Query{From: at, To: at.Add(time.Hour)}, "messages_received_at", false},
		{"cursor only", message.Query{AfterID: 5}, "PRIMARY KEY", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			query, args, _ := listQuery(tt.q)
			rows, err := s.reader.QueryContext(ctx, "EXPLAIN QUERY PLAN "+query, args...)
			if err != nil {
				t.Fatalf("explain: %v", err)
			}
			defer rows.Close()
			var plan []string
			for rows.Next() {
				var id, parent, notused int
				var detail string
				if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
					t.Fatalf("scan plan: %v", err)
				}
				plan = append(plan, detail)
			}
			all := fmt.Sprint(plan)
			if !strings.Contains(all, tt.wantIndex) || strings.Contains(all, "SCAN messages") {
				t.Fatalf("plan %q: want a search using %s", all, tt.wantIndex)
			}
			if tt.noSort && strings.Contains(all, "TEMP B-TREE") {
				t.Fatalf("plan %q sorts; want index order", all)
			}
		})
	}
}

func TestRetentionStore(t *testing.T) {
	retentiontest.Run(t, func(t *testing.T) retentiontest.Store {
		s, _ := openTemp(t)
		return s
	})
}
