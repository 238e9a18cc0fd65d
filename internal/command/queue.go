package command

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Pusher sends a command to a device over a live session (a DTLS session,
// or the last address of a plain-UDP device seen within its lifetime) as a
// server-initiated CON request, and waits for the acknowledgement.
type Pusher interface {
	// Push returns ErrNotLive when the device has no live session on this
	// node, nil when the device acknowledged (2.xx or an empty ACK; reply
	// is the reply the ACK carried, if any), another error when it reset,
	// refused or never answered.
	Push(ctx context.Context, c Command) (reply *Reply, err error)
}

// LivePusher is a Pusher that can tell cheaply whether a device has a live
// session on this node. Follow uses it to push the commands created on
// other nodes: only the node that holds the device's session pushes.
type LivePusher interface {
	Pusher
	Live(pk, dk string) bool
}

// maxTried bounds the command IDs remembered as pushed (or queued to be)
// by this node; beyond it the set starts over (a command then may be
// pushed once more, which the device answers like any retransmission).
const maxTried = 1 << 14

// Push errors.
var (
	ErrNotLive = errors.New("command: device has no live session")
	// ErrPushRefused is a push answered with RST or a non-2.xx code.
	ErrPushRefused = errors.New("command: push refused by device")
)

// Options configures a Queue. Store is required.
type Options struct {
	Store  Store
	Pusher Pusher // nil: no push, devices fetch after option 2100
	// DefaultTTL applies to commands created without a TTL [24h]; MaxTTL
	// bounds any TTL [7d].
	DefaultTTL, MaxTTL time.Duration
	// PushWorkers bounds concurrent pushes [16]; PushQueue bounds pushes
	// waiting for a worker [4096] (beyond it a push is skipped: the device
	// still gets option 2100).
	PushWorkers, PushQueue int
	// SweepInterval is how often due commands are expired [1s].
	SweepInterval time.Duration
	Registerer    prometheus.Registerer
	Logger        *slog.Logger
	Now           func() time.Time
}

// Queue is the node's command service: it creates commands, answers the
// gateway's cheap HasPending from an in-memory count per device (loaded
// from the store at start, maintained on every transition this node makes),
// expires due commands and pushes new ones. Safe for concurrent use.
//
// Counts are per node; nodes sharing a store run Follow, which applies the
// other nodes' changes from the shared log. Without it, a command created
// through another node's API is seen here after a restart (or when the
// device fetches it by GET).
type Queue struct {
	o   Options
	log *slog.Logger
	m   *metrics

	mu      sync.RWMutex
	pending map[DeviceKey]int // guarded by mu; pending commands per device

	// following is set while Follow runs: counts then come from the store
	// (recount, serialised by recountMu so the last query's answer is
	// the one kept).
	following atomic.Bool
	recountMu sync.Mutex
	// acked holds, per command ID, a channel closed once this node has
	// recorded the delivery of an acknowledged push.
	acked sync.Map

	push chan Command

	// tried holds the IDs of commands this node queued for a push (its
	// own, and other nodes' it saw through Follow while the device was
	// live here), so Follow queues each once.
	triedMu sync.Mutex
	tried   map[string]struct{} // guarded by triedMu

	// pushed, when set (tests), is called after pushOne has finished all
	// its bookkeeping for a command, whatever the outcome.
	pushed func(Command)
}

// NewQueue loads the pending counts and returns the Queue; call Run to
// start expiry and pushes.
func NewQueue(ctx context.Context, o Options) (*Queue, error) {
	if o.DefaultTTL <= 0 {
		o.DefaultTTL = 24 * time.Hour
	}
	if o.MaxTTL <= 0 {
		o.MaxTTL = 7 * 24 * time.Hour
	}
	if o.PushWorkers <= 0 {
		o.PushWorkers = 16
	}
	if o.PushQueue <= 0 {
		o.PushQueue = 4096
	}
	if o.SweepInterval <= 0 {
		o.SweepInterval = time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	q := &Queue{o: o, log: o.Logger.With("component", "commands"), push: make(chan Command, o.PushQueue)}
	counts, err := o.Store.PendingCommandCounts(ctx, o.Now())
	if err != nil {
		return nil, fmt.Errorf("load pending commands: %w", err)
	}
	q.pending = counts
	q.m = newMetrics(o.Registerer, q)
	return q, nil
}

// Run expires due commands every SweepInterval and runs the push workers
// until ctx ends; it returns when all of them stopped.
func (q *Queue) Run(ctx context.Context) {
	var wg sync.WaitGroup
	if q.o.Pusher != nil {
		for range q.o.PushWorkers {
			wg.Go(func() {
				for {
					select {
					case <-ctx.Done():
						return
					case c := <-q.push:
						q.pushOne(ctx, c)
					}
				}
			})
		}
	}
	wg.Go(func() {
		t := time.NewTicker(q.o.SweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if _, err := q.ExpireDue(ctx, q.o.Now()); err != nil && ctx.Err() == nil {
					q.log.Warn("command expiry failed", "err", err)
				}
			}
		}
	})
	wg.Wait()
}

// HasPending reports whether device pk/dk has a pending command, from
// memory (no storage access): what the uplink path asks on every uplink.
func (q *Queue) HasPending(pk, dk string) bool {
	q.mu.RLock()
	n := q.pending[DeviceKey{pk, dk}]
	q.mu.RUnlock()
	return n > 0
}

// PendingTotal is the number of pending commands this node knows of.
func (q *Queue) PendingTotal() int {
	q.mu.RLock()
	defer q.mu.RUnlock()
	t := 0
	for _, n := range q.pending {
		t += n
	}
	return t
}

func (q *Queue) adjust(pk, dk string, d int) {
	k := DeviceKey{pk, dk}
	if q.following.Load() {
		// Follow recounts from the store; a delta applied after one of
		// its recounts would count this change twice.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := q.recount(ctx, k, false)
		cancel()
		if err == nil {
			return
		}
		q.log.Warn("recount pending commands", "err", err)
	}
	q.mu.Lock()
	n := q.pending[k] + d
	if n <= 0 {
		delete(q.pending, k)
	} else {
		q.pending[k] = n
	}
	q.mu.Unlock()
}

// left records a transition out of from (pending count, metrics).
func (q *Queue) left(c *Command, from State) {
	if from == StatePending {
		q.adjust(c.ProductKey, c.DeviceKey, -1)
	}
}

// Create validates s, queues the command for pk/dk with ttl (0: the
// default TTL) and starts a push if there is a pusher. The caller checks
// that the device exists.
func (q *Queue) Create(ctx context.Context, pk, dk string, s Spec, ttl time.Duration) (Command, error) {
	topic, method, params, err := Build(pk, dk, s)
	if err != nil {
		return Command{}, err
	}
	switch {
	case ttl == 0:
		ttl = q.o.DefaultTTL
	case ttl < time.Second || ttl > q.o.MaxTTL:
		return Command{}, fmt.Errorf("%w: ttl %s: want 1s..%s", ErrInvalid, ttl, q.o.MaxTTL)
	}
	now := q.o.Now().UTC()
	c := Command{
		ProductKey: pk, DeviceKey: dk, Topic: topic, Method: method, Params: params, Raw: s.Raw,
		State: StatePending, CreatedAt: now, ExpiresAt: now.Add(ttl),
	}
	if err := q.o.Store.CreateCommand(ctx, &c); err != nil {
		return Command{}, fmt.Errorf("create command: %w", err)
	}
	q.adjust(pk, dk, 1)
	q.m.created.Inc()
	q.log.Info("command queued", "command", c.ID, "productKey", pk, "deviceKey", dk, "topic", topic, "expiresAt", c.ExpiresAt)
	if q.o.Pusher != nil {
		q.queuePush(c)
	}
	return c, nil
}

// queuePush queues c for a push unless this node queued it before.
func (q *Queue) queuePush(c Command) {
	q.triedMu.Lock()
	if _, ok := q.tried[c.ID]; ok {
		q.triedMu.Unlock()
		return
	}
	if q.tried == nil || len(q.tried) >= maxTried {
		q.tried = make(map[string]struct{})
	}
	q.tried[c.ID] = struct{}{}
	q.triedMu.Unlock()
	select {
	case q.push <- c:
	default:
		q.m.push.WithLabelValues("queue_full").Inc()
	}
}

// NextTopic returns the request topic of the device's oldest deliverable
// command, "" when there is none. Cheap when HasPending is false.
func (q *Queue) NextTopic(ctx context.Context, pk, dk string, now time.Time) (string, error) {
	if !q.HasPending(pk, dk) {
		return "", nil
	}
	c, err := q.o.Store.NextPendingCommand(ctx, pk, dk, "", now)
	if errors.Is(err, ErrNotFound) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("next command of %s/%s: %w", pk, dk, err)
	}
	return c.Topic, nil
}

