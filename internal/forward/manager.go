package forward

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/expr-lang/expr/vm"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/coapgate/coapgate/internal/lease"
	"github.com/coapgate/coapgate/internal/message"
)

// Target delivers envelopes to one action's destination. Deliver must be
// safe for concurrent use (replays run beside the worker) and honour ctx;
// nil means the destination has accepted the entry.
type Target interface {
	Deliver(ctx context.Context, d *Delivery) error
	Close() error
}

// TargetFactory checks an action's configuration and returns its target.
// It must not connect (targets connect on first delivery), so that a rule
// can be created while its destination is down.
type TargetFactory func(a Action) (Target, error)

// LogReader reads the message log (message.Store implements it).
type LogReader interface {
	List(ctx context.Context, q message.Query) ([]message.Message, error)
}

// StartAtEnd, as CreateRule's startAfter, starts a rule at the log's
// current end: only entries appended later are forwarded.
const StartAtEnd = -1

// Options configures a Manager. Store and Log are required.
type Options struct {
	Store Store
	Log   LogReader
	// Notifier wakes idle workers when the log grows; without it they poll.
	Notifier message.Notifier
	// Targets maps action types to their factories; webhook is built in
	// (WebhookFactory(nil)) unless given here.
	Targets map[string]TargetFactory
	// BackoffBase and BackoffMax shape the retry waits (see Backoff);
	// defaults 1s and 1m.
	BackoffBase, BackoffMax time.Duration
	// PollInterval is how often an idle worker reads the log even without
	// a notification (default 5s).
	PollInterval time.Duration
	// BatchSize is how many log entries a worker reads at once (default 256).
	BatchSize int
	// Leases decides which node of a cluster runs each action's worker
	// (lease LeaseName(rule, action)); default lease.Local (this node).
	Leases     lease.Elector
	Registerer prometheus.Registerer
	Logger     *slog.Logger
}

// Manager runs one worker per (enabled rule, action) and serves rule
// management. Create it with New, then Start; Close stops it.
type Manager struct {
	o   Options
	log *slog.Logger
	met *metrics

	ctl     sync.Mutex // serialises rule changes, Start and Close
	mu      sync.Mutex
	running map[string]*running // guarded by mu; enabled rules by ID
	closed  bool                // guarded by mu
}

// running is the live state of one enabled rule.
type running struct {
	rule    Rule
	workers []*worker
}

// New returns a Manager; it starts nothing.
func New(o Options) (*Manager, error) {
	if o.Store == nil || o.Log == nil {
		return nil, errors.New("forward: Options.Store and Options.Log are required")
	}
	if o.BackoffBase <= 0 {
		o.BackoffBase = time.Second
	}
	if o.BackoffMax < o.BackoffBase {
		o.BackoffMax = max(time.Minute, o.BackoffBase)
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 5 * time.Second
	}
	if o.BatchSize <= 0 {
		o.BatchSize = 256
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Leases == nil {
		o.Leases = lease.Local{}
	}
	t := map[string]TargetFactory{ActionWebhook: WebhookFactory(nil)}
	for k, f := range o.Targets {
		t[k] = f
	}
	o.Targets = t
	return &Manager{
		o:       o,
		log:     o.Logger.With("component", "forward"),
		met:     newMetrics(o.Registerer),
		running: make(map[string]*running),
	}, nil
}

// Start loads the stored rules and starts the workers of enabled ones. A
// rule that no longer validates (e.g. an action type this binary lacks) is
// logged and skipped.
func (m *Manager) Start(ctx context.Context) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	rules, err := m.o.Store.ListRules(ctx)
	if err != nil {
		return fmt.Errorf("forward: load rules: %w", err)
	}
	for _, r := range rules {
		if !r.Enabled {
			continue
		}
		if err := m.startRule(ctx, r); err != nil {
			m.log.Error("rule not started", "rule", r.ID, "err", err)
		}
	}
	m.log.Info("forwarding started", "rules", len(rules))
	return nil
}

// Close stops every worker: they take no new work, in-flight deliveries
// may finish until ctx is done, then they are aborted (their entries are
// delivered again after the next start). Cursors are saved.
func (m *Manager) Close(ctx context.Context) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	m.mu.Lock()
	m.closed = true
	all := m.running
	m.running = map[string]*running{}
	m.mu.Unlock()
	var ws []*worker
	for _, r := range all {
		ws = append(ws, r.workers...)
	}
	for _, w := range ws {
		w.cancelSoft()
	}
	for _, w := range ws {
		select {
		case <-w.done:
		case <-ctx.Done():
			w.cancelHard()
			<-w.done
		}
		w.cancelHard()
	}
	var errs []error
	for _, w := range ws {
		if err := w.target.Close(); err != nil {
			errs = append(errs, fmt.Errorf("rule %s action %s: close: %w", w.rule.ID, w.label, err))
		}
	}
	return errors.Join(errs...)
}

