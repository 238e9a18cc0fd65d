// Package retentiontest is the conformance suite of retention.Store: every
// adapter runs it (retentiontest.Run) against a real database, driven
// through retention.Worker.
package retentiontest

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	downlink "github.com/coapgate/coapgate/internal/command"
	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/point"
	"github.com/coapgate/coapgate/internal/registry"
	"github.com/coapgate/coapgate/internal/retention"
)

// Store is everything the suite seeds data through and deletes from.
type Store interface {
	retention.Store
	message.Store
	point.Store
	event.Store
	downlink.Store
	forward.Store
}

// Run runs the suite. newStore returns a new, empty store per call and
// arranges its cleanup.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Helper()
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s Store)
	}{
		{"MessagesByProduct", testMessagesByProduct},
		{"MessagesHeldForProjector", testMessagesHeldForProjector},
		{"ForwardCursorBehindHorizon", testForwardCursorBehindHorizon},
		{"PointsKeepRollups", testPointsKeepRollups},
		{"EventsCommandsDeadLetters", testEventsCommandsDeadLetters},
	} {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newStore(t)) })
	}
}

// now is the suite's clock.
var now = time.Date(2026, 6, 1, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// products is a retention.ProductLister over a fixed list.
type products []registry.Product

func (p products) ListProducts(_ context.Context, page registry.Page) ([]registry.Product, error) {
	var out []registry.Product
	for _, x := range p {
		if x.ProductKey > page.After && (page.Limit <= 0 || len(out) < page.Limit) {
			out = append(out, x)
		}
	}
	return out, nil
}

func dur(d time.Duration) *time.Duration { return &d }

// batchSize is the workers' batch size in the suite.
const batchSize = 7

func worker(s Store, per retention.Periods, ps products) *retention.Worker {
	return retention.New(retention.Options{Store: bounded{s}, Products: ps, Periods: per, BatchSize: batchSize, Pause: -1,
		Now: func() time.Time { return now }})
}

// bounded checks that every Purge deletes at most its Limit of rows: a
// store that deleted a whole backlog in one transaction would stall
// ingest.
type bounded struct{ Store }

var errUnbounded = errors.New("retentiontest: a purge deleted more rows than its limit")

func (b bounded) Purge(ctx context.Context, p retention.Purge) (retention.Result, error) {
	res, err := b.Store.Purge(ctx, p)
	if err == nil && (p.Limit != batchSize || res.Deleted > p.Limit) {
		return res, fmt.Errorf("%w: limit %d, deleted %d", errUnbounded, p.Limit, res.Deleted)
	}
	return res, err
}

// appendAt appends n uplinks of pk/dk received at at and returns their IDs.
func appendAt(t *testing.T, s Store, pk, dk string, at time.Time, n int) []int64 {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = &message.Message{ProductKey: pk, DeviceKey: dk, Topic: "/sys/" + pk + "/" + dk + "/thing/event/property/post",
			Payload: []byte(`{"id":"1","params":{"t":1}}`), ContentFormat: 50, ReceivedAt: at.Add(time.Duration(i) * time.Second),
			Peer: "192.0.2.1:5683", Transport: message.TransportCoAP}
	}
	if err := s.Append(context.Background(), msgs); err != nil {
		t.Fatalf("append: %v", err)
	}
	ids := make([]int64, n)
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// logIDs lists the IDs in the log (events included) of one product.
func logIDs(t *testing.T, s Store, pk string) []int64 {
	t.Helper()
	var ids []int64
	q := message.Query{ProductKey: pk, IncludeEvents: true, Limit: 1000}
	for {
		ms, err := s.List(context.Background(), q)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		for _, m := range ms {
			ids = append(ids, m.ID)
		}
		if len(ms) < 1000 {
			return ids
		}
		q.AfterID = ms[len(ms)-1].ID
	}
}

// projectAll moves the point projector's cursor past every log entry.
func projectAll(t *testing.T, s Store, upto int64) {
	t.Helper()
	if err := s.Project(context.Background(), "points", upto, nil); err != nil {
		t.Fatalf("project: %v", err)
	}
}

func run(t *testing.T, w *retention.Worker) retention.Stats {
	t.Helper()
	st, err := w.RunOnce(context.Background())
	if err != nil {
		t.Fatalf("retention run: %v", err)
	}
	return st
}

func sameIDs(a, b []int64) bool { return fmt.Sprint(a) == fmt.Sprint(b) }

// testMessagesByProduct: the global period applies to products without an
// override and to products deleted since; an override (longer, or 0 =
// forever) wins; deletion spans several batches.
func testMessagesByProduct(t *testing.T, s Store) {
	old := now.Add(-40 * day)
	appendAt(t, s, "pa", "d1", old, 20)                   // global 30 d: deleted
	keepA := appendAt(t, s, "pa", "d1", now.Add(-day), 3) // young: kept
	keepB := appendAt(t, s, "pb", "d1", old, 9)           // override 60 d: kept
	appendAt(t, s, "pc", "d1", old, 10)                   // override 10 d: deleted
	oldD := appendAt(t, s, "pd", "d1", old, 4)            // forever
	appendAt(t, s, "gone", "d1", old, 5)                  // product deleted since: global
	projectAll(t, s, oldD[len(oldD)-1]+100)
	ps := products{
		{ProductKey: "pa"},
		{ProductKey: "pb", Retention: registry.Retention{Messages: dur(60 * day)}},
		{ProductKey: "pc", Retention: registry.Retention{Messages: dur(10 * day)}},
		{ProductKey: "pd", Retention: registry.Retention{Messages: dur(0)}},
	}
	st := run(t, worker(s, retention.Periods{Messages: 30 * day}, ps))
	if st.Deleted[retention.Messages] != 35 {
		t.Errorf("deleted %d messages, want 35", st.Deleted[retention.Messages])
	}
	for pk, want := range map[string][]int64{"pa": keepA, "pb": keepB, "pc": nil, "pd": oldD, "gone": nil} {
		if got := logIDs(t, s, pk); !sameIDs(got, want) {
			t.Errorf("product %s: log %v, want %v", pk, got, want)
		}
	}
	if st := run(t, worker(s, retention.Periods{Messages: 30 * day}, ps)); st.Deleted[retention.Messages] != 0 {
		t.Errorf("second run deleted %d messages, want 0", st.Deleted[retention.Messages])
	}
}

// testMessagesHeldForProjector: expired entries the point projector has
// not projected stay (and are counted) until it has.
func testMessagesHeldForProjector(t *testing.T, s Store) {
	ids := appendAt(t, s, "pa", "d1", now.Add(-40*day), 12)
	projectAll(t, s, ids[7]) // 4 not projected yet
	w := worker(s, retention.Periods{Messages: 30 * day}, products{{ProductKey: "pa"}})
	st := run(t, w)
	if st.Deleted[retention.Messages] != 8 || st.HeldBack != 4 {
		t.Fatalf("deleted %d, held back %d; want 8 and 4", st.Deleted[retention.Messages], st.HeldBack)
	}
	if got := logIDs(t, s, "pa"); !sameIDs(got, ids[8:]) {
		t.Fatalf("log %v, want %v", got, ids[8:])
	}
	projectAll(t, s, ids[11])
	if st := run(t, w); st.Deleted[retention.Messages] != 4 || st.HeldBack != 0 {
		t.Fatalf("after projection: deleted %d, held back %d; want 4 and 0", st.Deleted[retention.Messages], st.HeldBack)
	}
}

// testForwardCursorBehindHorizon: entries deleted above a forwarding
// action's cursor are booked on it.
func testForwardCursorBehindHorizon(t *testing.T, s Store) {
	ctx := context.Background()
	ids := appendAt(t, s, "pa", "d1", now.Add(-40*day), 10)
	projectAll(t, s, ids[9])
	mk := func(id string, cursor int64) {
		r := forward.Rule{ID: id, Name: id, Enabled: true, TopicFilter: "#", MaxAttempts: 5,
			Actions: []forward.Action{{Type: forward.ActionWebhook, URL: "http://127.0.0.1:1/hook"}}, CreatedAt: now, UpdatedAt: now}
		if err := s.CreateRule(ctx, r, cursor); err != nil {
			t.Fatalf("create rule: %v", err)
		}
	}
	mk("behind", ids[3]) // had handled 4 of 10
	mk("ahead", ids[9])  // had handled all
	st := run(t, worker(s, retention.Periods{Messages: 30 * day}, products{{ProductKey: "pa"}}))
	if st.Deleted[retention.Messages] != 10 || st.Lost != 6 {
		t.Fatalf("deleted %d, lost %d; want 10 and 6", st.Deleted[retention.Messages], st.Lost)
	}
	for id, want := range map[string][2]int64{"behind": {6, ids[9]}, "ahead": {0, 0}} {
		cs, err := s.Cursors(ctx, id)
		if err != nil || len(cs) != 1 {
			t.Fatalf("cursors of %s: %v, %v", id, cs, err)
		}
		if cs[0].RetentionLost != want[0] || cs[0].RetentionLostTo != want[1] {
			t.Errorf("rule %s: retention lost %d up to %d, want %d up to %d", id, cs[0].RetentionLost, cs[0].RetentionLostTo, want[0], want[1])
		}
	}
}

// testPointsKeepRollups: samples older than the points period go, the
// latest values stay, and aggregation over the deleted range is still
// answered from the rollups (each kept as long as its own period).
func testPointsKeepRollups(t *testing.T, s Store) {
	ctx := context.Background()
	var samples []point.Sample
	msg := int64(0)
	add := func(at time.Time, n int) {
		for i := range n {
			msg++
			samples = append(samples, point.Sample{ProductKey: "pa", DeviceKey: "d1", Kind: point.KindPoint, Name: "t",
				Time: at.Add(time.Duration(i) * 10 * time.Second), Value: int64(i), MessageID: msg})
		}
	}
	add(now.Add(-100*day).Truncate(time.Hour), 30) // past the 1-minute rollups' 60 days
	add(now.Add(-20*day).Truncate(time.Hour), 30)  // past the samples' 7 days
	add(now.Add(-time.Hour).Truncate(time.Hour), 5)
	if err := s.Project(ctx, "points", msg, samples); err != nil {
		t.Fatalf("project: %v", err)
	}
	agg := func(from time.Time, iv time.Duration) []point.Bucket {
		t.Helper()
		bs, err := s.Aggregate(ctx, point.HistoryQuery{PK: "pa", DK: "d1", Name: "t", From: from, To: from.Add(time.Hour), Interval: iv})
		if err != nil {
			t.Fatalf("aggregate: %v", err)
		}
		return bs
	}
	mid := now.Add(-20 * day).Truncate(time.Hour)
	oldest := now.Add(-100 * day).Truncate(time.Hour)
	before1m, before1h := buckets(agg(mid, time.Minute)), buckets(agg(oldest, time.Hour))
	// An hourly bucket cut by a range that starts inside the hour: the
	// cut part comes from the 1-minute rollups once the samples are gone.
	cut := func() []point.Bucket {
		t.Helper()
		bs, err := s.Aggregate(ctx, point.HistoryQuery{PK: "pa", DK: "d1", Name: "t", From: mid.Add(2 * time.Minute),
			To: mid.Add(time.Hour), Interval: time.Hour})
		if err != nil {
			t.Fatalf("aggregate: %v", err)
		}
		return bs
	}
	beforeCut := buckets(cut())
	if len(cut()) != 1 || cut()[0].Count != 18 {
		t.Fatalf("hour cut at 2 minutes before retention = %s, want one bucket of 18", beforeCut)
	}
	w := worker(s, retention.Periods{Points: 7 * day, Rollups1m: 60 * day}, products{{ProductKey: "pa"}})
	st := run(t, w)
	if st.Deleted[retention.Points] != 60 {
		t.Errorf("deleted %d samples, want 60", st.Deleted[retention.Points])
	}
	if st.Deleted[retention.Rollups1m] != 5 || st.Deleted[retention.Rollups1h] != 0 {
		t.Errorf("deleted %d 1-minute and %d 1-hour rollups, want 5 and 0", st.Deleted[retention.Rollups1m], st.Deleted[retention.Rollups1h])
	}
	p, err := s.History(ctx, point.HistoryQuery{PK: "pa", DK: "d1", Name: "t", Limit: 100})
	if err != nil || len(p.Samples) != 5 {
		t.Fatalf("history after retention: %d samples, %v; want 5", len(p.Samples), err)
	}
	if l, err := s.Latest(ctx, "pa", "d1", point.KindPoint); err != nil || len(l) != 1 || l[0].Value != int64(4) {
		t.Fatalf("latest after retention: %v, %v", l, err)
	}
	if got := buckets(agg(mid, time.Minute)); got != before1m || len(agg(mid, time.Minute)) != 5 {
		t.Errorf("1-minute aggregation over deleted samples = %s, want %s", got, before1m)
	}
	if got := buckets(agg(oldest, time.Hour)); got != before1h || len(agg(oldest, time.Hour)) != 1 {
		t.Errorf("1-hour aggregation over deleted samples = %s, want %s", got, before1h)
	}
	if got := buckets(cut()); got != beforeCut {
		t.Errorf("hour cut at 2 minutes over deleted samples = %s, want %s", got, beforeCut)
	}
	if got := agg(oldest, time.Minute); len(got) != 0 {
		t.Errorf("1-minute aggregation past the rollups' period = %v, want none", got)
	}
}

// buckets formats aggregation buckets with their values.
func buckets(bs []point.Bucket) string {
	f := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprint(*p)
	}
	out := ""
	for _, b := range bs {
		out += fmt.Sprintf("[%s n=%d avg=%s min=%s max=%s sum=%s]", b.Start.Format(time.RFC3339), b.Count, f(b.Avg), f(b.Min), f(b.Max), f(b.Sum))
	}
	return out
}

