package api

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/coapgate/coapgate/internal/command"
)

// CommandService is the downlink command queue as the API uses it
// (*command.Queue).
type CommandService interface {
	Create(ctx context.Context, pk, dk string, s command.Spec, ttl time.Duration) (command.Command, error)
	Get(ctx context.Context, pk, dk, id string) (command.Command, error)
	List(ctx context.Context, q command.ListQuery) ([]command.Command, error)
	Cancel(ctx context.Context, pk, dk, id string) (command.Command, error)
}

// errCommandState is a cancel of a command that is no longer pending (409).
var errCommandState = command.ErrState

// Command is the JSON form of a downlink command.
type Command struct {
	ID           string          `json:"id"`
	ProductKey   string          `json:"productKey"`
	DeviceKey    string          `json:"deviceKey"`
	Topic        string          `json:"topic"`
	Method       string          `json:"method,omitempty"`
	Params       json.RawMessage `json:"params,omitempty"`
	Raw          string          `json:"raw,omitempty"` // base64, rawDown only
	State        string          `json:"state"`
	CreatedAt    time.Time       `json:"createdAt"`
	ExpiresAt    time.Time       `json:"expiresAt"`
	DeliveredAt  *time.Time      `json:"deliveredAt,omitempty"`
	DeliveredVia string          `json:"deliveredVia,omitempty"`
	RepliedAt    *time.Time      `json:"repliedAt,omitempty"`
	Attempts     int             `json:"attempts"`
	Reply        *CommandReply   `json:"reply,omitempty"`
}

// CommandReply is the device's answer to a command.
type CommandReply struct {
	Code    int             `json:"code"`
	Data    json.RawMessage `json:"data,omitempty"`
	Message string          `json:"message"`
}

func commandJSON(c command.Command) Command {
	out := Command{
		ID: c.ID, ProductKey: c.ProductKey, DeviceKey: c.DeviceKey, Topic: c.Topic, Method: c.Method,
		Params: c.Params, State: string(c.State), CreatedAt: c.CreatedAt.UTC(), ExpiresAt: c.ExpiresAt.UTC(),
		DeliveredVia: c.DeliveredVia, Attempts: c.Attempts,
	}
	if len(c.Raw) > 0 {
		out.Raw = base64.StdEncoding.EncodeToString(c.Raw)
	}
	if !c.DeliveredAt.IsZero() {
		t := c.DeliveredAt.UTC()
		out.DeliveredAt = &t
	}
	if !c.RepliedAt.IsZero() {
		t := c.RepliedAt.UTC()
		out.RepliedAt = &t
		out.Reply = &CommandReply{Code: c.ReplyCode, Data: c.ReplyData, Message: c.ReplyMessage}
	}
	return out
}

// CreateCommand is the body of POST …/commands.
type CreateCommand struct {
	Type    string          `json:"type"`
	Service string          `json:"service,omitempty"`
	Params  json.RawMessage `json:"params,omitempty"`
	Raw     string          `json:"raw,omitempty"`
	// TTL is a Go duration ("90s", "1h") or an integer number of seconds.
	TTL json.RawMessage `json:"ttl,omitempty"`
}

// parseTTL reads "90s"-style durations or integer seconds; 0 when absent.
func parseTTL(raw json.RawMessage) (time.Duration, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return 0, nil
	}
	var secs int64
	if err := json.Unmarshal(raw, &secs); err == nil {
		if secs < 1 {
			return 0, badRequest("ttl must be at least 1 second")
		}
		return time.Duration(secs) * time.Second, nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return 0, badRequest("ttl must be a duration string (\"90s\") or integer seconds")
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < time.Second {
		return 0, badRequest("ttl %q: want a duration of at least 1s, such as \"90s\" or \"24h\"", s)
	}
	return d, nil
}