// Sync brings the running workers in line with the stored rules: rules
// created, changed, enabled, disabled or deleted through another node of
// a cluster (sharing the store) are started, restarted or stopped here.
func (m *Manager) Sync(ctx context.Context) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	rules, err := m.o.Store.ListRules(ctx)
	if err != nil {
		return fmt.Errorf("forward: sync rules: %w", err)
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	current := make(map[string]Rule, len(m.running))
	for id, r := range m.running {
		current[id] = r.rule
	}
	m.mu.Unlock()
	stored := make(map[string]bool, len(rules))
	for _, r := range rules {
		stored[r.ID] = true
		cur, running := current[r.ID]
		switch {
		case !r.Enabled && running:
			m.stopRule(r.ID)
			m.log.Info("rule stopped (changed on another node)", "rule", r.ID)
		case r.Enabled && running && cur.UpdatedAt.Equal(r.UpdatedAt):
		case r.Enabled:
			if running {
				m.stopRule(r.ID)
			}
			if err := m.startRule(ctx, r); err != nil {
				m.log.Error("rule not started", "rule", r.ID, "err", err)
				continue
			}
			m.log.Info("rule started (changed on another node)", "rule", r.ID)
		}
	}
	for id := range current {
		if !stored[id] {
			m.stopRule(id)
			m.met.forget(id)
			m.log.Info("rule stopped (deleted on another node)", "rule", id)
		}
	}
	return nil
}

// RunSync calls Sync every interval until ctx is done (nodes of a cluster
// run it; a single node sees every rule change through its own API).
func (m *Manager) RunSync(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := m.Sync(ctx)
		switch {
		case err != nil && ctx.Err() == nil && !failing:
			m.log.Warn("rule sync failed; retrying", "err", err) // once per outage
			failing = true
		case err == nil && failing:
			m.log.Info("rule sync recovered")
			failing = false
		}
	}
}

// compiled is a validated rule with its compiled condition and targets.
type compiled struct {
	prog    *vm.Program
	targets []Target
}

// prepare validates r, compiles its condition and opens its targets.
func (m *Manager) prepare(r *Rule) (*compiled, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	prog, err := compileCondition(r.Condition)
	if err != nil {
		return nil, err
	}
	c := &compiled{prog: prog}
	for i, a := range r.Actions {
		f, ok := m.o.Targets[a.Type]
		if !ok {
			c.close()
			return nil, invalid("actions[%d]: action type %q is not available in this build", i, a.Type)
		}
		t, err := f(a)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("actions[%d]: %w", i, err)
		}
		c.targets = append(c.targets, t)
	}
	return c, nil
}

func (c *compiled) close() {
	for _, t := range c.targets {
		_ = t.Close()
	}
}

// startRule starts r's workers (ctl held).
func (m *Manager) startRule(ctx context.Context, r Rule) error {
	c, err := m.prepare(&r)
	if err != nil {
		return err
	}
	cursors, err := m.o.Store.Cursors(ctx, r.ID)
	if err != nil {
		c.close()
		return fmt.Errorf("load cursors: %w", err)
	}
	at := make(map[int]int64, len(cursors))
	for _, cs := range cursors {
		at[cs.Action] = cs.Cursor
	}
	run := &running{rule: r}
	for i, a := range r.Actions {
		w := newWorker(m, r, c.prog, i, a, c.targets[i], at[i])
		run.workers = append(run.workers, w)
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		c.close()
		return errors.New("forward: manager closed")
	}
	m.running[r.ID] = run
	for _, w := range run.workers {
		go w.run()
	}
	return nil
}

// stopRule stops r's workers at once, aborting in-flight deliveries (ctl
// held): used when the rule changes, so the new workers take over.
func (m *Manager) stopRule(id string) {
	m.mu.Lock()
	run := m.running[id]
	delete(m.running, id)
	m.mu.Unlock()
	if run == nil {
		return
	}
	for _, w := range run.workers {
		w.cancelSoft()
		w.cancelHard()
	}
	for _, w := range run.workers {
		<-w.done
		_ = w.target.Close()
	}
}

// head returns the newest log ID (0 for an empty log).
func (m *Manager) head(ctx context.Context) (int64, error) {
	ms, err := m.o.Log.List(ctx, message.Query{Descending: true, Limit: 1, IncludeEvents: true})
	if err != nil {
		return 0, fmt.Errorf("forward: log head: %w", err)
	}
	if len(ms) == 0 {
		return 0, nil
	}
	return ms[0].ID, nil
}

