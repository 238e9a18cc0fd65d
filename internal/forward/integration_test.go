package forward_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/event"
	"github.com/coapgate/coapgate/internal/forward"
	"github.com/coapgate/coapgate/internal/forward/mqttout"
	"github.com/coapgate/coapgate/internal/forward/natsout"
	"github.com/coapgate/coapgate/internal/forward/pgout"
	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/sqlitestore"
)

// openStore opens a fresh SQLite store in dir.
func openStore(t testing.TB, dir string) *sqlitestore.Store {
	t.Helper()
	st, err := sqlitestore.Open(context.Background(), filepath.Join(dir, "fwd.db"))
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// startManager starts a Manager with short retry waits and every target.
func startManager(t testing.TB, st *sqlitestore.Store) *forward.Manager {
	t.Helper()
	m, err := forward.New(forward.Options{
		Store: st, Log: st, Notifier: st,
		Targets: map[string]forward.TargetFactory{
			forward.ActionMQTT: mqttout.Factory(), forward.ActionNATS: natsout.Factory(), forward.ActionPostgres: pgout.Factory(),
		},
		BackoffBase: 5 * time.Millisecond, BackoffMax: 50 * time.Millisecond,
		PollInterval: 200 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	return m
}

func closeManager(t testing.TB, m *forward.Manager) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.Close(ctx); err != nil {
		t.Errorf("close manager: %v", err)
	}
}

// appendN appends n uplinks of pk/dk with payload {"params":{"n":i}}.
func appendN(t testing.TB, st message.Store, pk, dk string, n int) []int64 {
	t.Helper()
	msgs := make([]*message.Message, n)
	for i := range msgs {
		msgs[i] = &message.Message{ProductKey: pk, DeviceKey: dk,
			Topic:   "/sys/" + pk + "/" + dk + "/thing/event/property/post",
			Payload: fmt.Appendf(nil, `{"params":{"n":%d}}`, i), ContentFormat: 50,
			ReceivedAt: time.Now(), Peer: "127.0.0.1:1", Transport: message.TransportCoAP}
	}
	if err := st.Append(context.Background(), msgs); err != nil {
		t.Fatal(err)
	}
	ids := make([]int64, n)
	for i, m := range msgs {
		ids[i] = m.ID
	}
	return ids
}

// eventually polls cond until it holds; it fails the test after 20 s.
func eventually(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// receiver is a webhook endpoint that checks signatures and records the
// log IDs it accepted.
type receiver struct {
	t      testing.TB
	secret string
	fail   atomic.Bool // answer 500
	srv    *httptest.Server

	mu     sync.Mutex
	got    map[int64]int // log id -> deliveries accepted
	order  []int64
	badSig int
	hdr    http.Header
}

func newReceiver(t testing.TB, secret string) *receiver {
	r := &receiver{t: t, secret: secret, got: map[int64]int{}}
	r.srv = httptest.NewServer(http.HandlerFunc(r.serve))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) serve(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(req.Body)
	if r.fail.Load() {
		http.Error(w, "down for maintenance", http.StatusInternalServerError)
		return
	}
	var env forward.Envelope
	if err := json.Unmarshal(body, &env); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if req.Header.Get(forward.HeaderSignature) != forward.Sign([]byte(r.secret), body) {
		r.badSig++
	}
	// The timestamped signature, verified as docs/api.md tells receivers to.
	if forward.VerifySignature([]byte(r.secret), req.Header.Get(forward.HeaderTimestamp),
		req.Header.Get(forward.HeaderSignatureV2), body, time.Now(), forward.DefaultSignatureTolerance) != nil {
		r.badSig++
	}
	r.got[env.ID]++
	r.order = append(r.order, env.ID)
	r.hdr = req.Header.Clone()
}

func (r *receiver) has(ids []int64) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, id := range ids {
		if r.got[id] == 0 {
			return false
		}
	}
	return true
}

func (r *receiver) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.order)
}

func webhookRule(url, secret string) forward.Rule {
	return forward.Rule{Name: "hook", Enabled: true, TopicFilter: "/sys/+/+/thing/#",
		Actions: []forward.Action{{Type: forward.ActionWebhook, URL: url, Secret: secret,
			Headers: map[string]string{"X-Tenant": "t1"}}}}
}

func TestWebhookSignedDelivery(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	rc := newReceiver(t, "topsecret")
	before := appendN(t, st, "pk1", "dk1", 2) // before the rule: not delivered (starts at the end)
	r := webhookRule(rc.srv.URL, "topsecret")
	r.Condition = "params.n != 1"
	r, err := m.CreateRule(context.Background(), r, forward.StartAtEnd)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 3)
	appendN(t, st, "pk2", "dk9", 0)
	eventually(t, "deliveries", func() bool { return rc.has([]int64{ids[0], ids[2]}) })
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if rc.badSig != 0 {
		t.Fatalf("%d deliveries had a wrong signature", rc.badSig)
	}
	if rc.got[ids[1]] != 0 || rc.got[before[0]] != 0 || rc.got[before[1]] != 0 {
		t.Fatalf("delivered entries the rule excludes: %v", rc.got)
	}
	if want := fmt.Sprintf("%s-%d", r.ID, ids[2]); rc.hdr.Get(forward.HeaderDelivery) != want {
		t.Fatalf("delivery header %q, want %q", rc.hdr.Get(forward.HeaderDelivery), want)
	}
	if rc.hdr.Get("X-Tenant") != "t1" || rc.hdr.Get("Content-Type") != "application/json" || rc.hdr.Get(forward.HeaderTimestamp) == "" {
		t.Fatalf("headers %v", rc.hdr)
	}
}

