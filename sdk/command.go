package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// OptionDownlink is the response option naming a waiting command's path,
// "/topic/{requestTopic}" (docs/protocol.md §2.1).
const OptionDownlink message.OptionID = 2100

// Command is a downlink command received from the gateway: pushed as a CON
// request, or fetched with GET after option 2100.
type Command struct {
	// ID is the command id, echoed in the reply.
	ID string
	// Topic is the request topic, e.g. "/sys/{pk}/{dk}/thing/service/property/set".
	Topic string
	// Method is e.g. "thing.service.property.set"; "" for raw down.
	Method string
	// Params is the params object as JSON (CBOR commands are converted).
	Params json.RawMessage
	// Raw is the payload of a raw-down command (Topic ends in
	// thing/model/down_raw); nil otherwise.
	Raw []byte
}

// CommandHandler handles one command and returns the reply's code (200
// for success) and data (encoded as JSON; for a raw-down command a []byte
// is sent as is). It runs on the Client's command goroutine, one command
// at a time; ctx ends when the Client is closed.
type CommandHandler func(ctx context.Context, cmd Command) (code int, data any)

// WithCommandHandler makes the Client take downlink commands: it
// acknowledges commands the gateway pushes, follows option 2100 on
// responses (GET of the named path), calls h for each command and
// publishes the reply to {requestTopic}_reply.
func WithCommandHandler(h CommandHandler) Option {
	return func(c *config) { c.cmdHandler = h }
}

// cmdJob is a command received by push, or a path to fetch.
type cmdJob struct {
	fetch   []string // Uri-Path to GET; nil for a pushed command
	topic   string
	payload []byte
	isCBOR  bool
}

// cmdQueueLen bounds the commands waiting for the handler.
const cmdQueueLen = 16

// serveCommands runs the handler for queued commands until Close.
func (c *Client) serveCommands() {
	defer c.wg.Done()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { <-c.done; cancel() }()
	for {
		select {
		case <-c.done:
			return
		case j := <-c.cmds:
			if j.fetch != nil {
				resp, err := c.fetchCommand(ctx, j.fetch)
				if err != nil || resp.Code != codes.Content {
					continue // nothing (left) to fetch; a later 2100 retries
				}
				j.topic = "/" + strings.Join(j.fetch[1:], "/")
				j.payload = resp.Payload
				j.isCBOR = resp.hasContentFormat && resp.ContentFormat == CBOR
			}
			c.handleCommand(ctx, j)
		}
	}
}

// enqueueCommand hands j to the command goroutine; false when its queue is
// full (a pushed command is then refused, and fetched later after 2100).
func (c *Client) enqueueCommand(j cmdJob) bool {
	select {
	case c.cmds <- j:
		return true
	default:
		return false
	}
}

// followDownlink queues a fetch of the path in option 2100 of resp.
func (c *Client) followDownlink(resp *Response) {
	if c.cfg.cmdHandler == nil || resp == nil {
		return
	}
	v, err := resp.Options.GetBytes(OptionDownlink)
	if err != nil || len(v) == 0 {
		return
	}
	path := strings.Split(strings.TrimPrefix(string(v), "/"), "/")
	if len(path) < 2 || path[0] != "topic" {
		return
	}
	c.enqueueCommand(cmdJob{fetch: path})
}

// fetchCommand sends GET path with the Client's authentication.
func (c *Client) fetchCommand(ctx context.Context, path []string) (*Response, error) {
	st, err := c.ensureAuth(ctx)
	if err != nil {
		return nil, err
	}
	r := &request{
		code: codes.GET, path: path, confirmable: true,
		accept: c.cfg.contentFormat, hasAccept: true,
		authOption: c.cfg.tokenOption, authToken: st.token,
	}
	if c.cfg.dtlsPSK != nil {
		r.authOption = 0
	}
	if st.sym != nil {
		_, r.seq = st.sym.seal(nil) // a fetch carries only the sequence number
	}
	resp, err := c.send(ctx, r, 0)
	if err != nil {
		return nil, err
	}
	if st.sym != nil && isSuccess(resp.Code) && len(resp.Payload) > 0 {
		if resp.Payload, err = st.sym.open(resp.Payload); err != nil {
			return nil, fmt.Errorf("%w: decrypt command: %w", ErrMalformed, err)
		}
	}
	return resp, nil
}

