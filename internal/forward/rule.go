// Package forward delivers entries of the message log (uplinks and
// lifecycle events, see message.EventTopic) to external systems according
// to forwarding rules: a topic filter, optional product/device filters, an
// optional condition over the decoded payload, and one or more actions
// (webhook, MQTT, NATS, PostgreSQL).
//
// Delivery is at-least-once from durable storage. Each (rule, action) pair
// has a persisted cursor, the last log ID it has fully handled. One worker
// per pair reads the log after its cursor, filters, delivers with retries
// (exponential backoff with jitter) and advances the cursor only past
// entries that were delivered or dead-lettered. A restart resumes at the
// cursor: duplicates are possible after a crash, losses are not. After
// Rule.MaxAttempts failed attempts an entry is stored as a dead letter,
// which can be listed and replayed. A target that is down stalls only its
// own worker; workers read the stored log, so ingest never waits for them.
package forward

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"
)

// Sentinel errors.
var (
	// ErrNotFound means no rule (or dead letter) has the given ID.
	ErrNotFound = errors.New("forward: not found")
	// ErrInvalid means a rule or action is malformed; the message says why.
	ErrInvalid = errors.New("forward: invalid")
)

// Action types.
const (
	ActionWebhook  = "webhook"
	ActionMQTT     = "mqtt"
	ActionNATS     = "nats"
	ActionPostgres = "postgres"
)

// DefaultMaxAttempts is a rule's MaxAttempts when it gives none.
const DefaultMaxAttempts = 5

// Bounds of rule fields.
const (
	maxNameLen        = 128
	maxMaxAttempts    = 100
	maxActions        = 8
	defaultTimeout    = 5 * time.Second
	maxActionTimeout  = 2 * time.Minute
	maxConditionBytes = 4096
)

// Redacted replaces secrets in API responses. A PATCH that sends it back
// for a secret field keeps the stored value.
const Redacted = "[REDACTED]"