func TestWebhookDownThenUpNoLoss(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	rc := newReceiver(t, "k")
	rc.fail.Store(true)
	r := webhookRule(rc.srv.URL, "k")
	r.MaxAttempts = 100
	r, err := m.CreateRule(context.Background(), r, forward.StartAtEnd)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 20)
	eventually(t, "failures recorded", func() bool {
		s, err := m.Status(context.Background(), r.ID)
		return err == nil && s[0].Failures >= 3 && s[0].LastError != ""
	})
	if rc.count() != 0 {
		t.Fatal("the receiver accepted while down")
	}
	rc.fail.Store(false)
	eventually(t, "all delivered", func() bool { return rc.has(ids) })
	// In order, each once.
	rc.mu.Lock()
	for i, id := range rc.order {
		if id != ids[i] {
			t.Fatalf("delivery %d is log id %d, want %d (order %v)", i, id, ids[i], rc.order)
		}
	}
	rc.mu.Unlock()
	eventually(t, "status catches up", func() bool {
		s, _ := m.Status(context.Background(), r.ID)
		return len(s) == 1 && s[0].Cursor == ids[len(ids)-1] && s[0].Lag == 0 && s[0].Delivered == 20 && s[0].DeadLetters == 0
	})
}

func TestWebhookDeadLetterAndReplay(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	ctx := context.Background()
	rc := newReceiver(t, "k")
	rc.fail.Store(true)
	r := webhookRule(rc.srv.URL, "k")
	r.MaxAttempts = 3
	r, err := m.CreateRule(ctx, r, forward.StartAtEnd)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 3)
	var dls []forward.DeadLetter
	eventually(t, "dead letters", func() bool {
		dls, err = m.DeadLetters(ctx, r.ID, 0, 100)
		return err == nil && len(dls) == 3
	})
	for i, dl := range dls {
		if dl.LogID != ids[i] || dl.Attempts != 3 || dl.LastError == "" || dl.Action != 0 {
			t.Fatalf("dead letter %d: %+v", i, dl)
		}
	}
	// The cursor moved past them.
	eventually(t, "cursor past dead letters", func() bool {
		s, _ := m.Status(ctx, r.ID)
		return s[0].Cursor == ids[2] && s[0].DeadLetters == 3 && s[0].Failures == 9
	})
	// Replay while still down: kept, attempts incremented.
	res, err := m.Replay(ctx, r.ID, []int64{dls[0].ID})
	if err != nil || res.Failed != 1 || res.Delivered != 0 {
		t.Fatalf("replay while down: %+v, %v", res, err)
	}
	if dl, _ := st.GetDeadLetter(ctx, r.ID, dls[0].ID); dl.Attempts != 4 {
		t.Fatalf("attempts after failed replay = %d, want 4", dl.Attempts)
	}
	// The rule's status counts the failed replay.
	if s, err := m.Status(ctx, r.ID); err != nil || s[0].Failures != 10 || s[0].DeadLetters != 3 || s[0].LastError == "" {
		t.Fatalf("status after a failed replay: %+v, %v", s, err)
	}
	rc.fail.Store(false)
	res, err = m.Replay(ctx, r.ID, nil)
	if err != nil || res.Delivered != 3 || res.Failed != 0 {
		t.Fatalf("replay: %+v, %v", res, err)
	}
	if !rc.has(ids) || rc.badSig != 0 {
		t.Fatalf("replayed envelopes not received intact: %v", rc.got)
	}
	if left, _ := m.DeadLetters(ctx, r.ID, 0, 100); len(left) != 0 {
		t.Fatalf("%d dead letters left after a successful replay", len(left))
	}
	// The status reflects the replay: delivered, no dead letters, no error.
	s, err := m.Status(ctx, r.ID)
	if err != nil || s[0].DeadLetters != 0 || s[0].Delivered != 3 || s[0].LastError != "" || s[0].LastErrorAt != nil {
		t.Fatalf("status after a successful replay: %+v, %v", s, err)
	}
}