// Deliver hands out the oldest deliverable command of topic (a GET by the
// device): it is marked delivered (and its event logged) before it is
// returned. next is the topic of the following command, "" when none
// waits. ErrNotFound when nothing of topic waits.
func (q *Queue) Deliver(ctx context.Context, pk, dk, topic string, now time.Time) (c Command, next string, err error) {
	for range 3 { // a concurrent push or expiry may take the one we found
		if c, err = q.o.Store.NextPendingCommand(ctx, pk, dk, topic, now); err != nil {
			return Command{}, "", err
		}
		c, err = q.o.Store.MarkCommandDelivered(ctx, c.ID, ViaGet, now)
		if errors.Is(err, ErrState) {
			continue
		}
		if err != nil {
			return Command{}, "", fmt.Errorf("deliver command %s: %w", c.ID, err)
		}
		q.left(&c, StatePending)
		q.m.delivered.WithLabelValues(ViaGet).Inc()
		q.log.Info("command delivered", "command", c.ID, "productKey", pk, "deviceKey", dk, "via", ViaGet)
		next, err = q.NextTopic(ctx, pk, dk, now)
		return c, next, err
	}
	return Command{}, "", ErrNotFound
}

// Reply completes the device's command r.ID with its reply: replied for
// code 200, failed otherwise. ErrNotFound for an unknown id or one of
// another device, ErrState when the command is no longer open.
func (q *Queue) Reply(ctx context.Context, pk, dk string, r Reply, now time.Time) (Command, error) {
	if done, ok := q.acked.Load(r.ID); ok {
		// This node's push of the command was just acknowledged: record
		// the delivery (via push) before the reply.
		select {
		case <-done.(chan struct{}):
		case <-ctx.Done():
		}
	}
	t, err := q.o.Store.CompleteCommand(ctx, pk, dk, r, now)
	if err != nil {
		q.m.replyUnmatched.Inc()
		return Command{}, err
	}
	q.left(&t.Command, t.From)
	if t.State == StateReplied {
		q.m.replied.Inc()
	} else {
		q.m.failed.Inc()
	}
	q.log.Info("command replied", "command", t.ID, "productKey", pk, "deviceKey", dk, "code", r.Code, "state", t.State)
	return t.Command, nil
}