func (s *server) commandService() (CommandService, error) {
	if s.o.Commands == nil {
		return nil, &clientError{msg: "downlink commands are not enabled on this node", err: errUnavailable}
	}
	return s.o.Commands, nil
}

// commandError phrases command errors for the client.
func commandError(err error, what string) error {
	switch {
	case errors.Is(err, command.ErrNotFound):
		return &clientError{msg: what + " not found", err: errCommandNotFound}
	case errors.Is(err, command.ErrState), errors.Is(err, command.ErrInvalid):
		return err
	}
	return fmt.Errorf("%s: %w", what, err)
}

var errCommandNotFound = command.ErrNotFound

func (s *server) createCommand(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.commandService()
	if err != nil {
		return err
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	var body CreateCommand
	if err := decodeJSON(w, r, &body, false); err != nil {
		return err
	}
	ttl, err := parseTTL(body.TTL)
	if err != nil {
		return err
	}
	spec := command.Spec{Kind: command.Kind(body.Type), Service: body.Service, Params: body.Params}
	if body.Raw != "" {
		if spec.Raw, err = base64.StdEncoding.DecodeString(body.Raw); err != nil {
			return badRequest("raw must be standard base64")
		}
	}
	c, err := cs.Create(r.Context(), d.ProductKey, d.DeviceKey, spec, ttl)
	if err != nil {
		return commandError(err, "command")
	}
	w.Header().Set("Location", Prefix+"/devices/"+d.ProductKey+"/"+d.DeviceKey+"/commands/"+c.ID)
	writeJSON(w, http.StatusCreated, commandJSON(c))
	return nil
}

func (s *server) listCommands(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.commandService()
	if err != nil {
		return err
	}
	if err := allowQuery(r, "limit", "cursor", "after", "state"); err != nil {
		return err
	}
	limit, err := parseLimit(r)
	if err != nil {
		return err
	}
	q := command.ListQuery{Limit: limit, State: command.State(r.URL.Query().Get("state"))}
	if q.State != "" && !command.ValidState(q.State) {
		return badRequest("state must be pending, delivered, replied, failed, expired or cancelled")
	}
	v, err := pageCursor(r.URL.Query())
	if err != nil {
		return err
	}
	if v != "" {
		if q.Before, err = strconv.ParseInt(v, 10, 64); err != nil || q.Before < 1 {
			return badRequest("cursor must be the nextCursor of the previous page")
		}
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	q.ProductKey, q.DeviceKey = d.ProductKey, d.DeviceKey
	cmds, err := cs.List(r.Context(), q)
	if err != nil {
		return fmt.Errorf("list commands: %w", err)
	}
	out := List[Command]{Items: make([]Command, 0, len(cmds))}
	for _, c := range cmds {
		out.Items = append(out.Items, commandJSON(c))
	}
	if len(cmds) == limit {
		out.NextCursor = cmds[len(cmds)-1].ID
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *server) getCommand(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.commandService()
	if err != nil {
		return err
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	c, err := cs.Get(r.Context(), d.ProductKey, d.DeviceKey, id)
	if err != nil {
		return commandError(err, "command "+strconv.Quote(id))
	}
	writeJSON(w, http.StatusOK, commandJSON(c))
	return nil
}

func (s *server) cancelCommand(w http.ResponseWriter, r *http.Request) error {
	cs, err := s.commandService()
	if err != nil {
		return err
	}
	d, _, err := s.loadDevice(r)
	if err != nil {
		return err
	}
	id := r.PathValue("id")
	c, err := cs.Cancel(r.Context(), d.ProductKey, d.DeviceKey, id)
	if err != nil {
		if errors.Is(err, command.ErrState) {
			return &clientError{msg: "command " + strconv.Quote(id) + " is not pending: " + strings.TrimPrefix(err.Error(), command.ErrState.Error()+": "), err: err}
		}
		return commandError(err, "command "+strconv.Quote(id))
	}
	writeJSON(w, http.StatusOK, commandJSON(c))
	return nil
}
