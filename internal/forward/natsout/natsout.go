// Package natsout is the forwarding target that publishes envelopes to
// NATS with github.com/nats-io/nats.go: a core publish confirmed by a
// flush (PING/PONG), or with jetstream a publish acknowledged by the
// stream.
package natsout

import (
	"context"
	"fmt"
	"sync"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/coapgate/coapgate/internal/forward"
)

// Factory returns the TargetFactory of "nats" actions. The connection is
// made on the first delivery and again once it is closed; publishes are
// never buffered across a reconnect (a failure is reported and retried).
func Factory() forward.TargetFactory {
	return func(a forward.Action) (forward.Target, error) {
		if a.Type != forward.ActionNATS {
			return nil, fmt.Errorf("%w: not a nats action", forward.ErrInvalid)
		}
		return &target{a: a}, nil
	}
}

type target struct {
	a forward.Action

	mu sync.Mutex
	nc *nats.Conn          // guarded by mu
	js jetstream.JetStream // guarded by mu
}

func (t *target) conn() (*nats.Conn, jetstream.JetStream, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nc != nil && !t.nc.IsClosed() {
		return t.nc, t.js, nil
	}
	nc, err := nats.Connect(t.a.URL, nats.Name("coapgate-forward"), nats.Timeout(t.a.TimeoutOrDefault()),
		nats.ReconnectBufSize(-1), nats.MaxReconnects(-1))
	if err != nil {
		return nil, nil, fmt.Errorf("nats: connect: %w", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, nil, fmt.Errorf("nats: jetstream: %w", err)
	}
	t.nc, t.js = nc, js
	return nc, js, nil
}

// Deliver publishes the envelope to the expanded subject template
// ({topic} with '.' separators).
func (t *target) Deliver(ctx context.Context, d *forward.Delivery) error {
	subj := forward.Expand(t.a.Subject, d, '.')
	nc, js, err := t.conn()
	if err != nil {
		return err
	}
	if t.a.JetStream {
		if _, err := js.Publish(ctx, subj, d.Body, jetstream.WithMsgID(fmt.Sprintf("%s-%d", d.RuleID, d.Envelope.ID))); err != nil {
			return fmt.Errorf("nats: jetstream publish %s: %w", subj, err)
		}
		return nil
	}
	if err := nc.Publish(subj, d.Body); err != nil {
		return fmt.Errorf("nats: publish %s: %w", subj, err)
	}
	if err := nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("nats: flush %s: %w", subj, err)
	}
	return nil
}

// Close drains nothing: every delivery was confirmed already.
func (t *target) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.nc != nil {
		t.nc.Close()
		t.nc = nil
	}
	return nil
}