// Get returns one command of a device.
func (q *Queue) Get(ctx context.Context, pk, dk, id string) (Command, error) {
	return q.o.Store.GetCommand(ctx, pk, dk, id)
}

// List lists a device's commands, newest first.
func (q *Queue) List(ctx context.Context, lq ListQuery) ([]Command, error) {
	return q.o.Store.ListCommands(ctx, lq)
}

// Cancel cancels a pending command (ErrState otherwise).
func (q *Queue) Cancel(ctx context.Context, pk, dk, id string) (Command, error) {
	c, err := q.o.Store.CancelCommand(ctx, pk, dk, id, q.o.Now().UTC())
	if err != nil {
		return Command{}, err
	}
	q.left(&c, StatePending)
	q.m.cancelled.Inc()
	q.log.Info("command cancelled", "command", c.ID, "productKey", pk, "deviceKey", dk)
	return c, nil
}

// expireBatch bounds one expiry transaction.
const expireBatch = 512

// ExpireDue expires every command due at now and returns how many.
func (q *Queue) ExpireDue(ctx context.Context, now time.Time) (int, error) {
	total := 0
	for {
		ts, err := q.o.Store.ExpireCommands(ctx, now, expireBatch)
		if err != nil {
			return total, fmt.Errorf("expire commands: %w", err)
		}
		for i := range ts {
			q.left(&ts[i].Command, ts[i].From)
			q.log.Info("command expired", "command", ts[i].ID, "productKey", ts[i].ProductKey, "deviceKey", ts[i].DeviceKey, "was", ts[i].From)
		}
		q.m.expired.Add(float64(len(ts)))
		total += len(ts)
		if len(ts) < expireBatch {
			return total, nil
		}
	}
}