// newRuleID returns a random rule ID such as "r_3f9c0a12b4d5e6f7".
func newRuleID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "r_" + hex.EncodeToString(b[:])
}

// CreateRule validates r (condition compiled, every action's
// configuration checked), assigns ID and times, stores it and starts it
// when enabled. startAfter is the cursor of its actions: StartAtEnd (the
// log's current end), 0 (the beginning) or a log ID (start after it).
func (m *Manager) CreateRule(ctx context.Context, r Rule, startAfter int64) (Rule, error) {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	c, err := m.prepare(&r)
	if err != nil {
		return Rule{}, err
	}
	c.close()
	if startAfter < 0 {
		if startAfter, err = m.head(ctx); err != nil {
			return Rule{}, err
		}
	}
	r.ID = newRuleID()
	r.CreatedAt = time.Now().UTC()
	r.UpdatedAt = r.CreatedAt
	if err := m.o.Store.CreateRule(ctx, r, startAfter); err != nil {
		return Rule{}, fmt.Errorf("forward: create rule: %w", err)
	}
	if r.Enabled {
		if err := m.startRule(ctx, r); err != nil {
			return Rule{}, fmt.Errorf("forward: start rule %s: %w", r.ID, err)
		}
	}
	m.log.Info("rule created", "rule", r.ID, "name", r.Name, "enabled", r.Enabled, "start_after", startAfter)
	return r, nil
}

// GetRule returns a stored rule (with its secrets: redact before showing).
func (m *Manager) GetRule(ctx context.Context, id string) (Rule, error) {
	return m.o.Store.GetRule(ctx, id)
}

// ListRules returns every stored rule, by ID.
func (m *Manager) ListRules(ctx context.Context) ([]Rule, error) {
	return m.o.Store.ListRules(ctx)
}

// UpdateRule replaces the rule r.ID with r (CreatedAt kept) and restarts
// its workers. Secret fields sent back as Redacted keep their stored
// values. Action positions that still exist keep their cursors; new ones
// start at the log's end.
func (m *Manager) UpdateRule(ctx context.Context, r Rule) (Rule, error) {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	prev, err := m.o.Store.GetRule(ctx, r.ID)
	if err != nil {
		return Rule{}, err
	}
	keepSecrets(prev.Actions, r.Actions)
	c, err := m.prepare(&r)
	if err != nil {
		return Rule{}, err
	}
	c.close()
	head, err := m.head(ctx)
	if err != nil {
		return Rule{}, err
	}
	r.CreatedAt = prev.CreatedAt
	r.UpdatedAt = time.Now().UTC()
	m.stopRule(r.ID)
	if err := m.o.Store.UpdateRule(ctx, r, head); err != nil {
		// Keep the previous definition running.
		if prev.Enabled {
			if serr := m.startRule(ctx, prev); serr != nil {
				m.log.Error("rule not restarted", "rule", prev.ID, "err", serr)
			}
		}
		return Rule{}, fmt.Errorf("forward: update rule: %w", err)
	}
	if len(r.Actions) < len(prev.Actions) {
		for i := len(r.Actions); i < len(prev.Actions); i++ {
			l := Label(i, prev.Actions[i].Type)
			m.met.lag.DeleteLabelValues(r.ID, l)
		}
	}
	if r.Enabled {
		if err := m.startRule(ctx, r); err != nil {
			return Rule{}, fmt.Errorf("forward: start rule %s: %w", r.ID, err)
		}
	} else {
		m.met.lag.DeletePartialMatch(prometheus.Labels{"rule": r.ID})
	}
	m.log.Info("rule updated", "rule", r.ID, "enabled", r.Enabled)
	return r, nil
}

// DeleteRule stops and removes a rule with its cursors and dead letters.
func (m *Manager) DeleteRule(ctx context.Context, id string) error {
	m.ctl.Lock()
	defer m.ctl.Unlock()
	if _, err := m.o.Store.GetRule(ctx, id); err != nil {
		return err
	}
	m.stopRule(id)
	if err := m.o.Store.DeleteRule(ctx, id); err != nil {
		return fmt.Errorf("forward: delete rule: %w", err)
	}
	m.met.forget(id)
	m.log.Info("rule deleted", "rule", id)
	return nil
}

