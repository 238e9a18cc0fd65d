package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
)

// Publish sends payload to topic (an MQTT-style topic such as
// "/sys/{pk}/{dk}/thing/event/property/post") with POST /topic/{segments...},
// the token in the configured token option (docs/protocol.md §3.2).
//
// Without a stored token Publish authenticates first. If the server answers
// 4.01 and credentials are known, Publish authenticates once more and retries
// once. A 2.xx answer is returned as a Response (MessageID holds option
// 2090); any other answer is a *StatusError (*TooLargeError for 4.13).
//
// A NonConfirmable publish returns (nil, nil) once sent unless
// WaitNONResponse asks for the server's NON response. A payload larger than
// the block size is sent as a confirmable RFC 7959 Block1 transfer, also
// when NonConfirmable is given.
func (c *Client) Publish(ctx context.Context, topic string, payload []byte, opts ...PublishOption) (*Response, error) {
	pc := publishConfig{contentFormat: c.cfg.contentFormat, accept: JSON}
	for _, o := range opts {
		o(&pc)
	}
	path, err := topicPath(topic)
	if err != nil {
		return nil, err
	}
	st, err := c.ensureAuth(ctx)
	if err != nil {
		return nil, err
	}
	resp, err := c.publishOnce(ctx, path, payload, &pc, st)
	if err != nil || resp == nil {
		return nil, err
	}
	if resp.Code == codes.Unauthorized && c.cfg.hasCreds {
		if st, err = c.reauth(ctx, st.token); err != nil {
			return nil, fmt.Errorf("re-authenticate after 4.01: %w", err)
		}
		if resp, err = c.publishOnce(ctx, path, payload, &pc, st); err != nil || resp == nil {
			return nil, err
		}
	}
	if !isSuccess(resp.Code) {
		return nil, statusError(resp)
	}
	if st.sym != nil && len(resp.Payload) > 0 {
		// docs/protocol.md §3.4: every non-empty response payload is encrypted.
		plain, err := st.sym.open(resp.Payload)
		if err != nil {
			return nil, fmt.Errorf("%w: decrypt reply: %w", ErrMalformed, err)
		}
		resp.Payload = plain
	}
	c.followDownlink(resp)
	return resp, nil
}

func (c *Client) publishOnce(ctx context.Context, path []string, payload []byte, pc *publishConfig, st authState) (*Response, error) {
	r := &request{
		code:          codes.POST,
		path:          path,
		confirmable:   !pc.nonConfirmable,
		contentFormat: pc.contentFormat,
		accept:        pc.accept,
		hasAccept:     true,
		authOption:    c.cfg.tokenOption,
		authToken:     st.token,
		payload:       payload,
	}
	if st.sym != nil {
		r.payload, r.seq = st.sym.seal(payload)
	}
	if c.cfg.dtlsPSK != nil {
		r.authOption = 0 // no token on a DTLS-PSK session
	}
	return c.send(ctx, r, pc.waitNON)
}

// thingRequest is the thing-model request body (docs/protocol.md §4).
type thingRequest struct {
	ID      string `json:"id"`
	Version string `json:"version"`
	Method  string `json:"method"`
	Params  any    `json:"params"`
}

type measurePointParams struct {
	MeasurePoints map[string]any `json:"measurepoints"`
	Time          int64          `json:"time"`
}

// encodeThing encodes a thing-model request with id in cf (pure).
func encodeThing(id uint64, method string, params any, cf message.MediaType) ([]byte, error) {
	req := thingRequest{ID: strconv.FormatUint(id, 10), Version: "1.0", Method: method, Params: params}
	if cf == CBOR {
		return cbor.Marshal(req)
	}
	return json.Marshal(req)
}

// postThing publishes a thing-model request to /sys/{pk}/{dk}/{suffix}.
func (c *Client) postThing(ctx context.Context, suffix, method string, params any, opts []PublishOption) (*Response, error) {
	pk, dk := c.cfg.creds.ProductKey, c.cfg.creds.DeviceName
	if p := c.cfg.dtlsPSK; p != nil {
		pk, dk = p.ProductKey, p.DeviceName
	} else if !c.cfg.hasCreds {
		return nil, ErrNoCredentials
	}
	body, err := encodeThing(c.thingID.Add(1), method, params, c.cfg.contentFormat)
	if err != nil {
		return nil, fmt.Errorf("encode %s: %w", method, err)
	}
	return c.Publish(ctx, "/sys/"+pk+"/"+dk+"/"+suffix, body, opts...)
}

// PostMeasurePoints publishes measure points with method
// thing.measurepoint.post to /sys/{pk}/{dk}/thing/measurepoint/post:
// {"id":"<n>","version":"1.0","method":"thing.measurepoint.post",
// "params":{"measurepoints":{...},"time":<ms>}}. The id increments per
// thing-model request of the Client; a zero ts means now. The body is JSON,
// or CBOR if the Client was dialled WithContentFormat(CBOR). The product key
// and device name come from WithCredentials; without them the result is
// ErrNoCredentials.
func (c *Client) PostMeasurePoints(ctx context.Context, points map[string]any, ts time.Time, opts ...PublishOption) (*Response, error) {
	if ts.IsZero() {
		ts = time.Now()
	}
	return c.postThing(ctx, "thing/measurepoint/post", "thing.measurepoint.post",
		measurePointParams{MeasurePoints: points, Time: ts.UnixMilli()}, opts)
}

// PostProperties publishes properties with method thing.event.property.post
// to /sys/{pk}/{dk}/thing/event/property/post; props are the params object.
func (c *Client) PostProperties(ctx context.Context, props map[string]any, opts ...PublishOption) (*Response, error) {
	return c.postThing(ctx, "thing/event/property/post", "thing.event.property.post", props, opts)
}