// parseCommand decodes a command body received on topic (pure).
func parseCommand(topic string, payload []byte, isCBOR bool) (Command, error) {
	cmd := Command{Topic: topic}
	if strings.HasSuffix(topic, "/thing/model/down_raw") {
		cmd.Raw = append([]byte(nil), payload...)
		return cmd, nil
	}
	var body struct {
		ID     any    `json:"id" cbor:"id"`
		Method string `json:"method" cbor:"method"`
		Params any    `json:"params" cbor:"params"`
	}
	var err error
	if isCBOR {
		err = cborReplyDecMode.Unmarshal(payload, &body)
	} else {
		err = json.Unmarshal(payload, &body)
	}
	if err != nil {
		return Command{}, fmt.Errorf("%w: command: %w", ErrMalformed, err)
	}
	switch id := body.ID.(type) {
	case string:
		cmd.ID = id
	case float64, uint64, int64:
		cmd.ID = fmt.Sprint(id)
	default:
		return Command{}, fmt.Errorf("%w: command without id", ErrMalformed)
	}
	cmd.Method = body.Method
	if body.Params != nil {
		if cmd.Params, err = json.Marshal(body.Params); err != nil {
			return Command{}, fmt.Errorf("%w: command params: %w", ErrMalformed, err)
		}
	}
	return cmd, nil
}

// handleCommand runs the handler and publishes the reply.
func (c *Client) handleCommand(ctx context.Context, j cmdJob) {
	cmd, err := parseCommand(j.topic, j.payload, j.isCBOR)
	if err != nil {
		return // nothing to reply to
	}
	code, data := c.cfg.cmdHandler(ctx, cmd)
	var body []byte
	opts := []PublishOption{}
	if raw, ok := data.([]byte); ok && cmd.Raw != nil {
		body = raw
		opts = append(opts, ContentFormat(Octet))
	} else {
		msg := "success"
		if code != 200 {
			msg = "error"
		}
		rep := struct {
			ID      string `json:"id" cbor:"id"`
			Code    int    `json:"code" cbor:"code"`
			Data    any    `json:"data" cbor:"data"`
			Message string `json:"message" cbor:"message"`
		}{cmd.ID, code, data, msg}
		if rep.Data == nil {
			rep.Data = struct{}{}
		}
		if c.cfg.contentFormat == CBOR {
			body, err = cbor.Marshal(rep)
		} else {
			body, err = json.Marshal(rep)
		}
		if err != nil {
			return
		}
		opts = append(opts, ContentFormat(c.cfg.contentFormat))
	}
	_, _ = c.Publish(ctx, cmd.Topic+"_reply", body, opts...) // its 2100, if any, queues the next fetch
}

// handleRequest answers a CON request from the gateway: a pushed command
// (POST /topic/…) is acknowledged with 2.04 and queued for the handler
// when a handler is registered; anything else, and a command the full
// queue cannot take, is refused with RST (RFC 7252 §4.2). A retransmitted
// push is acknowledged again but handled once.
func (c *Client) handleRequest(m *message.Message) {
	mid := uint16(m.MessageID)
	path, _ := m.Options.Path()
	segs := strings.Split(strings.TrimPrefix(path, "/"), "/")
	if c.cfg.cmdHandler == nil || m.Code != codes.POST || len(segs) < 2 || segs[0] != "topic" {
		c.sendEmpty(message.Reset, mid)
		return
	}
	c.mu.Lock()
	dup := c.recentPush.has(mid)
	c.mu.Unlock()
	if !dup {
		cf, err := m.Options.ContentFormat()
		j := cmdJob{topic: "/" + strings.Join(segs[1:], "/"), payload: append([]byte(nil), m.Payload...), isCBOR: err == nil && cf == CBOR}
		if !c.enqueueCommand(j) {
			c.sendEmpty(message.Reset, mid)
			return
		}
		c.mu.Lock()
		c.recentPush.add(mid)
		c.mu.Unlock()
	}
	ack, err := encodeMessage(message.Message{Type: message.Acknowledgement, Code: codes.Changed, MessageID: int32(mid), Token: m.Token})
	if err == nil {
		_ = c.write(ack)
	}
}