// ActionStatus is the progress of one action of a rule.
type ActionStatus struct {
	Action    int    `json:"action"`
	Type      string `json:"type"`
	Running   bool   `json:"running"`
	Cursor    int64  `json:"cursor"`
	Lag       int64  `json:"lag"`
	Delivered int64  `json:"delivered"`
	Failures  int64  `json:"failures"`
	// DeadLetters counts the action's dead letters not yet replayed or
	// deleted; Delivered includes successful replays.
	DeadLetters int64 `json:"deadLetters"`
	// LastError is the last failed attempt's error (worker or replay);
	// cleared once the action has no dead letters left after a replay or
	// deletion.
	LastError   string     `json:"lastError,omitempty"`
	LastErrorAt *time.Time `json:"lastErrorAt,omitempty"`
	// RetentionLost counts log entries retention deleted before this
	// action handled them; RetentionLostTo is the highest such log ID.
	RetentionLost   int64 `json:"retentionLost,omitempty"`
	RetentionLostTo int64 `json:"retentionLostTo,omitempty"`
}

// Status returns the progress of each of the rule's actions: the saved
// counters, and the live cursor of running workers.
func (m *Manager) Status(ctx context.Context, id string) ([]ActionStatus, error) {
	r, err := m.o.Store.GetRule(ctx, id)
	if err != nil {
		return nil, err
	}
	cursors, err := m.o.Store.Cursors(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("forward: status: %w", err)
	}
	head, err := m.head(ctx)
	if err != nil {
		return nil, err
	}
	m.mu.Lock()
	run := m.running[id]
	m.mu.Unlock()
	out := make([]ActionStatus, len(r.Actions))
	for i, a := range r.Actions {
		out[i] = ActionStatus{Action: i, Type: a.Type}
	}
	for _, cs := range cursors {
		if cs.Action >= len(out) {
			continue
		}
		s := &out[cs.Action]
		s.Cursor, s.Delivered, s.Failures, s.DeadLetters, s.LastError = cs.Cursor, cs.Delivered, cs.Failures, max(0, cs.DeadLetters), cs.LastError
		s.RetentionLost, s.RetentionLostTo = cs.RetentionLost, cs.RetentionLostTo
		if !cs.LastErrorAt.IsZero() && cs.LastError != "" {
			t := cs.LastErrorAt
			s.LastErrorAt = &t
		}
	}
	if run != nil {
		for i, w := range run.workers {
			if i < len(out) {
				out[i].Running = true
				out[i].Cursor = max(out[i].Cursor, w.cursor.Load())
			}
		}
	}
	for i := range out {
		out[i].Lag = max(0, head-out[i].Cursor)
	}
	return out, nil
}

// DeadLetters lists a rule's dead letters with ID > after.
func (m *Manager) DeadLetters(ctx context.Context, ruleID string, after int64, limit int) ([]DeadLetter, error) {
	if _, err := m.o.Store.GetRule(ctx, ruleID); err != nil {
		return nil, err
	}
	return m.o.Store.ListDeadLetters(ctx, ruleID, after, limit)
}

// DeleteDeadLetter drops one dead letter without delivering it; the
// action's status no longer counts it.
func (m *Manager) DeleteDeadLetter(ctx context.Context, ruleID string, id int64) error {
	dl, err := m.o.Store.GetDeadLetter(ctx, ruleID, id)
	if err != nil {
		return err
	}
	if err := m.o.Store.DeleteDeadLetter(ctx, ruleID, id); err != nil {
		return err
	}
	return m.settleDeadLetters(ctx, ruleID, map[int]Progress{dl.Action: {DeadLetters: -1}})
}

// settleDeadLetters adds the replay or deletion outcome p of each action to
// its status; an action left with no dead letters has its last error
// cleared (the failures it recorded were resolved).
func (m *Manager) settleDeadLetters(ctx context.Context, ruleID string, p map[int]Progress) error {
	if len(p) == 0 {
		return nil
	}
	left, err := m.o.Store.ListDeadLetters(ctx, ruleID, 0, maxReplay)
	if err != nil {
		return fmt.Errorf("forward: dead letters: %w", err)
	}
	remaining := map[int]bool{}
	for _, dl := range left {
		remaining[dl.Action] = true
	}
	full := len(left) == maxReplay // more may follow: clear nothing
	now := time.Now().UTC()
	for action, pr := range p {
		if !full && !remaining[action] && pr.LastErrorAt.IsZero() {
			pr.LastError, pr.LastErrorAt = "", now // written as cleared
		}
		if err := m.o.Store.SaveProgress(ctx, ruleID, action, pr); err != nil {
			return fmt.Errorf("forward: dead letters: %w", err)
		}
	}
	return nil
}

