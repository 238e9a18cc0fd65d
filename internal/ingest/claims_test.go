package ingest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/pgstore"
	"github.com/coapgate/coapgate/internal/pgstore/pgtest"
	"github.com/coapgate/coapgate/internal/replay"
	"github.com/coapgate/coapgate/internal/secretbox"
	"github.com/prometheus/client_golang/prometheus"
)

// TestBatcherClaimsAcrossNodes: two batchers (two nodes) on one PostgreSQL
// store append an uplink with the same session number: one is stored, the
// other's caller gets the replay refusal and its message is not stored or
// counted; a plain uplink in the same batch is unaffected.
func TestBatcherClaimsAcrossNodes(t *testing.T) {
	keys, err := secretbox.New(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	st, err := pgstore.Open(context.Background(), pgstore.Options{URL: pgtest.Schema(t), Keys: keys})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	regA, regB := prometheus.NewRegistry(), prometheus.NewRegistry()
	a := NewBatcher(st, 64, regA, slog.New(slog.DiscardHandler))
	b := NewBatcher(st, 64, regB, slog.New(slog.DiscardHandler))
	defer a.Close()
	defer b.Close()
	ctx := context.Background()
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{7}}
	fresh := replay.State{Key: k, Floor: 1, Size: 64, Seen: make([]uint64, 1), Version: 1, Expires: time.Now().Add(time.Hour)}
	if err := a.AppendState(ctx, nil, &fresh); err != nil {
		t.Fatal(err)
	}
	uplink := func() *message.Message {
		return &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/up", Payload: []byte("x"), ReceivedAt: time.Now()}
	}
	used := fresh
	used.Accepted, used.High, used.Started, used.Version = 5, 5, true, 2
	used.Seen = []uint64{1}
	m1, m2 := uplink(), uplink()
	if err := a.AppendState(ctx, m1, &used); err != nil || m1.ID == 0 {
		t.Fatalf("node a, number 5: %v (id %d)", err, m1.ID)
	}
	if err := b.AppendState(ctx, m2, &used); !replay.IsReplay(err) || m2.ID != 0 {
		t.Fatalf("node b, number 5 again: %v (id %d), want a replay refusal", err, m2.ID)
	}
	if err := b.Append(ctx, uplink()); err != nil {
		t.Fatalf("plain uplink through b: %v", err)
	}
	if got := storedCount(t, regB); got != 1 {
		t.Fatalf("node b counts %v uplinks stored, want 1 (the refused one is not)", got)
	}
	ms, err := st.List(ctx, message.Query{ProductKey: "p", DeviceKey: "d", Limit: 10})
	if err != nil || len(ms) != 2 {
		t.Fatalf("stored %d messages (%v), want 2", len(ms), err)
	}
}

func storedCount(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "coapgate_ingest_messages_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatal("no coapgate_ingest_messages_total")
	return 0
}
