package command

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/message"
)

// LogReader is the part of the shared message log Follow reads.
type LogReader interface {
	List(ctx context.Context, q message.Query) ([]message.Message, error)
}

// followBatch is how many log entries Follow reads at once.
const followBatch = 1000

// Follow keeps this node's pending counts in line with commands created,
// delivered, answered, expired or cancelled through other nodes sharing
// the store. Every state change is appended to the log
// ($events/{pk}/{dk}/command) in its own transaction, so Follow tails the
// log from its end and, for each device named by such an entry, recounts
// its pending commands from the store. The uplink path's HasPending stays
// a map lookup; the cost is one small query per command state change in
// the cluster, per node. notify (may be nil) wakes it; it polls every
// poll otherwise. It returns when ctx ends.
func (q *Queue) Follow(ctx context.Context, log LogReader, notify message.Notifier, poll time.Duration) {
	q.following.Store(true)
	defer q.following.Store(false)
	var cursor int64
	started, failing := false, false
	for ctx.Err() == nil {
		var wake <-chan struct{}
		if notify != nil {
			wake = notify.Changed()
		}
		more, err := func() (bool, error) {
			if !started {
				// From the log's end, then a full reload: a change
				// committed in between is counted by one or the other.
				head, err := log.List(ctx, message.Query{Descending: true, Limit: 1, IncludeEvents: true})
				if err != nil {
					return false, fmt.Errorf("log head: %w", err)
				}
				if len(head) > 0 {
					cursor = head[0].ID
				}
				q.recountMu.Lock()
				counts, err := q.o.Store.PendingCommandCounts(ctx, q.o.Now())
				if err == nil {
					q.mu.Lock()
					q.pending = counts
					q.mu.Unlock()
				}
				q.recountMu.Unlock()
				if err != nil {
					return false, fmt.Errorf("load pending commands: %w", err)
				}
				started = true
			}
			ms, err := log.List(ctx, message.Query{AfterID: cursor, IncludeEvents: true, Limit: followBatch})
			if err != nil {
				return false, fmt.Errorf("read log: %w", err)
			}
			seen := map[DeviceKey]bool{}
			for _, m := range ms {
				if message.IsEvent(m.Topic) && strings.HasSuffix(m.Topic, "/command") {
					seen[DeviceKey{m.ProductKey, m.DeviceKey}] = true
				}
			}
			for k := range seen {
				if err := q.recount(ctx, k, true); err != nil {
					return false, err
				}
			}
			if len(ms) > 0 {
				cursor = ms[len(ms)-1].ID
			}
			return len(ms) == followBatch, nil
		}()
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			if !failing { // once per outage
				q.log.Warn("following other nodes' commands failed; retrying", "err", err)
				failing = true
			}
		case more:
			failing = false
			continue
		default:
			failing = false
		}
		t := time.NewTimer(poll)
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}

// recount sets k's pending count from the store. Recounts run one at a
// time, so a slower, older answer never overwrites a newer one. With push
// set and a LivePusher whose device k is live on this node, the pending
// commands this node has not queued yet (created through other nodes) are
// queued for a push: the node holding the device's session pushes them,
// whichever node created them.
func (q *Queue) recount(ctx context.Context, k DeviceKey, push bool) error {
	q.recountMu.Lock()
	defer q.recountMu.Unlock()
	cs, err := q.o.Store.ListCommands(ctx, ListQuery{ProductKey: k.ProductKey, DeviceKey: k.DeviceKey, State: StatePending, Limit: 1000})
	if err != nil {
		return fmt.Errorf("count pending commands of %s/%s: %w", k.ProductKey, k.DeviceKey, err)
	}
	now := q.o.Now()
	n := 0
	lp, _ := q.o.Pusher.(LivePusher)
	live := push && lp != nil && len(cs) > 0 && lp.Live(k.ProductKey, k.DeviceKey)
	for _, c := range cs {
		if c.ExpiresAt.After(now) {
			n++
			if live {
				q.queuePush(c)
			}
		}
	}
	q.mu.Lock()
	if n == 0 {
		delete(q.pending, k)
	} else {
		q.pending[k] = n
	}
	q.mu.Unlock()
	return nil
}