func TestWebhookClosedPortDeadLetters(t *testing.T) {
	addr := refusingAddr(t)
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	r := webhookRule("http://"+addr+"/hook", "")
	r.MaxAttempts = 2
	r, err := m.CreateRule(context.Background(), r, forward.StartAtEnd)
	if err != nil {
		t.Fatal(err)
	}
	appendN(t, st, "pk1", "dk1", 1)
	eventually(t, "dead letter", func() bool {
		dls, _ := m.DeadLetters(context.Background(), r.ID, 0, 10)
		return len(dls) == 1 && dls[0].LastError != ""
	})
}

// TestRestartResumesFromCursor stops the manager mid-stream and starts a
// new one on the same database: every entry arrives at least once, and
// the second run does not start over.
func TestRestartResumesFromCursor(t *testing.T) {
	dir := t.TempDir()
	st := openStore(t, dir)
	defer st.Close()
	rc := newReceiver(t, "k")
	m := startManager(t, st)
	r, err := m.CreateRule(context.Background(), webhookRule(rc.srv.URL, "k"), 0)
	if err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 300)
	eventually(t, "some deliveries", func() bool { return rc.count() >= 50 })
	closeManager(t, m)
	first := rc.count()
	more := appendN(t, st, "pk1", "dk1", 100)

	m2 := startManager(t, st)
	defer closeManager(t, m2)
	all := append(ids, more...)
	eventually(t, "every entry", func() bool { return rc.has(all) })
	second := rc.count() - first
	if second >= len(all) {
		t.Fatalf("second run delivered %d of %d entries: it started over instead of at the cursor", second, len(all))
	}
	t.Logf("first run %d, second run %d deliveries for %d entries", first, second, len(all))
	// The receiver records a delivery before the worker has its answer and
	// moves the cursor: wait for the cursor itself.
	eventually(t, "the cursor at the last entry", func() bool {
		s, err := m2.Status(context.Background(), r.ID)
		return err == nil && s[0].Cursor == all[len(all)-1]
	})
}

func TestEventReachesEventRule(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	ctx := context.Background()
	events, uplinks := newReceiver(t, ""), newReceiver(t, "")
	er := webhookRule(events.srv.URL, "")
	er.TopicFilter = "$events/+/+/online"
	if _, err := m.CreateRule(ctx, er, forward.StartAtEnd); err != nil {
		t.Fatal(err)
	}
	ur := webhookRule(uplinks.srv.URL, "")
	ur.TopicFilter = "#"
	if _, err := m.CreateRule(ctx, ur, forward.StartAtEnd); err != nil {
		t.Fatal(err)
	}
	if err := st.AppendEvents(ctx, []event.Event{{ProductKey: "pk1", DeviceKey: "dk1", Type: event.Online, At: time.Now(), Transport: "coap", Peer: "127.0.0.1:5"}}); err != nil {
		t.Fatal(err)
	}
	ids := appendN(t, st, "pk1", "dk1", 1)
	eventually(t, "uplink on '#'", func() bool { return uplinks.has(ids) })
	eventually(t, "online event", func() bool { return events.count() == 1 })
	if uplinks.count() != 1 {
		t.Fatalf("'#' rule got %d entries, want only the uplink (no $events)", uplinks.count())
	}
	events.mu.Lock()
	defer events.mu.Unlock()
	if events.got[ids[0]] != 0 {
		t.Fatal("the event rule got an uplink")
	}
}

func TestCreateRuleRejectsBadCondition(t *testing.T) {
	st := openStore(t, t.TempDir())
	defer st.Close()
	m := startManager(t, st)
	defer closeManager(t, m)
	r := webhookRule("http://127.0.0.1:1/", "")
	r.Condition = "params.temp >"
	if _, err := m.CreateRule(context.Background(), r, forward.StartAtEnd); err == nil {
		t.Fatal("a condition that does not compile was accepted")
	}
	if rules, _ := m.ListRules(context.Background()); len(rules) != 0 {
		t.Fatalf("%d rules stored", len(rules))
	}
}

func env(t testing.TB, name string) string {
	v := os.Getenv(name)
	if v == "" {
		t.Skipf("%s not set: no local service to test against", name)
	}
	return v
}

// BenchmarkWebhookDelivery measures end-to-end forwarding throughput: b.N
// entries appended to the SQLite log, one webhook rule delivering them to
// a local receiver; it reports entries per second.
func BenchmarkWebhookDelivery(b *testing.B) {
	st := openStore(b, b.TempDir())
	defer st.Close()
	m := startManager(b, st)
	defer closeManager(b, m)
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		n.Add(1)
	}))
	defer srv.Close()
	if _, err := m.CreateRule(context.Background(), webhookRule(srv.URL, "k"), forward.StartAtEnd); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	start := time.Now()
	for left := b.N; left > 0; left -= 512 {
		appendN(b, st, "pk1", "dk1", min(left, 512))
	}
	for n.Load() < int64(b.N) {
		time.Sleep(time.Millisecond)
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "entries/s")
}

// refusingAddr returns a loopback TCP address that refuses connections for
// the rest of the test: a socket bound to it that never listens. Unlike a
// listener that was closed, the port cannot be taken by another process
// meanwhile.
func refusingAddr(t testing.TB) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}