// pushOne pushes c if it is still pending and the device is live.
func (q *Queue) pushOne(ctx context.Context, c Command) {
	if q.pushed != nil {
		defer q.pushed(c)
	}
	if !c.ExpiresAt.After(q.o.Now()) {
		return
	}
	reply, err := q.o.Pusher.Push(ctx, c)
	recorded := func() {}
	if err == nil {
		// Acknowledged: the device's reply may already be on its way;
		// Reply waits until the delivery is recorded.
		done := make(chan struct{})
		q.acked.Store(c.ID, done)
		recorded = sync.OnceFunc(func() { q.acked.Delete(c.ID); close(done) })
		defer recorded()
	}
	switch {
	case errors.Is(err, ErrNotLive):
		q.m.push.WithLabelValues("not_live").Inc()
		return
	case errors.Is(err, ErrPushRefused):
		q.m.push.WithLabelValues("refused").Inc()
		q.log.Info("command push refused; the device gets option 2100", "command", c.ID, "productKey", c.ProductKey, "deviceKey", c.DeviceKey, "err", err)
		return
	case err != nil:
		q.m.push.WithLabelValues("timeout").Inc()
		q.log.Info("command push unanswered; the device gets option 2100", "command", c.ID, "productKey", c.ProductKey, "deviceKey", c.DeviceKey, "err", err)
		return
	}
	q.m.push.WithLabelValues("acked").Inc()
	now := q.o.Now().UTC()
	d, err := q.o.Store.MarkCommandDelivered(ctx, c.ID, ViaPush, now)
	switch {
	case err == nil:
		q.left(&d, StatePending)
		q.m.delivered.WithLabelValues(ViaPush).Inc()
		q.log.Info("command delivered", "command", c.ID, "productKey", c.ProductKey, "deviceKey", c.DeviceKey, "via", ViaPush)
	case errors.Is(err, ErrState):
		// Already fetched, replied (the reply raced the ACK), or expired.
	default:
		q.log.Warn("mark pushed command delivered failed", "command", c.ID, "err", err)
		return
	}
	recorded()
	if reply != nil && reply.ID == c.ID {
		if _, err := q.Reply(ctx, c.ProductKey, c.DeviceKey, *reply, now); err != nil && !errors.Is(err, ErrState) {
			q.log.Info("reply in push acknowledgement not recorded", "command", c.ID, "err", err)
		}
	}
}

type metrics struct {
	created, replied, failed, expired, cancelled, replyUnmatched prometheus.Counter
	delivered, push                                              *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, q *Queue) *metrics {
	c := func(name, help string) prometheus.Counter {
		return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
	}
	m := &metrics{
		created:        c("coapgate_commands_created_total", "Downlink commands queued."),
		replied:        c("coapgate_commands_replied_total", "Commands the device answered with code 200."),
		failed:         c("coapgate_commands_failed_total", "Commands the device answered with a code other than 200."),
		expired:        c("coapgate_commands_expired_total", "Commands whose TTL passed before a reply."),
		cancelled:      c("coapgate_commands_cancelled_total", "Pending commands cancelled through the API."),
		replyUnmatched: c("coapgate_commands_reply_unmatched_total", "Command replies whose id matched no open command of the device (stored as uplinks all the same)."),
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_commands_delivered_total", Help: "Commands delivered to devices, by how (get after option 2100, push).",
		}, []string{"via"}),
		push: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "coapgate_command_push_total", Help: "Command push attempts by outcome (acked, refused, timeout, not_live, queue_full).",
		}, []string{"outcome"}),
	}
	if reg != nil {
		reg.MustRegister(m.created, m.replied, m.failed, m.expired, m.cancelled, m.replyUnmatched, m.delivered, m.push)
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "coapgate_commands_pending", Help: "Pending commands this node knows of.",
		}, func() float64 { return float64(q.PendingTotal()) }))
	}
	return m
}