// testEventsCommandsDeadLetters: old events, old finished commands and
// old dead letters go; open commands and young rows stay.
func testEventsCommandsDeadLetters(t *testing.T, s Store) {
	ctx := context.Background()
	old := now.Add(-40 * day)
	if err := s.AppendEvents(ctx, []event.Event{
		{ProductKey: "pa", DeviceKey: "d1", Type: event.Online, At: old, Transport: "coap", Peer: "192.0.2.1:1"},
		{ProductKey: "pa", DeviceKey: "d1", Type: event.Offline, At: old.Add(time.Minute), Transport: "coap", Peer: "192.0.2.1:1"},
		{ProductKey: "pa", DeviceKey: "d1", Type: event.Online, At: now.Add(-time.Hour), Transport: "coap", Peer: "192.0.2.1:1"},
	}); err != nil {
		t.Fatalf("append events: %v", err)
	}
	mkCmd := func(created time.Time, cancel bool) string {
		c := &downlink.Command{ProductKey: "pa", DeviceKey: "d1", Topic: "/sys/pa/d1/thing/service/property/set",
			Method: "thing.service.property.set", Params: []byte(`{"a":1}`), CreatedAt: created, ExpiresAt: now.Add(day)}
		if err := s.CreateCommand(ctx, c); err != nil {
			t.Fatalf("create command: %v", err)
		}
		if cancel {
			if _, err := s.CancelCommand(ctx, "pa", "d1", c.ID, created.Add(time.Second)); err != nil {
				t.Fatalf("cancel command: %v", err)
			}
		}
		return c.ID
	}
	mkCmd(old, true)                      // finished, old: deleted
	openID := mkCmd(old, false)           // pending: kept however old
	youngID := mkCmd(now.Add(-day), true) // finished, young: kept
	r := forward.Rule{ID: "r1", Name: "r1", Enabled: true, TopicFilter: "#", MaxAttempts: 5,
		Actions: []forward.Action{{Type: forward.ActionWebhook, URL: "http://127.0.0.1:1/hook"}}, CreatedAt: now, UpdatedAt: now}
	if err := s.CreateRule(ctx, r, 0); err != nil {
		t.Fatalf("create rule: %v", err)
	}
	for _, at := range []time.Time{old, old, now} {
		if err := s.AddDeadLetter(ctx, &forward.DeadLetter{RuleID: "r1", LogID: 1, Topic: "/t", Envelope: []byte(`{}`),
			LastError: "x", Attempts: 5, CreatedAt: at, UpdatedAt: at}); err != nil {
			t.Fatalf("add dead letter: %v", err)
		}
	}
	st := run(t, worker(s, retention.Periods{Events: 30 * day, Commands: 30 * day, DeadLetters: 30 * day}, products{{ProductKey: "pa"}}))
	if st.Deleted[retention.Events] != 2 || st.Deleted[retention.Commands] != 1 || st.Deleted[retention.DeadLetters] != 2 {
		t.Errorf("deleted %v, want 2 events, 1 command, 2 dead letters", st.Deleted)
	}
	evs, err := s.ListEvents(ctx, "pa", "d1", 0, 100)
	if err != nil || len(evs) != 1 || !evs[0].At.Equal(now.Add(-time.Hour)) {
		t.Errorf("events after retention: %v, %v", evs, err)
	}
	cs, err := s.ListCommands(ctx, downlink.ListQuery{ProductKey: "pa", DeviceKey: "d1", Limit: 100})
	if err != nil {
		t.Fatalf("list commands: %v", err)
	}
	var got []string
	for _, c := range cs {
		got = append(got, c.ID)
	}
	if fmt.Sprint(got) != fmt.Sprint([]string{openID, youngID}) && fmt.Sprint(got) != fmt.Sprint([]string{youngID, openID}) {
		t.Errorf("commands after retention: %v, want %s and %s", got, openID, youngID)
	}
	dls, err := s.ListDeadLetters(ctx, "r1", 0, 100)
	if err != nil || len(dls) != 1 {
		t.Errorf("dead letters after retention: %d, %v; want 1", len(dls), err)
	}
}
