package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/coapgate/coapgate/internal/forward"
)

// RuleService manages forwarding rules (forward.Manager implements it).
type RuleService interface {
	CreateRule(ctx context.Context, r forward.Rule, startAfter int64) (forward.Rule, error)
	GetRule(ctx context.Context, id string) (forward.Rule, error)
	ListRules(ctx context.Context) ([]forward.Rule, error)
	UpdateRule(ctx context.Context, r forward.Rule) (forward.Rule, error)
	DeleteRule(ctx context.Context, id string) error
	Status(ctx context.Context, id string) ([]forward.ActionStatus, error)
	DeadLetters(ctx context.Context, ruleID string, after int64, limit int) ([]forward.DeadLetter, error)
	Replay(ctx context.Context, ruleID string, ids []int64) (forward.ReplayResult, error)
	DeleteDeadLetter(ctx context.Context, ruleID string, id int64) error
}

// errNoRules answers rule routes of a server without forwarding.
var errNoRules = &clientError{msg: "forwarding rules are not enabled on this server", err: errUnavailable}

type createRuleRequest struct {
	Name        string           `json:"name"`
	Enabled     *bool            `json:"enabled"`
	TopicFilter string           `json:"topicFilter"`
	ProductKey  string           `json:"productKey"`
	DeviceKey   string           `json:"deviceKey"`
	Condition   string           `json:"condition"`
	Actions     []forward.Action `json:"actions"`
	MaxAttempts int              `json:"maxAttempts"`
	// StartFrom is "end" (default: only entries appended from now on),
	// "beginning", or a log ID to start at (inclusive).
	StartFrom json.RawMessage `json:"startFrom"`
}

type updateRuleRequest struct {
	Name        *string           `json:"name"`
	Enabled     *bool             `json:"enabled"`
	TopicFilter *string           `json:"topicFilter"`
	ProductKey  *string           `json:"productKey"`
	DeviceKey   *string           `json:"deviceKey"`
	Condition   *string           `json:"condition"`
	Actions     *[]forward.Action `json:"actions"`
	MaxAttempts *int              `json:"maxAttempts"`
}

type replayRequest struct {
	IDs []int64 `json:"ids"`
}

// parseStartFrom turns startFrom into CreateRule's startAfter.
func parseStartFrom(raw json.RawMessage) (int64, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return forward.StartAtEnd, nil
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		switch s {
		case "end":
			return forward.StartAtEnd, nil
		case "beginning":
			return 0, nil
		}
		return 0, badRequest(`startFrom must be "end", "beginning" or a log ID`)
	}
	var id int64
	if err := json.Unmarshal(raw, &id); err != nil || id < 1 {
		return 0, badRequest(`startFrom must be "end", "beginning" or a log ID >= 1`)
	}
	return id - 1, nil
}

// ruleError phrases rule-store failures for the client.
func ruleError(err error, what string) error {
	if errors.Is(err, forward.ErrNotFound) {
		return &clientError{msg: what + " not found", err: err}
	}
	return err
}

func (s *server) rules() (RuleService, error) {
	if s.o.Rules == nil {
		return nil, errNoRules
	}
	return s.o.Rules, nil
}

func (s *server) createRule(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	var req createRuleRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	start, err := parseStartFrom(req.StartFrom)
	if err != nil {
		return err
	}
	rule := forward.Rule{Name: req.Name, Enabled: req.Enabled == nil || *req.Enabled, TopicFilter: req.TopicFilter,
		ProductKey: req.ProductKey, DeviceKey: req.DeviceKey, Condition: req.Condition,
		Actions: req.Actions, MaxAttempts: req.MaxAttempts}
	out, err := rs.CreateRule(r.Context(), rule, start)
	if err != nil {
		return err
	}
	writeJSON(w, http.StatusCreated, out.Redact())
	return nil
}

