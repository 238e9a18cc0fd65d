package replaytest

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/coapgate/coapgate/internal/message"
	"github.com/coapgate/coapgate/internal/replay"
)

// ClusterStore is a store shared by the nodes of a cluster: besides the
// durable states it admits each accepted number against the stored window
// (ingest.ClaimAppender), so that a number is accepted once cluster-wide.
type ClusterStore interface {
	replay.Store
	AppendClaims(ctx context.Context, msgs []*message.Message, states []replay.State) ([]error, error)
}

// RunCluster runs the cross-node cases: every node is a replay.Sessions
// table of its own over the one store, as the nodes of a cluster are.
func RunCluster(t *testing.T, newStore func(t *testing.T) ClusterStore) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, s ClusterStore)
	}{
		{"SameNumberOnTwoNodes", testSameNumberTwoNodes},
		{"TooOldAfterAnotherNode", testTooOldAfterOtherNode},
		{"ConcurrentNodes", testConcurrentNodes},
		{"RetransmissionOfStoredExchange", testRetransmission},
		{"WholeBatch", testClaimBatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) { tt.fn(t, newStore(t)) })
	}
}

var clusterNow = time.Now()

// node returns one node's replay table over s.
func node(s ClusterStore, window int) *replay.Sessions {
	return replay.NewSessions(replay.Config{Started: clusterNow.Add(-time.Hour), Window: window, Lifetime: time.Hour, Store: s})
}

// newSession creates k's session on n (the node that issued its token) and
// stores its state, as the gateway does before handing the token out.
func newSession(t *testing.T, s ClusterStore, n *replay.Sessions, k replay.Key) {
	t.Helper()
	sess := n.Create(k, 1, clusterNow.Add(-time.Minute).Truncate(time.Second), clusterNow.Add(time.Hour), clusterNow)
	refused, err := s.AppendClaims(context.Background(), []*message.Message{nil}, []replay.State{sess.State()})
	if err != nil || refused[0] != nil {
		t.Fatalf("store new session: %v %v", err, refused)
	}
}

// claim accepts seq on node n locally and then cluster-wide with an uplink
// message; it returns the store's refusal (nil: stored) and the message.
func claim(t *testing.T, s ClusterStore, n *replay.Sessions, k replay.Key, seq uint64, exchange string) (error, *message.Message) {
	t.Helper()
	sess, err := n.Lookup(context.Background(), k, 1, clusterNow.Add(-time.Minute).Truncate(time.Second), clusterNow.Add(time.Hour), clusterNow)
	if err != nil {
		t.Fatalf("Lookup: %v", err)
	}
	st, err := sess.UseAt(seq, clusterNow, nil)
	if err != nil {
		return err, nil // refused by the node's own window
	}
	defer sess.Release()
	msg := &message.Message{ProductKey: k.ProductKey, DeviceKey: k.DeviceKey, Topic: "/p/d/up",
		Payload: fmt.Appendf(nil, "%d", seq), ReceivedAt: clusterNow, Exchange: exchange}
	refused, err := s.AppendClaims(context.Background(), []*message.Message{msg}, []replay.State{st})
	if err != nil {
		t.Fatalf("AppendClaims: %v", err)
	}
	if refused[0] != nil && msg.ID != 0 {
		t.Fatalf("refused entry %d got log ID %d", seq, msg.ID)
	}
	if refused[0] == nil && msg.ID == 0 {
		t.Fatalf("admitted entry %d has no log ID", seq)
	}
	return refused[0], msg
}

// testSameNumberTwoNodes: both nodes hold the session (B rebuilt it from
// the store) and both accept 5 in their own windows; the store admits it
// once. B then takes 6, and the stored window has both.
func testSameNumberTwoNodes(t *testing.T, s ClusterStore) {
	a, b := node(s, 64), node(s, 64)
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{1}}
	newSession(t, s, a, k)
	if err, _ := claim(t, s, a, k, 4, ""); err != nil {
		t.Fatalf("node A, 4: %v", err)
	}
	if err, _ := claim(t, s, b, k, 4, ""); !replay.IsReplay(err) {
		t.Fatalf("node B, 4 again (B rebuilt the session after A's commit): %v, want a replay", err)
	}
	// Now both hold the session in memory: B's window has not seen A's next.
	if err, _ := claim(t, s, a, k, 5, ""); err != nil {
		t.Fatalf("node A, 5: %v", err)
	}
	if err, _ := claim(t, s, b, k, 5, ""); !replay.IsReplay(err) {
		t.Fatalf("node B, 5 after node A took it: %v, want a replay", err)
	}
	if err, _ := claim(t, s, b, k, 6, ""); err != nil {
		t.Fatalf("node B, 6: %v", err)
	}
	if err, _ := claim(t, s, a, k, 6, ""); !replay.IsReplay(err) {
		t.Fatalf("node A, 6 after node B took it: %v, want a replay", err)
	}
	st, ok, err := s.LoadReplayState(context.Background(), k)
	if err != nil || !ok || st.High != 6 || st.Seen[0]&0b111 != 0b111 {
		t.Fatalf("stored state %+v ok=%v err=%v: want 4, 5 and 6 used", st, ok, err)
	}
}