// ReplayItem is the outcome of replaying one dead letter.
type ReplayItem struct {
	ID        int64  `json:"id"`
	Delivered bool   `json:"delivered"`
	Error     string `json:"error,omitempty"`
}

// ReplayResult sums up a replay.
type ReplayResult struct {
	Delivered int          `json:"delivered"`
	Failed    int          `json:"failed"`
	Items     []ReplayItem `json:"items"`
}

// maxReplay bounds the dead letters one Replay call handles.
const maxReplay = 1000

// Replay delivers the given dead letters of a rule (all of them, up to
// 1000, when ids is empty) once each, now: a delivered one is removed, a
// failed one stays with its attempts incremented. Replays use the running
// rule's targets, or (rule disabled) targets opened for the call.
func (m *Manager) Replay(ctx context.Context, ruleID string, ids []int64) (ReplayResult, error) {
	r, err := m.o.Store.GetRule(ctx, ruleID)
	if err != nil {
		return ReplayResult{}, err
	}
	var dls []DeadLetter
	if len(ids) == 0 {
		if dls, err = m.o.Store.ListDeadLetters(ctx, ruleID, 0, maxReplay); err != nil {
			return ReplayResult{}, fmt.Errorf("forward: replay: %w", err)
		}
	} else {
		if len(ids) > maxReplay {
			return ReplayResult{}, invalid("at most %d ids per replay", maxReplay)
		}
		for _, id := range ids {
			dl, err := m.o.Store.GetDeadLetter(ctx, ruleID, id)
			if err != nil {
				return ReplayResult{}, err
			}
			dls = append(dls, dl)
		}
	}
	targets := map[int]Target{}
	m.mu.Lock()
	if run := m.running[ruleID]; run != nil {
		for i, w := range run.workers {
			targets[i] = w.target
		}
	}
	m.mu.Unlock()
	var opened []Target
	defer func() {
		for _, t := range opened {
			_ = t.Close()
		}
	}()
	res := ReplayResult{Items: []ReplayItem{}}
	// What the replay changes in each action's status (saved at the end,
	// also after an error): deliveries, dead letters gone, failures.
	progress := map[int]Progress{}
	defer func() {
		if serr := m.settleDeadLetters(ctx, ruleID, progress); serr != nil {
			m.log.Warn("rule status not updated after replay", "rule", ruleID, "err", serr)
		}
	}()
	for _, dl := range dls {
		item := ReplayItem{ID: dl.ID}
		err := func() error {
			if dl.Action >= len(r.Actions) {
				return fmt.Errorf("action %d no longer exists", dl.Action)
			}
			a := r.Actions[dl.Action]
			t := targets[dl.Action]
			if t == nil {
				f, ok := m.o.Targets[a.Type]
				if !ok {
					return fmt.Errorf("action type %q is not available", a.Type)
				}
				var err error
				if t, err = f(a); err != nil {
					return err
				}
				opened = append(opened, t)
				targets[dl.Action] = t
			}
			var env Envelope
			if err := json.Unmarshal(dl.Envelope, &env); err != nil {
				return fmt.Errorf("stored envelope: %w", err)
			}
			dctx, cancel := context.WithTimeout(ctx, a.TimeoutOrDefault())
			defer cancel()
			return t.Deliver(dctx, &Delivery{RuleID: ruleID, Envelope: env, Body: dl.Envelope})
		}()
		label := Label(dl.Action, "")
		if dl.Action < len(r.Actions) {
			label = Label(dl.Action, r.Actions[dl.Action].Type)
		}
		if err == nil {
			if derr := m.o.Store.DeleteDeadLetter(ctx, ruleID, dl.ID); derr != nil {
				return res, fmt.Errorf("forward: replay: %w", derr)
			}
			m.met.delivered.WithLabelValues(ruleID, label).Inc()
			item.Delivered = true
			res.Delivered++
			p := progress[dl.Action]
			p.Delivered++
			p.DeadLetters--
			progress[dl.Action] = p
		} else {
			item.Error = err.Error()
			m.met.failures.WithLabelValues(ruleID, label).Inc()
			now := time.Now().UTC()
			if ferr := m.o.Store.FailDeadLetter(ctx, dl.ID, item.Error, now); ferr != nil {
				return res, fmt.Errorf("forward: replay: %w", ferr)
			}
			res.Failed++
			p := progress[dl.Action]
			p.Failures++
			p.LastError, p.LastErrorAt = item.Error, now
			progress[dl.Action] = p
		}
		res.Items = append(res.Items, item)
	}
	m.log.Info("dead letters replayed", "rule", ruleID, "delivered", res.Delivered, "failed", res.Failed)
	return res, nil
}
