package sdk

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// ServerTime asks the gateway for its clock over the NTP topic
// /ext/ntp/{pk}/{dk}/request, as the vendor's device SDK does: the request
// carries deviceSendTime (this machine's unix milliseconds) and the answer
// serverRecvTime and serverSendTime. It returns the server's time at the
// moment the answer arrived: serverSendTime plus half the round trip spent
// outside the server, which is exact when both directions take as long.
// The product key and device name come from WithCredentials (or the DTLS
// identity); without them the result is ErrNoCredentials.
func (c *Client) ServerTime(ctx context.Context) (time.Time, error) {
	pk, dk := c.cfg.creds.ProductKey, c.cfg.creds.DeviceName
	if p := c.cfg.dtlsPSK; p != nil {
		pk, dk = p.ProductKey, p.DeviceName
	} else if !c.cfg.hasCreds {
		return time.Time{}, ErrNoCredentials
	}
	sent := time.Now()
	body := []byte(`{"deviceSendTime":"` + strconv.FormatInt(sent.UnixMilli(), 10) + `"}`)
	resp, err := c.Publish(ctx, "/ext/ntp/"+pk+"/"+dk+"/request", body, ContentFormat(JSON), Accept(JSON))
	if err != nil {
		return time.Time{}, err
	}
	received := time.Now()
	recv, send, err := parseNTPReply(resp.Payload)
	if err != nil {
		return time.Time{}, err
	}
	transit := received.Sub(sent) - send.Sub(recv) // the round trip less the server's time
	return send.Add(max(transit, 0) / 2), nil
}

// parseNTPReply reads serverRecvTime and serverSendTime (unix milliseconds,
// as strings or numbers) from an NTP answer.
func parseNTPReply(b []byte) (recv, send time.Time, err error) {
	var r struct {
		Recv json.Number `json:"serverRecvTime"`
		Send json.Number `json:"serverSendTime"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: NTP answer: %w", ErrMalformed, err)
	}
	rm, err1 := r.Recv.Int64()
	sm, err2 := r.Send.Int64()
	if err1 != nil || err2 != nil || sm < rm {
		return time.Time{}, time.Time{}, fmt.Errorf("%w: NTP answer %q", ErrMalformed, b)
	}
	return time.UnixMilli(rm), time.UnixMilli(sm), nil
}