// testTooOldAfterOtherNode: a number below another node's high-water mark
// by a window or more is refused as too old, though this node never saw
// the high one.
func testTooOldAfterOtherNode(t *testing.T, s ClusterStore) {
	a, b := node(s, 16), node(s, 16)
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{2}}
	newSession(t, s, a, k)
	if err, _ := claim(t, s, b, k, 2, ""); err != nil {
		t.Fatal(err)
	}
	if err, _ := claim(t, s, a, k, 100, ""); err != nil {
		t.Fatal(err)
	}
	if err, _ := claim(t, s, b, k, 50, ""); !replay.IsReplay(err) {
		t.Fatalf("node B, 50 after node A's 100 with a window of 16: %v, want refused", err)
	}
	if err, _ := claim(t, s, b, k, 90, ""); err != nil {
		t.Fatalf("node B, 90 (inside the window): %v", err)
	}
}

// testConcurrentNodes: three nodes, several uplinks in flight on each, all
// trying every number of one session: each number is admitted exactly once.
func testConcurrentNodes(t *testing.T, s ClusterStore) {
	nodes := []*replay.Sessions{node(s, 1024), node(s, 1024), node(s, 1024)}
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{3}}
	newSession(t, s, nodes[0], k)
	const numbers = 60
	var (
		mu       sync.Mutex
		admitted = map[uint64]int{}
		wg       sync.WaitGroup
		errs     = make(chan error, len(nodes)*4)
	)
	for _, n := range nodes {
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range numbers {
					seq := uint64(1 + (i+w*7)%numbers)
					sess, err := n.Lookup(context.Background(), k, 1, clusterNow.Add(-time.Minute).Truncate(time.Second), clusterNow.Add(time.Hour), clusterNow)
					if err != nil {
						errs <- err
						return
					}
					st, err := sess.UseAt(seq, clusterNow, nil)
					if err != nil {
						continue // this node's window already has it
					}
					msg := &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/up", ReceivedAt: clusterNow}
					refused, err := s.AppendClaims(context.Background(), []*message.Message{msg}, []replay.State{st})
					sess.Release()
					if err != nil {
						errs <- err
						return
					}
					if refused[0] == nil {
						mu.Lock()
						admitted[seq]++
						mu.Unlock()
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for seq := uint64(1); seq <= numbers; seq++ {
		if admitted[seq] != 1 {
			t.Errorf("number %d admitted %d times, want once", seq, admitted[seq])
		}
	}
}

// testRetransmission: a CON uplink stored by one node and retransmitted
// to another (its answer lost) carries a used number, but it is the same
// exchange: answered with the stored entry, not refused. (A node that
// rebuilds the session after the store has the number refuses it in its own
// window first.)
func testRetransmission(t *testing.T, s ClusterStore) {
	a, b := node(s, 64), node(s, 64)
	k := replay.Key{ProductKey: "p", DeviceKey: "d", Random: [8]byte{4}}
	newSession(t, s, a, k)
	if err, _ := claim(t, s, b, k, 8, ""); err != nil { // B holds the session from here on
		t.Fatal(err)
	}
	ex := "p/d|77|exchange-a" // an exchange key (its form is package message's)
	err, first := claim(t, s, a, k, 9, ex)
	if err != nil {
		t.Fatal(err)
	}
	err, again := claim(t, s, b, k, 9, ex)
	if err != nil || again == nil || again.ID != first.ID {
		t.Fatalf("retransmission on another node: %v, id %d; want the stored entry %d", err, again.ID, first.ID)
	}
	if err, _ := claim(t, s, b, k, 9, "p/d|78|exchange-b"); !replay.IsReplay(err) {
		t.Fatalf("the number in another exchange: %v, want a replay", err)
	}
}

// testClaimBatch: one batch with entries of several sessions, a plain
// entry without a state, and a number twice: the second use is refused,
// the rest stored.
func testClaimBatch(t *testing.T, s ClusterStore) {
	a := node(s, 64)
	k1 := replay.Key{ProductKey: "p", DeviceKey: "d1", Random: [8]byte{5}}
	k2 := replay.Key{ProductKey: "p", DeviceKey: "d2", Random: [8]byte{6}}
	newSession(t, s, a, k1)
	newSession(t, s, a, k2)
	st := func(k replay.Key, seq uint64) replay.State {
		v, _, err := s.LoadReplayState(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		v.Accepted = seq
		return v
	}
	var msgs []*message.Message
	for i := range 4 {
		msgs = append(msgs, &message.Message{ProductKey: "p", DeviceKey: "d", Topic: "/p/d/up", Payload: []byte{byte(i)}, ReceivedAt: clusterNow})
	}
	states := []replay.State{st(k1, 3), st(k2, 3), {}, st(k1, 3)}
	refused, err := s.AppendClaims(context.Background(), msgs, states)
	if err != nil {
		t.Fatal(err)
	}
	if refused[0] != nil || refused[1] != nil || refused[2] != nil || !replay.IsReplay(refused[3]) {
		t.Fatalf("refused %v: want only the last (3 twice in one session)", refused)
	}
	if msgs[0].ID == 0 || msgs[1].ID == 0 || msgs[2].ID == 0 || msgs[3].ID != 0 {
		t.Fatalf("ids %d %d %d %d", msgs[0].ID, msgs[1].ID, msgs[2].ID, msgs[3].ID)
	}
}
