// Package natschanges is the clustered registry.ChangeFeed: a device change
// published on one node reaches the subscribers of every node through a
// NATS subject, within a NATS round trip (milliseconds), so a revocation,
// disable, delete or secret rotation ends the device's DTLS sessions and
// drops its cached record on every node well within a second.
//
// Core NATS (at most once): a node that is disconnected while a change is
// published misses it and converges through its device cache TTL and the
// per-request binding checks, as a single node's other listeners never
// need to. Publish reports an error when the change could not be handed to
// the NATS server.
package natschanges

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/coapgate/coapgate/internal/registry"
	"github.com/nats-io/nats.go"
)

// DefaultSubject is the subject device changes travel on.
const DefaultSubject = "coapgate.registry.device_changed"

// wire is a change on the subject; Origin is the publishing node's feed, so
// that it does not deliver its own change twice.
type wire struct {
	Origin     string `json:"origin"`
	ProductKey string `json:"productKey"`
	DeviceKey  string `json:"deviceKey"`
}

// Feed implements registry.ChangeFeed over a NATS connection. Changes are
// delivered to this node's subscribers synchronously by Publish, and to
// other nodes' subscribers on their NATS delivery goroutine.
type Feed struct {
	nc      *nats.Conn
	subject string
	origin  string
	local   registry.LocalChanges
	sub     *nats.Subscription
}

var _ registry.ChangeFeed = (*Feed)(nil)

// New subscribes to subject (DefaultSubject when empty) on nc. The caller
// owns nc; Close ends the subscription.
func New(nc *nats.Conn, subject string) (*Feed, error) {
	if subject == "" {
		subject = DefaultSubject
	}
	var id [8]byte
	rand.Read(id[:])
	f := &Feed{nc: nc, subject: subject, origin: hex.EncodeToString(id[:])}
	sub, err := nc.Subscribe(subject, f.receive)
	if err != nil {
		return nil, fmt.Errorf("natschanges: subscribe %s: %w", subject, err)
	}
	if err := nc.Flush(); err != nil {
		_ = sub.Unsubscribe()
		return nil, fmt.Errorf("natschanges: subscribe %s: %w", subject, err)
	}
	f.sub = sub
	return f, nil
}

func (f *Feed) receive(m *nats.Msg) {
	var w wire
	if err := json.Unmarshal(m.Data, &w); err != nil || w.ProductKey == "" || w.Origin == f.origin {
		return
	}
	_ = f.local.Publish(context.Background(), registry.DeviceChange{ProductKey: w.ProductKey, DeviceKey: w.DeviceKey})
}

// Publish implements registry.ChangeFeed: this node's subscribers first,
// then every other node through NATS (returns once the NATS server has
// the change, or ctx ends; without a deadline it waits at most a second).
func (f *Feed) Publish(ctx context.Context, c registry.DeviceChange) error {
	_ = f.local.Publish(ctx, c)
	b, err := json.Marshal(wire{Origin: f.origin, ProductKey: c.ProductKey, DeviceKey: c.DeviceKey})
	if err != nil {
		return fmt.Errorf("natschanges: encode: %w", err)
	}
	if err := f.nc.Publish(f.subject, b); err != nil {
		return fmt.Errorf("natschanges: publish: %w", err)
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, time.Second)
		defer cancel()
	}
	if err := f.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("natschanges: flush: %w", err)
	}
	return nil
}

// Subscribe implements registry.ChangeFeed.
func (f *Feed) Subscribe(fn func(registry.DeviceChange)) (cancel func()) {
	return f.local.Subscribe(fn)
}

// Close ends the subscription (the connection stays the caller's).
func (f *Feed) Close() error {
	if err := f.sub.Unsubscribe(); err != nil {
		return fmt.Errorf("natschanges: unsubscribe: %w", err)
	}
	return nil
}