func (s *server) listRules(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	all, err := rs.ListRules(r.Context())
	if err != nil {
		return err
	}
	items := make([]forward.Rule, len(all))
	for i, x := range all {
		items[i] = x.Redact()
	}
	writeJSON(w, http.StatusOK, List[forward.Rule]{Items: items})
	return nil
}

func (s *server) getRule(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	rule, err := rs.GetRule(r.Context(), id)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	writeJSON(w, http.StatusOK, rule.Redact())
	return nil
}

func (s *server) updateRule(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	var req updateRuleRequest
	if err := decodeJSON(w, r, &req, false); err != nil {
		return err
	}
	id := r.PathValue("id")
	rule, err := rs.GetRule(r.Context(), id)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	set := func(dst *string, v *string) {
		if v != nil {
			*dst = *v
		}
	}
	set(&rule.Name, req.Name)
	set(&rule.TopicFilter, req.TopicFilter)
	set(&rule.ProductKey, req.ProductKey)
	set(&rule.DeviceKey, req.DeviceKey)
	set(&rule.Condition, req.Condition)
	if req.Enabled != nil {
		rule.Enabled = *req.Enabled
	}
	if req.Actions != nil {
		rule.Actions = *req.Actions
	}
	if req.MaxAttempts != nil {
		rule.MaxAttempts = *req.MaxAttempts
	}
	out, err := rs.UpdateRule(r.Context(), rule)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	writeJSON(w, http.StatusOK, out.Redact())
	return nil
}

func (s *server) deleteRule(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	if err := rs.DeleteRule(r.Context(), id); err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// RuleStatus is the body of GET /rules/{id}/status.
type RuleStatus struct {
	ID      string                 `json:"id"`
	Enabled bool                   `json:"enabled"`
	Actions []forward.ActionStatus `json:"actions"`
}

func (s *server) ruleStatus(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	rule, err := rs.GetRule(r.Context(), id)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	st, err := rs.Status(r.Context(), id)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	writeJSON(w, http.StatusOK, RuleStatus{ID: id, Enabled: rule.Enabled, Actions: st})
	return nil
}

func (s *server) listDeadLetters(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	if err := allowQuery(r, "limit", "cursor", "after"); err != nil {
		return err
	}
	var after int64
	v, err := pageCursor(r.URL.Query())
	if err != nil {
		return err
	}
	if v != "" {
		if after, err = strconv.ParseInt(v, 10, 64); err != nil || after < 0 {
			return badRequest("cursor must be a dead letter ID (the nextCursor of the previous page)")
		}
	}
	id := r.PathValue("id")
	dls, err := rs.DeadLetters(r.Context(), id, after, limit)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id))
	}
	out := List[forward.DeadLetter]{Items: dls}
	if len(dls) == limit {
		out.NextCursor = strconv.FormatInt(dls[len(dls)-1].ID, 10)
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) replayDeadLetters(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	var req replayRequest
	if err := decodeJSON(w, r, &req, true); err != nil {
		return err
	}
	id := r.PathValue("id")
	res, err := rs.Replay(r.Context(), id, req.IDs)
	if err != nil {
		return ruleError(err, "rule "+strconv.Quote(id)+" or one of its dead letters")
	}
	writeJSON(w, http.StatusOK, res)
	return nil
}

func (s *server) deleteDeadLetter(w http.ResponseWriter, r *http.Request) error {
	rs, err := s.rules()
	if err != nil {
		return err
	}
	dl, err := strconv.ParseInt(r.PathValue("dlid"), 10, 64)
	if err != nil {
		return badRequest("dead letter ID must be an integer")
	}
	id := r.PathValue("id")
	if err := rs.DeleteDeadLetter(r.Context(), id, dl); err != nil {
		return ruleError(err, "dead letter "+strconv.FormatInt(dl, 10)+" of rule "+strconv.Quote(id))
	}
	w.WriteHeader(http.StatusNoContent)
	return nil
}
