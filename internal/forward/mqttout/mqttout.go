// Package mqttout is the forwarding target that publishes envelopes to an
// external MQTT 3.1.1 broker with github.com/eclipse/paho.mqtt.golang.
package mqttout

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"

	"github.com/coapgate/coapgate/internal/forward"
)

// Factory returns the TargetFactory of "mqtt" actions. The connection is
// made on the first delivery and again after it breaks; QoS 1 (default)
// succeeds on PUBACK, QoS 0 once the packet is written.
func Factory() forward.TargetFactory {
	return func(a forward.Action) (forward.Target, error) {
		if a.Type != forward.ActionMQTT {
			return nil, fmt.Errorf("%w: not an mqtt action", forward.ErrInvalid)
		}
		qos := byte(1)
		if a.QoS != nil {
			qos = byte(*a.QoS)
		}
		id := a.ClientID
		if id == "" {
			var b [6]byte
			_, _ = rand.Read(b[:])
			id = "coapgate-fwd-" + hex.EncodeToString(b[:])
		}
		return &target{a: a, qos: qos, clientID: id}, nil
	}
}

type target struct {
	a        forward.Action
	qos      byte
	clientID string

	mu     sync.Mutex
	client mqtt.Client // guarded by mu; nil until connected
}

// conn returns a connected client, connecting when needed.
func (t *target) conn(ctx context.Context) (mqtt.Client, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil && t.client.IsConnectionOpen() {
		return t.client, nil
	}
	if t.client != nil {
		t.client.Disconnect(0)
		t.client = nil
	}
	o := mqtt.NewClientOptions().AddBroker(t.a.URL).SetClientID(t.clientID).
		SetAutoReconnect(false).SetConnectRetry(false).SetCleanSession(true).
		SetConnectTimeout(t.a.TimeoutOrDefault()).SetWriteTimeout(t.a.TimeoutOrDefault()).
		SetOrderMatters(false)
	if t.a.Username != "" {
		o.SetUsername(t.a.Username)
	}
	if t.a.Password != "" {
		o.SetPassword(t.a.Password)
	}
	c := mqtt.NewClient(o)
	if err := wait(ctx, c.Connect()); err != nil {
		return nil, fmt.Errorf("mqtt: connect: %w", err)
	}
	t.client = c
	return c, nil
}

func wait(ctx context.Context, tok mqtt.Token) error {
	select {
	case <-tok.Done():
		return tok.Error()
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Deliver publishes the envelope to the expanded topic template.
func (t *target) Deliver(ctx context.Context, d *forward.Delivery) error {
	topic := forward.Expand(t.a.Topic, d, '/')
	if topic == "" {
		return errors.New("mqtt: empty topic")
	}
	c, err := t.conn(ctx)
	if err != nil {
		return err
	}
	if err := wait(ctx, c.Publish(topic, t.qos, false, d.Body)); err != nil {
		return fmt.Errorf("mqtt: publish %s: %w", topic, err)
	}
	return nil
}

// Close disconnects.
func (t *target) Close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.client != nil {
		t.client.Disconnect(uint(250 * time.Millisecond / time.Millisecond))
		t.client = nil
	}
	return nil
}