// Rule is one forwarding rule.
type Rule struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Enabled bool   `json:"enabled"`
	// TopicFilter is an MQTT topic filter ('+' one level, '#' the rest); a
	// filter starting with a wildcard does not match "$events/..." topics.
	TopicFilter string `json:"topicFilter"`
	// ProductKey and DeviceKey, when set, must equal the entry's.
	ProductKey string `json:"productKey,omitempty"`
	DeviceKey  string `json:"deviceKey,omitempty"`
	// Condition is an expr-lang boolean expression over the entry (see
	// Env); empty matches every entry the filters pass.
	Condition   string    `json:"condition,omitempty"`
	Actions     []Action  `json:"actions"`
	MaxAttempts int       `json:"maxAttempts"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Action is one delivery target of a rule. Which fields apply depends on
// Type; the others must be empty.
type Action struct {
	Type string `json:"type"`
	// URL is the webhook URL, the broker URL (tcp://host:port for MQTT,
	// nats://host:port for NATS) or the PostgreSQL connection URL.
	URL string `json:"url"`
	// Timeout bounds one delivery attempt (default 5s).
	Timeout Duration `json:"timeout,omitempty"`

	// Webhook: Secret keys the HMAC-SHA256 signature; Headers are added to
	// every request.
	Secret  string            `json:"secret,omitempty"`
	Headers map[string]string `json:"headers,omitempty"`

	// MQTT: Topic is a template (see Expand); QoS is 0 or 1 (default 1).
	Topic    string `json:"topic,omitempty"`
	QoS      *int   `json:"qos,omitempty"`
	Username string `json:"username,omitempty"`
	Password string `json:"password,omitempty"`
	ClientID string `json:"clientId,omitempty"`

	// NATS: Subject is a template (see Expand); JetStream waits for the
	// stream's acknowledgement.
	Subject   string `json:"subject,omitempty"`
	JetStream bool   `json:"jetstream,omitempty"`

	// PostgreSQL: Table ([schema.]name) receives one row per entry;
	// CreateTable creates it when missing.
	Table       string `json:"table,omitempty"`
	CreateTable bool   `json:"createTable,omitempty"`
}

// TimeoutOrDefault returns a.Timeout, or 5s when unset.
func (a Action) TimeoutOrDefault() time.Duration {
	if a.Timeout <= 0 {
		return defaultTimeout
	}
	return time.Duration(a.Timeout)
}

// Label names the action in metrics and logs: "{index}:{type}".
func Label(index int, typ string) string { return fmt.Sprintf("%d:%s", index, typ) }

// Duration is a time.Duration written in JSON as a Go duration string
// ("5s", "1m30s").
type Duration time.Duration

// MarshalJSON writes d as a duration string.
func (d Duration) MarshalJSON() ([]byte, error) {
	return json.Marshal(time.Duration(d).String())
}

// UnmarshalJSON reads a duration string.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("duration must be a string like \"5s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("duration %q: want a string like \"5s\"", s)
	}
	*d = Duration(v)
	return nil
}

// invalid returns an ErrInvalid with a human message.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, args...))
}

// validate checks the fields that need no target (the Manager also opens
// each action's target and compiles the condition).
func (r *Rule) validate() error {
	if r.Name == "" || len(r.Name) > maxNameLen {
		return invalid("name must be 1..%d bytes", maxNameLen)
	}
	if err := ValidateFilter(r.TopicFilter); err != nil {
		return err
	}
	if len(r.Condition) > maxConditionBytes {
		return invalid("condition longer than %d bytes", maxConditionBytes)
	}
	if r.MaxAttempts == 0 {
		r.MaxAttempts = DefaultMaxAttempts
	}
	if r.MaxAttempts < 1 || r.MaxAttempts > maxMaxAttempts {
		return invalid("maxAttempts must be 1..%d", maxMaxAttempts)
	}
	if len(r.Actions) == 0 || len(r.Actions) > maxActions {
		return invalid("a rule needs 1..%d actions", maxActions)
	}
	for i, a := range r.Actions {
		if err := a.validate(); err != nil {
			return fmt.Errorf("actions[%d]: %w", i, err)
		}
	}
	return nil
}

// validate checks the fields common to every action type and that fields
// of other types are unset.
func (a Action) validate() error {
	if a.Timeout < 0 || time.Duration(a.Timeout) > maxActionTimeout {
		return invalid("timeout must be 0 (default 5s) .. %s", maxActionTimeout)
	}
	u, err := url.Parse(a.URL)
	if err != nil || u.Host == "" {
		return invalid("url %q: want an absolute URL with a host", redactURL(a.URL))
	}
	var schemes []string
	var own = map[string]bool{}
	switch a.Type {
	case ActionWebhook:
		schemes = []string{"http", "https"}
		own["secret"], own["headers"] = true, true
	case ActionMQTT:
		schemes = []string{"tcp", "mqtt", "ssl", "tls", "mqtts", "ws", "wss"}
		own["topic"], own["qos"], own["username"], own["password"], own["clientId"] = true, true, true, true, true
		if a.Topic == "" {
			return invalid("mqtt action needs a topic")
		}
		if a.QoS != nil && *a.QoS != 0 && *a.QoS != 1 {
			return invalid("qos must be 0 or 1")
		}
	case ActionNATS:
		schemes = []string{"nats", "tls"}
		own["subject"], own["jetstream"] = true, true
		if a.Subject == "" {
			return invalid("nats action needs a subject")
		}
	case ActionPostgres:
		schemes = []string{"postgres", "postgresql"}
		own["table"], own["createTable"] = true, true
		if err := ValidateTable(a.Table); err != nil {
			return err
		}
	default:
		return invalid("type %q: want webhook, mqtt, nats or postgres", a.Type)
	}
	ok := false
	for _, s := range schemes {
		ok = ok || u.Scheme == s
	}
	if !ok {
		return invalid("%s url scheme %q: want one of %s", a.Type, u.Scheme, strings.Join(schemes, ", "))
	}
	set := map[string]bool{
		"secret": a.Secret != "", "headers": len(a.Headers) > 0,
		"topic": a.Topic != "", "qos": a.QoS != nil, "username": a.Username != "", "password": a.Password != "", "clientId": a.ClientID != "",
		"subject": a.Subject != "", "jetstream": a.JetStream,
		"table": a.Table != "", "createTable": a.CreateTable,
	}
	for f, isSet := range set {
		if isSet && !own[f] {
			return invalid("field %q does not apply to a %s action", f, a.Type)
		}
	}
	return nil
}

// ValidateTable checks a PostgreSQL table name: "name" or "schema.name",
// each part a plain identifier (letter or '_', then letters, digits, '_';
// at most 63 bytes).
func ValidateTable(t string) error {
	parts := strings.Split(t, ".")
	if t == "" || len(parts) > 2 {
		return invalid("table %q: want name or schema.name", t)
	}
	for _, p := range parts {
		if !isIdent(p) {
			return invalid("table %q: each part must match [A-Za-z_][A-Za-z0-9_]{0,62}", t)
		}
	}
	return nil
}

func isIdent(s string) bool {
	if s == "" || len(s) > 63 {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// Redact returns a copy of r with its secrets (webhook secret and header
// values, MQTT password, URL passwords) replaced by Redacted.
func (r Rule) Redact() Rule {
	out := r
	out.Actions = make([]Action, len(r.Actions))
	for i, a := range r.Actions {
		if a.Secret != "" {
			a.Secret = Redacted
		}
		if a.Password != "" {
			a.Password = Redacted
		}
		if len(a.Headers) > 0 {
			h := make(map[string]string, len(a.Headers))
			for k := range a.Headers {
				h[k] = Redacted
			}
			a.Headers = h
		}
		a.URL = redactURL(a.URL)
		out.Actions[i] = a
	}
	return out
}

// redactURL replaces a URL's password by Redacted.
func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	if _, has := u.User.Password(); !has {
		return s
	}
	u.User = url.UserPassword(u.User.Username(), Redacted)
	return u.String()
}

// keepSecrets copies stored secrets into actions of next that send
// Redacted back in place of a secret (the action at the same position, of
// the same type).
func keepSecrets(prev, next []Action) {
	for i := range next {
		if i >= len(prev) || prev[i].Type != next[i].Type {
			continue
		}
		a, p := &next[i], prev[i]
		if a.Secret == Redacted {
			a.Secret = p.Secret
		}
		if a.Password == Redacted {
			a.Password = p.Password
		}
		for k, v := range a.Headers {
			if v == Redacted {
				a.Headers[k] = p.Headers[k]
			}
		}
		if a.URL != p.URL && a.URL == redactURL(p.URL) {
			a.URL = p.URL
		}
	}
}

// CursorState is the persisted progress of one (rule, action) pair.
type CursorState struct {
	Action      int
	Cursor      int64 // last log ID fully handled
	Delivered   int64
	Failures    int64 // failed attempts
	DeadLetters int64
	LastError   string
	LastErrorAt time.Time
	// RetentionLost counts log entries retention deleted before this
	// action handled them (IDs above its saved cursor), the highest of
	// them RetentionLostTo.
	RetentionLost   int64
	RetentionLostTo int64
}

// Progress is what a worker adds to its CursorState when it saves: the new
// cursor and counter deltas; LastError is written when LastErrorAt is set.
type Progress struct {
	Cursor      int64
	Delivered   int64
	Failures    int64
	DeadLetters int64
	LastError   string
	LastErrorAt time.Time
}

// DeadLetter is a log entry an action gave up on.
type DeadLetter struct {
	ID        int64           `json:"id"`
	RuleID    string          `json:"ruleId"`
	Action    int             `json:"action"`
	LogID     int64           `json:"logId"`
	Topic     string          `json:"topic"`
	Envelope  json.RawMessage `json:"envelope"`
	LastError string          `json:"lastError"`
	Attempts  int             `json:"attempts"`
	CreatedAt time.Time       `json:"createdAt"`
	UpdatedAt time.Time       `json:"updatedAt"`
}

// Store persists rules, cursors and dead letters (sqlitestore implements
// it). Implementations return errors wrapping ErrNotFound for unknown IDs.
type Store interface {
	// CreateRule stores r and one cursor per action set to cursor.
	CreateRule(ctx context.Context, r Rule, cursor int64) error
	GetRule(ctx context.Context, id string) (Rule, error)
	ListRules(ctx context.Context) ([]Rule, error)
	// UpdateRule replaces r (matched by ID). Cursors of action positions
	// that still exist are kept; new positions start at cursor; removed
	// positions lose their cursors and dead letters.
	UpdateRule(ctx context.Context, r Rule, cursor int64) error
	// DeleteRule removes the rule, its cursors and its dead letters.
	DeleteRule(ctx context.Context, id string) error

	Cursors(ctx context.Context, ruleID string) ([]CursorState, error)
	// SaveProgress moves a cursor and adds to its counters; a missing rule
	// is not an error (it was deleted meanwhile).
	SaveProgress(ctx context.Context, ruleID string, action int, p Progress) error

	// AddDeadLetter stores dl and sets dl.ID.
	AddDeadLetter(ctx context.Context, dl *DeadLetter) error
	// ListDeadLetters returns a rule's dead letters with ID > after, by ID.
	ListDeadLetters(ctx context.Context, ruleID string, after int64, limit int) ([]DeadLetter, error)
	GetDeadLetter(ctx context.Context, ruleID string, id int64) (DeadLetter, error)
	// FailDeadLetter records another failed attempt.
	FailDeadLetter(ctx context.Context, id int64, lastErr string, at time.Time) error
	DeleteDeadLetter(ctx context.Context, ruleID string, id int64) error
}
